//! 200 concurrent API clients against one hutchd with a few running containers: each
//! sends a few dozen mixed requests (list, state, exec, file push and pull, config get and
//! set) over the unix socket. Every request must succeed; the daemon's threads and open
//! file descriptors stay bounded while they run and come back near where they were.
//! The slowest request is printed, never asserted (timings belong to `bench/`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hutch_tests::{require_root, unique_name, wait_until, TestDaemon, Via};
use serde_json::{json, Value};

const CLIENTS: usize = 200;
/// Rounds of the six kinds of request each client sends.
const ROUNDS: usize = 4;
const CONTAINERS: usize = 3;

/// Threads the daemon may add under load over its count at rest: its blocking pool is
/// bounded, whatever the number of clients.
const THREAD_BUDGET: usize = 64 + 16;
const FD_LIMIT: usize = 1000;

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One request of one kind; panics (naming it) unless it succeeds.
fn request(d: &TestDaemon, kind: usize, client: usize, round: usize, container: &str) {
    let base = format!("/1.0/instances/{container}");
    match kind {
        0 => {
            let (status, body) = d.http("GET", "/1.0/instances?recursion=2", b"");
            assert_eq!(status, 200, "list: {body}");
            let list = parse(&body);
            assert!(list["metadata"]
                .as_array()
                .is_some_and(|a| a.len() >= CONTAINERS));
        }
        1 => {
            let (status, body) = d.http("GET", &format!("{base}/state"), b"");
            assert_eq!(status, 200, "state: {body}");
            assert_eq!(parse(&body)["metadata"]["status"], "Running", "{body}");
        }
        2 => {
            let cmd = json!({"command": ["echo", format!("c{client}r{round}")],
                             "wait-for-websocket": false, "interactive": false,
                             "record-output": true});
            let (status, body) =
                d.http("POST", &format!("{base}/exec"), cmd.to_string().as_bytes());
            assert_eq!(status, 202, "exec: {body}");
            let id = parse(&body)["metadata"]["id"].as_str().unwrap().to_string();
            let (status, body) = d.http(
                "GET",
                &format!("/1.0/operations/{id}/wait?timeout=120"),
                b"",
            );
            assert_eq!(status, 200, "exec wait: {body}");
            let op = parse(&body);
            assert_eq!(op["metadata"]["status_code"], 200, "{body}");
            assert_eq!(op["metadata"]["metadata"]["return"], 0, "{body}");
        }
        3 => {
            let data = format!("client {client} round {round}\n");
            let (status, body) = d.http_with(
                "POST",
                &format!("{base}/files?path=/tmp/load-{client}"),
                &[("X-LXD-type", "file"), ("X-LXD-mode", "0644")],
                data.as_bytes(),
            );
            assert_eq!(status, 200, "push: {body}");
        }
        4 => {
            let (status, body) =
                d.http("GET", &format!("{base}/files?path=/tmp/load-{client}"), b"");
            assert_eq!(status, 200, "pull: {body}");
            assert!(
                body.starts_with(&format!("client {client} round ")),
                "{body}"
            );
        }
        _ => {
            let patch = json!({"config": {format!("user.load{client}"): round.to_string()}});
            let (status, body) = d.http("PATCH", &base, patch.to_string().as_bytes());
            assert_eq!(status, 200, "config set: {body}");
            let (status, body) = d.http("GET", &base, b"");
            assert_eq!(status, 200, "config get: {body}");
            assert_eq!(
                parse(&body)["metadata"]["config"][format!("user.load{client}")],
                round.to_string(),
                "{body}"
            );
        }
    }
}

const KINDS: [&str; 6] = ["list", "state", "exec", "push", "pull", "config"];

#[test]
fn two_hundred_concurrent_clients_are_all_served() {
    if !require_root("two_hundred_concurrent_clients_are_all_served") {
        return;
    }
    let d = Arc::new(TestDaemon::start_with(&["--storage-backend", "dir"]));
    d.import_busybox(Via::Hutch);
    let containers: Vec<String> = (0..CONTAINERS).map(|_| unique_name("load")).collect();
    for c in &containers {
        d.hutch_ok(&["launch", "bb", c]);
    }
    let pid = d.pid().expect("daemon pid");
    // At rest: one request of each kind first, so that lazily made things exist.
    for kind in 0..KINDS.len() {
        request(&d, kind, 0, 0, &containers[0]);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (base_threads, base_fds) = (threads_of(pid), fds_of(pid));

    let done = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new(Mutex::new((0usize, 0usize)));
    let sampler = {
        let (done, peaks) = (done.clone(), peaks.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let mut p = peaks.lock().unwrap();
                p.0 = p.0.max(threads_of(pid));
                p.1 = p.1.max(fds_of(pid));
                drop(p);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let slowest = Arc::new(Mutex::new((Duration::ZERO, String::new())));
    let by_kind = Arc::new(Mutex::new([Duration::ZERO; KINDS.len()]));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (d, slowest, containers) = (d.clone(), slowest.clone(), containers.clone());
            let by_kind = by_kind.clone();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let container = &containers[client % containers.len()];
                    // The client's file exists before any kind of request is sent.
                    request(&d, 3, client, 0, container);
                    for round in 0..ROUNDS {
                        for step in 0..KINDS.len() {
                            // Each client starts at another kind: the mix is even at any time.
                            let kind = (client + step) % KINDS.len();
                            let t = Instant::now();
                            request(&d, kind, client, round, container);
                            let took = t.elapsed();
                            let mut k = by_kind.lock().unwrap();
                            k[kind] = k[kind].max(took);
                            drop(k);
                            let mut s = slowest.lock().unwrap();
                            if took > s.0 {
                                *s = (
                                    took,
                                    format!("{} (client {client}, round {round})", KINDS[kind]),
                                );
                            }
                        }
                    }
                })
                .expect("spawn a client")
        })
        .collect();
    let mut failures = 0;
    for c in clients {
        if c.join().is_err() {
            failures += 1;
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    assert_eq!(failures, 0, "{failures} clients saw a failed request");
    let (peak_threads, peak_fds) = *peaks.lock().unwrap();
    let (slow, what) = slowest.lock().unwrap().clone();
    let total = CLIENTS * (ROUNDS * (KINDS.len() + 2) + 1);
    eprintln!(
        "load: {CLIENTS} clients, ~{total} requests in {elapsed:?}; slowest request {slow:?}: {what}; \
         daemon threads {base_threads} at rest, {peak_threads} at peak; fds {base_fds} at rest, {peak_fds} at peak"
    );
    let by_kind = *by_kind.lock().unwrap();
    for (kind, max) in KINDS.iter().zip(by_kind) {
        eprintln!("load: slowest {kind}: {max:?}");
    }
    assert!(
        peak_threads <= base_threads + THREAD_BUDGET,
        "threads grew from {base_threads} to {peak_threads}"
    );
    assert!(peak_fds < FD_LIMIT, "{peak_fds} fds open at peak");
    // Back near rest once idle (the blocking pool lets its idle threads go).
    wait_until(
        "threads and fds back near rest",
        Duration::from_secs(120),
        || threads_of(pid) <= base_threads + 4 && fds_of(pid) <= base_fds + 8,
    );
    for c in &containers {
        d.hutch_ok(&["delete", "--force", c]);
    }
}
