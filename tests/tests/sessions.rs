//! End-to-end: exec and console sessions survive the daemon (`kill -9`, a restart, a
//! restart onto a replaced binary), and a cancelled exec leaves nothing. Needs root.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hutch_tests::{helper_bin, hutch_bin, hutchd_bin, require_root, wait_until, TestDaemon, Via};

fn daemon_with_container(name: &str) -> TestDaemon {
    let d = TestDaemon::start();
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", name]);
    d
}

/// The files of the kept exec sessions of `name` (sockets and identities).
fn session_files(d: &TestDaemon, name: &str) -> Vec<String> {
    std::fs::read_dir(d.path().join("containers").join(name).join("exec"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Host processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn an_interactive_exec_survives_kill_9_and_a_restart() {
    if !require_root("an_interactive_exec_survives_kill_9_and_a_restart") {
        return;
    }
    let mut d = daemon_with_container("s1");
    let cmd = format!("{} exec -t s1 -- sh", hutch_bin().display());
    let mut term =
        hutch_tests::TerminalSession::start(&cmd, &[("HUTCH_DIR", d.path().as_os_str())]);
    // Arithmetic, so that the echo of the typed line does not match.
    term.type_keys(&[b"echo BEFORE-$((40+2))\r"]);
    term.wait_for("BEFORE-42", |_| {});
    assert_eq!(session_files(&d, "s1").len(), 2, "a socket and an identity");

    d.kill();
    // Typed while no daemon runs: kept by the client's terminal, sent after it reconnects.
    term.type_keys(&[b"echo DURING-$((50+5))\r"]);
    d.spawn();
    term.type_keys(&[b"echo AFTER-$((60+6))\r"]);
    term.wait_for("AFTER-66", |_| {});
    assert!(term.seen.contains("DURING-55"), "{}", term.seen);
    term.type_keys(&[b"exit 7\r"]);
    let status = term.wait();
    assert_eq!(status.code(), Some(7), "the exit code arrives: {status}");
    wait_until("the session's files go", Duration::from_secs(10), || {
        session_files(&d, "s1").is_empty()
    });
    d.hutch_ok(&["delete", "--force", "s1"]);
}

/// Runs the 50-line exec, restarting the daemon (with `restart`) after the tenth line;
/// checks that every line arrives, in order, and exit 0.
fn fifty_lines_across(d: &mut TestDaemon, restart: impl FnOnce(&mut TestDaemon)) {
    let mut child = Command::new(hutch_bin())
        .args([
            "exec",
            "s1",
            "--",
            "sh",
            "-c",
            "for i in $(seq 1 50); do echo $i; sleep 0.1; done",
        ])
        .env("HUTCH_DIR", d.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hutch exec");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    let mut line = String::new();
    while lines.len() < 10 {
        line.clear();
        assert!(out.read_line(&mut line).expect("read") > 0, "{lines:?}");
        lines.push(line.trim().to_string());
    }
    restart(d);
    loop {
        line.clear();
        if out.read_line(&mut line).expect("read") == 0 {
            break;
        }
        lines.push(line.trim().to_string());
    }
    let status = child.wait().expect("wait for hutch exec");
    let want: Vec<String> = (1..=50).map(|i| i.to_string()).collect();
    assert_eq!(lines, want);
    assert_eq!(status.code(), Some(0));
}

#[test]
fn streamed_output_survives_a_restart_onto_a_replaced_binary() {
    if !require_root("streamed_output_survives_a_restart_onto_a_replaced_binary") {
        return;
    }
    let mut d = daemon_with_container("s1");
    // The daemon runs from an installed copy of hutchd and its helper, both replaced (new
    // files, as `install` makes) while the session runs, then restarted from it.
    let installed = d.path().join("installed");
    std::fs::create_dir_all(&installed).expect("make the install directory");
    let bin = installed.join("hutchd");
    let install = |bin: &Path| {
        for (from, to) in [
            (hutchd_bin(), bin.to_path_buf()),
            (helper_bin(), bin.with_file_name("hutchd-helper")),
        ] {
            let tmp = to.with_extension("new");
            std::fs::copy(from, &tmp).expect("copy the binary");
            std::fs::rename(&tmp, to).expect("install the binary");
        }
    };
    install(&bin);
    d.kill();
    d.spawn_binary(&bin);
    fifty_lines_across(&mut d, |d| {
        install(&bin);
        d.kill();
        d.spawn_binary(&bin);
    });
    // And once more across a plain kill -9 and restart.
    fifty_lines_across(&mut d, |d| {
        d.kill();
        d.spawn();
    });
    wait_until("the session's files go", Duration::from_secs(10), || {
        session_files(&d, "s1").is_empty()
    });
    d.hutch_ok(&["delete", "--force", "s1"]);
}

#[test]
fn a_cancelled_exec_leaves_nothing() {
    if !require_root("a_cancelled_exec_leaves_nothing") {
        return;
    }
    let d = daemon_with_container("s1");
    let marker = "sleep 4242";
    // Without websockets, then through `hutch exec` (websockets).
    let (status, body) = d.http(
        "POST",
        "/1.0/instances/s1/exec",
        br#"{"command": ["sh", "-c", "sleep 4242; true"], "wait-for-websocket": false}"#,
    );
    assert_eq!(status, 202, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let op = op["operation"].as_str().unwrap().to_string();
    cancel_and_check(&d, &op, marker);

    let mut child = Command::new(hutch_bin())
        .args(["exec", "s1", "--", "sh", "-c", "sleep 4242; true"])
        .env("HUTCH_DIR", d.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run hutch exec");
    let mut op = String::new();
    wait_until("the exec operation", Duration::from_secs(10), || {
        let (_, body) = d.http("GET", "/1.0/operations?recursion=1", b"");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let found = v["metadata"]["running"].as_array().and_then(|ops| {
            ops.iter()
                .find(|o| o["description"] == "Executing command")
                .and_then(|o| o["id"].as_str())
                .map(str::to_string)
        });
        match found {
            Some(id) => {
                op = format!("/1.0/operations/{id}");
                true
            }
            None => false,
        }
    });
    cancel_and_check(&d, &op, marker);
    let status = child.wait().expect("wait for hutch exec");
    assert_eq!(status.code(), Some(1), "a cancelled exec is an error");
    d.hutch_ok(&["delete", "--force", "s1"]);
}

/// Cancels the running exec `op`, then checks that it ended Cancelled and left no command,
/// no session helper and no file.
fn cancel_and_check(d: &TestDaemon, op: &str, marker: &str) {
    wait_until("the command runs", Duration::from_secs(10), || {
        !processes_with(marker).is_empty()
    });
    let (_, body) = d.http("GET", op, b"");
    assert!(body.contains("\"may_cancel\":true"), "{body}");
    let (status, body) = d.http("DELETE", op, b"");
    assert_eq!(status, 200, "{body}");
    let (_, body) = d.http("GET", &format!("{op}/wait?timeout=10"), b"");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["metadata"]["status"], "Cancelled", "{body}");
    wait_until("nothing is left", Duration::from_secs(10), || {
        processes_with(marker).is_empty() && session_files(d, "s1").is_empty()
    });
    let helpers: Vec<String> = processes_with("__exec")
        .into_iter()
        .filter(|p| p.contains(&d.path().display().to_string()))
        .collect();
    assert!(helpers.is_empty(), "{helpers:?}");
}

#[test]
fn a_console_session_survives_kill_9_and_a_restart() {
    if !require_root("a_console_session_survives_kill_9_and_a_restart") {
        return;
    }
    let mut d = daemon_with_container("s1");
    let cmd = format!("{} console s1", hutch_bin().display());
    let mut term =
        hutch_tests::TerminalSession::start(&cmd, &[("HUTCH_DIR", d.path().as_os_str())]);
    let say = |d: &TestDaemon, what: &str| {
        d.hutch_ok(&[
            "exec",
            "s1",
            "--",
            "sh",
            "-c",
            &format!("echo {what} > /dev/console"),
        ]);
    };
    term.wait_for("CONSOLE-BEFORE", |seen| {
        if seen.contains("detach") {
            say(&d, "CONSOLE-BEFORE");
        }
    });
    d.kill();
    d.spawn();
    // What the console says while no client is attached is not replayed: said until the
    // client is back and shows it.
    term.wait_for("CONSOLE-AFTER", |_| say(&d, "CONSOLE-AFTER"));
    term.type_keys(&[b"\x01", b"q"]);
    let status = term.wait();
    assert!(status.success(), "console did not detach cleanly: {status}");
    wait_until(
        "the console operation ends",
        Duration::from_secs(10),
        || {
            let dir = d.path().join("containers/s1/consoles");
            std::fs::read_dir(dir).map_or(true, |mut rd| rd.next().is_none())
        },
    );
    d.hutch_ok(&["delete", "--force", "s1"]);
}

/// LXD's `lxc` does not reconnect: across a restart its exec ends (it does not hang), and
/// the session it left is hung up on by the new daemon once nobody comes back for it.
#[test]
fn lxc_exec_across_a_restart_ends_cleanly() {
    if !require_root("lxc_exec_across_a_restart_ends_cleanly") {
        return;
    }
    let mut d = daemon_with_container("s1");
    let mut child = Command::new("lxc")
        .args([
            "exec",
            "s1",
            "--",
            "sh",
            "-c",
            "for i in $(seq 1 50); do echo $i; sleep 0.1; done",
        ])
        .env("LXD_DIR", d.path())
        .env("LXD_CONF", d.path().join("lxc-conf"))
        .env("HOME", d.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lxc exec");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    for _ in 0..5 {
        line.clear();
        assert!(out.read_line(&mut line).expect("read") > 0);
    }
    d.kill();
    d.spawn();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err);
    let status = child.wait().expect("wait for lxc");
    eprintln!("lxc across a restart: {status}; stdout after: {rest:?}; stderr: {err:?}");
    // The session is served again, for a client that would reconnect; lxc does not, so it
    // ends by itself: the command runs to its end (it is not blocked on output for long),
    // or is hung up on.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !session_files(&d, "s1").is_empty() {
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(d.path().join("hutchd.log")).unwrap_or_default();
            let (_, ops) = d.http("GET", "/1.0/operations?recursion=1", b"");
            panic!(
                "the session stayed: {:?}\n{ops}\n{log}",
                session_files(&d, "s1")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    d.hutch_ok(&["delete", "--force", "s1"]);
}
