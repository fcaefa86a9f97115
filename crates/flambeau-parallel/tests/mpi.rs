//! `MpiCollective` across real processes: each test runs this test binary under
//! `mpirun --allow-run-as-root --oversubscribe -np N`, where `rank_program` (told what to do by
//! `FLAMBEAU_MPI_TEST_SCENARIO`) is the MPI program, prints its inputs and results as lines, and
//! the test checks every rank's lines. Needs `--features mpi` and OpenMPI (`cargo xtask mpi
//! setup`); without `mpirun` the tests skip loudly (and fail under FLAMBEAU_REQUIRE_TORCH=1, as
//! in CI).
#![cfg(feature = "mpi")]

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use flambeau_parallel::collective::{launched_by_mpi, Collective, MpiCollective};

/// The environment variable that turns `rank_program` on, naming the scenario.
const SCENARIO: &str = "FLAMBEAU_MPI_TEST_SCENARIO";
/// The folder where each rank writes its lines (`rank<R>.txt`): ranks writing to one pipe
/// through mpirun would interleave within long lines.
const OUT_DIR: &str = "FLAMBEAU_MPI_TEST_OUT";

/// Writes one line to this rank's file at once (kept if the rank dies right after).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let rank = std::env::var("OMPI_COMM_WORLD_RANK")
            .or_else(|_| std::env::var("PMI_RANK"))
            .unwrap_or_else(|_| "x".into());
        let path = std::path::Path::new(&std::env::var(OUT_DIR).unwrap())
            .join(format!("rank{rank}.txt"));
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(format!("{}\n", format!($($arg)*)).as_bytes()).unwrap();
    }};
}

// ---------------------------------------------------------------------------------------------
// The MPI program (one rank).

#[test]
fn rank_program() {
    let Ok(scenario) = std::env::var(SCENARIO) else {
        return; // an ordinary test run: nothing to do here
    };
    assert!(launched_by_mpi(), "rank_program must run under mpirun");
    let mut c = MpiCollective::from_world().expect("MPI world");
    match scenario.as_str() {
        "ops" => ops(&mut c),
        "mismatch" => mismatch(&mut c),
        "abort" | "kill" | "panic" | "leave" => die(&mut c, &scenario),
        other => panic!("unknown scenario {other}"),
    }
}

/// The values of a tensor, in logical order, as text.
fn values(t: &Tensor) -> String {
    let v = t
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn line(kind: &str, rank: usize, op: &str, i: usize, t: &Tensor) {
    // Dims without spaces: the line is split on them.
    say!(
        "{kind} {rank} {op} {i} {:?} {} {}",
        t.dtype(),
        format!("{:?}", t.dims()).replace(' ', ""),
        values(t)
    );
}

/// Rank `r`'s tensors of round `round`: several dtypes, uneven and empty shapes, a scalar and a
/// non-contiguous view; integer values, so that every sum is exact.
fn inputs(r: usize, round: usize) -> Vec<Tensor> {
    let dev = Device::Cpu;
    let ramp = |n: usize, scale: usize, base: usize| -> Vec<f32> {
        (0..n)
            .map(|j| ((r + 1) * (j + 1) * scale + base + round) as f32)
            .collect()
    };
    let f = |n, scale, base, shape: &[usize]| {
        Tensor::from_vec(ramp(n, scale, base), shape, &dev).unwrap()
    };
    vec![
        f(12, 1, 0, &[3, 4]),
        f(5, 3, 100, &[5]).to_dtype(DType::I64).unwrap(),
        // A transposed (non-contiguous) view, shape [2, 2, 3].
        f(12, 2, 7, &[2, 3, 2]).transpose(1, 2).unwrap(),
        Tensor::new(((r + 1) * 10 + round) as f32, &dev).unwrap(),
        f(7, 1, 1, &[7]).to_dtype(DType::F64).unwrap(),
        Tensor::zeros((0, 3), DType::F32, &dev).unwrap(),
        f(4, 1, 2, &[2, 2]).to_dtype(DType::U8).unwrap(),
        f(3, 5, 0, &[3]).to_dtype(DType::U32).unwrap(),
        f(6, 1, 0, &[1, 6]).to_dtype(DType::BF16).unwrap(),
        f(9, 4, 1000, &[9, 1]).to_dtype(DType::I64).unwrap(),
    ]
}

/// Values whose sums round: the bits must still agree on every rank.
fn rounding_input(r: usize) -> Tensor {
    let v: Vec<f32> = (0..1000)
        .map(|j| ((r * 1000 + j) as f32 * 0.37).sin() * 10f32.powi((j % 7) as i32 - 3))
        .collect();
    Tensor::from_vec(v, 1000, &Device::Cpu).unwrap()
}

fn ops(c: &mut MpiCollective) {
    let (r, w) = (c.rank(), c.world_size());
    say!("WORLD {r} {w}");
    let reduce_root = w - 1;
    let bcast_root = 1 % w;
    for round in 0..3 {
        let ins = inputs(r, round);
        for (i, t) in ins.iter().enumerate() {
            line("IN", r, &format!("r{round}"), i, t);
        }
        let sum = c.all_reduce_sum(&ins).unwrap();
        for (i, t) in sum.iter().enumerate() {
            line("OUT", r, &format!("all_reduce_sum.r{round}"), i, t);
        }
        match c.reduce_sum(&ins, reduce_root).unwrap() {
            Some(red) => {
                for (i, t) in red.iter().enumerate() {
                    line("OUT", r, &format!("reduce_sum.r{round}"), i, t);
                }
            }
            None => say!("NONE {r} reduce_sum.r{round}"),
        }
        let b = c.broadcast(&ins, bcast_root).unwrap();
        for (i, t) in b.iter().enumerate() {
            line("OUT", r, &format!("broadcast.r{round}"), i, t);
        }
    }
    let x = rounding_input(r);
    line("IN", r, "bits", 0, &x);
    let s = c.all_reduce_sum(std::slice::from_ref(&x)).unwrap();
    let bits: Vec<String> = s[0]
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| format!("{:08x}", v.to_bits()))
        .collect();
    say!("BITS {r} {}", bits.join(""));
    line("OUT", r, "bits", 0, &s[0]);
}

