//! A client of PyTorch's TCPStore, speaking its wire protocol.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::wire::{self, Query, ReadError, Request};
use crate::{Error, Result};

/// The prefix PyTorch's `TCPStore` puts before every key a user passes (its `keyPrefix_`), so
/// that `store.set("k", …)` in Python and [`StoreClient::set`]`("k", …)` here name the same
/// entry (`/k` on the wire).
pub const KEY_PREFIX: &str = "/";

/// The key PyTorch's clients `add` 1 to when they connect with a world size
/// (`TCPStore::initKey_`, not prefixed); a Python host created with `wait_for_workers=True`
/// waits for it to reach the world size.
pub const INIT_KEY: &str = "init/";

/// A connection to a TCPStore (PyTorch's, torchrun's agent's, or a [`super::StoreServer`]).
///
/// Every operation is blocking; `get` and `wait` block until their keys exist or the
/// client's timeout expires, the others until the server answers (within the timeout).
#[derive(Debug)]
pub struct StoreClient {
    stream: TcpStream,
    addr: String,
    timeout: Duration,
    broken: Option<String>,
}

impl StoreClient {
    /// Connects to the store at `host:port`, retrying while nothing listens there yet (the
    /// host may still be starting) until `timeout` has passed, then introduces itself as
    /// PyTorch's client does: VALIDATE with the magic number, then PING with a nonce the
    /// server must echo. `timeout` is also the default for every later operation.
    pub fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self> {
        Self::connect_with_hint(host, port, timeout, "")
    }

