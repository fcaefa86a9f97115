//! An embedded, procedurally generated image-classification set: no download, deterministic
//! from a seed, and structured enough that a ResNet learns it in a couple of CPU epochs.
//!
//! Each 3×32×32 image shows one shape whose *form* is the class (disk, square, triangle, …),
//! drawn in a random colour at a random position and size on a noisy background of another random
//! colour, with a small distractor blob. Colour carries no information, so the network has to
//! learn shapes.

use super::rng::{derive, SplitMix64};
use super::{Dataset, Sample};
use crate::Result;

const SIZE: usize = 32;
const CLASSES: [&str; 10] = [
    "disk",
    "square",
    "triangle",
    "plus",
    "ring",
    "h-stripes",
    "v-stripes",
    "x-cross",
    "frame",
    "two-dots",
];

/// The procedural dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synthetic {
    len: usize,
    seed: u64,
    split: u64,
}

impl Synthetic {
    /// The training split: `len` images from `seed`.
    pub fn train(len: usize, seed: u64) -> Self {
        Self {
            len,
            seed,
            split: 0,
        }
    }

    /// The validation split: disjoint from the training split of the same seed.
    pub fn val(len: usize, seed: u64) -> Self {
        Self {
            len,
            seed,
            split: 1,
        }
    }
}

/// Whether pixel (x, y) is inside the shape of `class` centred at (cx, cy) with radius r.
fn inside(class: u32, x: f32, y: f32, cx: f32, cy: f32, r: f32) -> bool {
    let (dx, dy) = (x - cx, y - cy);
    let d2 = dx * dx + dy * dy;
    let in_box = dx.abs() <= r && dy.abs() <= r;
    let bar = r * 0.3;
    match class {
        0 => d2 <= r * r,
        1 => in_box,
        2 => dy <= r && dy >= -r && dx.abs() <= (dy + r) * 0.5,
        3 => in_box && (dx.abs() <= bar || dy.abs() <= bar),
        4 => d2 <= r * r && d2 >= (r * 0.55) * (r * 0.55),
        5 => in_box && ((dy + r) / (r * 0.5)).floor() as i32 % 2 == 0,
        6 => in_box && ((dx + r) / (r * 0.5)).floor() as i32 % 2 == 0,
        7 => in_box && ((dx - dy).abs() <= bar || (dx + dy).abs() <= bar),
        8 => in_box && (dx.abs() >= r * 0.6 || dy.abs() >= r * 0.6),
        _ => {
            let d = r * 0.55;
            let rr = r * 0.4;
            (dx - d) * (dx - d) + dy * dy <= rr * rr || (dx + d) * (dx + d) + dy * dy <= rr * rr
        }
    }
}

fn luminance(c: &[f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn color(rng: &mut SplitMix64) -> [f32; 3] {
    [rng.next_f32(), rng.next_f32(), rng.next_f32()]
}

impl Dataset for Synthetic {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Result<Sample> {
        if index >= self.len {
            return Err(crate::Error::Dataset(format!(
                "index {index} out of range for a synthetic set of {}",
                self.len
            )));
        }
        let label = (index % CLASSES.len()) as u32;
        let mut rng = SplitMix64::new(derive(&[self.seed, self.split, index as u64]));
        let bg = color(&mut rng);
        // A foreground colour that stands out from the background.
        let mut fg = color(&mut rng);
        for _ in 0..16 {
            if (luminance(&fg) - luminance(&bg)).abs() >= 0.35 {
                break;
            }
            fg = color(&mut rng);
        }
        let r = 9.0 + rng.next_f32() * 5.0;
        let cx = r + rng.next_f32() * (SIZE as f32 - 2.0 * r);
        let cy = r + rng.next_f32() * (SIZE as f32 - 2.0 * r);
        let blob = (rng.below(SIZE - 3), rng.below(SIZE - 3), color(&mut rng));
        let plane = SIZE * SIZE;
        let mut pixels = vec![0f32; 3 * plane];
        for y in 0..SIZE {
            for x in 0..SIZE {
                let shape = inside(label, x as f32 + 0.5, y as f32 + 0.5, cx, cy, r);
                let in_blob =
                    (blob.0..blob.0 + 3).contains(&x) && (blob.1..blob.1 + 3).contains(&y);
                let base = if shape {
                    fg
                } else if in_blob {
                    blob.2
                } else {
                    bg
                };
                for (c, v) in base.iter().enumerate() {
                    let noise = (rng.next_f32() - 0.5) * 0.1;
                    pixels[c * plane + y * SIZE + x] = (v + noise).clamp(0.0, 1.0);
                }
            }
        }
        Ok(Sample {
            pixels,
            channels: 3,
            height: SIZE,
            width: SIZE,
            label,
        })
    }

    fn classes(&self) -> Vec<String> {
        CLASSES.iter().map(|s| s.to_string()).collect()
    }
}
