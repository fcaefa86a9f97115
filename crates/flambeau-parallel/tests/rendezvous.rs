//! The rendezvous without PyTorch: flambeau's TCPStore client against its own server, bad
//! peers, and 3 processes (this test binary, re-executed) exchanging an id through rank 0's
//! store, with a missing and a killed rank.

mod rendezvous_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use flambeau_parallel::collective::JoinBoard;
use flambeau_parallel::rendezvous::{LaunchEnv, Rendezvous, StoreClient, StoreServer};
use flambeau_parallel::Error;
use rendezvous_support::{finish, free_port, ids, probe_main, secs, spawn_probe};

const PROBE: &str = "probe_child";

/// Not a test: the probe that the multi-process tests start (does nothing otherwise).
#[test]
fn probe_child() {
    probe_main();
}

#[test]
fn client_and_server_round_trip() {
    let server = StoreServer::bind(0).unwrap();
    let port = server.port();
    let mut a = StoreClient::connect("127.0.0.1", port, secs(5.0)).unwrap();
    let mut b = StoreClient::connect("localhost", port, secs(5.0)).unwrap();

    a.set("k", b"value").unwrap();
    assert_eq!(b.get("k").unwrap(), b"value");
    assert_eq!(a.add("n", 2).unwrap(), 2);
    assert_eq!(b.add("n", -5).unwrap(), -3);
    assert_eq!(a.get("n").unwrap(), b"-3");
    assert!(a.check(&["k", "n"]).unwrap());
    assert!(!a.check(&["k", "absent"]).unwrap());
    assert_eq!(a.num_keys().unwrap(), 2);
    assert_eq!(server.num_keys(), 2);
    assert!(a.delete_key("k").unwrap());
    assert!(!a.delete_key("k").unwrap());

    // `get` blocks until another client sets the key.
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        b.set("later", &[1, 2, 3]).unwrap();
        b
    });
    assert_eq!(a.get("later").unwrap(), [1, 2, 3]);
    let mut b = setter.join().unwrap();

    // A wait that times out is cancelled, and the connection stays usable.
    let t = Instant::now();
    match a.wait_timeout(&["never"], secs(0.3)) {
        Err(Error::StoreTimeout { keys, .. }) => assert_eq!(keys, ["/never"]),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t.elapsed() < secs(3.0));
    a.set("after", b"x").unwrap();
    assert_eq!(b.get("after").unwrap(), b"x");
    // Empty values and big ones.
    a.set("empty", b"").unwrap();
    assert_eq!(b.get("empty").unwrap(), b"");
    let big = vec![0xabu8; 3 << 20];
    a.set("big", &big).unwrap();
    assert_eq!(b.get("big").unwrap(), big);
}

#[test]
fn wait_on_several_keys_wakes_once_all_exist() {
    let server = StoreServer::bind(0).unwrap();
    let mut a = StoreClient::connect("127.0.0.1", server.port(), secs(5.0)).unwrap();
    let mut b = StoreClient::connect("127.0.0.1", server.port(), secs(5.0)).unwrap();
    let waiter = std::thread::spawn(move || {
        a.wait(&["x", "y", "x"]).unwrap();
        a
    });
    std::thread::sleep(Duration::from_millis(100));
    b.set("x", b"1").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiter.is_finished());
    b.add("y", 1).unwrap();
    let mut a = waiter.join().unwrap();
    assert!(a.check(&["x", "y"]).unwrap());
}

#[test]
fn connect_retries_until_the_server_is_up() {
    let port = free_port();
    let t = std::thread::spawn(move || StoreClient::connect("127.0.0.1", port, secs(10.0)));
    std::thread::sleep(Duration::from_millis(400));
    let server = StoreServer::bind(port).unwrap();
    let mut c = t.join().unwrap().expect("connected after a retry");
    c.set("k", b"v").unwrap();
    assert_eq!(c.num_keys().unwrap(), 1);
    assert_eq!(server.num_keys(), 1);
}

