//! The host side of joining an NCCL group, compiled and tested without CUDA: how long a rank
//! waits for the others ([`nccl_init_timeout`], `FLAMBEAU_NCCL_INIT_TIMEOUT`), the board on
//! which each rank marks that it reached NCCL's init ([`JoinBoard`]: [`LocalBoard`] for the
//! threads of one process, the TCPStore under torchrun), and the polling loop that waits for a
//! non-blocking NCCL call with a deadline ([`wait_for`]).
//!
//! `ncclCommInitRank` blocks until every rank of the group has called it: a rank that died
//! before joining would hang the others for ever. So the NCCL backend creates non-blocking
//! communicators (`ncclCommInitRankConfig` with `blocking = 0`), polls
//! `ncclCommGetAsyncError` until it is no longer `ncclInProgress`, and, when the deadline
//! passes first, aborts the communicator (`ncclCommAbort`) and reads the board to name the
//! ranks that never arrived ([`crate::Error::NcclInitTimeout`]).

// Without the `nccl` feature only the timeout, the boards and the wording are used (by the
// rendezvous and the errors); the polling loop is still built and tested.
#![cfg_attr(not(feature = "nccl"), allow(dead_code))]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The environment variable that sets how long (in seconds, e.g. `600` or `2.5`) a rank waits
/// in NCCL's init for the other ranks of its group before it gives up and names the missing
/// ones. Unset: the group's own timeout (the process group's under torchrun and mpirun, the
/// replica group's for GPUs of one process), 10 minutes by default as in PyTorch.
pub const NCCL_INIT_TIMEOUT_VAR: &str = "FLAMBEAU_NCCL_INIT_TIMEOUT";

/// How long NCCL's init waits for the group: [`NCCL_INIT_TIMEOUT_VAR`] when it is set, else
/// `default` (the group's timeout). A value that is not a positive number of seconds is an
/// error ([`Error::LaunchEnv`]) rather than silently the default.
pub fn nccl_init_timeout(default: Duration) -> Result<Duration> {
    timeout_from(std::env::var_os(NCCL_INIT_TIMEOUT_VAR), default)
}

/// [`nccl_init_timeout`] given the variable's value.
fn timeout_from(value: Option<std::ffi::OsString>, default: Duration) -> Result<Duration> {
    let Some(value) = value else {
        return Ok(default);
    };
    let bad = |value: String, reason: String| Error::LaunchEnv {
        var: NCCL_INIT_TIMEOUT_VAR,
        value,
        reason,
    };
    match value.into_string() {
        Ok(value) => parse_timeout(&value).map_err(|reason| bad(value, reason)),
        Err(value) => Err(bad(
            value.to_string_lossy().into_owned(),
            "not valid UTF-8".into(),
        )),
    }
}

/// A timeout in seconds: a positive, finite decimal number (`600`, `2.5`).
pub(crate) fn parse_timeout(value: &str) -> std::result::Result<Duration, String> {
    let secs: f64 = value
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds, e.g. 600 or 2.5".to_string())?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err("expected a positive number of seconds".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Where the ranks of a group mark that they reached NCCL's init, so that a rank that gives up
/// waiting can name the ones that never came.
pub trait JoinBoard {
    /// Marks `rank` as having reached NCCL's init (before calling it).
    fn mark_joined(&mut self, rank: usize) -> Result<()>;

    /// The ranks of `0..world` that have not marked themselves.
    fn missing(&mut self, world: usize) -> Result<Vec<usize>>;
}

/// The [`JoinBoard`] of ranks that are threads of one process (a replica group's GPUs):
/// clones share one board.
#[derive(Debug, Clone, Default)]
pub struct LocalBoard {
    joined: Arc<Mutex<Vec<usize>>>,
}

impl LocalBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }
}

impl JoinBoard for LocalBoard {
    fn mark_joined(&mut self, rank: usize) -> Result<()> {
        let mut joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        if !joined.contains(&rank) {
            joined.push(rank);
        }
        Ok(())
    }

    fn missing(&mut self, world: usize) -> Result<Vec<usize>> {
        let joined = self.joined.lock().unwrap_or_else(|e| e.into_inner());
        Ok((0..world).filter(|r| !joined.contains(r)).collect())
    }
}

/// A [`JoinBoard`] that cannot tell who joined (ranks launched by mpirun: MPI already agreed
/// on the id, and mpirun ends every rank when one dies).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBoard;

