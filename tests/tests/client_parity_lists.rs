//! End-to-end: `hutch` and LXD's own `lxc` against the same hutchd, for the list, query,
//! operation, info, version, bulk action, delete, monitor, alias, warning and project
//! commands: both must print the same thing in the formats both print. Needs root.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hutch_tests::{require_root, TestDaemon, Via};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A daemon with the busybox image under alias `bb`, two running containers `web1` (with
/// a snapshot and a user key) and `web2`, and a stopped one, `db1`.
fn daemon_with_instances() -> TestDaemon {
    let d = TestDaemon::start();
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", "web1", "-c", "user.tier=front"]);
    d.hutch_ok(&["launch", "bb", "web2"]);
    // Two profiles: a cell of two lines in the PROFILES column.
    d.lxc_ok(&["profile", "create", "extra"]);
    d.hutch_ok(&[
        "init",
        "bb",
        "db1",
        "-c",
        "user.tier=back",
        "-p",
        "default",
        "-p",
        "extra",
    ]);
    d.hutch_ok(&["snapshot", "web1", "snap0"]);
    d
}

/// `hutch ARGS` and `lxc ARGS` must both succeed and print the same.
fn same(d: &TestDaemon, args: &[&str]) -> String {
    let h = d.hutch_ok(args);
    let l = d.lxc_ok(args);
    assert_eq!(
        h, l,
        "hutch and lxc differ on {args:?}:\nhutch:\n{h}\nlxc:\n{l}"
    );
    h
}

/// Both fail, with the same `Error: ...` line on stderr, exit status 1.
fn same_error(d: &TestDaemon, args: &[&str]) -> String {
    let h = d.hutch(args, b"");
    let l = d.lxc(args);
    assert_eq!(
        h.status.code(),
        Some(1),
        "hutch {args:?}: {}",
        text(&h.stderr)
    );
    assert_eq!(
        l.status.code(),
        Some(1),
        "lxc {args:?}: {}",
        text(&l.stderr)
    );
    let first = |b: &[u8]| text(b).lines().next().unwrap_or("").to_string();
    assert_eq!(first(&h.stderr), first(&l.stderr), "{args:?}");
    first(&h.stderr)
}

