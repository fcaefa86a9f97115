//! [`HostCollective`]: ranks in one process (threads) that meet in shared memory. Each operation
//! stages every rank's tensors on the host; the last rank to arrive computes the result once —
//! sums in rank order 0, 1, 2, …, so the result does not depend on which thread came first — and
//! every rank takes a copy onto its own device.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::Collective;
use crate::{Error, Result};

/// How long a rank waits for the others by default before the group is declared stuck.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One rank's handle of a group of threads that reduce and broadcast through host memory.
#[derive(Debug)]
pub struct HostCollective {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    world: usize,
    timeout: Duration,
    state: Mutex<Round>,
    changed: Condvar,
}

/// One operation in flight: ranks deposit, the last computes, every rank reads, the last reader
/// resets it for the next operation.
#[derive(Debug, Default)]
struct Round {
    reading: bool,
    deposits: Vec<Option<Vec<Tensor>>>,
    arrived: usize,
    result: Option<std::result::Result<Arc<Vec<Tensor>>, String>>,
    readers_left: usize,
    aborted: Option<String>,
}

#[derive(Clone, Copy)]
enum Op {
    Sum,
    Broadcast(usize),
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Sum => "all_reduce_sum",
            Op::Broadcast(_) => "broadcast",
        }
    }
}

impl HostCollective {
    /// The handles of a new group of `world` ranks (index = rank), to hand one to each thread.
    pub fn group(world: usize) -> Vec<HostCollective> {
        Self::group_with_timeout(world, DEFAULT_TIMEOUT)
    }