    /// [`StoreClient::connect`], with `hint` (such as " (rank 0 hosts it)") added to the
    /// timeout's message.
    pub(crate) fn connect_with_hint(
        host: &str,
        port: u16,
        timeout: Duration,
        hint: &str,
    ) -> Result<Self> {
        let addr = format!("{host}:{port}");
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let last_error = match Self::try_connect(host, port, &addr, deadline, timeout) {
                Ok(c) => return Ok(c),
                Err(e) => e,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::StoreConnect {
                    addr,
                    timeout,
                    hint: hint.to_owned(),
                    last_error,
                });
            }
            std::thread::sleep(backoff.min(deadline - now));
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    fn try_connect(
        host: &str,
        port: u16,
        addr: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> std::result::Result<Self, String> {
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("resolving {addr}: {e}"))?
            .collect();
        let mut last = format!("{addr} resolves to no address");
        for sa in addrs {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(50));
            match TcpStream::connect_timeout(&sa, left.min(Duration::from_secs(10))) {
                Ok(stream) => {
                    let mut c = Self {
                        stream,
                        addr: addr.to_owned(),
                        timeout,
                        broken: None,
                    };
                    return c.handshake().map(|()| c).map_err(|e| e.to_string());
                }
                Err(e) => last = format!("{sa}: {e}"),
            }
        }
        Err(last)
    }

    fn handshake(&mut self) -> Result<()> {
        let _ = self.stream.set_nodelay(true);
        self.send(
            "validate",
            Request::new(Query::Validate).u32(wire::VALIDATION_MAGIC),
        )?;
        let nonce = std::process::id();
        self.send("ping", Request::new(Query::Ping).u32(nonce))?;
        let got = self.recv("ping", self.timeout, wire::read_u32)?;
        if got != nonce {
            return Err(self.protocol("ping", format!("sent nonce {nonce}, got {got} back")));
        }
        Ok(())
    }

    /// `host:port` of the store.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The timeout of `get`, `wait` and every reply.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the timeout of later operations.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Stores `value` under `key` (PyTorch's `store.set`), waking every client waiting for it.
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let req = Request::new(Query::Set).bytes(prefixed(key).as_bytes());
        self.send("set", req.bytes(value))
    }

    /// The value under `key`, waiting (WAIT then GET, as PyTorch's client does) until some
    /// client sets it or the timeout expires ([`Error::StoreTimeout`]).
    pub fn get(&mut self, key: &str) -> Result<Vec<u8>> {
        let full = prefixed(key);
        self.wait_raw("get", std::slice::from_ref(&full), self.timeout)?;
        self.send("get", Request::new(Query::Get).bytes(full.as_bytes()))?;
        self.recv("get", self.timeout, wire::read_bytes)
    }

    /// Sets `key` to `desired` if its value is `expected` (an empty `expected` also matches
    /// a missing key) and returns the value stored afterwards (PyTorch's `compare_set`).
    pub fn compare_set(&mut self, key: &str, expected: &[u8], desired: &[u8]) -> Result<Vec<u8>> {
        let req = Request::new(Query::CompareSet)
            .bytes(prefixed(key).as_bytes())
            .bytes(expected)
            .bytes(desired);
        self.send("compare_set", req)?;
        self.recv("compare_set", self.timeout, wire::read_bytes)
    }

    /// Adds `delta` to the integer under `key` (created as 0; stored as decimal text, as
    /// PyTorch does) and returns the new value.
    pub fn add(&mut self, key: &str, delta: i64) -> Result<i64> {
        self.add_raw(&prefixed(key), delta)
    }

    /// Announces this client as one of the store's workers, as a PyTorch client created
    /// with a world size does on connecting (`add("init/", 1)`, unprefixed). Returns the
    /// number of workers announced so far.
    pub fn announce_worker(&mut self) -> Result<i64> {
        self.add_raw(INIT_KEY, 1)
    }

    fn add_raw(&mut self, full_key: &str, delta: i64) -> Result<i64> {
        let req = Request::new(Query::Add)
            .bytes(full_key.as_bytes())
            .i64(delta);
        self.send("add", req)?;
        self.recv("add", self.timeout, wire::read_i64)
    }

    /// Whether every key exists now (no waiting).
    pub fn check(&mut self, keys: &[&str]) -> Result<bool> {
        let mut req = Request::new(Query::Check).u64(keys.len() as u64);
        for k in keys {
            req = req.bytes(prefixed(k).as_bytes());
        }
        self.send("check", req)?;
        match self.recv("check", self.timeout, wire::read_u8)? {
            wire::CHECK_READY => Ok(true),
            wire::CHECK_NOT_READY => Ok(false),
            other => Err(self.protocol("check", format!("unexpected reply {other}"))),
        }
    }

    /// Waits until every key exists, for at most the client's timeout.
    pub fn wait(&mut self, keys: &[&str]) -> Result<()> {
        self.wait_timeout(keys, self.timeout)
    }

    /// Waits until every key exists, for at most `timeout` ([`Error::StoreTimeout`] then).
    pub fn wait_timeout(&mut self, keys: &[&str], timeout: Duration) -> Result<()> {
        let full: Vec<String> = keys.iter().map(|k| prefixed(k)).collect();
        self.wait_raw("wait", &full, timeout)
    }

    /// Deletes `key`; whether it existed.
    pub fn delete_key(&mut self, key: &str) -> Result<bool> {
        self.send(
            "delete_key",
            Request::new(Query::DeleteKey).bytes(prefixed(key).as_bytes()),
        )?;
        Ok(self.recv("delete_key", self.timeout, wire::read_i64)? == 1)
    }

    /// The number of keys in the store (every client's, PyTorch's `init/` included).
    pub fn num_keys(&mut self) -> Result<i64> {
        self.send("num_keys", Request::new(Query::GetNumKeys))?;
        self.recv("num_keys", self.timeout, wire::read_i64)
    }

    /// WAIT as PyTorch's `TCPStore::doWait`: on timeout, CANCEL_WAIT and drain the replies so
    /// that the connection stays usable.
    fn wait_raw(&mut self, op: &'static str, keys: &[String], timeout: Duration) -> Result<()> {
        let mut req = Request::new(Query::Wait).u64(keys.len() as u64);
        for k in keys {
            req = req.bytes(k.as_bytes());
        }
        self.send(op, req)?;
        self.check_usable(op)?;
        let _ = self.stream.set_read_timeout(Some(nonzero(timeout)));
        let mut b = [0u8; 1];
        match io::Read::read_exact(&mut self.stream, &mut b) {
            Ok(()) if b[0] == wire::STOP_WAITING => return Ok(()),
            Ok(()) => {
                return Err(self.protocol(op, format!("unexpected reply {} to WAIT", b[0])));
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(self.io(op, ReadError::Io(e))),
        }
        // Timed out: cancel, as PyTorch's client does, and expect WAIT_CANCELED (possibly
        // after a STOP_WAITING that crossed the cancel on the wire).
        self.send(op, Request::new(Query::CancelWait))?;
        let mut reply = self.recv(op, self.timeout, wire::read_u8)?;
        if reply == wire::STOP_WAITING {
            reply = self.recv(op, self.timeout, wire::read_u8)?;
        }
        if reply != wire::WAIT_CANCELED {
            return Err(self.protocol(op, format!("unexpected reply {reply} to CANCEL_WAIT")));
        }
        Err(Error::StoreTimeout {
            addr: self.addr.clone(),
            op,
            keys: keys.to_vec(),
            timeout,
        })
    }

    fn check_usable(&self, op: &'static str) -> Result<()> {
        match &self.broken {
            Some(why) => Err(Error::Store {
                addr: self.addr.clone(),
                op,
                message: format!("the connection is no longer usable: {why}"),
            }),
            None => Ok(()),
        }
    }

    fn send(&mut self, op: &'static str, req: Request) -> Result<()> {
        self.check_usable(op)?;
        let _ = self.stream.set_write_timeout(Some(nonzero(self.timeout)));
        if let Err(e) = self.stream.write_all(&req.0) {
            return Err(self.io(op, ReadError::Io(e)));
        }
        Ok(())
    }

    fn recv<T>(
        &mut self,
        op: &'static str,
        timeout: Duration,
        read: impl FnOnce(&mut TcpStream) -> std::result::Result<T, ReadError>,
    ) -> Result<T> {
        self.check_usable(op)?;
        let _ = self.stream.set_read_timeout(Some(nonzero(timeout)));
        read(&mut self.stream).map_err(|e| self.io(op, e))
    }

    /// A failed read or write leaves the stream at an unknown position: later operations
    /// report the first failure instead of misreading.
    fn io(&mut self, op: &'static str, e: ReadError) -> Error {
        let message = match &e {
            ReadError::Io(io) if is_timeout(io) => format!(
                "no reply within {}s (the store host may be gone)",
                self.timeout.as_secs_f64()
            ),
            _ => e.to_string(),
        };
        self.broken = Some(format!("{op}: {message}"));
        Error::Store {
            addr: self.addr.clone(),
            op,
            message,
        }
    }

    fn protocol(&mut self, op: &'static str, message: String) -> Error {
        self.io(op, ReadError::Protocol(message))
    }
}

fn prefixed(key: &str) -> String {
    format!("{KEY_PREFIX}{key}")
}

fn nonzero(d: Duration) -> Duration {
    d.max(Duration::from_millis(1))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
