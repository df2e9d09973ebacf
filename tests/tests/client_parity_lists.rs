//! End-to-end: `hutch` and LXD's own `lxc` against the same hutchd, for the list, query,
//! operation, info, version, bulk action, delete, monitor, alias, warning and project
//! commands: both must print the same thing in the formats both print. Needs root.

use hutch_tests::{busybox_image, require_root, TestDaemon};
use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A daemon with the busybox image under alias `bb`, two running containers `web1` (with
/// a snapshot and a user key) and `web2`, and a stopped one, `db1`.
fn daemon_with_instances() -> TestDaemon {
    let d = TestDaemon::start();
    let image = d.path().join("bb.tar.gz");
    busybox_image(d.path(), &image).expect("build the image");
    d.hutch_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    d.hutch_ok(&["launch", "bb", "web1", "-c", "user.tier=front"]);
    d.hutch_ok(&["launch", "bb", "web2"]);
    d.hutch_ok(&["init", "bb", "db1", "-c", "user.tier=back"]);
    d.hutch_ok(&["snapshot", "web1", "snap0"]);
    d
}

/// `hutch ARGS` and `lxc ARGS` must both succeed and print the same.
fn same(d: &TestDaemon, args: &[&str]) -> String {
    let h = d.hutch_ok(args);
    let l = d.lxc_ok(args);
    assert_eq!(h, l, "hutch and lxc differ on {args:?}:\nhutch:\n{h}\nlxc:\n{l}");
    h
}

/// Both fail, with the same `Error: ...` line on stderr, exit status 1.
fn same_error(d: &TestDaemon, args: &[&str]) -> String {
    let h = d.hutch(args, b"");
    let l = d.lxc(args);
    assert_eq!(h.status.code(), Some(1), "hutch {args:?}: {}", text(&h.stderr));
    assert_eq!(l.status.code(), Some(1), "lxc {args:?}: {}", text(&l.stderr));
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
    // json and yaml: the same instances, with the same fields hutchd sent.
    for cols in ["ns", "nsS4"] {
        let h: Value = serde_json::from_str(&d.hutch_ok(&["list", "-c", cols, "-f", "json"]))
            .unwrap();
        let l: Value =
            serde_json::from_str(&d.lxc_ok(&["list", "-c", cols, "-f", "json"])).unwrap();
        assert_same_instances(&h, &l);
        let h: Value = serde_yaml::from_str(&d.hutch_ok(&["list", "-c", cols, "-f", "yaml"]))
            .unwrap();
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
        for key in ["name", "status", "type", "profiles", "config", "expanded_devices"] {
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
