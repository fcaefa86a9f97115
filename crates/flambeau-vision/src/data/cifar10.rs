//! CIFAR-10 in its binary format (`cifar-10-batches-bin`): records of 1 label byte followed by
//! 3072 bytes of pixels (1024 red, 1024 green, 1024 blue, row-major 32×32).

use std::path::Path;

use super::{Dataset, Sample};
use crate::{Error, Result};

const RECORD: usize = 1 + 3 * 32 * 32;
const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-10 held in memory (180 MB for the whole training set).
#[derive(Debug, Clone)]
pub struct Cifar10 {
    records: Vec<u8>,
}

impl Cifar10 {
    /// The training split (`data_batch_1.bin` … `data_batch_5.bin`) from `dir`.
    pub fn train(dir: &Path) -> Result<Self> {
        Self::from_files(
            dir,
            &(1..=5)
                .map(|i| format!("data_batch_{i}.bin"))
                .collect::<Vec<_>>(),
        )
    }

    /// The test split (`test_batch.bin`) from `dir`.
    pub fn test(dir: &Path) -> Result<Self> {
        Self::from_files(dir, &["test_batch.bin".to_string()])
    }

    /// Reads and concatenates the given batch files, checking their sizes and labels.
    pub fn from_files(dir: &Path, files: &[String]) -> Result<Self> {
        let mut records = Vec::new();
        for f in files {
            let path = dir.join(f);
            let bytes = std::fs::read(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::Dataset(format!(
                        "{} not found: --data cifar10:DIR expects the binary version (cifar-10-batches-bin with data_batch_1.bin … test_batch.bin)",
                        path.display()
                    ))
                } else {
                    Error::io(&path, e)
                }
            })?;
            if bytes.is_empty() || bytes.len() % RECORD != 0 {
                return Err(Error::Dataset(format!(
                    "{}: {} bytes is not a whole number of {RECORD}-byte CIFAR-10 records",
                    path.display(),
                    bytes.len()
                )));
            }
            if let Some(bad) = bytes.chunks(RECORD).position(|r| r[0] >= 10) {
                return Err(Error::Dataset(format!(
                    "{}: record {bad} has label {} (CIFAR-10 labels are 0..9)",
                    path.display(),
                    bytes[bad * RECORD]
                )));
            }
            records.extend_from_slice(&bytes);
        }
        Ok(Self { records })
    }
}

impl Dataset for Cifar10 {
    fn len(&self) -> usize {
        self.records.len() / RECORD
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let r = self
            .records
            .get(index * RECORD..(index + 1) * RECORD)
            .ok_or_else(|| {
                Error::Dataset(format!(
                    "index {index} out of range for CIFAR-10 of {}",
                    self.len()
                ))
            })?;
        Ok(Sample {
            pixels: r[1..].iter().map(|&b| b as f32 / 255.0).collect(),
            channels: 3,
            height: 32,
            width: 32,
            label: r[0] as u32,
        })
    }

    fn classes(&self) -> Vec<String> {
        CLASSES.iter().map(|s| s.to_string()).collect()
    }
}
