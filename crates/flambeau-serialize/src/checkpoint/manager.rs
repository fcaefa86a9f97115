//! A run directory of checkpoints: `last.pth`, `best.pth` and the last K `epoch-NNNN.pth`.
//!
//! Every file appears atomically (written to a temporary name, fsynced, renamed), so a process
//! killed at any instant leaves the previous `last.pth` or the new one, never a torn file.
//! `last.pth` and `best.pth` are copies of the epoch file they stand for, never hard links: a
//! user who later `torch.save`s over one of them in place must not rewrite the others. An epoch
//! serialises the checkpoint once; the copies are made by the kernel (a reflink on btrfs/XFS,
//! an in-kernel copy elsewhere).

use std::fs;
use std::path::{Path, PathBuf};

use super::Checkpoint;
use crate::{files, Error, Result};

const LAST: &str = "last.pth";
const BEST: &str = "best.pth";
const EPOCH_PREFIX: &str = "epoch-";
const EXTENSION: &str = ".pth";

/// Keeps the checkpoints of one training run.
#[derive(Debug, Clone)]
pub struct CheckpointManager {
    dir: PathBuf,
    keep_last: usize,
}

impl CheckpointManager {
    /// Manages `dir`, keeping the last `keep_last` epoch files. The directory is created by the
    /// first save, so a run that fails before it leaves nothing behind. Temporary files left by
    /// a process killed mid-save are removed.
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Result<Self> {
        let dir = dir.into();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::io(
                &dir,
                std::io::Error::other("exists and is not a directory"),
            ));
        }
        if !dir.exists() {
            return Ok(Self { dir, keep_last });
        }
        for entry in fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .flatten()
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(".pth.tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self { dir, keep_last })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR/last.pth`: the newest checkpoint (end of an epoch, periodic or interrupted save).
    pub fn last_path(&self) -> PathBuf {
        self.dir.join(LAST)
    }

    /// `DIR/best.pth`: the checkpoint with the best validation metric.
    pub fn best_path(&self) -> PathBuf {
        self.dir.join(BEST)
    }

    /// `DIR/epoch-NNNN.pth` for the epoch of index `epoch` (named by its 1-based number).
    pub fn epoch_path(&self, epoch: i64) -> PathBuf {
        self.dir
            .join(format!("{EPOCH_PREFIX}{:04}{EXTENSION}", epoch + 1))
    }

    /// `DIR/last.pth` if it exists (what `--resume auto` continues from).
    pub fn latest(&self) -> Option<PathBuf> {
        let p = self.last_path();
        p.is_file().then_some(p)
    }

    /// The checkpoints of a run already in the directory (`last.pth`, `best.pth`, epoch
    /// files): a new run must not write over them unless asked to.
    pub fn run_files(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = [self.last_path(), self.best_path()]
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        if self.dir.is_dir() {
            found.extend(self.epoch_files().unwrap_or_default());
        }
        found
    }

    /// Saves a checkpoint taken mid-epoch (periodic or interrupted) as `last.pth` only.
    pub fn save_last(&self, ckpt: &Checkpoint) -> Result<()> {
        self.create_dir()?;
        ckpt.save(self.last_path())
    }

    fn create_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))
    }

    /// Saves the checkpoint of a finished epoch: `epoch-NNNN.pth`, then `last.pth` (and
    /// `best.pth` when `is_best`) as copies of it, then removes epoch files beyond the last K.
    pub fn save_epoch(&self, ckpt: &Checkpoint, is_best: bool) -> Result<()> {
        self.create_dir()?;
        if self.keep_last == 0 {
            self.save_last(ckpt)?;
            if is_best {
                files::copy_atomically(&self.last_path(), &self.best_path())?;
            }
            return Ok(());
        }
        let epoch_file = self.epoch_path(ckpt.epoch);
        ckpt.save(&epoch_file)?;
        files::copy_atomically(&epoch_file, &self.last_path())?;
        if is_best {
            files::copy_atomically(&epoch_file, &self.best_path())?;
        }
        self.prune()
    }

    /// The epoch files present, oldest first.
    pub fn epoch_files(&self) -> Result<Vec<PathBuf>> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let mut files: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n = name
                    .strip_prefix(EPOCH_PREFIX)?
                    .strip_suffix(EXTENSION)?
                    .parse()
                    .ok()?;
                Some((n, e.path()))
            })
            .collect();
        files.sort();
        Ok(files.into_iter().map(|(_, p)| p).collect())
    }

    fn prune(&self) -> Result<()> {
        let files = self.epoch_files()?;
        let excess = files.len().saturating_sub(self.keep_last);
        for f in &files[..excess] {
            fs::remove_file(f).map_err(|e| Error::io(f, e))?;
        }
        Ok(())
    }
}
