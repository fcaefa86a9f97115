//! The rendezvous against PyTorch itself: flambeau's TCPStore client with a
//! `torch.distributed.TCPStore` host, PyTorch's client with flambeau's host, 3 processes
//! exchanging an id through PyTorch's store, and a real `torchrun --no-python` launch.
//! Skipped loudly without PyTorch (failing under `FLAMBEAU_REQUIRE_TORCH=1`).

mod rendezvous_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flambeau_parallel::rendezvous::{StoreClient, StoreServer};
use flambeau_testkit::torch_python;
use rendezvous_support::{
    finish, free_port, ids, probe_args, probe_main, secs, spawn_probe, PROBE_VAR,
};

const PROBE: &str = "probe_child";

/// Not a test: the probe that the multi-process tests start (does nothing otherwise).
#[test]
fn probe_child() {
    probe_main();
}

fn spawn_python(python: &Path, script: &str, args: &[&str]) -> Child {
    Command::new(python)
        .arg("-u")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting python")
}

/// Waits for a Python child and returns its stdout; panics with its output on failure.
fn python_done(child: Child) -> String {
    let out = child.wait_with_output().expect("waiting for python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const PY_HOST: &str = r#"
import sys, datetime, torch.distributed as dist
port = int(sys.argv[1])
# world_size=2 with wait_for_workers: the constructor returns once a second worker (our
# client) has announced itself on "init/", as PyTorch's clients do.
st = dist.TCPStore("127.0.0.1", port, world_size=2, is_master=True,
                   timeout=datetime.timedelta(seconds=60), wait_for_workers=True)
print("hosting", flush=True)
assert st.get("from_rust") == b"\x00\x01hello", st.get("from_rust")
assert st.add("counter", 2) == 2
st.set("from_python", bytes(range(256)))
st.wait(["rust_done"])
assert st.get("counter") == b"5", st.get("counter")
assert st.get("cs") == b"second", st.get("cs")
print("ok", flush=True)
"#;

#[test]
fn our_client_with_a_pytorch_host() {
    let Some(python) = torch_python("our_client_with_a_pytorch_host") else {
        return;
    };
    let port = free_port();
    let py = spawn_python(&python, PY_HOST, &[&port.to_string()]);
    // Connecting retries while Python imports torch and starts listening.
    let mut c = StoreClient::connect("127.0.0.1", port, secs(60.0)).expect("connecting");
    assert_eq!(c.announce_worker().unwrap(), 2);
    c.set("from_rust", b"\x00\x01hello").unwrap();
    assert_eq!(
        c.get("from_python").unwrap(),
        (0..=255).collect::<Vec<u8>>()
    );
    assert_eq!(c.add("counter", 3).unwrap(), 5);
    assert_eq!(c.compare_set("cs", b"", b"first").unwrap(), b"first");
    assert_eq!(c.compare_set("cs", b"nope", b"x").unwrap(), b"first");
    assert_eq!(c.compare_set("cs", b"first", b"second").unwrap(), b"second");
    assert!(c.check(&["from_python", "counter"]).unwrap());
    assert!(!c.check(&["absent"]).unwrap());
    match c.wait_timeout(&["absent"], secs(0.3)) {
        Err(flambeau_parallel::Error::StoreTimeout { .. }) => {}
        other => panic!("expected a timeout from PyTorch's server, got {other:?}"),
    }
    // After the cancelled wait the connection still works against PyTorch's server.
    assert!(c.num_keys().unwrap() >= 5);
    assert!(c.delete_key("counter").unwrap());
    c.set("counter", b"5").unwrap();
    c.set("rust_done", b"").unwrap();
    let out = python_done(py);
    assert!(out.contains("ok"), "{out}");
}

const PY_CLIENT: &str = r#"
import sys, datetime, torch.distributed as dist
port = int(sys.argv[1])
st = dist.TCPStore("127.0.0.1", port, world_size=2, is_master=False,
                   timeout=datetime.timedelta(seconds=60))
st.set("py", b"from python")
assert st.get("rs") == b"from rust", st.get("rs")
assert st.add("n", 5) == 5 and st.add("n", -2) == 3
assert st.check(["py", "rs"]) and not st.check(["nope"])
try:
    st.wait(["nope"], datetime.timedelta(milliseconds=200))
    raise SystemExit("wait did not time out")
except RuntimeError as e:  # DistStoreError
    assert "timeout" in str(e).lower(), e
assert st.compare_set("cs", b"", b"first") == b"first"
assert st.compare_set("cs", b"wrong", b"x") == b"first"
assert st.compare_set("cs", b"first", b"second") == b"second"
st.append("ap", b"ab"); st.append("ap", b"cd")
assert st.get("ap") == b"abcd"
st.multi_set(["m1", "m2"], [b"1", b"2"])
assert st.multi_get(["m1", "m2"]) == [b"1", b"2"]
assert st.delete_key("m1") and not st.delete_key("m1")
print("num_keys", st.num_keys())
st.set("py_done", b"1")
print("ok", flush=True)
"#;

#[test]
fn a_pytorch_client_with_our_host() {
    let Some(python) = torch_python("a_pytorch_client_with_our_host") else {
        return;
    };
    let server = StoreServer::bind(0).unwrap();
    let port = server.port();
    let py = spawn_python(&python, PY_CLIENT, &[&port.to_string()]);
    let mut c = StoreClient::connect("127.0.0.1", port, secs(60.0)).unwrap();
    assert_eq!(c.get("py").unwrap(), b"from python");
    c.set("rs", b"from rust").unwrap();
    c.wait(&["py_done"]).unwrap();
    assert_eq!(c.get("n").unwrap(), b"3");
    assert_eq!(c.get("ap").unwrap(), b"abcd");
    assert_eq!(c.get("cs").unwrap(), b"second");
    let out = python_done(py);
    assert!(out.contains("ok"), "{out}");
    // py, rs, n, cs, ap, m2, py_done, and PyTorch's unprefixed init/ (its client announced
    // itself as a worker).
    assert!(out.contains("num_keys 7"), "{out}");
    assert_eq!(server.num_keys(), 8);
}

const PY_STORE: &str = r#"
import sys, datetime, torch.distributed as dist
port = int(sys.argv[1])
# As torchrun's agent does: it hosts, and every rank is a client.
st = dist.TCPStore("127.0.0.1", port, world_size=None, is_master=True,
                   timeout=datetime.timedelta(seconds=60), wait_for_workers=False)
print("hosting", flush=True)
sys.stdin.read()  # until the test is done
print("id", st.get("flambeau/nccl_id/id").hex(), flush=True)
"#;

#[test]
fn three_processes_exchange_an_id_through_a_pytorch_store() {
    let Some(python) = torch_python("three_processes_exchange_an_id_through_a_pytorch_store")
    else {
        return;
    };
    let port = free_port();
    let mut py = spawn_python(&python, PY_STORE, &[&port.to_string()]);
    let mut first = String::new();
    BufReader::new(py.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "hosting");
    let agent = [("TORCHELASTIC_USE_AGENT_STORE", "True")];
    let children: Vec<_> = (0..3)
        .map(|r| spawn_probe(PROBE, r, 3, port, &agent))
        .collect();
    let results: Vec<_> = children
        .into_iter()
        .map(|c| finish(c, secs(60.0)))
        .collect();
    let ids = ids(&results);
    assert!(ids.iter().all(|i| *i == ids[0]), "{results:#?}");
    assert!(results.iter().all(|(_, l)| l.contains("agent_store=true")));
    drop(py.stdin.take()); // let Python read the id back and exit
    let out = python_done(py);
    assert!(
        out.contains(&format!("id {}", ids[0])),
        "{out}\n{results:#?}"
    );
}

#[test]
fn torchrun_launches_two_ranks_that_exchange_an_id() {
    let Some(python) = torch_python("torchrun_launches_two_ranks_that_exchange_an_id") else {
        return;
    };
    let Some(torchrun) = rendezvous_support::torchrun_next_to(&python) else {
        flambeau_testkit::skip("torchrun is not next to the Python interpreter");
        return;
    };
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(torchrun);
    cmd.args([
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        &port.to_string(),
        "--no-python",
    ])
    .arg(exe)
    .args(probe_args(PROBE))
    .env(PROBE_VAR, "1")
    .env("FLAMBEAU_RDV_TIMEOUT_MS", "60000")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for v in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_USE_AGENT_STORE",
    ] {
        cmd.env_remove(v);
    }
    let mut child = cmd.spawn().expect("starting torchrun");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > secs(120.0) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "torchrun: {status:?}\n{out}\n{err}"
    );
    let lines: Vec<&str> = out
        .lines()
        .filter_map(|l| l.find("RDV ").map(|i| &l[i..]))
        .collect();
    assert_eq!(lines.len(), 2, "{out}\n{err}");
    let id_of = |l: &str| {
        l.split("id=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_owned)
    };
    assert!(lines.iter().any(|l| l.starts_with("RDV rank=0 ")), "{out}");
    assert!(lines.iter().any(|l| l.starts_with("RDV rank=1 ")), "{out}");
    assert_eq!(id_of(lines[0]), id_of(lines[1]), "{out}");
    assert!(id_of(lines[0]).is_some_and(|i| i.len() == 256), "{out}");
    // torchrun's agent hosts the store; every rank is a client.
    assert!(
        lines.iter().all(|l| l.contains("agent_store=true")),
        "{out}\n{err}"
    );
    let _ = std::io::stdout().flush();
}
