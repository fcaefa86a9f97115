//! The environment a multi-process launcher (torchrun, or anything that sets the same
//! variables) gives each rank.

use std::collections::HashMap;
use std::ffi::OsString;

use crate::{Error, Result};

/// What torchrun tells one rank: who it is, how many there are, and where the TCPStore is.
///
/// torchrun sets `RANK`, `LOCAL_RANK`, `GROUP_RANK`, `WORLD_SIZE`, `LOCAL_WORLD_SIZE`,
/// `MASTER_ADDR`, `MASTER_PORT` and `TORCHELASTIC_USE_AGENT_STORE` for every process it starts.
/// Only `RANK` and `WORLD_SIZE` are required; the others default to a one-node launch
/// (`LOCAL_RANK = RANK`, `LOCAL_WORLD_SIZE = WORLD_SIZE`, `GROUP_RANK = 0`), and
/// `MASTER_ADDR` / `MASTER_PORT` are required only when `WORLD_SIZE > 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    /// `RANK`: this process's rank, `0..world_size`.
    pub rank: usize,
    /// `WORLD_SIZE`: the number of processes.
    pub world_size: usize,
    /// `LOCAL_RANK`: the rank on this node (the GPU to use, one process per GPU).
    pub local_rank: usize,
    /// `LOCAL_WORLD_SIZE`: the number of processes on this node.
    pub local_world_size: usize,
    /// `GROUP_RANK`: this node's rank.
    pub group_rank: usize,
    /// `MASTER_ADDR`: the host of the TCPStore (`None` only when `WORLD_SIZE = 1`).
    pub master_addr: Option<String>,
    /// `MASTER_PORT`: the TCPStore's port (`None` only when `WORLD_SIZE = 1`).
    pub master_port: Option<u16>,
    /// `TORCHELASTIC_USE_AGENT_STORE=True`: torchrun's agent already hosts the TCPStore at
    /// `MASTER_ADDR:MASTER_PORT` and every rank is a client; otherwise rank 0 hosts it.
    pub use_agent_store: bool,
}

impl LaunchEnv {
    /// Reads the process environment. `Ok(None)` when the process was not started by a
    /// launcher (neither `RANK` nor `WORLD_SIZE` is set).
    pub fn from_env() -> Result<Option<Self>> {
        Self::parse(|name| std::env::var_os(name))
    }

    /// Reads the variables from `(name, value)` pairs instead of the process environment
    /// (for tests, and for launchers that pass them otherwise). Later pairs win.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Option<Self>>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let map: HashMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::parse(|name| map.get(name).map(OsString::from))
    }

    /// Whether this rank hosts the TCPStore: rank 0, unless torchrun's agent already does.
    pub fn hosts_store(&self) -> bool {
        self.rank == 0 && !self.use_agent_store && self.world_size > 1
    }

    /// `MASTER_ADDR:MASTER_PORT` (for messages), or `None` when `WORLD_SIZE = 1` left them out.
    pub fn store_addr(&self) -> Option<String> {
        match (&self.master_addr, self.master_port) {
            (Some(a), Some(p)) => Some(format!("{a}:{p}")),
            _ => None,
        }
    }

    fn parse(get: impl Fn(&str) -> Option<OsString>) -> Result<Option<Self>> {
        let text = |var: &'static str| -> Result<Option<String>> {
            match get(var) {
                None => Ok(None),
                Some(v) => match v.into_string() {
                    Ok(s) => Ok(Some(s.trim().to_owned())),
                    Err(v) => Err(bad(var, &v.to_string_lossy(), "not valid UTF-8")),
                },
            }
        };
        let rank_s = text("RANK")?;
        let world_s = text("WORLD_SIZE")?;
        let (rank_s, world_s) = match (rank_s, world_s) {
            (None, None) => return Ok(None),
            (Some(_), None) => {
                return Err(bad("WORLD_SIZE", "", "missing, but RANK is set"));
            }
            (None, Some(_)) => return Err(bad("RANK", "", "missing, but WORLD_SIZE is set")),
            (Some(r), Some(w)) => (r, w),
        };
        let world_size = number("WORLD_SIZE", &world_s)?;
        if world_size == 0 {
            return Err(bad("WORLD_SIZE", &world_s, "must be at least 1"));
        }
        let rank = number("RANK", &rank_s)?;
        if rank >= world_size {
            return Err(bad(
                "RANK",
                &rank_s,
                &format!("must be less than WORLD_SIZE={world_size}"),
            ));
        }
        let local_world_size = match text("LOCAL_WORLD_SIZE")? {
            Some(s) => {
                let n = number("LOCAL_WORLD_SIZE", &s)?;
                if n == 0 || n > world_size {
                    return Err(bad(
                        "LOCAL_WORLD_SIZE",
                        &s,
                        &format!("must be in 1..={world_size} (WORLD_SIZE)"),
                    ));
                }
                n
            }
            None => world_size,
        };
        let local_rank = match text("LOCAL_RANK")? {
            Some(s) => {
                let n = number("LOCAL_RANK", &s)?;
                if n >= local_world_size {
                    return Err(bad(
                        "LOCAL_RANK",
                        &s,
                        &format!("must be less than LOCAL_WORLD_SIZE={local_world_size}"),
                    ));
                }
                n
            }
            None if local_world_size == world_size => rank,
            None => {
                return Err(bad(
                    "LOCAL_RANK",
                    "",
                    "missing, but LOCAL_WORLD_SIZE is less than WORLD_SIZE",
                ))
            }
        };
        let group_rank = match text("GROUP_RANK")? {
            Some(s) => number("GROUP_RANK", &s)?,
            None => 0,
        };
        let master_addr = text("MASTER_ADDR")?.filter(|s| !s.is_empty());
        let master_port = match text("MASTER_PORT")? {
            Some(s) if !s.is_empty() => match s.parse::<u16>() {
                Ok(0) => return Err(bad("MASTER_PORT", &s, "port 0 cannot be connected to")),
                Ok(p) => Some(p),
                Err(_) => return Err(bad("MASTER_PORT", &s, "not a port number (1..=65535)")),
            },
            _ => None,
        };
        if world_size > 1 {
            if master_addr.is_none() {
                return Err(bad(
                    "MASTER_ADDR",
                    "",
                    &format!("missing, but WORLD_SIZE={world_size} needs a TCPStore host"),
                ));
            }
            if master_port.is_none() {
                return Err(bad(
                    "MASTER_PORT",
                    "",
                    &format!("missing, but WORLD_SIZE={world_size} needs a TCPStore port"),
                ));
            }
        }
        let use_agent_store = match text("TORCHELASTIC_USE_AGENT_STORE")?.as_deref() {
            None | Some("") | Some("False") | Some("false") | Some("0") => false,
            Some("True") | Some("true") | Some("1") => true,
            Some(other) => {
                return Err(bad(
                    "TORCHELASTIC_USE_AGENT_STORE",
                    other,
                    "expected True or False",
                ))
            }
        };
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            local_world_size,
            group_rank,
            master_addr,
            master_port,
            use_agent_store,
        }))
    }
}

