//! Shared by the rendezvous tests: the probe that the tests run as separate processes (the
//! test binary itself, re-executed with `FLAMBEAU_RDV_PROBE=1`), and process helpers.
#![allow(dead_code)] // each test file uses part of it

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flambeau_parallel::rendezvous::{exchange_id, LaunchEnv, ID_BYTES};

/// The variable that turns the test binary into a probe.
pub const PROBE_VAR: &str = "FLAMBEAU_RDV_PROBE";

/// The probe: joins the launch described by the environment, exchanges an id (made up on
/// rank 0 from the clock and the pid), prints `RDV rank=<r> id=<hex> agent_store=<bool>` or
/// `RDV rank=<r> error=<message>`, and exits (0, or 3 on error). Returns without doing
/// anything when not asked to be a probe.
pub fn probe_main() {
    if std::env::var(PROBE_VAR).as_deref() != Ok("1") {
        return;
    }
    let ms = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let timeout = Duration::from_millis(ms("FLAMBEAU_RDV_TIMEOUT_MS", 30_000));
    let env = match LaunchEnv::from_env() {
        Ok(Some(env)) => env,
        Ok(None) => {
            println!("RDV rank=? error=not launched (no RANK/WORLD_SIZE)");
            std::process::exit(3);
        }
        Err(e) => {
            println!("RDV rank=? error={e}");
            std::process::exit(3);
        }
    };
    std::thread::sleep(Duration::from_millis(ms("FLAMBEAU_RDV_DELAY_MS", 0)));
    let id = (env.rank == 0).then(|| {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        let mut id = [0u8; ID_BYTES];
        let mut x = seed | 1;
        for b in &mut id {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        id
    });
    match exchange_id(&env, id, timeout) {
        Ok(id) => {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            println!(
                "RDV rank={} id={hex} agent_store={}",
                env.rank, env.use_agent_store
            );
            std::process::exit(0);
        }
        Err(e) => {
            println!("RDV rank={} error={e}", env.rank);
            std::process::exit(3);
        }
    }
}

/// `s` seconds.
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding port 0")
        .port()
}

/// The arguments that make this test binary run only the probe test.
pub fn probe_args(test_name: &str) -> Vec<String> {
    vec![
        test_name.to_owned(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ]
}

/// Starts this test binary as a probe for `rank` of `world` with the store at
/// 127.0.0.1:`port`; `extra` adds or overrides variables.
pub fn spawn_probe(
    test_name: &str,
    rank: usize,
    world: usize,
    port: u16,
    extra: &[(&str, &str)],
) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args(probe_args(test_name))
        .env(PROBE_VAR, "1")
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_WORLD_SIZE", world.to_string())
        .env("GROUP_RANK", "0")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env_remove("TORCHELASTIC_USE_AGENT_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawning the probe")
}

/// Waits (at most `limit`, then kills it) for a child; its exit code (`None` when killed)
/// and its `RDV …` line (or all its output when it printed none).
pub fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let line = out
        .lines()
        .find_map(|l| l.find("RDV ").map(|i| l[i..].to_owned()))
        .unwrap_or_else(|| format!("(no RDV line) stdout: {out} stderr: {err}"));
    (status, line)
}

/// The ids printed by successful probes; panics with every line when one failed.
pub fn ids(results: &[(Option<i32>, String)]) -> Vec<String> {
    results
        .iter()
        .map(|(code, line)| {
            assert_eq!(*code, Some(0), "a probe failed: {results:#?}");
            line.split("id=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap_or_else(|| panic!("no id in {line}"))
                .to_owned()
        })
        .collect()
}

/// `torchrun` next to the Python interpreter (the venv's bin), if there is one.
pub fn torchrun_next_to(python: &Path) -> Option<std::path::PathBuf> {
    let t = python.parent()?.join("torchrun");
    t.exists().then_some(t)
}