impl JoinBoard for NoBoard {
    fn mark_joined(&mut self, _rank: usize) -> Result<()> {
        Ok(())
    }

    fn missing(&mut self, _world: usize) -> Result<Vec<usize>> {
        Err(Error::Rendezvous(
            "no board of who joined (launched by mpirun)".into(),
        ))
    }
}

/// What the ranks that gave up know about who is missing: the census of the board, or why it
/// could not be taken. Part of [`Error::NcclInitTimeout`]'s message.
pub(crate) fn census_text(world: usize, missing: &[usize], census_error: Option<&str>) -> String {
    if let Some(why) = census_error {
        return format!("which rank(s) never joined is unknown ({why})");
    }
    match missing {
        [] => format!(
            "every rank of {world} reached NCCL's init, but NCCL did not connect them in time (a network or firewall problem, or a GPU that hangs? NCCL_DEBUG=INFO says more)"
        ),
        [one] => format!(
            "rank {one} of {world} never joined (it crashed or is still starting: see its log)"
        ),
        many => format!(
            "ranks {} of {world} never joined (they crashed or are still starting: see their logs)",
            join(many)
        ),
    }
}

/// `1, 2, 3`.
pub(crate) fn join(ranks: &[usize]) -> String {
    ranks
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One look at a pending non-blocking NCCL call (`ncclCommGetAsyncError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Poll {
    /// `ncclSuccess` (or, for an operation, the work completed).
    Ready,
    /// `ncclInProgress`.
    Pending,
    /// Any other result: what NCCL said.
    Failed(String),
}

/// How [`wait_for`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The call completed.
    Ready,
    /// NCCL reported an error.
    Failed(String),
    /// Another rank stopped the group (the reason).
    Stopped(String),
    /// The deadline passed first, after this long.
    TimedOut(Duration),
}

/// How often [`wait_for`] looks: `spins` looks with only a yield between them, then one every
/// `sleep`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub spins: u32,
    pub sleep: Duration,
}

impl Pace {
    /// NCCL's init takes tens of milliseconds to seconds: look every millisecond.
    pub const INIT: Pace = Pace {
        spins: 0,
        sleep: Duration::from_millis(1),
    };
    /// A collective of a training step takes micro- to milliseconds: spin briefly, then look
    /// at a rate that leaves the core to the other ranks' threads.
    pub const OP: Pace = Pace {
        spins: 1000,
        sleep: Duration::from_micros(50),
    };
}

/// Polls until `poll` says the call is done or failed, `stopped` says another rank stopped
/// the group, or `timeout` has passed — in that order of precedence at each look, so a call
/// that completes at the deadline counts as completed. `poll` runs at least once.
pub(crate) fn wait_for(
    timeout: Duration,
    pace: Pace,
    mut poll: impl FnMut() -> Poll,
    stopped: impl Fn() -> Option<String>,
) -> Waited {
    let start = Instant::now();
    let mut looks = 0u32;
    loop {
        match poll() {
            Poll::Ready => return Waited::Ready,
            Poll::Failed(message) => return Waited::Failed(message),
            Poll::Pending => {}
        }
        if let Some(reason) = stopped() {
            return Waited::Stopped(reason);
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Waited::TimedOut(waited);
        }
        looks = looks.saturating_add(1);
        if looks <= pace.spins {
            std::thread::yield_now();
        } else {
            std::thread::sleep(pace.sleep.min(timeout - waited));
        }
    }
}

/// The error of a rank whose NCCL init did not complete within `timeout`: the census of
/// `board` names the missing ranks (or says why it could not).
pub(crate) fn init_timeout_error(
    rank: usize,
    world: usize,
    timeout: Duration,
    board: &mut dyn JoinBoard,
) -> Error {
    let (missing, census_error) = match board.missing(world) {
        Ok(missing) => (missing, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Error::NcclInitTimeout {
        rank,
        world,
        waited: timeout,
        missing,
        census_error,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn parses_timeouts_in_seconds() {
        assert_eq!(parse_timeout("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_timeout(" 2.5 "), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_timeout("0.001"), Ok(Duration::from_millis(1)));
        for bad in ["", "ten", "0", "-3", "inf", "NaN", "10s", "1e400"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_variable_overrides_the_default_and_a_bad_value_is_an_error() {
        let seven = Duration::from_secs(7);
        assert_eq!(timeout_from(None, seven).unwrap(), seven);
        assert_eq!(
            timeout_from(Some("1.5".into()), seven).unwrap(),
            Duration::from_millis(1500)
        );
        let text = timeout_from(Some("soon".into()), seven)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("FLAMBEAU_NCCL_INIT_TIMEOUT") && text.contains("soon"),
            "{text}"
        );
    }

    #[test]
    fn a_local_board_names_who_did_not_mark_itself() {
        let mut a = LocalBoard::new();
        let mut b = a.clone();
        assert_eq!(a.missing(3).unwrap(), [0, 1, 2]);
        a.mark_joined(0).unwrap();
        b.mark_joined(2).unwrap();
        b.mark_joined(2).unwrap();
        assert_eq!(a.missing(3).unwrap(), [1]);
        a.mark_joined(1).unwrap();
        assert!(b.missing(3).unwrap().is_empty());
    }

    #[test]
    fn the_census_is_worded_for_each_case() {
        assert_eq!(
            census_text(4, &[3], None),
            "rank 3 of 4 never joined (it crashed or is still starting: see its log)"
        );
        assert!(census_text(4, &[1, 3], None).starts_with("ranks 1, 3 of 4 never joined"));
        assert!(census_text(2, &[], None).contains("every rank of 2 reached NCCL's init"));
        assert!(census_text(2, &[], Some("store gone")).contains("unknown (store gone)"));
    }

    #[test]
    fn the_timeout_error_names_the_missing_rank_and_the_variable() {
        let mut board = LocalBoard::new();
        board.mark_joined(0).unwrap();
        board.mark_joined(2).unwrap();
        let e = init_timeout_error(0, 3, Duration::from_secs(600), &mut board);
        assert!(
            matches!(&e, Error::NcclInitTimeout { rank: 0, world: 3, missing, census_error: None, .. } if missing == &[1]),
            "{e:?}"
        );
        let text = e.to_string();
        assert_eq!(
            text,
            "NCCL init on rank 0 did not complete within 600 s: rank 1 of 3 never joined (it crashed or is still starting: see its log); the communicator was aborted (set FLAMBEAU_NCCL_INIT_TIMEOUT, in seconds, to wait longer)"
        );
        let e = init_timeout_error(1, 2, Duration::from_millis(1500), &mut NoBoard);
        let text = e.to_string();
        assert!(
            text.contains("within 1.5 s") && text.contains("unknown"),
            "{text}"
        );
    }

    #[test]
    fn waiting_ends_when_the_call_completes() {
        let looks = Cell::new(0);
        let out = wait_for(
            Duration::from_secs(60),
            Pace::OP,
            || {
                looks.set(looks.get() + 1);
                if looks.get() == 5 {
                    Poll::Ready
                } else {
                    Poll::Pending
                }
            },
            || None,
        );
        assert_eq!(out, Waited::Ready);
        assert_eq!(looks.get(), 5);
    }

    #[test]
    fn waiting_reports_an_nccl_failure() {
        let out = wait_for(
            Duration::from_secs(60),
            Pace::INIT,
            || Poll::Failed("ncclRemoteError".into()),
            || None,
        );
        assert_eq!(out, Waited::Failed("ncclRemoteError".into()));
    }

    #[test]
    fn waiting_stops_when_another_rank_stops_the_group() {
        let looks = Cell::new(0);
        let out = wait_for(
            Duration::from_secs(60),
            Pace::INIT,
            || {
                looks.set(looks.get() + 1);
                Poll::Pending
            },
            || (looks.get() >= 3).then(|| "rank 1: NCCL init failed".to_string()),
        );
        assert_eq!(out, Waited::Stopped("rank 1: NCCL init failed".into()));
    }

    #[test]
    fn waiting_times_out_without_overshooting_much() {
        let start = Instant::now();
        let out = wait_for(
            Duration::from_millis(30),
            Pace::INIT,
            || Poll::Pending,
            || None,
        );
        let Waited::TimedOut(waited) = out else {
            panic!("{out:?}")
        };
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
        // A call that completes on the look at the deadline counts as complete, and a zero
        // timeout still looks once.
        assert_eq!(
            wait_for(Duration::ZERO, Pace::OP, || Poll::Ready, || None),
            Waited::Ready
        );
    }
}