#[test]
fn list_filters_columns_and_formats_match_lxc() {
    if !require_root("list_filters_columns_and_formats_match_lxc") {
        return;
    }
    let d = daemon_with_instances();
    // Columns whose data do not move between two calls.
    let stable = "nsN46tSpPlcabdefF";
    for format in ["csv", "table", "compact"] {
        same(&d, &["list", "-f", format]);
        same(&d, &["list", "-c", stable, "-f", format]);
        same(&d, &["list", "--fast", "-f", format]);
    }
    // hutchd has one project and no `instance_all_projects`: both refuse alike.
    same_error(&d, &["list", "--all-projects", "-f", "csv"]);
    same(&d, &["list", "-c", "ne", "-f", "table"]);
    let all = same(&d, &["list", "-c", "ns", "-f", "csv"]);
    assert_eq!(all, "db1,STOPPED\nweb1,RUNNING\nweb2,RUNNING\n");
    for filters in [
        &["web"][..],
        &["web1"],
        &["w.*2$"],
        &[".*1"],
        &["status=running"],
        &["status=RUNNING", "type=container"],
        &["status=stopped,frozen"],
        &["user.tier=front"],
        &["u.tier=back"],
        &["user.tier=b.*"],
        &["web", "status=running"],
        &["local:web"],
        &["nothing"],
    ] {
        let mut args = vec!["list", "-c", "nsS", "-f", "csv"];
        args.extend_from_slice(filters);
        same(&d, &args);
    }
    assert_eq!(
        d.hutch_ok(&["list", "web", "status=running", "-c", "n", "-f", "csv"]),
        "web1\nweb2\n"
    );
    // Custom columns of config and device keys, with a name and a width.
    same(
        &d,
        &[
            "list",
            "-c",
            "n,user.tier:TIER,user.tier:T:2,devices:root.pool:pool",
            "-f",
            "csv",
        ],
    );
    same(&d, &["list", "-c", "n,user.tier:TIER", "-f", "table"]);
    same(
        &d,
        &["list", "-c", "n,user.tier,image.os:os_name", "-f", "table"],
    );
    same(&d, &["list", "-c", "ns,user.tier", "-f", "compact"]);
    // json and yaml: the same instances, with the same fields hutchd sent.
    for cols in ["ns", "nsS4"] {
        let h: Value =
            serde_json::from_str(&d.hutch_ok(&["list", "-c", cols, "-f", "json"])).unwrap();
        let l: Value =
            serde_json::from_str(&d.lxc_ok(&["list", "-c", cols, "-f", "json"])).unwrap();
        assert_same_instances(&h, &l);
        let h: Value =
            serde_yaml::from_str(&d.hutch_ok(&["list", "-c", cols, "-f", "yaml"])).unwrap();
        let l: Value =
            serde_yaml::from_str(&d.lxc_ok(&["list", "-c", cols, "-f", "yaml"])).unwrap();
        assert_same_instances(&h, &l);
    }
    // Columns whose values move (usage counters): the same cells filled, in lxc's units.
    let h = d.hutch_ok(&["list", "-c", "nmuD", "-f", "csv"]);
    let l = d.lxc_ok(&["list", "-c", "nmuD", "-f", "csv"]);
    let shape = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .map(|r| {
                r.split(',')
                    .map(|c| {
                        c.trim_start_matches(|ch: char| ch.is_ascii_digit() || ch == '.')
                            .to_string()
                    })
                    .collect()
            })
            .collect()
    };
    assert_eq!(shape(&h), shape(&l), "hutch:\n{h}\nlxc:\n{l}");
    // Bad column specs fail alike.
    for spec in ["nL", "nz", "n,", "a.b:c:d:e"] {
        same_error(&d, &["list", "-c", spec]);
    }
    same_error(&d, &["list", "--fast", "-c", "ns"]);
    for a in [&["web1", "web2"][..], &["db1"]] {
        let mut args = vec!["delete", "--force"];
        args.extend_from_slice(a);
        d.hutch_ok(&args);
    }
}

/// Both lists hold the same instances, and every field hutch printed is what lxc printed
/// (lxc adds the zero values of fields hutchd does not send).
fn assert_same_instances(h: &Value, l: &Value) {
    let (h, l) = (h.as_array().unwrap(), l.as_array().unwrap());
    assert_eq!(h.len(), l.len());
    for hi in h {
        let li = l
            .iter()
            .find(|x| x["name"] == hi["name"])
            .unwrap_or_else(|| panic!("{} missing from lxc's list", hi["name"]));
        for key in [
            "name",
            "status",
            "type",
            "profiles",
            "config",
            "expanded_devices",
        ] {
            assert_eq!(hi[key], li[key], "{key} of {}", hi["name"]);
        }
        assert_eq!(
            hi["snapshots"].as_array().map(Vec::len).unwrap_or(0),
            li["snapshots"].as_array().map(Vec::len).unwrap_or(0),
            "snapshots of {}:\nhutch: {hi}\nlxc: {li}",
            hi["name"]
        );
    }
}

/// `yaml` of both parsed: every key hutch printed has the value lxc printed (lxc adds
/// the zero values of the fields of its own structs).
fn assert_yaml_subset(h: &str, l: &str) {
    let h: Value = serde_yaml::from_str(h).expect("hutch's yaml");
    let l: Value = serde_yaml::from_str(l).expect("lxc's yaml");
    for (k, v) in h.as_object().expect("a yaml map") {
        assert_eq!(Some(v), l.get(k), "{k}:\nhutch: {h}\nlxc: {l}");
    }
}

