//! [`Error`]: one error type for programs built on the facade.

/// Any error of flambeau's crates (or of candle underneath), so that `?` works across them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From flambeau-core (names, state dicts, layers and optimizers built on it).
    #[error(transparent)]
    Core(#[from] flambeau_core::Error),
    /// `load_state_dict` refused: PyTorch's message plus the diagnosis.
    #[error(transparent)]
    Load(#[from] flambeau_core::LoadError),
    /// Reading or writing a file.
    #[error(transparent)]
    Serialize(#[from] flambeau_serialize::Error),
    /// Models and datasets.
    #[error(transparent)]
    Vision(#[from] flambeau_vision::Error),
    /// Data parallelism (replicas, collectives).
    #[error(transparent)]
    Parallel(#[from] flambeau_parallel::Error),
    /// The training loop.
    #[error(transparent)]
    Train(#[from] flambeau_train::Error),
    /// candle itself (shapes, devices, dtypes).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The operating system.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `Result` with the facade's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;
