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
    #[error("not a PyTorch checkpoint: {}{message}", in_file(.path))]
    NotACheckpoint {
        /// The file, when the bytes came from one.
        path: Option<PathBuf>,
        /// What the bytes are instead.
        message: String,
    },
    /// A directory was given that holds no checkpoint file flambeau knows to pick.
    #[error("not a PyTorch checkpoint: {0} is a directory without model.safetensors, pytorch_model.bin or a *.index.json of shards; give the checkpoint file itself")]
    NoCheckpointInDirectory(PathBuf),
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
    /// A safetensors file holds a dtype flambeau cannot represent.
    #[error("unsupported storage type `safetensors {dtype} (tensor `{key}` of {path})`")]
    UnsupportedSafetensorsDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        key: String,
        /// safetensors' name for the dtype (`C64`).
        dtype: String,
    },
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
    /// A sharded save to a path whose file name is not UTF-8, which the shards' names are
    /// built from.
    #[error("cannot write shards named after {0}")]
    UnnamableShards(PathBuf),
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
    #[error("{}{message}", in_file(.path))]
    Checkpoint {
        /// The file, when known.
        path: Option<PathBuf>,
        /// What is wrong, and the fix.
        message: String,
    },
    /// From safetensors.
    #[error("safetensors: {}{message}", in_file(.path))]
    Safetensors {
        /// The file, when the error is about one being read.
        path: Option<PathBuf>,
        /// What safetensors said.
        message: String,
    },
    /// From Candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// From flambeau-core.
    #[error(transparent)]
    Core(#[from] flambeau_core::Error),
}

/// `"{path}: "` when there is a path, so that a message reads `file.pth: what is wrong`.
fn in_file(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

/// `Result` with flambeau-serialize's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// [`Error::NotACheckpoint`] for bytes not (yet) known to come from a file.
    pub(crate) fn not_a_checkpoint(message: impl Into<String>) -> Self {
        Error::NotACheckpoint {
            path: None,
            message: message.into(),
        }
    }

    /// [`Error::Checkpoint`] without a path (the caller that knows the file adds it).
    pub(crate) fn checkpoint(message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: None,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
