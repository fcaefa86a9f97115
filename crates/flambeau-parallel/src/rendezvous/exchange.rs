//! The rendezvous of a multi-process launch: every rank joins, then rank 0's id (NCCL's
//! unique id) reaches every other rank.

use std::time::{Duration, Instant};

use super::{LaunchEnv, StoreClient, StoreServer};
use crate::collective::JoinBoard;
use crate::{Error, Result};

/// The size of an NCCL unique id (`ncclUniqueId`, `NCCL_UNIQUE_ID_BYTES`).
pub const ID_BYTES: usize = 128;

/// Where flambeau's keys live in the store (other users of torchrun's store have their own).
const NS: &str = "flambeau";

/// One rank's membership of a multi-process launch, after every rank has joined: the store
/// connection (and, on rank 0 without torchrun's agent store, the store itself) that later
/// steps use.
///
/// Rank 0 must keep its `Rendezvous` alive while others may still talk to the store: when it
/// hosts the store, dropping it closes the store.
#[derive(Debug)]
pub struct Rendezvous {
    env: LaunchEnv,
    timeout: Duration,
    client: Option<StoreClient>,
    server: Option<StoreServer>,
}

impl Rendezvous {
    /// Joins the launch described by `env`: rank 0 hosts a TCPStore on `MASTER_PORT` unless
    /// torchrun's agent already does (`TORCHELASTIC_USE_AGENT_STORE=True`); every rank
    /// connects to `MASTER_ADDR:MASTER_PORT` (retrying while the host is not up yet), sets
    /// `flambeau/joined/<rank>` and waits for every other rank's key. Everything must happen
    /// within `timeout`: otherwise [`Error::StoreConnect`] (the store never came up) or
    /// [`Error::RendezvousTimeout`] naming the ranks that never joined.
    ///
    /// With `WORLD_SIZE = 1` nothing is started or contacted.
    pub fn join(env: &LaunchEnv, timeout: Duration) -> Result<Self> {
        let start = Instant::now();
        let mut me = Self {
            env: env.clone(),
            timeout,
            client: None,
            server: None,
        };
        if env.world_size == 1 {
            return Ok(me);
        }
        let (Some(host), Some(port)) = (env.master_addr.clone(), env.master_port) else {
            return Err(Error::Rendezvous(
                "MASTER_ADDR and MASTER_PORT are needed when WORLD_SIZE > 1".into(),
            ));
        };
        let (host, hint) = if env.hosts_store() {
            me.server = Some(StoreServer::bind(port)?);
            // The host talks to its own store over loopback.
            ("127.0.0.1".to_owned(), " (this rank hosts it)")
        } else if env.use_agent_store {
            (
                host,
                " (torchrun's agent hosts it: is the launcher still running?)",
            )
        } else {
            (host, " (rank 0 hosts it: has rank 0 started?)")
        };
        let mut client = StoreClient::connect_with_hint(&host, port, timeout, hint)?;
        // As PyTorch's own clients do, so that a PyTorch host waiting for its workers
        // counts this one.
        client.announce_worker()?;
        let rank = env.rank;
        client.set(&format!("{NS}/joined/{rank}"), b"1")?;
        me.client = Some(client);
        let left = timeout.saturating_sub(start.elapsed());
        // The message gives the whole timeout, of which connecting used a part.
        me.agree("join", &format!("{NS}/joined"), left, timeout)?;
        Ok(me)
    }

    /// The launch this rendezvous belongs to.
    pub fn env(&self) -> &LaunchEnv {
        &self.env
    }

    /// The timeout of each later step.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connection to the store (`None` when `WORLD_SIZE = 1`), for further exchanges.
    pub fn client(&mut self) -> Option<&mut StoreClient> {
        self.client.as_mut()
    }

    /// Whether this rank hosts the store.
    pub fn hosts_store(&self) -> bool {
        self.server.is_some()
    }