fn mismatch(c: &mut MpiCollective) {
    let r = c.rank();
    let dev = Device::Cpu;
    // Rank 1 passes one element more.
    let n = if r == 1 { 4 } else { 3 };
    let t = Tensor::zeros(n, DType::F32, &dev).unwrap();
    let e = c.all_reduce_sum(&[t]).unwrap_err();
    say!("ERR {r} shape: {e}");
    // Rank 0 broadcasts while the others sum.
    let t = Tensor::ones(2, DType::I64, &dev).unwrap();
    let e = if r == 0 {
        c.broadcast(std::slice::from_ref(&t), 0).unwrap_err()
    } else {
        c.all_reduce_sum(std::slice::from_ref(&t)).unwrap_err()
    };
    say!("ERR {r} op: {e}");
    // A root outside the group fails on the spot.
    let e = c.broadcast(std::slice::from_ref(&t), 99).unwrap_err();
    say!("ERR {r} root: {e}");
    // The group still works.
    let s = c.all_reduce_sum(&[t]).unwrap();
    say!("AFTER {r} {}", values(&s[0]));
}

/// Rank 1 dies (as `how` says) while the others wait in an all-reduce.
fn die(c: &mut MpiCollective, how: &str) {
    let r = c.rank();
    let t = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
    c.all_reduce_sum(std::slice::from_ref(&t)).unwrap();
    say!("READY {r}");
    if r == 1 {
        std::thread::sleep(Duration::from_millis(300));
        match how {
            "abort" => c.abort("rank 1 gives up on purpose"),
            "kill" => {
                let _ = Command::new("kill")
                    .args(["-KILL", &std::process::id().to_string()])
                    .status();
                std::thread::sleep(Duration::from_secs(60));
            }
            "leave" => {
                // What a rank that returns an error without calling abort() does.
                say!("LEAVING {r}");
                return;
            }
            _ => panic!("rank 1 panics on purpose"),
        }
        say!("UNEXPECTED {r}: still alive");
        return;
    }
    match c.all_reduce_sum(&[t]) {
        Err(e) if how == "leave" => say!("LEFT {r} {e}"),
        s => say!("UNEXPECTED {r}: all_reduce returned {s:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests: mpirun around the program above.

/// One mpirun at a time: ranks busy-wait, and CI has two cores.
static MPIRUN: Mutex<()> = Mutex::new(());

struct Run {
    /// `None` when the job outlived the timeout (and was killed).
    status: Option<ExitStatus>,
    /// What each rank wrote to its file.
    lines: String,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn lines(&self, kind: &str) -> Vec<Vec<String>> {
        self.lines
            .lines()
            .filter(|l| l.starts_with(&format!("{kind} ")))
            .map(|l| l.splitn(7, ' ').skip(1).map(String::from).collect())
            .collect()
    }

    fn report(&self) -> String {
        format!(
            "status {:?} after {:.1}s\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// `mpirun -np NP` of `rank_program` in `scenario`; `None` (after a loud skip) without mpirun.
fn mpirun(np: usize, scenario: &str, timeout: Duration) -> Option<Run> {
    let _one = MPIRUN.lock().unwrap_or_else(|e| e.into_inner());
    let found = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        flambeau_testkit::skip(
            "mpi tests: `mpirun` is not installed, so MpiCollective was not tested across \
             processes.\nInstall OpenMPI with `cargo xtask mpi setup`.",
        );
        return None;
    }
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let mut child = flambeau_testkit::mpirun(np)
        .arg(&exe)
        .args(["--exact", "rank_program", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .env(OUT_DIR, dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting mpirun");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > timeout {
            // SIGTERM lets mpirun take its ranks down with it; then make sure.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    let lines = (0..np)
        .map(|r| {
            std::fs::read_to_string(dir.path().join(format!("rank{r}.txt"))).unwrap_or_default()
        })
        .collect();
    Some(Run {
        status,
        lines,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
    })
}

type Key = (String, usize); // (op, tensor index)

/// `(dtype, dims, values)` per rank and key.
type Seen = BTreeMap<usize, BTreeMap<Key, (String, String, Vec<f64>)>>;

fn parse(run: &Run, kind: &str) -> Seen {
    let mut seen = Seen::new();
    for f in run.lines(kind) {
        let [rank, op, i, dtype, dims, vals] = <[String; 6]>::try_from(f.clone())
            .unwrap_or_else(|_| panic!("bad line {f:?}\n{}", run.report()));
        let vals = if vals.is_empty() {
            Vec::new()
        } else {
            vals.split(',').map(|v| v.parse().unwrap()).collect()
        };
        seen.entry(rank.parse().unwrap())
            .or_default()
            .insert((op, i.parse().unwrap()), (dtype, dims, vals));
    }
    seen
}

fn check_ops(np: usize) {
    let Some(run) = mpirun(np, "ops", Duration::from_secs(180)) else {
        return;
    };
    assert!(run.status.is_some_and(|s| s.success()), "{}", run.report());
    let ins = parse(&run, "IN");
    let outs = parse(&run, "OUT");
    assert_eq!(ins.len(), np, "{}", run.report());
    let (reduce_root, bcast_root) = (np - 1, 1 % np);
    let mut checked = 0;
    for round in 0..3 {
        let key_in = |i| (format!("r{round}"), i);
        for i in 0..inputs(0, 0).len() {
            let (dtype, dims, _) = &ins[&0][&key_in(i)];
            let sum: Vec<f64> = (0..ins[&0][&key_in(i)].2.len())
                .map(|j| (0..np).map(|r| ins[&r][&key_in(i)].2[j]).sum())
                .collect();
            let root_vals = &ins[&bcast_root][&key_in(i)].2;
            for r in 0..np {
                let got = |op: &str| outs[&r].get(&(format!("{op}.r{round}"), i));
                let want: [(&str, Option<&Vec<f64>>); 3] = [
                    ("all_reduce_sum", Some(&sum)),
                    ("reduce_sum", (r == reduce_root).then_some(&sum)),
                    ("broadcast", Some(root_vals)),
                ];
                for (op, want) in want {
                    match (got(op), want) {
                        (Some((d, s, v)), Some(want)) => {
                            assert_eq!((d, s), (dtype, dims), "rank {r} {op} round {round} #{i}");
                            assert_eq!(v, want, "rank {r} {op} round {round} tensor {i}");
                            checked += 1;
                        }
                        (None, None) => {}
                        (got, want) => panic!(
                            "rank {r} {op} round {round} tensor {i}: got {got:?}, want {want:?}"
                        ),
                    }
                }
            }
        }
        for r in 0..np {
            let none = run.lines("NONE");
            let said_none = none
                .iter()
                .any(|f| f[0] == r.to_string() && f[1] == format!("reduce_sum.r{round}"));
            assert_eq!(
                said_none,
                r != reduce_root,
                "rank {r} reduce_sum round {round}"
            );
        }
    }
    // Rounded sums: the same bits on every rank, and close to the exact sum.
    let bits = run.lines("BITS");
    assert_eq!(bits.len(), np, "{}", run.report());
    assert!(
        bits.iter().all(|b| b[1] == bits[0][1]),
        "ranks disagree in the bits of a sum"
    );
    let key = ("bits".to_string(), 0);
    let got = &outs[&0][&key].2;
    for (j, g) in got.iter().enumerate() {
        let exact: f64 = (0..np).map(|r| ins[&r][&key].2[j]).sum();
        let magnitude: f64 = (0..np).map(|r| ins[&r][&key].2[j].abs()).sum();
        assert!(
            (g - exact).abs() <= 4.0 * f64::from(f32::EPSILON) * magnitude,
            "element {j}: {g} vs {exact}"
        );
    }
    eprintln!(
        "mpirun -np {np}: {checked} tensor results and {} rounded sums checked in {:.1}s",
        got.len(),
        run.elapsed.as_secs_f64()
    );
}

#[test]
fn sums_reduces_and_broadcasts_on_2_ranks() {
    check_ops(2);
}

#[test]
fn sums_reduces_and_broadcasts_on_3_ranks() {
    check_ops(3);
}

#[test]
fn mismatched_calls_fail_on_every_rank_and_the_group_goes_on() {
    let Some(run) = mpirun(3, "mismatch", Duration::from_secs(120)) else {
        return;
    };
    assert!(run.status.is_some_and(|s| s.success()), "{}", run.report());
    let errs = run.lines("ERR");
    assert_eq!(errs.len(), 9, "{}", run.report());
    for e in &errs {
        let msg = e[1..].join(" ");
        match e[1].as_str() {
            "shape:" => assert!(
                msg.contains("rank 1 called all_reduce_sum of 1 tensor(s): f32[4], rank 0 called all_reduce_sum of 1 tensor(s): f32[3]"),
                "{msg}"
            ),
            "op:" => assert!(
                msg.contains("rank 1 called all_reduce_sum of 1 tensor(s): i64[2], rank 0 called broadcast(root 0) of 1 tensor(s): i64[2]"),
                "{msg}"
            ),
            "root:" => assert!(msg.contains("root 99 is not a rank of a group of 3"), "{msg}"),
            other => panic!("unexpected {other}"),
        }
    }
    let after = run.lines("AFTER");
    assert_eq!(after.len(), 3, "{}", run.report());
    assert!(after.iter().all(|a| a[1] == "3,3"), "{}", run.report());
}

/// Rank 1 of 3 dies while ranks 0 and 2 wait in an all-reduce: mpirun must end the job, nonzero,
/// within the timeout, and the waiting ranks must not return.
fn check_death(how: &str, evidence: &str) {
    let Some(run) = mpirun(3, how, Duration::from_secs(60)) else {
        return;
    };
    let report = run.report();
    let status = run
        .status
        .unwrap_or_else(|| panic!("{how}: mpirun still running after 60s\n{report}"));
    assert!(!status.success(), "{how}: mpirun exited 0\n{report}");
    assert_eq!(run.lines("READY").len(), 3, "{report}");
    assert!(run.lines("UNEXPECTED").is_empty(), "{report}");
    let all = format!("{}{}{}", run.lines, run.stdout, run.stderr);
    assert!(all.contains(evidence), "{how}: no `{evidence}`\n{report}");
    eprintln!(
        "{how}: mpirun exited with {status} after {:.1}s; its stderr:\n{}",
        run.elapsed.as_secs_f64(),
        run.stderr
    );
}

#[test]
fn an_aborting_rank_ends_every_rank() {
    check_death(
        "abort",
        "rank 1 of 3 aborts the MPI job: rank 1 gives up on purpose",
    );
}

#[test]
fn a_killed_rank_ends_every_rank() {
    check_death("kill", "signal 9");
}

#[test]
fn a_panicking_rank_ends_every_rank() {
    check_death(
        "panic",
        "rank 1 of 3 aborts the MPI job: a panic unwound through its MpiCollective",
    );
}

#[test]
fn a_rank_that_leaves_stops_the_others_and_every_rank_ends() {
    let Some(run) = mpirun(3, "leave", Duration::from_secs(60)) else {
        return;
    };
    let report = run.report();
    assert!(run.status.is_some_and(|s| s.success()), "{report}");
    assert!(run.lines("UNEXPECTED").is_empty(), "{report}");
    let left = run.lines("LEFT");
    assert_eq!(left.len(), 2, "{report}");
    for l in left {
        assert!(
            l.join(" ").contains(
                "the replica group was stopped: rank 1: left the group (its MpiCollective was dropped)"
            ),
            "{report}"
        );
    }
}