#[test]
fn connect_gives_up_after_the_timeout() {
    let port = free_port();
    let t = Instant::now();
    let e = StoreClient::connect("127.0.0.1", port, secs(0.5)).unwrap_err();
    assert!(t.elapsed() < secs(3.0), "{:?}", t.elapsed());
    assert!(matches!(e, Error::StoreConnect { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

/// Whether the server closed the connection (read returns 0 or an error).
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(secs(5.0))).unwrap();
    let mut b = [0u8; 16];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn bad_peers_are_disconnected_and_the_server_goes_on() {
    let server = StoreServer::bind(0).unwrap();
    let port = server.port();
    let raw = || TcpStream::connect(("127.0.0.1", port)).unwrap();

    // No VALIDATE first.
    let mut s = raw();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed(&mut s));
    // A wrong magic number.
    let mut s = raw();
    s.write_all(&[0, 1, 2, 3, 4]).unwrap();
    assert!(closed(&mut s));
    // A length prefix far over the cap: refused, not allocated.
    let mut s = raw();
    let mut msg = vec![0u8];
    msg.extend_from_slice(&0x3C85_F7CEu32.to_le_bytes());
    msg.push(1); // SET
    msg.extend_from_slice(&u64::MAX.to_le_bytes());
    s.write_all(&msg).unwrap();
    assert!(closed(&mut s));
    // Too many keys in a WAIT.
    let mut s = raw();
    let mut msg = vec![0u8];
    msg.extend_from_slice(&0x3C85_F7CEu32.to_le_bytes());
    msg.push(6); // WAIT
    msg.extend_from_slice(&(1u64 << 40).to_le_bytes());
    s.write_all(&msg).unwrap();
    assert!(closed(&mut s));
    // An unknown command.
    let mut s = raw();
    let mut msg = vec![0u8];
    msg.extend_from_slice(&0x3C85_F7CEu32.to_le_bytes());
    msg.push(200);
    s.write_all(&msg).unwrap();
    assert!(closed(&mut s));
    // ADD on a value that is not a number.
    let mut c = StoreClient::connect("127.0.0.1", port, secs(5.0)).unwrap();
    c.set("text", b"abc").unwrap();
    assert!(matches!(c.add("text", 1), Err(Error::Store { .. })));
    // A client that waits and then vanishes leaves no trace that hurts others.
    let mut w = raw();
    let mut msg = vec![0u8];
    msg.extend_from_slice(&0x3C85_F7CEu32.to_le_bytes());
    msg.push(6);
    msg.extend_from_slice(&1u64.to_le_bytes());
    msg.extend_from_slice(&2u64.to_le_bytes());
    msg.extend_from_slice(b"/w");
    w.write_all(&msg).unwrap();
    drop(w);

    let mut good = StoreClient::connect("127.0.0.1", port, secs(5.0)).unwrap();
    good.set("w", b"ok").unwrap();
    assert_eq!(good.get("w").unwrap(), b"ok");
}

#[test]
fn a_lying_server_gets_an_error_not_an_allocation() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hello = [0u8; 10]; // VALIDATE + magic, PING + nonce
        s.read_exact(&mut hello).unwrap();
        s.write_all(&hello[6..10]).unwrap();
        // STOP_WAITING for the GET's wait, then a 2^64-1 byte value.
        let mut rest = vec![0u8];
        rest.extend_from_slice(&u64::MAX.to_le_bytes());
        s.write_all(&rest).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    });
    let mut c = StoreClient::connect("127.0.0.1", port, secs(5.0)).unwrap();
    let e = c.get("k").unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    // The connection is marked unusable rather than misread.
    assert!(c.set("k", b"v").is_err());
    fake.join().unwrap();
}

fn env(rank: usize, world: usize, port: u16) -> LaunchEnv {
    LaunchEnv::from_vars([
        ("RANK", rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_owned()),
        ("MASTER_PORT", port.to_string()),
    ])
    .unwrap()
    .unwrap()
}

