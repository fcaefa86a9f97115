//! A minimal TCPStore host, for rank 0 when torchrun's agent does not host one.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::wire::{self, Query, ReadError};
use crate::{Error, Result};

/// A TCPStore server speaking PyTorch's protocol (the commands PyTorch's `TCPStore` client
/// sends: VALIDATE, PING, SET, COMPARE_SET, GET, ADD, CHECK, WAIT, GETNUMKEYS, DELETE_KEY,
/// APPEND, MULTI_GET, MULTI_SET, CANCEL_WAIT), serving every connection on its own thread
/// until it is dropped.
///
/// A peer that breaks the protocol (no VALIDATE first, an unknown command, a length prefix
/// over [`super::MAX_VALUE_BYTES`], …) has its connection closed; the others are unaffected.
#[derive(Debug)]
pub struct StoreServer {
    port: u16,
    stop: Arc<AtomicBool>,
    state: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    data: HashMap<String, Vec<u8>>,
    /// key → the connections waiting for it.
    waiting: HashMap<String, Vec<u64>>,
    /// connection → how many of its awaited keys are still missing.
    awaited: HashMap<u64, usize>,
    /// connection → its write half (also used to shut it down).
    writers: HashMap<u64, TcpStream>,
    next_id: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a connection thread panicked mid-update; the map is
        // still a map.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StoreServer {
    /// Listens on `port` on every interface (IPv6 and IPv4 where the system allows, else
    /// IPv4); port 0 picks a free one ([`StoreServer::port`] says which).
    pub fn bind(port: u16) -> Result<Self> {
        let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
            .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
            .map_err(|e| Error::Store {
                addr: format!("*:{port}"),
                op: "bind",
                message: e.to_string(),
            })?;
        Self::serve(listener)
    }