/// The text before the first line starting with `marker`.
fn before<'a>(s: &'a str, marker: &str) -> &'a str {
    s.find(marker).map(|i| &s[..i]).unwrap_or(s)
}

#[test]
fn query_operation_info_and_version_match_lxc() {
    if !require_root("query_operation_info_and_version_match_lxc") {
        return;
    }
    let d = daemon_with_instances();

    // query: metadata indented as lxc does it, --raw the whole response, plain files as
    // they are, errors alike.
    same(&d, &["query", "/1.0/instances"]);
    same(&d, &["query", "/1.0/instances/db1"]);
    same(&d, &["query", "--raw", "/1.0/instances/db1"]);
    same(&d, &["query", "/1.0/profiles/default"]);
    same(&d, &["query", "-X", "GET", "/1.0/instances/db1/logs"]);
    same(&d, &["query", "/1.0/instances/db1/snapshots"]);
    same_error(&d, &["query", "/1.0/instances/nope"]);
    same_error(&d, &["query", "1.0"]);
    let out = d.hutch_ok(&[
        "query",
        "-X",
        "POST",
        "-d",
        r#"{"name": "viaquery"}"#,
        "--wait",
        "/1.0/instances/db1/snapshots",
    ]);
    let op: Value = serde_json::from_str(&out).expect("the operation as JSON");
    assert_eq!(op["status"], "Success", "{out}");
    assert!(out.contains("\n\t\"status\": \"Success\",\n"), "{out}");
    same(&d, &["query", "/1.0/instances/db1/snapshots"]);
    same_error(
        &d,
        &[
            "query",
            "-X",
            "POST",
            "-d",
            "not json",
            "/1.0/instances/db1/snapshots",
        ],
    );

    // operation list, show and delete.
    let h = d.hutch_ok(&["operation", "list", "-f", "csv"]);
    let l = d.lxc_ok(&["operation", "list", "-f", "csv"]);
    // Finished operations may expire between the two calls: the rows both list agree.
    for row in h.lines() {
        let id = row.split(',').next().unwrap();
        if let Some(lrow) = l.lines().find(|r| r.starts_with(id)) {
            assert_eq!(row, lrow);
            assert_yaml_subset(
                &d.hutch_ok(&["operation", "show", id]),
                &d.lxc_ok(&["operation", "show", id]),
            );
        }
    }
    let header = |s: &str| s.lines().take(3).collect::<Vec<_>>().join("\n");
    assert_eq!(
        header(&d.hutch_ok(&["operation", "list"])),
        header(&d.lxc_ok(&["operation", "list"]))
    );
    // A running operation (an exec waiting for its websockets): listed alike, shown
    // alike, and refused alike when cancelled.
    let exec = d.hutch_ok(&[
        "query",
        "-X",
        "POST",
        "-d",
        r#"{"command": ["sleep", "600"], "wait-for-websocket": true, "interactive": false}"#,
        "--raw",
        "/1.0/instances/web2/exec",
    ]);
    let raw: Value = serde_json::from_str(&exec).expect("the raw response");
    let op_id = raw["operation"]
        .as_str()
        .and_then(|o| o.rsplit('/').next())
        .expect("an operation")
        .to_string();
    let running = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.contains(&op_id))
            .map(str::to_string)
            .collect()
    };
    let h = d.hutch_ok(&["operation", "list"]);
    let l = d.lxc_ok(&["operation", "list"]);
    assert_eq!(running(&h), running(&l));
    // A running exec can be cancelled (DELETE kills the command; LXD 5.0 says NO).
    assert!(running(&h)[0].contains("| RUNNING | YES "), "{h}");
    assert_yaml_subset(
        &d.hutch_ok(&["operation", "show", &op_id]),
        &d.lxc_ok(&["operation", "show", &op_id]),
    );
    // Deleting the running exec cancels it; once it has ended, both clients refuse alike.
    d.hutch_ok(&["operation", "delete", &op_id]);
    let ended = d.hutch_ok(&["query", &format!("/1.0/operations/{op_id}/wait?timeout=60")]);
    assert!(ended.contains("Cancelled"), "{ended}");
    same_error(&d, &["operation", "delete", &op_id]);
    same_error(
        &d,
        &["operation", "show", "3c9d2f1e-0000-4000-8000-000000000000"],
    );
    same_error(
        &d,
        &[
            "operation",
            "delete",
            "3c9d2f1e-0000-4000-8000-000000000000",
        ],
    );

    // version: the server's line.
    let server_line = |s: String| s.lines().nth(1).unwrap_or("").to_string();
    assert_eq!(
        server_line(d.hutch_ok(&["version"])),
        server_line(d.lxc_ok(&["version"]))
    );
    assert!(d.hutch_ok(&["version"]).starts_with("Client version: "));

    // info: a stopped instance whole, a running one up to its changing counters and its
    // snapshots, the log, the server and its resources.
    same(&d, &["info", "db1"]);
    same(&d, &["info", "db1", "--show-log"]);
    let h = d.hutch_ok(&["info", "web1"]);
    let l = d.lxc_ok(&["info", "web1"]);
    assert_eq!(before(&h, "\nResources:"), before(&l, "\nResources:"));
    assert!(h.contains("\nResources:\n  Processes: "), "{h}");
    let snaps = |s: &str| s[s.find("\nSnapshots:").expect("snapshots")..].to_string();
    assert_eq!(snaps(&h), snaps(&l));
    same_error(&d, &["info", "nope"]);
    assert_yaml_subset(&d.hutch_ok(&["info"]), &d.lxc_ok(&["info"]));
    let h = d.hutch_ok(&["info", "--resources"]);
    let l = d.lxc_ok(&["info", "--resources"]);
    assert_eq!(before(&h, "\nMemory:"), before(&l, "\nMemory:"));
    assert_eq!(
        h.lines().count(),
        l.lines().count(),
        "hutch:\n{h}\nlxc:\n{l}"
    );
    d.hutch_ok(&["delete", "--force", "web1", "web2", "db1"]);
}

