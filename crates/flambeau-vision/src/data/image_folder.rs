//! torchvision's `ImageFolder`: `root/<class>/<image>.{png,jpg,jpeg}`, classes sorted by name.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::{Dataset, Sample};
use crate::{Error, Result};

/// Images from a directory tree, decoded on demand and resized to `size × size`.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    classes: Vec<String>,
    items: Vec<(PathBuf, u32)>,
    size: u32,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

impl ImageFolder {
    /// Scans `root`; every sub-directory is a class (sorted, as torchvision does).
    pub fn new(root: &Path, size: u32) -> Result<Self> {
        let read_dir = |p: &Path| std::fs::read_dir(p).map_err(|e| Error::io(p, e));
        let mut classes: Vec<String> = read_dir(root)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(Error::Dataset(format!(
                "{}: no class folders (expected root/<class>/<image>.png)",
                root.display()
            )));
        }
        let mut items = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let mut files: Vec<PathBuf> = read_dir(&root.join(class))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && is_image(p))
                .collect();
            files.sort();
            items.extend(files.into_iter().map(|f| (f, label as u32)));
        }
        if items.is_empty() {
            return Err(Error::Dataset(format!(
                "{}: no .png/.jpg images found",
                root.display()
            )));
        }
        Ok(Self {
            classes,
            items,
            size,
        })
    }
}

impl Dataset for ImageFolder {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let (path, label) = self.items.get(index).ok_or_else(|| {
            Error::Dataset(format!(
                "index {index} out of range for {} images",
                self.items.len()
            ))
        })?;
        let img = image::open(path).map_err(|source| Error::Image {
            path: path.clone(),
            source,
        })?;
        let rgb = img
            .resize_exact(self.size, self.size, FilterType::Triangle)
            .to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut pixels = vec![0f32; 3 * w * h];
        for (x, y, p) in rgb.enumerate_pixels() {
            for c in 0..3 {
                pixels[c * w * h + y as usize * w + x as usize] = p[c] as f32 / 255.0;
            }
        }
        Ok(Sample {
            pixels,
            channels: 3,
            height: h,
            width: w,
            label: *label,
        })
    }

    fn classes(&self) -> Vec<String> {
        self.classes.clone()
    }
}
