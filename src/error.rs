//! [`Error`]: one error type for programs built on the facade.

/// Any error of flambeau's crates (or of candle underneath), so that `?` works across them.
///
/// The crates' errors other than flambeau-core's are boxed (each holds a candle error, which is
/// large), so that this type stays at most 64 bytes; `?` converts the bare errors, and a match
/// reads through the box (`Error::Vision(e) => match &**e { … }`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From flambeau-core: names, state dicts, `load_state_dict` (PyTorch's message plus the
    /// diagnosis; [`flambeau_core::Error::incompatible`] gives the key report), and the layers
    /// and optimizers built on it.
    #[error(transparent)]
    Core(#[from] flambeau_core::Error),
    /// Reading or writing a file.
    #[error(transparent)]
    Serialize(Box<flambeau_serialize::Error>),
    /// Models and datasets.
    #[error(transparent)]
    Vision(Box<flambeau_vision::Error>),
    /// Data parallelism (replicas, collectives).
    #[error(transparent)]
    Parallel(Box<flambeau_parallel::Error>),
    /// The training loop.
    #[error(transparent)]
    Train(Box<flambeau_train::Error>),
    /// candle itself (shapes, devices, dtypes).
    #[error(transparent)]
    Candle(Box<candle_core::Error>),
    /// The operating system.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `From` for the boxed variants, so that `?` takes the bare error.
macro_rules! from_boxed {
    ($($variant:ident($ty:ty)),* $(,)?) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::$variant(Box::new(e))
            }
        }
    )*};
}

from_boxed!(
    Serialize(flambeau_serialize::Error),
    Vision(flambeau_vision::Error),
    Parallel(flambeau_parallel::Error),
    Train(flambeau_train::Error),
    Candle(candle_core::Error),
);

/// `Result` with the facade's [`Error`](enum@Error).
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::Error;

    /// Every `Result` of a program on the facade carries this type: it stays at most 64 bytes
    /// (clippy's `result_large_err` fires at 128), and flambeau-core's at most 56.
    #[test]
    fn errors_stay_small() {
        let facade = std::mem::size_of::<Error>();
        assert!(facade <= 64, "flambeau::Error is {facade} bytes");
        let core = std::mem::size_of::<flambeau_core::Error>();
        assert!(core <= 56, "flambeau_core::Error is {core} bytes");
        eprintln!(
            "flambeau::Error {facade} B, flambeau_core::Error {core} B; boxed inside: serialize {} B, vision {} B, parallel {} B, train {} B, candle {} B",
            std::mem::size_of::<flambeau_serialize::Error>(),
            std::mem::size_of::<flambeau_vision::Error>(),
            std::mem::size_of::<flambeau_parallel::Error>(),
            std::mem::size_of::<flambeau_train::Error>(),
            std::mem::size_of::<candle_core::Error>(),
        );
    }

    /// `?` reaches the facade's error from `load_state_dict` and from the other crates' errors.
    #[test]
    fn question_mark_converts_every_crate_error() {
        fn load() -> crate::Result<()> {
            let vs =
                flambeau_core::VarStore::new(&candle_core::Device::Cpu, candle_core::DType::F32);
            vs.root().param("w", 2, flambeau_core::Init::Const(0.0))?;
            vs.load_state_dict(&flambeau_core::StateDict::new(), &Default::default())?;
            Ok(())
        }
        let err = load().unwrap_err();
        let Error::Core(core) = &err else {
            panic!("{err:?}")
        };
        let keys = core.incompatible().expect("a key report");
        assert_eq!(keys.missing_keys, ["w"]);
        assert!(err
            .to_string()
            .starts_with("Error(s) in loading state_dict for "));

        let candle = candle_core::Error::Msg("x".into());
        assert!(matches!(Error::from(candle), Error::Candle(_)));
        let ser = flambeau_serialize::Error::UnsupportedDtype("x".into());
        assert!(matches!(Error::from(ser), Error::Serialize(_)));
    }
}
