//! `metrics.png`: training and validation loss and accuracy per epoch, drawn with
//! [plotters](https://docs.rs/plotters) into an RGB buffer and encoded by `image`.
//!
//! The text uses a font compiled into the binary (Ubuntu Light, from the `epaint_default_fonts`
//! crate): nothing comes from the system's fonts or the network, so the plot looks the same on a
//! bare machine.

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::history::EpochRecord;
use crate::{Error, Result};

/// Width of `metrics.png` in pixels.
const WIDTH: u32 = 900;
/// Height of `metrics.png` in pixels.
const HEIGHT: u32 = 380;
/// The family the embedded font is registered under: plotters' `sans-serif`.
const FONT: &str = "sans-serif";
const AXIS: RGBColor = RGBColor(40, 40, 40);
const GRID: RGBColor = RGBColor(225, 225, 225);
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VAL: RGBColor = RGBColor(255, 127, 14);
/// Above this many epochs the lines go without a marker per epoch.
const MARKERS_UP_TO: usize = 40;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Draws the loss panel (left) and the accuracy panel (right) of `history` and writes them to
/// `path` as a PNG, replacing the old file atomically (the bytes go to `<path>.tmp` first, then a
/// rename). Non-finite values (a diverged epoch) leave a gap in their line; an empty history
/// gives empty panels.
pub fn write_png(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let png = render_png(history).map_err(|source| Error::Plot {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = path.with_extension("png.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&png)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The bytes of the PNG file.
fn render_png(history: &[EpochRecord]) -> std::result::Result<Vec<u8>, BoxError> {
    let mut rgb = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    draw(&mut rgb, history)?;
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, rgb).ok_or("the plot's pixel buffer")?;
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)?;
    Ok(png.into_inner())
}

/// Registers the embedded font with plotters, once per process.
fn register_embedded_font() -> std::result::Result<(), BoxError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT).is_ok()
    });
    if registered {
        Ok(())
    } else {
        Err("the embedded font (Ubuntu Light) does not parse".into())
    }
}

/// Draws both panels into `rgb` (`WIDTH × HEIGHT` pixels, 3 bytes each).
fn draw(rgb: &mut [u8], history: &[EpochRecord]) -> std::result::Result<(), BoxError> {
    register_embedded_font()?;
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let loss = [
        history.iter().map(|r| r.train_loss).collect::<Vec<_>>(),
        history.iter().map(|r| r.val_loss).collect(),
    ];
    let accuracy = [
        history
            .iter()
            .map(|r| 100.0 * r.train_acc)
            .collect::<Vec<_>>(),
        history.iter().map(|r| 100.0 * r.val_acc).collect(),
    ];
    let loss_panel = Panel {
        title: "loss",
        y_desc: "loss",
        y_range: data_range(loss.iter().flatten().copied()),
        percent: false,
        // Losses fall: the legend goes where the curves end up not being.
        legend: SeriesLabelPosition::UpperRight,
    };
    let accuracy_panel = Panel {
        title: "accuracy",
        y_desc: "accuracy %",
        y_range: (0.0, 100.0),
        percent: true,
        legend: SeriesLabelPosition::LowerRight,
    };
    loss_panel.draw(&panels[0], &loss)?;
    accuracy_panel.draw(&panels[1], &accuracy)?;
    root.present()?;
    Ok(())
}

/// One of the two panels.
struct Panel {
    title: &'static str,
    y_desc: &'static str,
    y_range: (f64, f64),
    /// Whole-number labels on the y axis.
    percent: bool,
    legend: SeriesLabelPosition,
}

