//! End-to-end: `boot.autorestart` (an init that dies or exits comes back, rate-limited; a
//! `poweroff` inside does not), `reboot` inside, stops while the daemon is down, and host
//! shutdown (`hutchd shutdown`, SIGPWR) in `boot.stop.priority` order with the instances
//! brought back by the next daemon start. Needs root; each test has its own daemon.

use std::fs;
use std::process::Command;
use std::time::Duration;

use hutch_tests::{output_within, require_root, wait_until, TestDaemon, Via, COMMAND_LIMIT};
use serde_json::Value;

/// Generous: every wait below is for a state, never a measure of speed.
const LIMIT: Duration = Duration::from_secs(60);

/// A daemon (dir pool) with the busybox image as `bb`, and `env` in its environment.
fn daemon(env: &[(&str, &str)]) -> TestDaemon {
    let d = TestDaemon::start_with_env(&["--storage-backend", "dir"], env);
    d.import_busybox(Via::Hutch);
    d
}

fn get(d: &TestDaemon, path: &str) -> Value {
    let (status, body) = d.http("GET", path, b"");
    assert_eq!(status, 200, "GET {path}: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["metadata"].clone()
}

/// (status, init's host pid) of instance `name`.
fn state(d: &TestDaemon, name: &str) -> (String, i64) {
    let s = get(d, &format!("/1.0/instances/{name}/state"));
    (
        s["status"].as_str().unwrap_or_default().to_string(),
        s["pid"].as_i64().unwrap_or(0),
    )
}

/// A config key of instance `name` ("" when unset).
fn key(d: &TestDaemon, name: &str, key: &str) -> String {
    get(d, &format!("/1.0/instances/{name}"))["config"][key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn kill_init(pid: i64) {
    assert!(pid > 0, "no init to kill");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill init");
}

/// Waits until `name` runs with an init other than `old`; returns the new pid.
fn wait_for_new_init(d: &TestDaemon, name: &str, old: i64) -> i64 {
    let mut pid = 0;
    wait_until(&format!("{name} to run again"), LIMIT, || {
        let (status, p) = state(d, name);
        pid = p;
        status == "Running" && p > 0 && p != old
    });
    pid
}

/// Waits until the daemon recorded `name` stopped (its handling of the stop is done).
fn wait_for_recorded_stop(d: &TestDaemon, name: &str) {
    wait_until(&format!("{name} recorded stopped"), LIMIT, || {
        key(d, name, "volatile.last_state.power") == "STOPPED"
    });
}

/// Whether the daemon's log has lifecycle event `action` for instance `name`.
fn event_logged(d: &TestDaemon, action: &str, name: &str) -> bool {
    let log = fs::read_to_string(d.path().join("hutchd.log")).unwrap_or_default();
    let source = format!("/1.0/instances/{name}");
    log.lines()
        .any(|l| l.contains("lifecycle") && l.contains(action) && l.contains(&source))
}

#[test]
fn an_init_that_dies_or_exits_comes_back_with_autorestart() {
    if !require_root("an_init_that_dies_or_exits_comes_back_with_autorestart") {
        return;
    }
    let d = daemon(&[]);
    assert!(d.has_extensions(&["instance_auto_restart"]));
    d.hutch_ok(&["launch", "bb", "ar", "-c", "boot.autorestart=true"]);
    let (_, first) = state(&d, "ar");

    // kill -9 of init from the host.
    kill_init(first);
    let second = wait_for_new_init(&d, "ar", first);
    wait_until("the restart event", LIMIT, || {
        event_logged(&d, "instance-restarted", "ar")
    });
    wait_until("the autorestart record", LIMIT, || {
        key(&d, "ar", "volatile.autorestart.count") == "1"
    });
    assert!(d.sh_ok("ar", "echo alive").contains("alive"));
    let info = d.hutch_ok(&["info", "ar"]);
    assert!(
        info.contains("Autorestart: restarted 1 time, last "),
        "{info}"
    );

    // An init that exits by itself (code 3) the first time it runs.
    d.sh_ok(
        "ar",
        "rm /sbin/init && printf '#!/bin/sh\\n[ -e /exited-once ] && exec /bin/busybox init\\ntouch /exited-once\\nexit 3\\n' >/sbin/init && chmod 755 /sbin/init",
    );
    d.hutch_ok(&["stop", "ar"]);
    assert_eq!(key(&d, "ar", "volatile.last_state.power"), "STOPPED");
    d.hutch_ok(&["start", "ar"]);
    wait_until("init to have exited once and come back", LIMIT, || {
        let (status, _) = state(&d, "ar");
        status == "Running"
            && key(&d, "ar", "volatile.autorestart.count") == "1"
            && d.sh("ar", "test -e /exited-once").0 == 0
    });
    // A stop through the API is never undone.
    let (_, pid) = state(&d, "ar");
    assert_ne!(pid, second);
    d.hutch_ok(&["stop", "ar", "--force"]);
    assert_eq!(state(&d, "ar").0, "Stopped");
    assert_eq!(key(&d, "ar", "volatile.last_state.power"), "STOPPED");
    d.hutch_ok(&["delete", "ar"]);
}

#[test]
fn without_autorestart_or_after_poweroff_it_stays_stopped_and_reboot_restarts() {
    if !require_root("without_autorestart_or_after_poweroff_it_stays_stopped_and_reboot_restarts") {
        return;
    }
    let d = daemon(&[]);
    d.hutch_ok(&["launch", "bb", "plain"]);
    d.hutch_ok(&["launch", "bb", "off", "-c", "boot.autorestart=true"]);
    d.hutch_ok(&["launch", "bb", "boot"]);

    // No key: a killed init is recorded stopped, and nothing starts it.
    let (_, pid) = state(&d, "plain");
    kill_init(pid);
    wait_for_recorded_stop(&d, "plain");
    assert_eq!(state(&d, "plain").0, "Stopped");
    assert!(event_logged(&d, "instance-shutdown", "plain"));

    // `poweroff` inside is a stop, even with boot.autorestart.
    let _ = d.sh("off", "poweroff");
    wait_for_recorded_stop(&d, "off");
    assert_eq!(state(&d, "off").0, "Stopped");
    assert_eq!(key(&d, "off", "volatile.autorestart.count"), "");

    // `reboot` inside is a restart, without the key.
    let (_, pid) = state(&d, "boot");
    let _ = d.sh("boot", "reboot");
    wait_for_new_init(&d, "boot", pid);
    wait_until("the reboot event", LIMIT, || {
        event_logged(&d, "instance-restarted", "boot")
    });
    assert_eq!(key(&d, "boot", "volatile.last_state.power"), "RUNNING");
    d.hutch_ok(&["delete", "plain", "off"]);
    d.hutch_ok(&["delete", "boot", "--force"]);
}

#[test]
fn eleven_quick_deaths_leave_it_stopped_with_a_warning() {
    if !require_root("eleven_quick_deaths_leave_it_stopped_with_a_warning") {
        return;
    }
    // An hour-long window, so that the eleven deaths fall in one window however slow the
    // machine is (the limit itself is Incus's: 10 restarts).
    let d = daemon(&[("HUTCH_AUTORESTART_WINDOW", "3600")]);
    d.hutch_ok(&["launch", "bb", "flaky", "-c", "boot.autorestart=true"]);
    let (_, mut pid) = state(&d, "flaky");
    for round in 1..=10 {
        kill_init(pid);
        pid = wait_for_new_init(&d, "flaky", pid);
        wait_until(&format!("restart {round} recorded"), LIMIT, || {
            key(&d, "flaky", "volatile.autorestart.count") == round.to_string()
        });
    }
    kill_init(pid);
    wait_until("the give-up record", LIMIT, || {
        !key(&d, "flaky", "volatile.autorestart.gave_up").is_empty()
    });
    assert_eq!(state(&d, "flaky").0, "Stopped");
    assert_eq!(key(&d, "flaky", "volatile.last_state.power"), "STOPPED");
    let log = fs::read_to_string(d.path().join("hutchd.log")).unwrap();
    assert!(log.contains("autorestart gave up"), "{log}");
    let info = d.hutch_ok(&["info", "flaky"]);
    assert!(
        info.contains("after 10 restarts: restarted too often, left stopped"),
        "{info}"
    );
    // A start by hand begins afresh.
    d.hutch_ok(&["start", "flaky"]);
    assert_eq!(key(&d, "flaky", "volatile.autorestart.gave_up"), "");
    d.hutch_ok(&["delete", "flaky", "--force"]);
}

#[test]
fn a_death_while_the_daemon_is_down_is_handled_at_its_next_start() {
    if !require_root("a_death_while_the_daemon_is_down_is_handled_at_its_next_start") {
        return;
    }
    let mut d = daemon(&[]);
    d.hutch_ok(&["launch", "bb", "back", "-c", "boot.autorestart=true"]);
    d.hutch_ok(&["launch", "bb", "gone"]);
    let (_, back) = state(&d, "back");
    let (_, gone) = state(&d, "gone");
    d.kill();
    kill_init(back);
    kill_init(gone);
    // Each monitor records the death; then a daemon starts.
    wait_until("the monitors' exit records", LIMIT, || {
        ["back", "gone"].iter().all(|n| {
            d.path()
                .join("containers")
                .join(n)
                .join("exit.json")
                .exists()
        })
    });
    d.spawn();
    wait_for_new_init(&d, "back", back);
    // Crashed without the key: recorded stopped, not brought back by its last state.
    wait_for_recorded_stop(&d, "gone");
    assert_eq!(state(&d, "gone").0, "Stopped");
    d.hutch_ok(&["delete", "gone"]);
    d.hutch_ok(&["delete", "back", "--force"]);
}

/// Three instances with stop priorities 10, 5 and 0 whose busybox init writes its name to a
/// shared disk when it shuts down, and one with `boot.autostart=false`; returns the shared
/// file.
fn prioritised(d: &TestDaemon) -> std::path::PathBuf {
    let shared = d.path().join("shared");
    fs::create_dir(&shared).unwrap();
    let source = format!("source={}", shared.display());
    for (name, prio) in [("p0", "0"), ("p10", "10"), ("p5", "5"), ("never", "1")] {
        let prio = format!("boot.stop.priority={prio}");
        d.hutch_ok(&["launch", "bb", name, "-c", &prio]);
        d.sh_ok(
            name,
            &format!("echo '::shutdown:/bin/sh -c \"echo {name} >>/shared/order\"' >>/etc/inittab"),
        );
        // busybox init reads inittab when it starts.
        d.hutch_ok(&["restart", name]);
        d.hutch_ok(&[
            "config",
            "device",
            "add",
            name,
            "shared",
            "disk",
            &source,
            "path=/shared",
            "shift=true",
        ]);
    }
    d.hutch_ok(&["config", "set", "never", "boot.autostart=false"]);
    let order = shared.join("order");
    fs::write(&order, "").unwrap();
    order
}

fn check_order_and_come_back(d: &mut TestDaemon, order: &std::path::Path) {
    let text = fs::read_to_string(order).unwrap();
    let stopped: Vec<&str> = text.lines().filter(|l| *l != "never").collect();
    assert_eq!(stopped, ["p10", "p5", "p0"], "{text}");
    assert!(text.lines().any(|l| l == "never"), "{text}");
    // Stopped cleanly, and recorded as running for the next start.
    for name in ["p10", "p5", "p0"] {
        let dir = d.path().join("containers").join(name);
        assert!(hutch_runtime::container::running_state(&dir).is_none());
    }
    d.spawn();
    for name in ["p10", "p5", "p0"] {
        wait_until(&format!("{name} back"), LIMIT, || {
            state(d, name).0 == "Running"
        });
    }
    assert_eq!(state(d, "never").0, "Stopped");
    d.hutch_ok(&["delete", "p10", "p5", "p0", "--force"]);
    d.hutch_ok(&["delete", "never"]);
}

#[test]
fn hutchd_shutdown_stops_by_priority_and_the_next_start_brings_them_back() {
    if !require_root("hutchd_shutdown_stops_by_priority_and_the_next_start_brings_them_back") {
        return;
    }
    let mut d = daemon(&[]);
    let order = prioritised(&d);
    let mut cmd = Command::new(hutch_tests::hutchd_bin());
    cmd.arg("--dir")
        .arg(d.path())
        .args(["shutdown", "--timeout", "120"]);
    let out = output_within(&mut cmd, b"", COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "hutchd shutdown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `hutchd shutdown` returns once the daemon has gone.
    d.wait_for_exit(LIMIT);
    check_order_and_come_back(&mut d, &order);
}

#[test]
fn sigpwr_is_a_host_shutdown_and_sigterm_is_not() {
    if !require_root("sigpwr_is_a_host_shutdown_and_sigterm_is_not") {
        return;
    }
    let mut d = daemon(&[]);
    let order = prioritised(&d);
    // SIGTERM (a restart, an upgrade): the daemon goes, the containers stay.
    let pid = nix::unistd::Pid::from_raw(d.pid().expect("daemon pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    d.wait_for_exit(LIMIT);
    for name in ["p10", "p5", "p0", "never"] {
        let dir = d.path().join("containers").join(name);
        assert!(
            hutch_runtime::container::running_state(&dir).is_some(),
            "{name} stopped with the daemon"
        );
    }
    assert_eq!(fs::read_to_string(&order).unwrap(), "");
    d.spawn();
    let pid = nix::unistd::Pid::from_raw(d.pid().expect("daemon pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGPWR).unwrap();
    d.wait_for_exit(LIMIT);
    check_order_and_come_back(&mut d, &order);
}

#[test]
fn hutchd_shutdown_without_a_daemon_stops_the_containers_itself() {
    if !require_root("hutchd_shutdown_without_a_daemon_stops_the_containers_itself") {
        return;
    }
    let mut d = daemon(&[]);
    for name in ["s1", "s2"] {
        d.hutch_ok(&["launch", "bb", name]);
    }
    d.kill();
    let mut cmd = Command::new(hutch_tests::hutchd_bin());
    cmd.arg("--dir").arg(d.path()).arg("shutdown");
    let out = output_within(&mut cmd, b"", COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "hutchd shutdown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["s1", "s2"] {
        let dir = d.path().join("containers").join(name);
        assert!(
            hutch_runtime::container::running_state(&dir).is_none(),
            "{name} still runs"
        );
    }
    d.spawn();
    for name in ["s1", "s2"] {
        wait_until(&format!("{name} back"), LIMIT, || {
            state(&d, name).0 == "Running"
        });
    }
    d.hutch_ok(&["delete", "s1", "s2", "--force"]);
}

#[test]
fn autostart_follows_priorities_including_a_profiles() {
    if !require_root("autostart_follows_priorities_including_a_profiles") {
        return;
    }
    let mut d = daemon(&[]);
    d.hutch_ok(&["profile", "create", "prio5"]);
    d.hutch_ok(&["profile", "set", "prio5", "boot.autostart.priority=5"]);
    d.hutch_ok(&["launch", "bb", "a0", "-c", "boot.autostart=true"]);
    d.hutch_ok(&[
        "launch",
        "bb",
        "a5",
        "-p",
        "default",
        "-p",
        "prio5",
        "-c",
        "boot.autostart=true",
    ]);
    d.hutch_ok(&[
        "launch",
        "bb",
        "a10",
        "-c",
        "boot.autostart=true",
        "-c",
        "boot.autostart.priority=10",
        "-c",
        "boot.autostart.delay=1",
    ]);
    // The host goes down with the daemon and every container.
    d.kill();
    for name in ["a0", "a5", "a10"] {
        hutch_runtime::container::stop(
            &d.path().join("containers").join(name),
            Duration::from_secs(1),
            true,
        )
        .unwrap();
    }
    d.spawn();
    for name in ["a0", "a5", "a10"] {
        wait_until(&format!("{name} autostarted"), LIMIT, || {
            state(&d, name).0 == "Running"
        });
    }
    // The new daemon's log: the order of the starts.
    let log = fs::read_to_string(d.path().join("hutchd.log")).unwrap();
    let started: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lifecycle") && l.contains("instance-started"))
        .filter_map(|l| {
            ["a10", "a5", "a0"].into_iter().find(|n| {
                l.contains(&format!("/1.0/instances/{n}\""))
                    || l.ends_with(&format!("/1.0/instances/{n}"))
            })
        })
        .collect();
    assert_eq!(started, ["a10", "a5", "a0"], "{log}");
    d.hutch_ok(&["delete", "a0", "a5", "a10", "--force"]);
}
