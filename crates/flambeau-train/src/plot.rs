//! `metrics.png`: training and validation loss and accuracy per epoch, drawn with a few lines of
//! rasterising code (no font or plotting dependency; labels use a built-in 3×5 pixel font).

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::history::EpochRecord;
use crate::{Error, Result};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 380;
const SCALE: i64 = 2;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([40, 40, 40]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const TRAIN: Rgb<u8> = Rgb([31, 119, 180]);
const VAL: Rgb<u8> = Rgb([255, 127, 14]);

/// Draws the loss panel (left) and the accuracy panel (right) and saves the PNG.
pub fn write_png(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, BACKGROUND);
    let (margin, gap, right_margin) = (70, 100, 24);
    let panel_w = (WIDTH as i64 - margin - gap - right_margin) / 2;
    let (top, bottom) = (40, HEIGHT as i64 - 40);
    let loss = Panel {
        title: "loss",
        left: margin,
        right: margin + panel_w,
        top,
        bottom,
        y_range: data_range(history.iter().flat_map(|r| [r.train_loss, r.val_loss])),
        percent: false,
    };
    let acc = Panel {
        title: "accuracy %",
        left: margin + panel_w + gap,
        right: margin + 2 * panel_w + gap,
        top,
        bottom,
        y_range: (0.0, 100.0),
        percent: true,
    };
    let epochs = history.len().max(1);
    for (panel, series) in [
        (
            &loss,
            [
                history.iter().map(|r| r.train_loss).collect::<Vec<_>>(),
                history.iter().map(|r| r.val_loss).collect(),
            ],
        ),
        (
            &acc,
            [
                history.iter().map(|r| 100.0 * r.train_acc).collect(),
                history.iter().map(|r| 100.0 * r.val_acc).collect(),
            ],
        ),
    ] {
        panel.draw_frame(&mut img, epochs);
        for (values, color) in series.iter().zip([TRAIN, VAL]) {
            panel.draw_series(&mut img, values, epochs, color);
        }
        text(&mut img, panel.right - 60, panel.top - 26, "train", TRAIN);
        text(&mut img, panel.right - 60, panel.top - 14, "val", VAL);
    }
    img.save(path).map_err(|source| Error::Plot {
        path: path.to_path_buf(),
        source,
    })
}

struct Panel {
    title: &'static str,
    left: i64,
    right: i64,
    top: i64,
    bottom: i64,
    y_range: (f64, f64),
    percent: bool,
}

impl Panel {
    fn x(&self, i: usize, epochs: usize) -> i64 {
        if epochs <= 1 {
            return (self.left + self.right) / 2;
        }
        self.left + (self.right - self.left) * i as i64 / (epochs as i64 - 1)
    }

    fn y(&self, v: f64) -> i64 {
        let (lo, hi) = self.y_range;
        let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
        self.bottom - ((self.bottom - self.top) as f64 * t).round() as i64
    }

    fn draw_frame(&self, img: &mut RgbImage, epochs: usize) {
        let (lo, hi) = self.y_range;
        for k in 0..=4 {
            let v = lo + (hi - lo) * k as f64 / 4.0;
            let y = self.y(v);
            line(img, (self.left, y), (self.right, y), GRID);
            let label = if self.percent || hi >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            };
            text(img, self.left - 8 - width_of(&label), y - 5, &label, AXIS);
        }
        let every = epochs.div_ceil(10);
        for i in (0..epochs).step_by(every) {
            let x = self.x(i, epochs);
            line(img, (x, self.bottom), (x, self.bottom + 4), AXIS);
            let label = format!("{}", i + 1);
            text(img, x - width_of(&label) / 2, self.bottom + 8, &label, AXIS);
        }
        line(img, (self.left, self.top), (self.left, self.bottom), AXIS);
        line(
            img,
            (self.left, self.bottom),
            (self.right, self.bottom),
            AXIS,
        );
        text(img, self.left, self.top - 26, self.title, AXIS);
        let xlabel = "epoch";
        text(
            img,
            (self.left + self.right) / 2 - width_of(xlabel) / 2,
            self.bottom + 22,
            xlabel,
            AXIS,
        );
    }

    fn draw_series(&self, img: &mut RgbImage, values: &[f64], epochs: usize, color: Rgb<u8>) {
        let points: Vec<(i64, i64)> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (self.x(i, epochs), self.y(v)))
            .collect();
        for w in points.windows(2) {
            for d in [(0, 0), (0, 1), (1, 0)] {
                line(
                    img,
                    (w[0].0 + d.0, w[0].1 + d.1),
                    (w[1].0 + d.0, w[1].1 + d.1),
                    color,
                );
            }
        }
        for &(x, y) in &points {
            fill(img, x - 2, y - 2, 5, 5, color);
        }
    }
}

/// The range of the finite values, padded by 5%, never empty.
fn data_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    ((lo - pad).max(0.0), hi + pad)
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn fill(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
    for yy in y..y + h {
        for xx in x..x + w {
            put(img, xx, yy, c);
        }
    }
}

/// Bresenham's line.
fn line(img: &mut RgbImage, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    loop {
        put(img, x0, y0, c);
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
    }
}

fn width_of(s: &str) -> i64 {
    s.chars().count() as i64 * 4 * SCALE
}

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let rows = glyph(ch);
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..3 {
                if bits & (0b100 >> col) != 0 {
                    let px = x + (i as i64 * 4 + col) * SCALE;
                    fill(img, px, y + r as i64 * SCALE, SCALE, SCALE, c);
                }
            }
        }
    }
}

/// A 3×5 glyph, one row per entry, most significant of the 3 bits on the left.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b001, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0, 0, 0, 0, 0b010],
        '-' => [0, 0, 0b111, 0, 0],
        '%' => [0b101, 0b001, 0b010, 0b100, 0b101],
        'a' => [0, 0b011, 0b101, 0b101, 0b011],
        'c' => [0, 0b011, 0b100, 0b100, 0b011],
        'e' => [0b010, 0b101, 0b111, 0b100, 0b011],
        'h' => [0b100, 0b100, 0b111, 0b101, 0b101],
        'i' => [0b010, 0, 0b010, 0b010, 0b010],
        'l' => [0b010, 0b010, 0b010, 0b010, 0b011],
        'n' => [0, 0b110, 0b101, 0b101, 0b101],
        'o' => [0, 0b010, 0b101, 0b101, 0b010],
        'p' => [0, 0b110, 0b101, 0b110, 0b100],
        'r' => [0, 0b101, 0b110, 0b100, 0b100],
        's' => [0, 0b011, 0b110, 0b011, 0b110],
        't' => [0b010, 0b111, 0b010, 0b010, 0b011],
        'u' => [0, 0b101, 0b101, 0b101, 0b011],
        'v' => [0, 0b101, 0b101, 0b101, 0b010],
        'y' => [0b101, 0b101, 0b011, 0b001, 0b110],
        _ => [0; 5],
    }
}
