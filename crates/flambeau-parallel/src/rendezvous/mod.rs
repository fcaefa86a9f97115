//! Multi-process launches by torchrun: the environment it gives each rank ([`LaunchEnv`]),
//! PyTorch's TCPStore protocol ([`StoreClient`], [`StoreServer`]) and the rendezvous built on
//! them ([`Rendezvous`], [`exchange_id`]): every rank joins, rank 0 `set`s a 128-byte id (NCCL's
//! unique id) and the others `get` it, as `ProcessGroupNCCL` does.
//!
//! Who hosts the store: with `TORCHELASTIC_USE_AGENT_STORE=True` (torchrun's default) the
//! agent already hosts it at `MASTER_ADDR:MASTER_PORT` and every rank is a client; otherwise
//! rank 0 hosts it there. The client is interoperable with `torch.distributed.TCPStore`
//! servers and the server with its clients (PyTorch 2.15 is tested).
//!
//! ```no_run
//! use std::time::Duration;
//! use flambeau_parallel::rendezvous::{exchange_id, LaunchEnv};
//!
//! # fn main() -> flambeau_parallel::Result<()> {
//! if let Some(env) = LaunchEnv::from_env()? {
//!     let mine = (env.rank == 0).then(|| [7u8; 128]); // ncclGetUniqueId() on rank 0
//!     let id = exchange_id(&env, mine, Duration::from_secs(300))?;
//!     assert_eq!(id, [7u8; 128]);
//! }
//! # Ok(()) }
//! ```

mod client;
mod env;
mod exchange;
mod server;
mod wire;

pub use client::{StoreClient, INIT_KEY, KEY_PREFIX};
pub use env::LaunchEnv;
pub use exchange::{exchange_id, Rendezvous, StoreBoard, ID_BYTES};
pub use server::StoreServer;
pub use wire::{MAX_KEY_COUNT, MAX_VALUE_BYTES};
