//! End-to-end: server config (`hutch config` and LXD's `lxc config` without an instance)
//! against a real hutchd, kept across a restart; the projects and warnings `lxc` reads.
//! Needs root; each test has its own daemon.

use hutch_tests::{require_root, TestDaemon};

#[test]
fn server_config_is_set_read_refused_and_kept_across_a_restart() {
    if !require_root("server_config_is_set_read_refused_and_kept_across_a_restart") {
        return;
    }
    let mut d = TestDaemon::start();
    d.hutch_ok(&["config", "set", "core.https_address", "127.0.0.1:18443"]);
    assert_eq!(
        d.hutch_ok(&["config", "get", "core.https_address"]).trim(),
        "127.0.0.1:18443"
    );
    assert_eq!(
        d.lxc_ok(&["config", "get", "core.https_address"]).trim(),
        "127.0.0.1:18443"
    );
    assert!(d
        .hutch_ok(&["config", "show"])
        .contains("core.https_address: 127.0.0.1:18443"));

    // lxc sets through GET + PUT with the ETag; KEY=VALUE and KEY VALUE both name the server.
    d.lxc_ok(&["config", "set", "images.auto_update_interval", "12"]);
    d.hutch_ok(&["config", "set", "user.owner=ops"]);
    d.lxc_ok(&["config", "set", "core.trust_password", "s3cret"]);
    assert_eq!(
        d.lxc_ok(&["config", "get", "core.trust_password"]).trim(),
        "true",
        "the trust password is write-only"
    );

    // Unknown keys and bad values are refused with the key named, by both clients.
    let bad = d.hutch(&["config", "set", "core.bogus", "1"], b"");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("cannot set 'core.bogus' to '1': unknown key"),
        "{err}"
    );
    let bad = d.lxc(&["config", "set", "core.bogus", "1"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown key"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let bad = d.hutch(
        &["config", "set", "images.auto_update_interval", "soon"],
        b"",
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid integer"));

    // A restart keeps every value.
    d.kill();
    d.spawn();
    assert_eq!(
        d.hutch_ok(&["config", "get", "core.https_address"]).trim(),
        "127.0.0.1:18443"
    );
    assert_eq!(
        d.lxc_ok(&["config", "get", "images.auto_update_interval"])
            .trim(),
        "12"
    );
    assert_eq!(d.hutch_ok(&["config", "get", "user.owner"]).trim(), "ops");
    assert_eq!(
        d.lxc_ok(&["config", "get", "core.trust_password"]).trim(),
        "true"
    );

    // Unset returns a key to its default, which is not shown.
    d.hutch_ok(&["config", "unset", "core.https_address"]);
    d.lxc_ok(&["config", "unset", "images.auto_update_interval"]);
    assert_eq!(
        d.lxc_ok(&["config", "get", "core.https_address"]).trim(),
        ""
    );
    let shown = d.hutch_ok(&["config", "show"]);
    assert!(!shown.contains("core.https_address"), "{shown}");
    assert!(!shown.contains("images.auto_update_interval"), "{shown}");
    assert!(shown.contains("user.owner: ops"), "{shown}");
}

#[test]
fn lxc_reads_projects_and_warnings() {
    if !require_root("lxc_reads_projects_and_warnings") {
        return;
    }
    let d = TestDaemon::start();
    let list = d.lxc_ok(&["project", "list", "--format", "csv"]);
    assert!(
        list.starts_with("default (current),YES,YES,YES,YES,"),
        "{list}"
    );
    let show = d.lxc_ok(&["project", "show", "default"]);
    assert!(show.contains("/1.0/profiles/default"), "{show}");
    let missing = d.lxc(&["project", "show", "other"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("Project not found"));
    assert_eq!(d.lxc_ok(&["warning", "list", "--format", "csv"]).trim(), "");
    let info = d.lxc_ok(&["info"]);
    assert!(info.contains("- name: zfs"), "{info}");
}