#[test]
fn threads_join_exchange_and_meet_at_a_barrier() {
    let port = free_port();
    let handles: Vec<_> = (0..3)
        .map(|rank| {
            std::thread::spawn(move || {
                let mut rdv = Rendezvous::join(&env(rank, 3, port), secs(20.0))?;
                assert_eq!(rdv.hosts_store(), rank == 0);
                let id = rdv.exchange_id("t", (rank == 0).then_some([9u8; 128]))?;
                rdv.barrier("end")?;
                Ok::<_, Error>(id)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), [9u8; 128]);
    }
}

/// The board of NCCL's init in the store: each rank marks itself before `ncclCommInitRank`,
/// and a rank that times out reads who never did.
#[test]
fn the_nccl_board_names_the_rank_that_never_reached_init() {
    let port = free_port();
    let handles: Vec<_> = (0..3)
        .map(|rank| {
            std::thread::spawn(move || {
                let mut rdv = Rendezvous::join(&env(rank, 3, port), secs(20.0))?;
                rdv.exchange_id("nccl", (rank == 0).then_some([5u8; 128]))?;
                if rank != 1 {
                    rdv.nccl_board("nccl").mark_joined(rank)?;
                }
                rdv.barrier("marked")?;
                let missing = rdv.nccl_board("nccl").missing(3)?;
                // Another group's board is separate.
                let other = rdv.nccl_board("other").missing(3)?;
                rdv.barrier("counted")?;
                Ok::<_, Error>((missing, other))
            })
        })
        .collect();
    for h in handles {
        let (missing, other) = h.join().unwrap().unwrap();
        assert_eq!(missing, [1]);
        assert_eq!(other, [0, 1, 2]);
    }
}

#[test]
fn world_of_one_needs_no_store() {
    let env = LaunchEnv::from_vars([("RANK", "0"), ("WORLD_SIZE", "1")])
        .unwrap()
        .unwrap();
    let id = flambeau_parallel::rendezvous::exchange_id(&env, Some([1; 128]), secs(1.0)).unwrap();
    assert_eq!(id, [1; 128]);
    let mut rdv = Rendezvous::join(&env, secs(1.0)).unwrap();
    assert!(rdv.client().is_none());
    assert!(rdv.exchange_id("x", None).is_err());
    // Alone, every rank (there is one) is on the board.
    rdv.nccl_board("nccl").mark_joined(0).unwrap();
    assert!(rdv.nccl_board("nccl").missing(1).unwrap().is_empty());
}

#[test]
fn three_processes_exchange_an_id_through_rank0s_store() {
    let port = free_port();
    let children: Vec<_> = (0..3)
        .map(|r| spawn_probe(PROBE, r, 3, port, &[]))
        .collect();
    let results: Vec<_> = children
        .into_iter()
        .map(|c| finish(c, secs(60.0)))
        .collect();
    let ids = ids(&results);
    assert_eq!(ids[0].len(), 256);
    assert!(ids.iter().all(|i| *i == ids[0]), "{results:#?}");
}

/// The error lines of ranks that ended with one; panics when a rank succeeded or hung.
fn errors(results: &[(Option<i32>, String)]) -> Vec<&str> {
    results
        .iter()
        .map(|(code, line)| {
            assert_eq!(*code, Some(3), "expected an error exit: {results:#?}");
            line.as_str()
        })
        .collect()
}

#[test]
fn a_missing_rank_is_named_after_the_timeout() {
    let port = free_port();
    let t = Instant::now();
    let children: Vec<_> = (0..2)
        .map(|r| spawn_probe(PROBE, r, 3, port, &[("FLAMBEAU_RDV_TIMEOUT_MS", "2000")]))
        .collect();
    let results: Vec<_> = children
        .into_iter()
        .map(|c| finish(c, secs(30.0)))
        .collect();
    assert!(t.elapsed() < secs(15.0), "{:?}", t.elapsed());
    for line in errors(&results) {
        assert!(
            line.contains("join: rank(s) [2] of 3 did not join within 2s"),
            "{line}"
        );
        assert!(line.contains("joined: [0, 1]"), "{line}");
    }
}

#[test]
fn a_killed_rank_stops_the_others() {
    let port = free_port();
    let timeout = [("FLAMBEAU_RDV_TIMEOUT_MS", "3000")];
    let mut children: Vec<_> = (0..2)
        .map(|r| spawn_probe(PROBE, r, 3, port, &timeout))
        .collect();
    let mut doomed = spawn_probe(
        PROBE,
        2,
        3,
        port,
        &[
            ("FLAMBEAU_RDV_TIMEOUT_MS", "3000"),
            ("FLAMBEAU_RDV_DELAY_MS", "60000"),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    doomed.kill().unwrap();
    let _ = doomed.wait();
    let t = Instant::now();
    let results: Vec<_> = children.drain(..).map(|c| finish(c, secs(30.0))).collect();
    assert!(t.elapsed() < secs(15.0), "{:?}", t.elapsed());
    for line in errors(&results) {
        assert!(line.contains("rank(s) [2] of 3 did not join"), "{line}");
    }
}