    /// [`HostCollective::group`] whose ranks give up waiting for the others after `timeout`.
    pub fn group_with_timeout(world: usize, timeout: Duration) -> Vec<HostCollective> {
        let shared = Arc::new(Shared {
            world,
            timeout,
            state: Mutex::new(Round {
                deposits: vec![None; world],
                ..Round::default()
            }),
            changed: Condvar::new(),
        });
        (0..world)
            .map(|rank| HostCollective {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // Every mutation of a round completes under the lock, so a poisoned lock holds a
        // consistent round.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while `blocked` holds, failing on abort or timeout.
    fn wait_while<'a>(
        &'a self,
        mut round: MutexGuard<'a, Round>,
        op: Op,
        blocked: impl Fn(&Round) -> bool,
    ) -> Result<MutexGuard<'a, Round>> {
        let deadline = Instant::now() + self.shared.timeout;
        loop {
            // A finished operation is read even if a rank left afterwards (the normal end).
            if !blocked(&round) {
                return Ok(round);
            }
            if let Some(reason) = &round.aborted {
                return Err(Error::Aborted(reason.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<usize> = (0..self.shared.world)
                    .filter(|&r| round.deposits[r].is_none())
                    .collect();
                let err = Error::Timeout {
                    op: op.name(),
                    missing,
                    world: self.shared.world,
                    timeout: self.shared.timeout,
                };
                round.aborted = Some(err.to_string());
                self.shared.changed.notify_all();
                return Err(err);
            }
            round = self
                .shared
                .changed
                .wait_timeout(round, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Deposits `tensors`, waits for every rank, and returns the result on this rank's devices.
    fn exchange(&self, op: Op, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        if let Op::Broadcast(root) = op {
            if root >= self.shared.world {
                return Err(Error::BadRoot {
                    op: op.name(),
                    root,
                    world: self.shared.world,
                });
            }
        }
        let staged = tensors
            .iter()
            .map(|t| t.to_device(&Device::Cpu))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // A rank that is quick to come back waits until the previous operation is read by all.
        let mut round = self.wait_while(self.lock(), op, |r| r.reading)?;
        if let Some(reason) = &round.aborted {
            return Err(Error::Aborted(reason.clone()));
        }
        round.deposits[self.rank] = Some(staged);
        round.arrived += 1;
        if round.arrived == self.shared.world {
            round.result = Some(
                combine(op, &round.deposits)
                    .map(Arc::new)
                    .map_err(|e| e.to_string()),
            );
            round.reading = true;
            round.readers_left = self.shared.world;
            self.shared.changed.notify_all();
        }
        let mut round = self.wait_while(round, op, |r| !r.reading)?;
        let result = round.result.clone().expect("set before reading starts");
        round.readers_left -= 1;
        if round.readers_left == 0 {
            round.reading = false;
            round.arrived = 0;
            round.result = None;
            round.deposits.iter_mut().for_each(|d| *d = None);
            self.shared.changed.notify_all();
        }
        drop(round);
        let result = result.map_err(Error::Aborted)?;
        result
            .iter()
            .zip(tensors)
            .map(|(r, mine)| Ok(r.to_device(mine.device())?))
            .collect()
    }
}

/// The result of `op` over every rank's deposit; any disagreement in count or shape fails.
fn combine(op: Op, deposits: &[Option<Vec<Tensor>>]) -> Result<Vec<Tensor>> {
    let all: Vec<&Vec<Tensor>> = deposits
        .iter()
        .map(|d| d.as_ref().expect("every rank arrived"))
        .collect();
    let shapes = |ts: &[Tensor]| ts.iter().map(|t| t.dims().to_vec()).collect::<Vec<_>>();
    let expected = shapes(all[0]);
    for (rank, ts) in all.iter().enumerate().skip(1) {
        let got = shapes(ts);
        if got != expected {
            return Err(Error::Mismatch {
                op: op.name(),
                rank,
                got: got.len(),
                shapes: got,
                expected: expected.len(),
                expected_shapes: expected,
            });
        }
    }
    match op {
        Op::Broadcast(root) => Ok(all[root].clone()),
        Op::Sum => (0..expected.len())
            .map(|i| {
                let mut sum = all[0][i].clone();
                for ts in &all[1..] {
                    sum = (sum + &ts[i])?;
                }
                Ok(sum)
            })
            .collect(),
    }
}

impl Collective for HostCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        self.exchange(Op::Sum, tensors)
    }

    fn reduce_sum(&mut self, tensors: &[Tensor], root: usize) -> Result<Option<Vec<Tensor>>> {
        if root >= self.shared.world {
            return Err(Error::BadRoot {
                op: "reduce_sum",
                root,
                world: self.shared.world,
            });
        }
        let sum = self.exchange(Op::Sum, tensors)?;
        Ok((self.rank == root).then_some(sum))
    }

    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<Vec<Tensor>> {
        self.exchange(Op::Broadcast(root), tensors)
    }

    fn abort(&self, reason: &str) {
        let mut round = self.lock();
        if round.aborted.is_none() {
            round.aborted = Some(format!("rank {}: {reason}", self.rank));
        }
        self.shared.changed.notify_all();
    }
}

impl Drop for HostCollective {
    /// A rank that goes away (its thread ended or panicked) must not leave the others waiting.
    fn drop(&mut self) {
        if self.shared.world > 1 {
            self.abort("left the group");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn run<T: Send + 'static>(
        handles: Vec<HostCollective>,
        f: impl Fn(HostCollective) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let threads: Vec<_> = handles
            .into_iter()
            .map(|h| {
                let f = f.clone();
                thread::spawn(move || f(h))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn sums_and_broadcasts_on_every_rank() {
        let out = run(HostCollective::group(3), |mut c| {
            let r = c.rank() as f32;
            let mine = Tensor::new(&[r, 10.0 * r], &Device::Cpu).unwrap();
            let mut seen = Vec::new();
            for _ in 0..5 {
                let s = c.all_reduce_sum(std::slice::from_ref(&mine)).unwrap();
                seen.push(s[0].to_vec1::<f32>().unwrap());
                let b = c.broadcast(std::slice::from_ref(&mine), 2).unwrap();
                seen.push(b[0].to_vec1::<f32>().unwrap());
                let red = c.reduce_sum(std::slice::from_ref(&mine), 1).unwrap();
                seen.push(
                    red.map(|v| v[0].to_vec1::<f32>().unwrap())
                        .unwrap_or_default(),
                );
            }
            (c.rank(), seen)
        });
        for (rank, seen) in out {
            for round in seen.chunks(3) {
                assert_eq!(round[0], [3.0, 30.0]);
                assert_eq!(round[1], [2.0, 20.0]);
                let want: &[f32] = if rank == 1 { &[3.0, 30.0] } else { &[] };
                assert_eq!(round[2], want);
            }
        }
    }

    #[test]
    fn a_rank_that_leaves_stops_the_others() {
        let out = run(HostCollective::group(3), |mut c| {
            if c.rank() == 2 {
                return None; // dropped without taking part
            }
            let t = Tensor::new(&[1f32], &Device::Cpu).unwrap();
            Some(c.all_reduce_sum(&[t]).unwrap_err().to_string())
        });
        for msg in out.into_iter().flatten() {
            assert!(msg.contains("rank 2: left the group"), "{msg}");
        }
    }

    #[test]
    fn a_missing_rank_times_out_by_name() {
        let mut handles = HostCollective::group_with_timeout(2, Duration::from_millis(200));
        let absent = handles.pop().unwrap();
        let mut c = handles.pop().unwrap();
        let t = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        let e = c.all_reduce_sum(&[t]).unwrap_err().to_string();
        assert!(e.contains("rank(s) [1] of 2 did not join"), "{e}");
        drop(absent);
    }

    #[test]
    fn mismatched_shapes_fail_on_every_rank() {
        let out = run(HostCollective::group(2), |mut c| {
            let t = Tensor::zeros(c.rank() + 1, candle_core::DType::F32, &Device::Cpu).unwrap();
            c.all_reduce_sum(&[t]).unwrap_err().to_string()
        });
        for msg in out {
            assert!(
                msg.contains("rank 1 passed 1 tensor(s) of shapes [[2]]"),
                "{msg}"
            );
        }
    }
}
