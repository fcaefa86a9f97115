//! The error type of flambeau-vision.

use std::path::PathBuf;

use thiserror::Error;

/// What can go wrong building models or reading data.
#[derive(Debug, Error)]
pub enum Error {
    /// From flambeau-core (parameter registration, …).
    #[error(transparent)]
    Core(#[from] flambeau_core::Error),
    /// From Candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// An image could not be decoded.
    #[error("{path}: cannot decode image: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: image::ImageError,
    },
    /// A dataset is malformed (wrong size, no classes, …).
    #[error("{0}")]
    Dataset(String),
    /// The data a [`DataSpec`](crate::data::DataSpec) names could not be opened.
    #[error("{needs}")]
    DataSpec {
        /// What the spec needs (`cifar10:DIR must hold the binary version …`).
        needs: String,
        /// Why it could not be opened.
        #[source]
        source: Box<Error>,
    },
    /// An invalid model or loader configuration.
    #[error("{0}")]
    Config(String),
    /// A checkpoint file could not be read.
    #[error("{path}: {source}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What the reader said (boxed: it is large, and rare).
        #[source]
        source: Box<flambeau_serialize::Error>,
    },
    /// A checkpoint that does not hold a torchvision ResNet (or not one that can be told).
    #[error("{path}: {reason}")]
    NotAResNet {
        /// The file.
        path: PathBuf,
        /// What is missing, and the fix.
        reason: String,
    },
    /// The checkpoint's weights do not fit the model (PyTorch's message plus the diagnosis).
    #[error("loading {path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// `load_state_dict`'s error (boxed: the enclosing error stays small;
        /// [`flambeau_core::Error::incompatible`] gives the key report and the diagnosis).
        #[source]
        source: Box<flambeau_core::Error>,
    },
}

/// `Result` with flambeau-vision's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