#[test]
fn bulk_actions_and_interactive_delete_match_lxc() {
    if !require_root("bulk_actions_and_interactive_delete_match_lxc") {
        return;
    }
    let d = daemon_with_instances();
    let states = |d: &TestDaemon| d.lxc_ok(&["list", "-c", "ns", "-f", "csv"]);
    // --quiet: no progress lines, from either client.
    assert_eq!(d.hutch_ok(&["launch", "bb", "q1", "--quiet"]), "");
    assert_eq!(d.lxc_ok(&["launch", "bb", "q2", "--quiet"]), "");
    assert_eq!(d.hutch_ok(&["-q", "delete", "--force", "q1", "q2"]), "");
    d.hutch_ok(&["stop", "--all", "--force"]);
    assert_eq!(states(&d), "db1,STOPPED\nweb1,STOPPED\nweb2,STOPPED\n");
    d.hutch_ok(&["start", "--all"]);
    assert_eq!(states(&d), "db1,RUNNING\nweb1,RUNNING\nweb2,RUNNING\n");
    d.hutch_ok(&["pause", "--all"]);
    assert_eq!(states(&d), "db1,FROZEN\nweb1,FROZEN\nweb2,FROZEN\n");
    d.hutch_ok(&["start", "--all"]);
    d.hutch_ok(&["restart", "--all", "--force"]);
    assert_eq!(states(&d), "db1,RUNNING\nweb1,RUNNING\nweb2,RUNNING\n");
    d.lxc_ok(&["stop", "--all", "--force"]);
    assert_eq!(states(&d), "db1,STOPPED\nweb1,STOPPED\nweb2,STOPPED\n");
    same_error(&d, &["start", "--all", "web1"]);
    same_error(&d, &["start", "--all", "--console"]);
    same_error(&d, &["start", "web1", "web2", "--console"]);
    same_error(&d, &["stop", "web1", "--force", "--console"]);
    same_error(&d, &["start", "nope"]);
    // One failure among several: each named on stderr, then one error.
    let h = d.hutch(&["start", "web1", "nope"], b"");
    let l = d.lxc(&["start", "web2", "nope"]);
    assert_eq!(h.status.code(), Some(1));
    let tail = |b: &[u8]| text(b).lines().last().unwrap_or("").to_string();
    assert_eq!(tail(&h.stderr), tail(&l.stderr));
    assert_eq!(tail(&h.stderr), "Error: Some instances failed to start");
    assert!(
        text(&h.stderr).starts_with("nope: error: "),
        "{}",
        text(&h.stderr)
    );

    // delete -i: the same prompt, "no" keeps the instance, "yes" deletes it.
    let h = d.hutch(&["delete", "-i", "db1"], b"no\n");
    let l = d.lxc_with_stdin(&["delete", "-i", "db1"], b"no\n");
    assert_eq!(text(&h.stdout), "Remove db1 (yes/no): ");
    assert_eq!(text(&h.stdout), text(&l.stdout));
    assert_eq!(text(&h.stderr), text(&l.stderr));
    assert_eq!(text(&h.stderr), "Error: User aborted delete operation\n");
    assert_eq!(h.status.code(), Some(1));
    let out = d.hutch(&["delete", "-i", "db1", "web1/snap0"], b"yes\nyes\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Remove db1 (yes/no): Remove web1/snap0 (yes/no): "
    );
    same(&d, &["list", "-c", "nS", "-f", "csv"]);
    // web1 and web2 were started by the batches above.
    assert_eq!(states(&d), "web1,RUNNING\nweb2,RUNNING\n");
    same_error(&d, &["delete", "nope"]);
    same_error(&d, &["delete", "web1"]);
    d.hutch_ok(&["delete", "--force", "web1", "web2"]);
}

