//! [`Resume`]: which checkpoint a run continues from — the run directory's latest (`auto`) or a
//! named file (flambeau's, or a PyTorch training checkpoint in any layout serialize reads).

use std::path::PathBuf;
use std::str::FromStr;

use candle_core::Device;
use flambeau_serialize::{Checkpoint, CheckpointManager, LoadConfig};

use crate::Result;

/// Where to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The run directory's `last.pth` when it exists, else a new run.
    Auto,
    /// This file.
    Path(PathBuf),
}

impl FromStr for Resume {
    type Err = std::convert::Infallible;

    /// `auto`, or a path.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Resume::Auto,
            path => Resume::Path(path.into()),
        })
    }
}

impl Resume {
    /// The file to resume from; `None` for [`Resume::Auto`] in a run directory without a
    /// checkpoint yet.
    pub fn locate(&self, manager: &CheckpointManager) -> Option<PathBuf> {
        match self {
            Resume::Auto => manager.latest(),
            Resume::Path(p) => Some(p.clone()),
        }
    }

    /// [`Resume::locate`], then the checkpoint read onto `device`.
    pub fn open(
        &self,
        manager: &CheckpointManager,
        device: &Device,
    ) -> Result<Option<(PathBuf, Checkpoint)>> {
        let Some(path) = self.locate(manager) else {
            return Ok(None);
        };
        let config = LoadConfig {
            device: device.clone(),
        };
        let ckpt = Checkpoint::load(&path, &config)?;
        Ok(Some((path, ckpt)))
    }
}
