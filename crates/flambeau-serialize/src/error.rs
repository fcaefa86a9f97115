//! The error type of flambeau-serialize: every way a file can be wrong, with context.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong reading or writing a checkpoint.
#[derive(Debug, Error)]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Writing the user's file failed (the message names it, not the temporary file).
    #[error("cannot write {path}: {source}{hint}")]
    Write {
        /// The path the user asked to write.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
        /// The likely cause, when known (` (the directory … does not exist; create it first)`).
        hint: String,
    },
    /// The output exists and is not a regular file; saving would replace it.
    #[error("refusing to write {path}: it is {what}, and saving replaces the file at that path; give the path of a regular file (a new one, or a checkpoint to overwrite)")]
    NotAFileOutput {
        /// The path the user asked to write.
        path: PathBuf,
        /// What it is (`a character device`, `a directory`, …).
        what: String,
    },
    /// A directory was given where a checkpoint file was expected.
    #[error("{0} is a directory, expected a .pth/.safetensors file")]
    InputIsADirectory(PathBuf),
    /// Neither a zip archive nor a legacy PyTorch stream.
    #[error("not a PyTorch checkpoint: {0}")]
    NotACheckpoint(String),
    /// A TorchScript archive (`torch.jit.save`) whose state dict could not be recovered.
    #[error("this is a TorchScript archive (torch.jit.save) and its state dict could not be recovered: {0}. In PyTorch: `torch.save(torch.jit.load(path).state_dict(), 'weights.pth')`")]
    TorchScript(String),
    /// A sharded checkpoint (index JSON + shards) that is incomplete or inconsistent.
    #[error("sharded checkpoint {index}: {message}")]
    Sharded {
        /// The index file.
        index: PathBuf,
        /// What is wrong, and the fix.
        message: String,
    },
    /// The zip structure is broken or unsupported.
    #[error("corrupt or unsupported zip archive: {0}")]
    Zip(String),
    /// A record the pickle refers to is not in the archive.
    #[error("the archive has no record `{0}` (truncated or corrupt file?)")]
    MissingRecord(String),
    /// The file ends before a structure it announces.
    #[error("truncated file: {0}")]
    Truncated(String),
    /// The pickle is malformed.
    #[error("malformed pickle at byte {offset}: {message}")]
    Pickle {
        /// Offset in the pickle stream.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// A storage dtype flambeau cannot represent.
    #[error("unsupported storage type `{0}`")]
    UnsupportedDtype(String),
    /// A tensor's view reaches past its storage.
    #[error("tensor view needs {needed} elements of storage `{key}`, which has {available}")]
    StorageTooSmall {
        /// The storage key.
        key: String,
        /// Elements the view needs.
        needed: usize,
        /// Elements the storage has.
        available: usize,
    },
    /// A value that cannot be written so that `torch.load` (weights_only) accepts it.
    #[error("cannot write {0}")]
    Unwritable(String),
    /// No state dict in the file.
    #[error("{0}")]
    NoStateDict(String),
    /// A file could not be read (the source says why).
    #[error("reading {path}")]
    Reading {
        /// The file.
        path: PathBuf,
        /// Why (boxed: the error type is recursive).
        #[source]
        source: Box<Error>,
    },
    /// A top-level entry that the file does not have.
    #[error("{key}: no such top-level entry (the file has: {})", available.join(", "))]
    NoSuchEntry {
        /// The entry asked for.
        key: String,
        /// The file's top-level string keys.
        available: Vec<String>,
    },
    /// A training checkpoint that cannot be used.
    #[error("{0}")]
    Checkpoint(String),
    /// From safetensors.
    #[error("safetensors: {0}")]
    Safetensors(String),
    /// From Candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// From flambeau-core.
    #[error(transparent)]
    Core(#[from] flambeau_core::Error),
}

/// `Result` with flambeau-serialize's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
