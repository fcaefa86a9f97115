//! Augmentation and normalisation on `[C, H, W]` f32 images.

use super::rng::SplitMix64;
use super::Sample;

/// torchvision's `Normalize(mean, std)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Per-channel mean.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
}

impl Normalize {
    /// CIFAR-10's usual statistics.
    pub fn cifar10() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// ImageNet's statistics (what torchvision's pretrained weights expect).
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// `(x - mean[c]) / std[c]` in place.
    pub fn apply(&self, s: &mut Sample) {
        let plane = s.height * s.width;
        for c in 0..s.channels {
            let (m, d) = (self.mean[c % self.mean.len()], self.std[c % self.std.len()]);
            for v in &mut s.pixels[c * plane..(c + 1) * plane] {
                *v = (*v - m) / d;
            }
        }
    }
}

/// Training augmentation: `RandomCrop(size, padding)` with zero padding, then
/// `RandomHorizontalFlip(0.5)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Zero padding added on every side before cropping back to the original size.
    pub crop_padding: usize,
    /// Flip left-right with probability ½.
    pub horizontal_flip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            crop_padding: 4,
            horizontal_flip: true,
        }
    }
}

impl Augment {
    /// Applies the augmentation with randomness from `rng`.
    pub fn apply(&self, s: &mut Sample, rng: &mut SplitMix64) {
        let (h, w, p) = (s.height, s.width, self.crop_padding);
        let (dy, dx) = (rng.below(2 * p + 1), rng.below(2 * p + 1));
        let flip = self.horizontal_flip && rng.next_f32() < 0.5;
        if p == 0 && !flip {
            return;
        }
        let mut out = vec![0f32; s.pixels.len()];
        for c in 0..s.channels {
            let src = &s.pixels[c * h * w..(c + 1) * h * w];
            let dst = &mut out[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                // Row y of the crop is row y + dy - p of the original (zero outside).
                let sy = (y + dy) as isize - p as isize;
                if sy < 0 || sy >= h as isize {
                    continue;
                }
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = (xx + dx) as isize - p as isize;
                    if sx >= 0 && sx < w as isize {
                        dst[y * w + x] = src[sy as usize * w + sx as usize];
                    }
                }
            }
        }
        s.pixels = out;
    }
}