    /// Rank 0's `id` on every rank, under `name` (e.g. `"nccl_id"`; use a new name for each
    /// exchange): rank 0 passes `Some(id)` and `set`s it, the others pass `None` and `get` it
    /// (waiting for it). Rank 0 then waits until every rank has read it, so that it can drop
    /// the store safely; a rank that never reads it is named in [`Error::RendezvousTimeout`].
    pub fn exchange_id(
        &mut self,
        name: &str,
        id: Option<[u8; ID_BYTES]>,
    ) -> Result<[u8; ID_BYTES]> {
        let rank = self.env.rank;
        if rank == 0 && id.is_none() {
            return Err(Error::Rendezvous(
                "exchange_id: rank 0 must provide the id".into(),
            ));
        }
        let Some(client) = self.client.as_mut() else {
            // WORLD_SIZE = 1: rank 0 is the only rank.
            return id.ok_or_else(|| Error::Rendezvous("exchange_id: no id on rank 0".into()));
        };
        let key = format!("{NS}/{name}/id");
        let read_prefix = format!("{NS}/{name}/read");
        if let (0, Some(id)) = (rank, id) {
            client.set(&key, &id)?;
            let timeout = self.timeout;
            self.wait_for_all("id read", &read_prefix, timeout, timeout, Some(0))?;
            return Ok(id);
        }
        let bytes = match client.get(&key) {
            Err(Error::StoreTimeout { addr, timeout, .. }) => {
                return Err(Error::RendezvousTimeout {
                    step: "id",
                    missing: vec![0],
                    joined: (1..self.env.world_size).collect(),
                    world: self.env.world_size,
                    addr,
                    timeout,
                })
            }
            other => other?,
        };
        let got: [u8; ID_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            Error::Rendezvous(format!(
                "exchange_id: the value under `{key}` has {} bytes, not {ID_BYTES}",
                bytes.len()
            ))
        })?;
        client.set(&format!("{read_prefix}/{rank}"), b"1")?;
        Ok(got)
    }

    /// Waits until every rank has called `barrier(name)` (use a new name each time), or
    /// names the ranks that did not within the timeout.
    pub fn barrier(&mut self, name: &str) -> Result<()> {
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        let prefix = format!("{NS}/barrier/{name}");
        client.set(&format!("{prefix}/{}", self.env.rank), b"1")?;
        let timeout = self.timeout;
        self.agree("barrier", &prefix, timeout, timeout)
    }

    /// The board on which the ranks mark that they reached NCCL's init for the group whose id
    /// was exchanged under `name`: keys `flambeau/<name>/nccl_joined/<rank>` in the store, so
    /// that a rank whose init times out names the ranks that never got there
    /// ([`Error::NcclInitTimeout`]).
    pub fn nccl_board(&mut self, name: &str) -> StoreBoard<'_> {
        StoreBoard {
            prefix: format!("{NS}/{name}/nccl_joined"),
            rendezvous: self,
        }
    }

    /// The ranks whose `<prefix>/<r>` key is missing, and those whose key exists.
    fn census(
        client: &mut StoreClient,
        prefix: &str,
        world: usize,
        skip: Option<usize>,
    ) -> Result<(Vec<usize>, Vec<usize>)> {
        let mut missing = Vec::new();
        let mut joined = Vec::new();
        for r in 0..world {
            if Some(r) == skip || client.check(&[&format!("{prefix}/{r}")])? {
                joined.push(r);
            } else {
                missing.push(r);
            }
        }
        Ok((missing, joined))
    }

    /// Waits (at most `timeout`) for `<prefix>/<r>` for every rank `r` but `skip` (this
    /// rank alone waits); on timeout, names the ranks whose key is missing, saying they had
    /// `reported` to arrive.
    fn wait_for_all(
        &mut self,
        step: &'static str,
        prefix: &str,
        timeout: Duration,
        reported: Duration,
        skip: Option<usize>,
    ) -> Result<()> {
        let world = self.env.world_size;
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        let keys: Vec<String> = (0..world)
            .filter(|&r| Some(r) != skip)
            .map(|r| format!("{prefix}/{r}"))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        match client.wait_timeout(&refs, timeout) {
            Ok(()) => Ok(()),
            Err(Error::StoreTimeout { addr, .. }) => {
                let (missing, joined) = Self::census(client, prefix, world, skip)?;
                Err(Error::RendezvousTimeout {
                    step,
                    missing,
                    joined,
                    world,
                    addr,
                    timeout: reported,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// A step every rank takes (this rank has set `<prefix>/<rank>`): the ranks agree on
    /// one verdict under `<prefix>/verdict`, written once (COMPARE_SET) by the last rank to
    /// arrive (`ok`) or by the first whose timeout expires (the missing ranks). Every rank
    /// waits for the verdict, so that when one rank gives up, all of them stop at once with
    /// the same message, even the ones that started later (and before the store's host,
    /// which gives up first, goes away).
    fn agree(
        &mut self,
        step: &'static str,
        prefix: &str,
        timeout: Duration,
        reported: Duration,
    ) -> Result<()> {
        let world = self.env.world_size;
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        let verdict_key = format!("{prefix}/verdict");
        let arrived = client.add(&format!("{prefix}/count"), 1)?;
        if arrived >= world as i64 {
            client.compare_set(&verdict_key, b"", b"ok")?;
        }
        let verdict = match client.wait_timeout(&[&verdict_key], timeout) {
            Ok(()) => client.get(&verdict_key)?,
            Err(Error::StoreTimeout { .. }) => {
                let (missing, joined) = Self::census(client, prefix, world, None)?;
                let mine = format!("missing={};joined={}", list(&missing), list(&joined));
                client.compare_set(&verdict_key, b"", mine.as_bytes())?
            }
            Err(e) => return Err(e),
        };
        if verdict == b"ok" {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&verdict);
        let parse = |field: &str| -> Vec<usize> {
            text.split(';')
                .find_map(|p| p.strip_prefix(field))
                .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
                .unwrap_or_default()
        };
        Err(Error::RendezvousTimeout {
            step,
            missing: parse("missing="),
            joined: parse("joined="),
            world,
            addr: client.addr().to_owned(),
            timeout: reported,
        })
    }
}

/// The [`JoinBoard`] of a multi-process launch, in its TCPStore ([`Rendezvous::nccl_board`]).
#[derive(Debug)]
pub struct StoreBoard<'a> {
    rendezvous: &'a mut Rendezvous,
    prefix: String,
}

impl JoinBoard for StoreBoard<'_> {
    fn mark_joined(&mut self, rank: usize) -> Result<()> {
        match self.rendezvous.client.as_mut() {
            Some(client) => client.set(&format!("{}/{rank}", self.prefix), b"1"),
            None => Ok(()), // WORLD_SIZE = 1
        }
    }

    fn missing(&mut self, world: usize) -> Result<Vec<usize>> {
        let me = self.rendezvous.env.rank;
        match self.rendezvous.client.as_mut() {
            Some(client) => Ok(Rendezvous::census(client, &self.prefix, world, None)?.0),
            None => Ok((0..world).filter(|&r| r != me).collect()),
        }
    }
}

impl Drop for Rendezvous {
    fn drop(&mut self) {
        // The host closes its store only once the other ranks have hung up (or after a
        // grace period), so that they read the last verdict rather than a closed connection.
        self.client = None;
        if let Some(server) = self.server.take() {
            server.linger(self.timeout.min(Duration::from_secs(10)));
        }
    }
}

fn list(ranks: &[usize]) -> String {
    ranks
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Joins the launch and exchanges one NCCL-style id: [`Rendezvous::join`] then
/// [`Rendezvous::exchange_id`] under `"nccl_id"`, all within `timeout` per step. Rank 0 passes
/// `Some(id)`; every rank gets rank 0's id. Rank 0 returns once every rank has read the id
/// (so that its store may close).
pub fn exchange_id(
    env: &LaunchEnv,
    id_of_rank0: Option<[u8; ID_BYTES]>,
    timeout: Duration,
) -> Result<[u8; ID_BYTES]> {
    let mut rdv = Rendezvous::join(env, timeout)?;
    rdv.exchange_id("nccl_id", id_of_rank0)
}
