//! A safe pickle virtual machine (reading) and a protocol-2 pickler (writing).
//!
//! The reader executes nothing: a fixed table of known globals ([`globals`]) rebuilds tensors
//! and the containers PyTorch uses; every other class becomes an inert `Value::Object`.

pub mod globals;
pub mod types;
pub mod vm;
pub mod writer;

pub use types::Resolver;
pub use vm::Vm;