    /// Serves on an already-bound listener.
    pub fn serve(listener: TcpListener) -> Result<Self> {
        let local = listener.local_addr().map_err(|e| Error::Store {
            addr: "listener".into(),
            op: "bind",
            message: e.to_string(),
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Shared::default());
        let accept = {
            let stop = stop.clone();
            let state = state.clone();
            std::thread::Builder::new()
                .name(format!("tcpstore-accept-{}", local.port()))
                .spawn(move || accept_loop(listener, stop, state))
                .map_err(|e| Error::Store {
                    addr: local.to_string(),
                    op: "spawn",
                    message: e.to_string(),
                })?
        };
        Ok(Self {
            port: local.port(),
            stop,
            state,
            accept: Some(accept),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The number of clients connected now.
    pub fn connections(&self) -> usize {
        self.state.lock().writers.len()
    }

    /// Waits until every client has hung up, or `grace` has passed, then closes the store.
    pub fn linger(self, grace: Duration) {
        let deadline = std::time::Instant::now() + grace;
        while self.connections() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The number of keys stored (as GETNUMKEYS answers).
    pub fn num_keys(&self) -> usize {
        self.state.lock().data.len()
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own, then close every client.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
            Duration::from_millis(500),
        );
        for w in self.state.lock().writers.values() {
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, state: Arc<Shared>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = conn else {
            // Out of descriptors and the like: do not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_nodelay(true);
        // A client that stops reading must not block the others' wake-ups forever.
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        let Ok(writer) = stream.try_clone() else {
            continue;
        };
        let id = {
            let mut s = state.lock();
            s.next_id += 1;
            let id = s.next_id;
            s.writers.insert(id, writer);
            id
        };
        let state = state.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("tcpstore-conn-{id}"))
            .spawn({
                let state = state.clone();
                move || serve_connection(id, stream, &state)
            });
        if spawned.is_err() {
            forget(&state, id);
        }
    }
}

/// Serves one connection until it closes or breaks the protocol.
fn serve_connection(id: u64, stream: TcpStream, state: &Shared) {
    let mut r = BufReader::new(stream);
    // The first message must be VALIDATE with the magic number (as in PyTorch, whose
    // servers treat anything else as a stray client).
    let validated = matches!(wire::read_u8(&mut r), Ok(b) if b == Query::Validate as u8)
        && matches!(wire::read_u32(&mut r), Ok(wire::VALIDATION_MAGIC));
    if validated {
        while let Ok(cmd) = wire::read_u8(&mut r) {
            let Some(q) = Query::from_u8(cmd) else { break };
            if handle(id, q, &mut r, state).is_err() {
                break;
            }
        }
    }
    forget(state, id);
}

/// Drops a connection's wait state and write half.
fn forget(state: &Shared, id: u64) {
    let mut s = state.lock();
    clear_waits(&mut s, id);
    if let Some(w) = s.writers.remove(&id) {
        let _ = w.shutdown(std::net::Shutdown::Both);
    }
}

fn clear_waits(s: &mut State, id: u64) {
    s.awaited.remove(&id);
    s.waiting.retain(|_, ids| {
        ids.retain(|&i| i != id);
        !ids.is_empty()
    });
}

fn reply(s: &mut State, id: u64, bytes: &[u8]) -> std::result::Result<(), ReadError> {
    match s.writers.get_mut(&id) {
        Some(w) => w.write_all(bytes).map_err(ReadError::Io),
        None => Err(ReadError::Protocol("connection gone".into())),
    }
}

/// Stores a value and sends STOP_WAITING to every connection whose last awaited key it was.
fn put(s: &mut State, key: String, value: Vec<u8>) {
    if let Some(ids) = s.waiting.remove(&key) {
        for id in ids {
            let done = match s.awaited.get_mut(&id) {
                Some(n) => {
                    *n = n.saturating_sub(1);
                    *n == 0
                }
                None => false,
            };
            if done {
                s.awaited.remove(&id);
                // A failed wake-up surfaces on that connection's own thread.
                let _ = reply(s, id, &[wire::STOP_WAITING]);
            }
        }
    }
    s.data.insert(key, value);
}

fn encode_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

fn handle(
    id: u64,
    q: Query,
    r: &mut BufReader<TcpStream>,
    state: &Shared,
) -> std::result::Result<(), ReadError> {
    // Read the whole request before taking the lock.
    match q {
        Query::Validate => {
            // A second VALIDATE is harmless; a wrong magic is not.
            if wire::read_u32(r)? != wire::VALIDATION_MAGIC {
                return Err(ReadError::Protocol("bad validation magic".into()));
            }
        }
        Query::Ping => {
            let nonce = wire::read_u32(r)?;
            reply(&mut state.lock(), id, &nonce.to_le_bytes())?;
        }
        Query::Set => {
            let key = wire::read_key(r)?;
            let value = wire::read_bytes(r)?;
            put(&mut state.lock(), key, value);
        }
        Query::CompareSet => {
            let key = wire::read_key(r)?;
            let expected = wire::read_bytes(r)?;
            let desired = wire::read_bytes(r)?;
            let mut s = state.lock();
            let now = match s.data.get(&key) {
                None if expected.is_empty() => {
                    put(&mut s, key, desired.clone());
                    desired
                }
                None => expected,
                Some(cur) if *cur == expected => {
                    put(&mut s, key, desired.clone());
                    desired
                }
                Some(cur) => cur.clone(),
            };
            let mut out = Vec::new();
            encode_bytes(&mut out, &now);
            reply(&mut s, id, &out)?;
        }
        Query::Get => {
            let key = wire::read_key(r)?;
            let mut s = state.lock();
            let mut out = Vec::new();
            encode_bytes(&mut out, s.data.get(&key).map_or(&[][..], |v| v));
            reply(&mut s, id, &out)?;
        }
        Query::Add => {
            let key = wire::read_key(r)?;
            let delta = wire::read_i64(r)?;
            let mut s = state.lock();
            let old = match s.data.get(&key) {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .ok_or_else(|| {
                        ReadError::Protocol(format!("ADD on `{key}`, which is not an integer"))
                    })?,
            };
            let new = old.wrapping_add(delta);
            put(&mut s, key, new.to_string().into_bytes());
            reply(&mut s, id, &new.to_le_bytes())?;
        }
        Query::Check => {
            let keys = wire::read_keys(r)?;
            let mut s = state.lock();
            let ready = keys.iter().all(|k| s.data.contains_key(k));
            let b = if ready {
                wire::CHECK_READY
            } else {
                wire::CHECK_NOT_READY
            };
            reply(&mut s, id, &[b])?;
        }
        Query::Wait => {
            let keys = wire::read_keys(r)?;
            let mut s = state.lock();
            let missing: Vec<String> = keys
                .into_iter()
                .filter(|k| !s.data.contains_key(k))
                .collect();
            if missing.is_empty() {
                reply(&mut s, id, &[wire::STOP_WAITING])?;
            } else {
                // One registration per distinct key.
                let mut distinct = missing;
                distinct.sort();
                distinct.dedup();
                s.awaited.insert(id, distinct.len());
                for k in distinct {
                    s.waiting.entry(k).or_default().push(id);
                }
            }
        }
        Query::GetNumKeys => {
            let mut s = state.lock();
            let n = s.data.len() as i64;
            reply(&mut s, id, &n.to_le_bytes())?;
        }
        Query::DeleteKey => {
            let key = wire::read_key(r)?;
            let mut s = state.lock();
            let n = i64::from(s.data.remove(&key).is_some());
            reply(&mut s, id, &n.to_le_bytes())?;
        }
        Query::Append => {
            let key = wire::read_key(r)?;
            let more = wire::read_bytes(r)?;
            let mut s = state.lock();
            let mut value = s.data.get(&key).cloned().unwrap_or_default();
            if value.len() as u64 + more.len() as u64 > wire::MAX_VALUE_BYTES {
                return Err(ReadError::Protocol(format!(
                    "APPEND would make `{key}` longer than {} bytes",
                    wire::MAX_VALUE_BYTES
                )));
            }
            value.extend_from_slice(&more);
            put(&mut s, key, value);
        }
        Query::MultiGet => {
            let keys = wire::read_keys(r)?;
            let mut s = state.lock();
            let mut out = Vec::new();
            for k in &keys {
                encode_bytes(&mut out, s.data.get(k).map_or(&[][..], |v| v));
            }
            reply(&mut s, id, &out)?;
        }
        Query::MultiSet => {
            let n = wire::read_u64(r)?;
            if n > wire::MAX_KEY_COUNT {
                return Err(ReadError::Protocol(format!("MULTI_SET of {n} keys")));
            }
            let mut pairs = Vec::new();
            for _ in 0..n {
                let k = wire::read_key(r)?;
                let v = wire::read_bytes(r)?;
                pairs.push((k, v));
            }
            let mut s = state.lock();
            for (k, v) in pairs {
                put(&mut s, k, v);
            }
        }
        Query::CancelWait => {
            let mut s = state.lock();
            clear_waits(&mut s, id);
            reply(&mut s, id, &[wire::WAIT_CANCELED])?;
        }
    }
    Ok(())
}