impl Panel {
    /// Draws `series` (train, val), one value per epoch.
    fn draw(
        &self,
        area: &DrawingArea<BitMapBackend<'_>, Shift>,
        series: &[Vec<f64>; 2],
    ) -> std::result::Result<(), BoxError> {
        let epochs = series[0].len();
        // Epochs are 1-based; a single epoch still gets an x axis around it.
        let x_range = if epochs <= 1 {
            0.5..1.5
        } else {
            1.0..epochs as f64
        };
        let (y_lo, y_hi) = self.y_range;
        let mut chart = ChartBuilder::on(area)
            .caption(self.title, (FONT, 20).into_font().color(&AXIS))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x_range, y_lo..y_hi)?;
        let label_font = (FONT, 13).into_font().color(&AXIS);
        let whole_epochs = |x: &f64| {
            if x.fract() == 0.0 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        };
        let whole_percent = |y: &f64| format!("{y:.0}");
        let mut mesh = chart.configure_mesh();
        mesh
            // At most one label per epoch, so that the labels fall on whole epochs.
            .x_labels(epochs.clamp(1, 10))
            .y_labels(6)
            .x_label_formatter(&whole_epochs)
            .x_desc("epoch")
            .y_desc(self.y_desc)
            .label_style(label_font.clone())
            .axis_desc_style(label_font.clone())
            .axis_style(AXIS)
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT);
        if self.percent {
            mesh.y_label_formatter(&whole_percent);
        }
        mesh.draw()?;
        for (values, (name, color)) in series.iter().zip([("train", TRAIN), ("val", VAL)]) {
            let points: Vec<Option<(f64, f64)>> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| v.is_finite().then(|| ((i + 1) as f64, v.clamp(y_lo, y_hi))))
                .collect();
            // A non-finite value breaks the line; a lone finite value keeps its marker.
            for run in points.split(Option::is_none).filter(|r| !r.is_empty()) {
                let run: Vec<(f64, f64)> = run.iter().flatten().copied().collect();
                chart.draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(2)))?;
                if epochs <= MARKERS_UP_TO || run.len() == 1 {
                    chart.draw_series(run.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
                }
            }
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(self.legend.clone())
            .label_font(label_font)
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .draw()?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn history(epochs: usize) -> Vec<EpochRecord> {
        (0..epochs)
            .map(|i| {
                let t = i as f64;
                EpochRecord {
                    epoch: i as u64 + 1,
                    train_loss: 2.3 * (-t / 6.0).exp() + 0.15,
                    train_acc: 0.1 + 0.85 * (1.0 - (-t / 5.0).exp()),
                    val_loss: 2.2 * (-t / 7.0).exp() + 0.35,
                    val_acc: 0.1 + 0.75 * (1.0 - (-t / 6.0).exp()),
                    lr: 0.1,
                    seconds: 1.0,
                }
            })
            .collect()
    }

    fn render(history: &[EpochRecord]) -> image::RgbImage {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.png");
        write_png(&path, history).unwrap();
        assert!(!path.with_extension("png.tmp").exists());
        image::open(&path).unwrap().to_rgb8()
    }

    /// Pixels of (about) `color` inside the rectangle.
    fn count(img: &image::RgbImage, (x0, x1): (u32, u32), color: RGBColor) -> usize {
        let near = |a: u8, b: u8| a.abs_diff(b) <= 24;
        (x0..x1)
            .flat_map(|x| (0..HEIGHT).map(move |y| (x, y)))
            .filter(|&(x, y)| {
                let p = img.get_pixel(x, y).0;
                near(p[0], color.0) && near(p[1], color.1) && near(p[2], color.2)
            })
            .count()
    }

    #[test]
    fn both_series_are_drawn_in_both_panels_in_their_colours() {
        let img = render(&history(12));
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        let (left, right) = ((0, WIDTH / 2), (WIDTH / 2, WIDTH));
        for panel in [left, right] {
            for color in [TRAIN, VAL] {
                // A 2-pixel line across ~300 pixels plus the markers and the legend.
                assert!(count(&img, panel, color) > 400, "{color:?} in {panel:?}");
            }
            // Text and axes: dark pixels.
            assert!(
                count(&img, panel, AXIS) > 300,
                "axes and labels in {panel:?}"
            );
        }
        // Mostly background.
        assert!(count(&img, (0, WIDTH), WHITE) > (WIDTH * HEIGHT / 2) as usize);
    }

    #[test]
    fn the_accuracy_panel_follows_the_values() {
        // Train accuracy at 100% all along: its line runs along the top of the right panel, and
        // at 0% along the bottom; the two images differ in where the blue pixels are.
        let mut high = history(5);
        let mut low = history(5);
        for r in &mut high {
            r.train_acc = 1.0;
        }
        for r in &mut low {
            r.train_acc = 0.0;
        }
        let (high, low) = (render(&high), render(&low));
        let top_half = |img: &image::RgbImage| {
            (WIDTH / 2..WIDTH)
                .flat_map(|x| (0..HEIGHT / 2).map(move |y| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0 == [TRAIN.0, TRAIN.1, TRAIN.2])
                .count()
        };
        assert!(top_half(&high) > 200 + top_half(&low));
    }

    #[test]
    fn one_epoch_empty_and_non_finite_histories_render() {
        let img = render(&history(1));
        assert!(count(&img, (0, WIDTH), TRAIN) > 0 && count(&img, (0, WIDTH), VAL) > 0);
        render(&[]);
        let mut bad = history(6);
        bad[2].val_loss = f64::NAN;
        bad[3].train_loss = f64::INFINITY;
        bad[4].train_acc = f64::NEG_INFINITY;
        let img = render(&bad);
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        for r in &mut bad {
            (r.train_loss, r.val_loss) = (f64::NAN, f64::NAN);
        }
        render(&bad);
    }

    #[test]
    fn the_plot_replaces_an_old_file_and_touches_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.png");
        std::fs::write(&path, b"old").unwrap();
        std::fs::write(dir.path().join("metrics.csv"), b"csv").unwrap();
        write_png(&path, &history(3)).unwrap();
        assert!(image::open(&path).is_ok());
        assert_eq!(
            std::fs::read(dir.path().join("metrics.csv")).unwrap(),
            b"csv"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["metrics.csv", "metrics.png"]);
    }
}
