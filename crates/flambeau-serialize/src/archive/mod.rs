//! The containers around the pickle: PyTorch's zip archive (read and write) and the legacy
//! pre-1.6 stream (read).

pub mod legacy;
pub mod zip_reader;
pub mod zip_writer;