/// A command of both clients with their own config directories (aliases live there).
fn client_cmd(d: &TestDaemon, lxc: bool, args: &[&str]) -> Command {
    let mut c = if lxc {
        let mut c = Command::new("lxc");
        c.env("LXD_DIR", d.path())
            .env("LXD_CONF", d.path().join("lxc-conf"))
            .env("HOME", d.path());
        c
    } else {
        let mut c = Command::new(hutch_tests::hutch_bin());
        c.env("HUTCH_DIR", d.path())
            .env("HUTCH_CONF", d.path().join("hutch-conf"));
        c
    };
    c.args(args);
    c
}

fn run_both(d: &TestDaemon, args: &[&str]) -> (String, String) {
    let run = |lxc: bool| {
        let out = hutch_tests::output_within(
            &mut client_cmd(d, lxc, args),
            b"",
            hutch_tests::COMMAND_LIMIT,
        );
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            if lxc { "lxc" } else { "hutch" },
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    (run(false), run(true))
}

/// A monitor of one client, its stdout lines sent to a channel; killed on drop.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(d: &TestDaemon, lxc: bool, args: &[&str]) -> Monitor {
        let mut child = client_cmd(d, lxc, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a monitor");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Monitor { child, lines }
    }

    fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn monitor_aliases_completion_warnings_and_projects_match_lxc() {
    if !require_root("monitor_aliases_completion_warnings_and_projects_match_lxc") {
        return;
    }
    let d = daemon_with_instances();

    // monitor: both see the same lifecycle events, printed the same way. Config changes
    // are made until both monitors (subscribed at some point) have shown one.
    let hutch_json = Monitor::start(&d, false, &["monitor", "--type", "lifecycle", "-f", "json"]);
    let lxc_json = Monitor::start(&d, true, &["monitor", "--type", "lifecycle", "-f", "json"]);
    let hutch_pretty = Monitor::start(&d, false, &["monitor", "--type=lifecycle", "--pretty"]);
    let hutch_yaml = Monitor::start(&d, false, &["monitor", "--type", "logging"]);
    let (mut seen_h, mut seen_l, mut seen_p, mut seen_y) = (vec![], vec![], vec![], vec![]);
    let mut n = 0;
    hutch_tests::wait_until("events on every monitor", Duration::from_secs(60), || {
        n += 1;
        d.hutch_ok(&["config", "set", "db1", &format!("user.n={n}")]);
        std::thread::sleep(Duration::from_millis(100));
        seen_h.extend(hutch_json.drain());
        seen_l.extend(lxc_json.drain());
        seen_p.extend(hutch_pretty.drain());
        seen_y.extend(hutch_yaml.drain());
        let common = seen_h
            .iter()
            .any(|h| h.contains("instance-updated") && seen_l.contains(h));
        common && !seen_p.is_empty() && seen_y.iter().any(|l| l.starts_with("type: logging"))
    });
    for line in seen_h.iter().filter(|l| !l.is_empty()) {
        let ev: Value = serde_json::from_str(line).expect("one event per line");
        assert_eq!(ev["type"], "lifecycle", "{line}");
    }
    let pretty = seen_p
        .iter()
        .find(|l| l.contains("instance-updated"))
        .expect("a pretty line");
    assert!(
        pretty.starts_with("time=")
            && pretty
                .contains(" level=info msg=\"Action: instance-updated, Source: /1.0/instances/db1"),
        "{pretty}"
    );
    drop((hutch_json, lxc_json, hutch_pretty, hutch_yaml));
    let bad = d.hutch(&["monitor", "-f", "table"], b"");
    assert_eq!(text(&bad.stderr), "Error: Invalid format: table\n");

    // aliases: kept in each client's config, listed alike, expanded alike.
    for args in [
        &["alias", "add", "ll", "list -c ns -f csv"][..],
        &["alias", "add", "names", "list -c n -f csv @ARGS@"],
        &["alias", "add", "tmp", "version"],
        &["alias", "rename", "tmp", "ver"],
        &["alias", "remove", "ver"],
    ] {
        run_both(&d, args);
    }
    let (h, l) = run_both(&d, &["alias", "list", "-f", "csv"]);
    assert_eq!(h, l);
    assert_eq!(h, "ll,list -c ns -f csv\nnames,list -c n -f csv @ARGS@\n");
    let (h, l) = run_both(&d, &["alias", "list"]);
    assert_eq!(h, l);
    let (h, l) = run_both(&d, &["ll"]);
    assert_eq!(h, l);
    assert_eq!(h, "db1,STOPPED\nweb1,RUNNING\nweb2,RUNNING\n");
    let (h, l) = run_both(&d, &["names", "web"]);
    assert_eq!((h.as_str(), l.as_str()), ("web1\nweb2\n", "web1\nweb2\n"));
    let again = hutch_tests::output_within(
        &mut client_cmd(&d, false, &["alias", "add", "ll", "x"]),
        b"",
        hutch_tests::COMMAND_LIMIT,
    );
    assert_eq!(text(&again.stderr), "Error: Alias ll already exists\n");

    // completion scripts.
    for shell in ["bash", "zsh", "fish"] {
        let script = d.hutch_ok(&["completion", shell]);
        assert!(
            script.contains("hutch") && script.contains("list"),
            "{shell}"
        );
    }

    // warnings and projects.
    for format in ["csv", "table", "compact", "json", "yaml"] {
        same(&d, &["warning", "list", "-f", format]);
        same(
            &d,
            &["warning", "list", "--all", "-c", "uSsclf", "-f", format],
        );
    }
    for format in ["csv", "table", "compact", "json"] {
        same(&d, &["project", "list", "-f", format]);
    }
    // yaml: Go writes its structs' fields in their own order; the same values.
    let h: Value = serde_yaml::from_str(&d.hutch_ok(&["project", "list", "-f", "yaml"])).unwrap();
    let l: Value = serde_yaml::from_str(&d.lxc_ok(&["project", "list", "-f", "yaml"])).unwrap();
    assert_eq!(h, l);
    same_error(
        &d,
        &["warning", "show", "3c9d2f1e-0000-4000-8000-000000000000"],
    );
    assert_yaml_subset(
        &d.hutch_ok(&["project", "show", "default"]),
        &d.lxc_ok(&["project", "show", "default"]),
    );
    same_error(&d, &["project", "show", "nope"]);
    d.hutch_ok(&["delete", "--force", "web1", "web2", "db1"]);
}

#[test]
fn list_addresses_on_a_managed_network_match_lxc() {
    if !require_root("list_addresses_on_a_managed_network_match_lxc") {
        return;
    }
    let net = hutch_tests::unique_name("hbl");
    let d = TestDaemon::start_with(&["--network-bridge", &net]);
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", "n1"]);
    d.hutch_ok(&["launch", "bb", "n2"]);
    let ipv4 = |name: &str| -> Option<String> {
        let cell = d.hutch_ok(&["list", name, "-c", "4", "-f", "csv"]);
        cell.trim().strip_suffix(" (eth0)").map(str::to_string)
    };
    hutch_tests::wait_until(
        "IPv4 addresses on n1 and n2",
        Duration::from_secs(30),
        || ipv4("n1").is_some() && ipv4("n2").is_some(),
    );
    let a1 = ipv4("n1").unwrap();
    for format in ["csv", "table", "compact"] {
        same(&d, &["list", "-c", "ns4", "-f", format]);
    }
    let subnet = format!("{}.0/24", a1.rsplit_once('.').unwrap().0);
    // Address filters need the state: with `-c n` alone lxc fetches none and lists
    // nothing, and hutch does the same.
    for filter in [
        format!("ipv4={a1}"),
        format!("ipv4={subnet}"),
        "ipv4=192.0.2.0/24".into(),
    ] {
        for cols in ["n", "n4"] {
            same(&d, &["list", "-c", cols, "-f", "csv", &filter]);
        }
    }
    let found = d.hutch_ok(&["list", "-c", "n4", "-f", "csv", &format!("ipv4={subnet}")]);
    assert_eq!(found.lines().count(), 2, "{found}");
    let one = d.hutch_ok(&["list", "-c", "n4", "-f", "csv", &format!("ipv4={a1}")]);
    assert_eq!(one, format!("n1,{a1} (eth0)\n"));
    let h = d.hutch_ok(&["info", "n1"]);
    let l = d.lxc_ok(&["info", "n1"]);
    // lxc prints the interfaces in Go's random map order, hutch sorted: compared as sets.
    let addresses = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .lines()
            .filter(|l| {
                l.contains("inet:") || l.contains("MAC address") || l.contains("Host interface")
            })
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(addresses(&h), addresses(&l));
    assert!(
        h.contains(&format!("        inet:  {a1}/24 (global)\n")),
        "{h}"
    );
    d.hutch_ok(&["delete", "--force", "n1", "n2"]);
}

#[test]
fn start_console_attaches_after_starting() {
    if !require_root("start_console_attaches_after_starting") {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["init", "bb", "c1"]);
    let cmd = format!("{} start c1 --console", hutch_tests::hutch_bin().display());
    let mut term =
        hutch_tests::TerminalSession::start(&cmd, &[("HUTCH_DIR", d.path().as_os_str())]);
    term.wait_for("HELLO-START", |seen| {
        if seen.contains("detach") {
            d.hutch_ok(&[
                "exec",
                "c1",
                "--",
                "sh",
                "-c",
                "echo HELLO-START > /dev/console",
            ]);
        }
    });
    term.type_keys(&[b"\x01", b"q"]);
    let status = term.wait();
    assert!(status.success(), "console did not detach cleanly: {status}");
    assert_eq!(
        d.hutch_ok(&["list", "c1", "-c", "s", "-f", "csv"]),
        "RUNNING\n"
    );
    d.hutch_ok(&["delete", "c1", "--force"]);
}