fn bad(var: &'static str, value: &str, reason: &str) -> Error {
    Error::LaunchEnv {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn number(var: &'static str, s: &str) -> Result<usize> {
    s.parse::<usize>()
        .map_err(|_| bad(var, s, "not a non-negative integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<LaunchEnv>> {
        LaunchEnv::from_vars(pairs.iter().map(|&(k, v)| (k, v)))
    }

    fn err_var(pairs: &[(&str, &str)]) -> (&'static str, String) {
        match env(pairs) {
            Err(Error::LaunchEnv { var, reason, .. }) => (var, reason),
            other => panic!("expected a LaunchEnv error, got {other:?}"),
        }
    }

    #[test]
    fn not_launched() {
        assert_eq!(env(&[("HOME", "/root")]).unwrap(), None);
    }

    #[test]
    fn torchrun_two_ranks() {
        let e = env(&[
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("GROUP_RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "localhost"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank), (1, 2, 1));
        assert_eq!(e.store_addr().as_deref(), Some("localhost:29500"));
        assert!(e.use_agent_store);
        assert!(!e.hosts_store());
    }

    #[test]
    fn rank0_hosts_without_agent_store() {
        let e = env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "3"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap()
        .unwrap();
        assert!(e.hosts_store());
        assert_eq!((e.local_rank, e.local_world_size, e.group_rank), (0, 3, 0));
    }

    #[test]
    fn single_process_needs_no_store() {
        let e = env(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap().unwrap();
        assert_eq!(e.master_addr, None);
        assert!(!e.hosts_store());
    }

    #[test]
    fn malformed_values() {
        assert_eq!(err_var(&[("RANK", "0")]).0, "WORLD_SIZE");
        assert_eq!(err_var(&[("WORLD_SIZE", "2")]).0, "RANK");
        assert_eq!(err_var(&[("RANK", "x"), ("WORLD_SIZE", "2")]).0, "RANK");
        assert_eq!(err_var(&[("RANK", "-1"), ("WORLD_SIZE", "2")]).0, "RANK");
        assert_eq!(
            err_var(&[("RANK", "0"), ("WORLD_SIZE", "0")]).0,
            "WORLD_SIZE"
        );
        let (var, reason) = err_var(&[("RANK", "2"), ("WORLD_SIZE", "2")]);
        assert_eq!(var, "RANK");
        assert!(reason.contains("WORLD_SIZE=2"), "{reason}");
        assert_eq!(
            err_var(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")]).0,
            "MASTER_ADDR"
        );
        assert_eq!(
            err_var(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]).0,
            "MASTER_PORT"
        );
        let base = [
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "70000"),
        ];
        assert_eq!(err_var(&base).0, "MASTER_PORT");
        let mut v = base.to_vec();
        v[3] = ("MASTER_PORT", "0");
        assert_eq!(err_var(&v).0, "MASTER_PORT");
        v[3] = ("MASTER_PORT", "29500");
        v.push(("TORCHELASTIC_USE_AGENT_STORE", "maybe"));
        assert_eq!(err_var(&v).0, "TORCHELASTIC_USE_AGENT_STORE");
        v.pop();
        v.push(("LOCAL_RANK", "2"));
        assert_eq!(err_var(&v).0, "LOCAL_RANK");
        v.pop();
        v.push(("LOCAL_WORLD_SIZE", "3"));
        assert_eq!(err_var(&v).0, "LOCAL_WORLD_SIZE");
        v.pop();
        v.push(("LOCAL_WORLD_SIZE", "1"));
        assert_eq!(err_var(&v).0, "LOCAL_RANK");
        v.push(("GROUP_RANK", "one"));
        v.push(("LOCAL_RANK", "0"));
        assert_eq!(err_var(&v).0, "GROUP_RANK");
    }

    #[test]
    fn messages_name_the_variable() {
        let e = env(&[("RANK", "5"), ("WORLD_SIZE", "4")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "launch environment: RANK=\"5\": must be less than WORLD_SIZE=4"
        );
    }
}
