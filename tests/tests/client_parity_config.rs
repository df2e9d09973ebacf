//! End-to-end parity of `hutch` with LXD's `lxc` for configuration, devices, profiles,
//! storage, networks and files: each command is run by both clients against the same
//! hutchd, and what both print (yaml, json, csv, messages, errors) must match byte for byte;
//! tables are compared by cells. Commands that change things run on twin objects, one per
//! client (`NAME-lxc` and `NAME-hutch`), and their outputs are compared with the names
//! swapped. Needs root; each test has its own daemon.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use hutch_tests::network::assert_no_network_leftovers;
use hutch_tests::{
    assert_no_leftovers, daemon::cgroup_prefix, require_root, unique_name, TerminalSession,
    TestDaemon, Via,
};
use serde_json::Value;

fn daemon_with_image(init: &[&str]) -> TestDaemon {
    let d = started(init);
    d.import_busybox(Via::Hutch);
    d
}

/// A daemon, and lxc's first-run greeting (on stderr, once per config dir) out of the way.
fn started(init: &[&str]) -> TestDaemon {
    let d = TestDaemon::start_with(init);
    d.lxc(&["list"]);
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit code, stdout and stderr.
fn parts(o: &Output) -> (Option<i32>, String, String) {
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

/// Runs `args` with both clients; both must exit alike and print the same. Returns stdout.
fn same(d: &TestDaemon, args: &[&str]) -> String {
    same_with_stdin(d, args, b"")
}

fn same_with_stdin(d: &TestDaemon, args: &[&str], stdin: &[u8]) -> String {
    let l = parts(&d.lxc_with_stdin(args, stdin));
    let h = parts(&d.hutch(args, stdin));
    assert_eq!(h, l, "hutch (left) and lxc (right) differ on {args:?}");
    l.1
}

/// A change made by each client on its own twin: `@` in the arguments is `lxc` for lxc and
/// `hutch` for hutch. Both must exit alike and print the same (with the names swapped).
fn twin(d: &TestDaemon, args: &[&str]) -> String {
    twin_with_stdin(d, args, b"")
}

fn twin_with_stdin(d: &TestDaemon, args: &[&str], stdin: &[u8]) -> String {
    let named = |who: &str| -> Vec<String> { args.iter().map(|a| a.replace('@', who)).collect() };
    let la = named("lxc");
    let ha = named("hutch");
    let l = parts(&d.lxc_with_stdin(&la.iter().map(String::as_str).collect::<Vec<_>>(), stdin));
    let h = parts(&d.hutch(&ha.iter().map(String::as_str).collect::<Vec<_>>(), stdin));
    let swap = |s: String| s.replace("-hutch", "-lxc");
    let h = (h.0, swap(h.1), swap(h.2));
    assert_eq!(h, l, "hutch (left) and lxc (right) differ on {args:?}");
    l.1
}

/// Like `twin`, for commands that must fail: both print the same error.
fn twin_err(d: &TestDaemon, args: &[&str]) -> String {
    let err = {
        let named: Vec<String> = args.iter().map(|a| a.replace('@', "hutch")).collect();
        let out = d.hutch(&named.iter().map(String::as_str).collect::<Vec<_>>(), b"");
        assert_eq!(out.status.code(), Some(1), "{args:?} did not fail");
        text(&out.stderr)
    };
    assert!(err.starts_with("Error: "), "{err}");
    twin(d, args);
    err
}

/// The cells of an lxc table (borders and header alignment left out).
fn cells(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// Table output of both clients, compared by cells.
fn same_table(d: &TestDaemon, args: &[&str]) -> Vec<Vec<String>> {
    let l = d.lxc_ok(args);
    let h = d.hutch_ok(args);
    assert_eq!(cells(&h), cells(&l), "tables differ on {args:?}:\n{h}\n{l}");
    cells(&l)
}

/// Every list format both clients print: yaml, json and csv exactly, tables by cells.
fn same_formats(d: &TestDaemon, args: &[&str]) {
    for f in ["yaml", "json", "csv"] {
        let mut a = args.to_vec();
        a.extend(["--format", f]);
        same(d, &a);
    }
    same_table(d, args);
}

/// A small editor for the terminal path of `edit`: a shell script that runs `sed` on the
/// file it is given.
fn editor(dir: &Path, name: &str, sed: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\nsed -i '{sed}' \"$1\"\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// Runs `hutch ARGS` on a terminal with `editor` as $EDITOR (and $VISUAL unset, which
/// would win, as with lxc); it must succeed.
fn edit_on_terminal(d: &TestDaemon, editor: &str, args: &str) {
    let cmd = format!(
        "env -u VISUAL EDITOR={editor} {} {args}",
        hutch_tests::hutch_bin().display()
    );
    let term = TerminalSession::start(&cmd, &[("HUTCH_DIR", d.path().as_os_str())]);
    assert!(term.wait().success(), "hutch {args} failed on a terminal");
}

#[test]
fn config_devices_and_edit_match_lxc() {
    if !require_root("config_devices_and_edit_match_lxc") {
        return;
    }
    let d = daemon_with_image(&[]);
    let prefix = cgroup_prefix(d.path());
    let src = d.path().join("share");
    fs::create_dir(&src).unwrap();
    let source = format!("source={}", src.display());
    d.lxc_ok(&["init", "bb", "inst-lxc"]);
    d.hutch_ok(&["init", "bb", "inst-hutch"]);

    // config device add|get|set|list|show, both spellings of set.
    assert_eq!(
        twin(
            &d,
            &[
                "config",
                "device",
                "add",
                "inst-@",
                "d1",
                "disk",
                &source,
                "path=/mnt/d1",
                "readonly=true"
            ]
        ),
        "Device d1 added to inst-lxc\n"
    );
    twin_err(
        &d,
        &["config", "device", "add", "inst-@", "d1", "disk", "path=/x"],
    );
    twin_err(
        &d,
        &["config", "device", "add", "inst-@", "d2", "disk", "path"],
    );
    assert_eq!(
        twin(&d, &["config", "device", "get", "inst-@", "d1", "path"]),
        "/mnt/d1\n"
    );
    twin(
        &d,
        &["config", "device", "set", "inst-@", "d1", "readonly=false"],
    );
    twin(
        &d,
        &["config", "device", "set", "inst-@", "d1", "path", "/mnt/e"],
    );
    twin(&d, &["config", "device", "list", "inst-@"]);
    let shown = twin(&d, &["config", "device", "show", "inst-@"]);
    assert!(
        shown.contains("  path: /mnt/e\n  readonly: \"false\"\n"),
        "{shown}"
    );

    // override: a profile's device copied into the instance with new keys.
    assert_eq!(
        twin(
            &d,
            &[
                "config",
                "device",
                "override",
                "inst-@",
                "root",
                "size=20MiB"
            ]
        ),
        "Device root overridden for inst-lxc\n"
    );
    assert_eq!(
        twin(&d, &["config", "device", "get", "inst-@", "root", "size"]),
        "20MiB\n"
    );
    assert_eq!(
        twin_err(&d, &["config", "device", "override", "inst-@", "root"]),
        "Error: The device already exists\n"
    );
    assert_eq!(
        twin_err(&d, &["config", "device", "override", "inst-@", "nope"]),
        "Error: The profile device doesn't exist\n"
    );

    // A device only a profile has cannot be read, changed or removed on the instance.
    d.hutch_ok(&[
        "profile",
        "device",
        "add",
        "default",
        "pd",
        "disk",
        &source,
        "path=/mnt/pd",
    ]);
    for args in [
        &["config", "device", "get", "inst-@", "pd", "path"][..],
        &["config", "device", "set", "inst-@", "pd", "path=/x"],
        &["config", "device", "unset", "inst-@", "pd", "path"],
        &["config", "device", "remove", "inst-@", "pd"],
        &["config", "device", "get", "inst-@", "nope", "path"],
        &["config", "device", "remove", "inst-@", "nope"],
    ] {
        let err = twin_err(&d, args);
        assert!(
            err.contains("profile") || err.contains("Device doesn't exist"),
            "{err}"
        );
    }

    // Instance keys: set (both spellings), get, unset, and lxc's error for an unset key.
    twin(&d, &["config", "set", "inst-@", "user.a=1", "user.b=true"]);
    twin(&d, &["config", "set", "inst-@", "user.c", "x y"]);
    assert_eq!(twin(&d, &["config", "get", "inst-@", "user.c"]), "x y\n");
    twin(&d, &["config", "unset", "inst-@", "user.a"]);
    assert_eq!(
        twin_err(&d, &["config", "unset", "inst-@", "user.a"]),
        "Error: Can't unset key 'user.a', it's not currently set\n"
    );
    twin_err(&d, &["config", "set", "inst-@", "user.a=1", "user.b", "2"]);

    // What both clients print about the same instances: exactly the same.
    for name in ["inst-lxc", "inst-hutch"] {
        same(&d, &["config", "show", name]);
        let expanded = same(&d, &["config", "show", name, "--expanded"]);
        assert!(expanded.contains("  pd:\n"), "{expanded}");
        same(&d, &["config", "show", name, "-e"]);
        same(&d, &["config", "device", "show", name]);
        // lxc lists devices in Go's map order, which is random: compared as sets.
        let sorted = |o: String| {
            let mut l: Vec<String> = o.lines().map(String::from).collect();
            l.sort();
            l
        };
        assert_eq!(
            sorted(d.hutch_ok(&["config", "device", "list", name])),
            sorted(d.lxc_ok(&["config", "device", "list", name]))
        );
        same(&d, &["config", "get", name, "user.b"]);
        same(&d, &["config", "get", "-e", name, "user.b"]);
    }
    assert_eq!(
        d.hutch_ok(&["config", "show", "inst-hutch"]),
        d.lxc_ok(&["config", "show", "inst-lxc"])
    );
    same(&d, &["config", "show"]);
    // Snapshots: shown alike; their expiry is edited alike (snapshot_expiry).
    d.lxc_ok(&["snapshot", "inst-lxc", "s0"]);
    same(&d, &["config", "show", "inst-lxc/s0"]);
    same(&d, &["config", "show", "inst-lxc/s0", "--expanded"]);
    same_with_stdin(
        &d,
        &["config", "edit", "inst-lxc/s0"],
        b"expires_at: 2030-01-01T00:00:00Z\n",
    );
    assert!(
        same(&d, &["config", "show", "inst-lxc/s0"]).contains("expires_at: 2030-01-01T00:00:00Z")
    );

    // device unset drops the key (lxc sends "", which LXD does not store).
    d.hutch_ok(&["config", "device", "unset", "inst-hutch", "d1", "readonly"]);
    assert!(!d
        .lxc_ok(&["config", "device", "show", "inst-hutch"])
        .contains("readonly"));
    assert_eq!(
        twin(&d, &["config", "device", "remove", "inst-@", "d1", "root"]),
        "Device d1, root removed from inst-lxc\n"
    );

    // profile device: the same subcommands on a profile.
    assert_eq!(
        twin(&d, &["profile", "create", "prof-@"]),
        "Profile prof-lxc created\n"
    );
    twin(
        &d,
        &[
            "profile",
            "device",
            "add",
            "prof-@",
            "p1",
            "disk",
            &source,
            "path=/mnt/p",
        ],
    );
    twin(
        &d,
        &["profile", "device", "set", "prof-@", "p1", "readonly=true"],
    );
    assert_eq!(
        twin(
            &d,
            &["profile", "device", "get", "prof-@", "p1", "readonly"]
        ),
        "true\n"
    );
    twin(&d, &["profile", "device", "list", "prof-@"]);
    twin(&d, &["profile", "device", "show", "prof-@"]);
    twin_err(&d, &["profile", "device", "get", "prof-@", "nope", "x"]);
    twin_err(
        &d,
        &[
            "profile", "device", "add", "prof-@", "p1", "disk", "path=/y",
        ],
    );
    d.hutch_ok(&["profile", "device", "unset", "prof-hutch", "p1", "readonly"]);
    assert_eq!(
        d.lxc_ok(&["profile", "device", "get", "prof-hutch", "p1", "readonly"]),
        "\n"
    );
    same(&d, &["profile", "device", "show", "prof-hutch"]);
    assert_eq!(
        twin(&d, &["profile", "device", "remove", "prof-@", "p1"]),
        "Device p1 removed from prof-lxc\n"
    );

    // config edit from stdin: what `show` prints, changed, goes back.
    let yaml = d.hutch_ok(&["config", "show", "inst-hutch"]);
    let edited = yaml.replace("description: \"\"", "description: piped");
    twin_with_stdin(&d, &["config", "edit", "inst-@"], edited.as_bytes());
    assert!(d
        .lxc_ok(&["config", "show", "inst-hutch"])
        .ends_with("description: piped\n"));
    assert_eq!(
        d.hutch_ok(&["config", "show", "inst-hutch"]),
        d.lxc_ok(&["config", "show", "inst-lxc"])
    );
    // Broken YAML from stdin fails as a whole, and changes nothing; so does an empty
    // document (which lxc would apply as an empty configuration).
    let bad = d.hutch(&["config", "edit", "inst-hutch"], b"config: [\n");
    assert_eq!(bad.status.code(), Some(1));
    let empty = d.hutch(&["config", "edit", "inst-hutch"], b"# nothing\n");
    assert_eq!(empty.status.code(), Some(1));
    assert!(text(&empty.stderr).starts_with("Error: no YAML given"));
    assert!(d
        .lxc_ok(&["config", "show", "inst-hutch"])
        .ends_with("description: piped\n"));

    // config edit on a terminal: $EDITOR changes the file; a broken edit is reopened after
    // enter, as lxc does.
    let ed = editor(
        d.path(),
        "ed.sh",
        "s/^description: .*/description: from-editor/",
    );
    edit_on_terminal(&d, &ed, "config edit inst-hutch");
    assert!(d
        .lxc_ok(&["config", "show", "inst-hutch"])
        .ends_with("description: from-editor\n"));
    let flip = d.path().join("flip.sh");
    fs::write(
        &flip,
        "#!/bin/sh\nif grep -q '^ephemeral: false' \"$1\"; then sed -i 's/^ephemeral: false/ephemeral: [/' \"$1\"; else sed -i 's/^ephemeral: \\[/ephemeral: false/; s/^description: .*/description: second-try/' \"$1\"; fi\n",
    )
    .unwrap();
    fs::set_permissions(&flip, fs::Permissions::from_mode(0o755)).unwrap();
    let cmd = format!(
        "env -u VISUAL EDITOR={} {} config edit inst-hutch",
        flip.display(),
        hutch_tests::hutch_bin().display()
    );
    let mut term = TerminalSession::start(&cmd, &[("HUTCH_DIR", d.path().as_os_str())]);
    term.wait_for("Press enter to open the editor again", |_| {});
    assert!(
        term.seen.contains("Config parsing error: "),
        "{}",
        term.seen
    );
    term.type_keys(&[b"\n"]);
    assert!(term.wait().success());
    assert!(d
        .lxc_ok(&["config", "show", "inst-hutch"])
        .ends_with("description: second-try\n"));

    // The server's config: edit from stdin, then both show it alike.
    d.hutch(
        &["config", "edit"],
        b"config:\n  images.auto_update_interval: \"12\"\n",
    );
    assert_eq!(
        same(&d, &["config", "get", "images.auto_update_interval"]),
        "12\n"
    );
    same(&d, &["config", "show"]);
    let ed = editor(d.path(), "srv.sh", "s/\"12\"/\"7\"/");
    edit_on_terminal(&d, &ed, "config edit");
    assert_eq!(
        same(&d, &["config", "get", "images.auto_update_interval"]),
        "7\n"
    );

    // profile edit, from stdin and on a terminal.
    let p = d.hutch_ok(&["profile", "show", "prof-hutch"]);
    twin_with_stdin(
        &d,
        &["profile", "edit", "prof-@"],
        p.replace("config: {}", "config:\n  user.k: v").as_bytes(),
    );
    assert_eq!(twin(&d, &["profile", "get", "prof-@", "user.k"]), "v\n");
    let ed = editor(
        d.path(),
        "prof.sh",
        "s/^description: .*/description: via-editor/",
    );
    edit_on_terminal(&d, &ed, "profile edit prof-hutch");
    assert!(same(&d, &["profile", "show", "prof-hutch"]).contains("description: via-editor\n"));

    let dir = d.path().to_path_buf();
    drop(d);
    assert_no_leftovers(&dir, &prefix);
}

#[test]
fn profiles_match_lxc() {
    if !require_root("profiles_match_lxc") {
        return;
    }
    let d = daemon_with_image(&[]);
    d.lxc_ok(&["init", "bb", "inst-lxc"]);
    d.hutch_ok(&["init", "bb", "inst-hutch"]);
    twin(&d, &["profile", "create", "prof-@"]);
    twin(&d, &["profile", "set", "prof-@", "user.x", "1"]);
    twin(&d, &["profile", "set", "prof-@", "user.y=2", "user.z=true"]);
    twin(
        &d,
        &["profile", "set", "prof-@", "user.long", &"word ".repeat(30)],
    );
    assert_eq!(twin(&d, &["profile", "get", "prof-@", "user.x"]), "1\n");
    // lxc's unset stores "" (hutchd keeps it, LXD drops it); hutch's drops the key, so
    // hutch unsets it on both twins.
    d.hutch_ok(&["profile", "unset", "prof-lxc", "user.y"]);
    d.hutch_ok(&["profile", "unset", "prof-hutch", "user.y"]);
    assert_eq!(twin(&d, &["profile", "get", "prof-@", "user.y"]), "\n");
    twin(&d, &["profile", "copy", "prof-@", "copy-@"]);
    assert_eq!(
        twin(&d, &["profile", "rename", "copy-@", "renamed-@"]),
        "Profile copy-lxc renamed to renamed-lxc\n"
    );
    same(&d, &["profile", "show", "renamed-hutch"]);
    assert_eq!(
        twin(&d, &["profile", "delete", "renamed-@"]),
        "Profile renamed-lxc deleted\n"
    );

    // Profiles of instances.
    assert_eq!(
        twin(&d, &["profile", "add", "inst-@", "prof-@"]),
        "Profile prof-lxc added to inst-lxc\n"
    );
    assert_eq!(
        twin(&d, &["profile", "remove", "inst-@", "prof-@"]),
        "Profile prof-lxc removed from inst-lxc\n"
    );
    assert_eq!(
        twin_err(&d, &["profile", "remove", "inst-@", "prof-@"]),
        "Error: Profile prof-hutch isn't currently applied to inst-hutch\n"
    );
    assert_eq!(
        twin(&d, &["profile", "assign", "inst-@", "default,prof-@"]),
        "Profiles default,prof-lxc applied to inst-lxc\n"
    );
    twin(&d, &["profile", "apply", "inst-@", "default"]);

    for name in ["prof-lxc", "prof-hutch", "default"] {
        same(&d, &["profile", "show", name]);
    }
    assert_eq!(
        d.hutch_ok(&["profile", "show", "prof-hutch"])
            .replace("-hutch", "-lxc"),
        d.lxc_ok(&["profile", "show", "prof-lxc"])
    );
    same_formats(&d, &["profile", "list"]);
    same_formats(&d, &["profile", "ls"]);
    twin_err(&d, &["profile", "show", "nope-@"]);
}

#[test]
fn storage_pools_and_volumes_match_lxc() {
    if !require_root("storage_pools_and_volumes_match_lxc") {
        return;
    }
    let d = daemon_with_image(&[]);
    let prefix = cgroup_prefix(d.path());
    d.lxc_ok(&["init", "bb", "inst-lxc"]);
    d.hutch_ok(&["init", "bb", "inst-hutch"]);

    // Pools.
    same_formats(&d, &["storage", "list"]);
    same(&d, &["storage", "show", "default"]);
    same(&d, &["storage", "get", "default", "source"]);
    same(&d, &["storage", "get", "default", "nope"]);
    d.hutch_ok(&["storage", "set", "default", "user.k", "v"]);
    assert_eq!(same(&d, &["storage", "get", "default", "user.k"]), "v\n");
    d.hutch_ok(&["storage", "unset", "default", "user.k"]);
    assert_eq!(same(&d, &["storage", "get", "default", "user.k"]), "");
    let pool = d.hutch_ok(&["storage", "show", "default"]);
    d.hutch(
        &["storage", "edit", "default"],
        pool.replace("description: \"\"", "description: edited")
            .as_bytes(),
    );
    assert!(same(&d, &["storage", "show", "default"]).contains("description: edited\n"));
    // Space changes as other tests write: everything but the two sizes must match.
    let strip = |s: String| -> String {
        s.lines()
            .filter(|l| !l.contains("space"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(d.hutch_ok(&["storage", "info", "default"])),
        strip(d.lxc_ok(&["storage", "info", "default"]))
    );
    let info = d.hutch_ok(&["storage", "info", "default"]);
    assert!(
        info.starts_with("info:\n  description: edited\n  driver: "),
        "{info}"
    );
    assert!(info.contains("used by:\n  images:\n  - "), "{info}");

    // Custom volumes.
    assert_eq!(
        twin(
            &d,
            &[
                "storage",
                "volume",
                "create",
                "default",
                "vol-@",
                "size=10MiB"
            ]
        ),
        "Storage volume vol-lxc created\n"
    );
    assert_eq!(
        twin(
            &d,
            &["storage", "volume", "get", "default", "vol-@", "size"]
        ),
        "10MiB\n"
    );
    twin(
        &d,
        &["storage", "volume", "set", "default", "vol-@", "size=20MiB"],
    );
    assert_eq!(
        twin(
            &d,
            &["storage", "volume", "get", "default", "vol-@", "size"]
        ),
        "20MiB\n"
    );
    d.hutch_ok(&["storage", "volume", "unset", "default", "vol-hutch", "size"]);
    assert_eq!(
        same(
            &d,
            &["storage", "volume", "get", "default", "vol-hutch", "size"]
        ),
        ""
    );
    twin(
        &d,
        &["storage", "volume", "snapshot", "default", "vol-@", "s1"],
    );
    // A volume snapshot renamed and back, by both clients; a new name under another volume
    // is refused by both before any request.
    twin(
        &d,
        &[
            "storage", "volume", "rename", "default", "vol-@/s1", "vol-@/s2",
        ],
    );
    for who in ["lxc", "hutch"] {
        d.hutch_ok(&[
            "storage",
            "volume",
            "show",
            "default",
            &format!("vol-{who}/s2"),
        ]);
    }
    twin(
        &d,
        &[
            "storage", "volume", "rename", "default", "vol-@/s2", "vol-@/s1",
        ],
    );
    twin_err(
        &d,
        &[
            "storage", "volume", "rename", "default", "vol-@/s1", "other/s3",
        ],
    );
    assert_eq!(
        twin(
            &d,
            &["storage", "volume", "rename", "default", "vol-@", "moved-@"]
        ),
        "Renamed storage volume from \"vol-lxc\" to \"moved-lxc\"\n"
    );
    twin(
        &d,
        &["storage", "volume", "rename", "default", "moved-@", "vol-@"],
    );
    twin(
        &d,
        &["storage", "volume", "restore", "default", "vol-@", "s1"],
    );
    for name in [
        "vol-lxc",
        "vol-hutch",
        "vol-hutch/s1",
        "custom/vol-hutch",
        "container/inst-hutch",
    ] {
        same(&d, &["storage", "volume", "show", "default", name]);
    }
    // volume info: the facts exactly, the snapshots' table by cells.
    let h = d.hutch_ok(&["storage", "volume", "info", "default", "vol-hutch"]);
    let l = d.lxc_ok(&["storage", "volume", "info", "default", "vol-hutch"]);
    let facts = |s: &str| s.split("\nSnapshots:").next().unwrap().to_string();
    assert_eq!(facts(&h), facts(&l));
    assert_eq!(cells(&h), cells(&l));
    assert!(h.contains("\nSnapshots:\n"), "{h}");
    same_formats(&d, &["storage", "volume", "list", "default"]);
    same(
        &d,
        &[
            "storage", "volume", "list", "default", "-c", "nt", "--format", "csv",
        ],
    );
    twin_err(&d, &["storage", "volume", "show", "default", "a/b/c"]);
    twin_err(
        &d,
        &[
            "storage",
            "volume",
            "snapshot",
            "default",
            "container/inst-@",
        ],
    );

    // attach and detach, found by pool and source as lxc finds them.
    twin(
        &d,
        &[
            "storage", "volume", "attach", "default", "vol-@", "inst-@", "/mnt/v",
        ],
    );
    same(&d, &["config", "device", "show", "inst-hutch"]);
    twin_err(
        &d,
        &[
            "storage", "volume", "attach", "default", "vol-@", "inst-@", "/mnt/w",
        ],
    );
    twin(
        &d,
        &["storage", "volume", "detach", "default", "vol-@", "inst-@"],
    );
    twin_err(
        &d,
        &["storage", "volume", "detach", "default", "vol-@", "inst-@"],
    );
    twin(
        &d,
        &[
            "storage", "volume", "attach", "default", "vol-@", "inst-@", "data", "/mnt/d",
        ],
    );
    assert_eq!(
        twin(&d, &["config", "device", "get", "inst-@", "data", "path"]),
        "/mnt/d\n"
    );
    twin(
        &d,
        &[
            "storage", "volume", "detach", "default", "vol-@", "inst-@", "data",
        ],
    );

    // edit from stdin and on a terminal.
    let vol = d.hutch_ok(&["storage", "volume", "show", "default", "vol-hutch"]);
    twin_with_stdin(
        &d,
        &["storage", "volume", "edit", "default", "vol-@"],
        vol.replace("description: \"\"", "description: piped")
            .as_bytes(),
    );
    let ed = editor(
        d.path(),
        "vol.sh",
        "s/^description: .*/description: via-editor/",
    );
    edit_on_terminal(&d, &ed, "storage volume edit default vol-hutch");
    assert!(
        same(&d, &["storage", "volume", "show", "default", "vol-hutch"])
            .contains("description: via-editor\n")
    );

    twin(&d, &["storage", "volume", "delete", "default", "vol-@/s1"]);
    assert_eq!(
        twin(&d, &["storage", "volume", "delete", "default", "vol-@"]),
        "Storage volume vol-lxc deleted\n"
    );
    let dir = d.path().to_path_buf();
    drop(d);
    assert_no_leftovers(&dir, &prefix);
}

/// Restores the host's IPv4 forwarding switch, which a managed network turns on.
struct ForwardingGuard(String);

impl Drop for ForwardingGuard {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/net/ipv4/ip_forward", self.0.trim());
    }
}

#[test]
fn networks_managed_and_unmanaged_match_lxc() {
    if !require_root("networks_managed_and_unmanaged_match_lxc") {
        return;
    }
    let _forwarding = ForwardingGuard(fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap());
    let net = unique_name("hcp");
    let d = started(&["--network-bridge", &net]);
    let prefix = cgroup_prefix(d.path());

    // A managed bridge and an unmanaged link (lo): show, get, info alike.
    for name in [net.as_str(), "lo"] {
        same(&d, &["network", "show", name]);
        same(&d, &["network", "get", name, "ipv4.address"]);
    }
    assert!(same(&d, &["network", "show", "lo"]).contains("managed: false\n"));
    same_formats(&d, &["network", "list-leases", &net]);
    // Counters move between the two calls (the kernel sends router and neighbour
    // solicitations on a new bridge; lo carries the machine's traffic): everything else
    // must match, and the counters' labels too.
    let without_counts = |s: String| -> String {
        s.lines()
            .map(|l| match l.split_once(": ") {
                Some((label, _)) if l.starts_with("  Bytes ") || l.starts_with("  Packets ") => {
                    format!("{label}: N")
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for name in [net.as_str(), "lo"] {
        let h = without_counts(d.hutch_ok(&["network", "info", name]));
        assert!(h.contains("Network usage:\n  Bytes received: N"), "{h}");
        assert_eq!(h, without_counts(d.lxc_ok(&["network", "info", name])));
    }

    // Lists: other tests add and remove links meanwhile, so only our rows are compared.
    let ours = |s: String| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with(&format!("{net},")) || l.starts_with("lo,"))
            .map(String::from)
            .collect()
    };
    assert_eq!(
        ours(d.hutch_ok(&["network", "list", "--format", "csv"])),
        ours(d.lxc_ok(&["network", "list", "--format", "csv"]))
    );
    let parse = |s: String| -> Vec<Value> {
        let all: Value = serde_json::from_str(&s).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .filter(|n| n["name"] == net.as_str())
            .cloned()
            .collect()
    };
    // hutchd lists the managed bridges and the host's bridges and physical links (not lo).
    let h = parse(d.hutch_ok(&["network", "list", "--format", "json"]));
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h, parse(d.lxc_ok(&["network", "list", "--format", "json"])));
    // YAML: the items of our two networks, byte for byte.
    let items = |s: String| -> Vec<String> {
        let mut items: Vec<String> = Vec::new();
        for line in s.lines() {
            if line.starts_with("- ") || items.is_empty() {
                items.push(String::new());
            }
            let last = items.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
        items
            .into_iter()
            .filter(|i| i.contains(&format!("\n  name: {net}\n")))
            .collect()
    };
    let h = items(d.hutch_ok(&["network", "list", "--format", "yaml"]));
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h, items(d.lxc_ok(&["network", "list", "--format", "yaml"])));
    let table = d.hutch_ok(&["network", "list"]);
    assert!(
        !table.contains("| lo "),
        "lxc leaves loopback out of the table: {table}"
    );

    // Changes: set, unset, edit (from stdin and on a terminal); unmanaged links refuse.
    d.hutch_ok(&["network", "set", &net, "user.k=v"]);
    assert_eq!(same(&d, &["network", "get", &net, "user.k"]), "v\n");
    d.hutch_ok(&["network", "unset", &net, "user.k"]);
    assert_eq!(same(&d, &["network", "get", &net, "user.k"]), "");
    let shown = d.hutch_ok(&["network", "show", &net]);
    d.hutch(
        &["network", "edit", &net],
        shown
            .replace("description: \"\"", "description: piped")
            .as_bytes(),
    );
    assert!(same(&d, &["network", "show", &net]).contains("description: piped\n"));
    let ed = editor(
        d.path(),
        "net.sh",
        "s/^description: .*/description: via-editor/",
    );
    edit_on_terminal(&d, &ed, &format!("network edit {net}"));
    assert!(same(&d, &["network", "show", &net]).contains("description: via-editor\n"));
    same_with_stdin(&d, &["network", "edit", "lo"], b"description: x\n");
    let err = d.hutch(&["network", "set", "lo", "user.k=v"], b"");
    assert_eq!(
        text(&err.stderr),
        "Error: Only managed networks can be modified\n"
    );
    same(&d, &["network", "set", "lo", "user.k=v"]);
    same(&d, &["network", "show", "nope"]);
    drop(d);
    assert_no_network_leftovers(&prefix, &[&net]);
}

#[test]
fn file_push_pull_edit_flags_match_lxc() {
    if !require_root("file_push_pull_edit_flags_match_lxc") {
        return;
    }
    let d = daemon_with_image(&[]);
    let prefix = cgroup_prefix(d.path());
    d.hutch_ok(&["launch", "bb", "c1"]);
    let local = d.path().join("local");
    fs::create_dir_all(local.join("tree/sub")).unwrap();
    fs::write(local.join("f"), "data\n").unwrap();
    fs::write(local.join("tree/sub/x"), "x\n").unwrap();
    fs::set_permissions(local.join("tree/sub/x"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("x", local.join("tree/sub/link")).unwrap();
    let f = local.join("f");
    let f = f.to_str().unwrap();
    let stat = |path: &str| -> String {
        d.hutch_ok(&["exec", "c1", "--", "stat", "-c", "%u %g %a %F", path])
    };

    // -p makes the missing parents (owned as the file is), --uid --gid --mode the file;
    // lxc does the same to its own path.
    for (who, base) in [("hutch", "/srv/h"), ("lxc", "/srv/l")] {
        let args = [
            "file", "push", "-p", "--uid", "33", "--gid", "34", "--mode", "640", f,
        ];
        let target = format!("c1{base}/a/b/f");
        let mut a = args.to_vec();
        a.push(&target);
        if who == "hutch" {
            d.hutch_ok(&a);
        } else {
            d.lxc_ok(&a);
        }
    }
    for path in ["", "/a", "/a/b", "/a/b/f"] {
        assert_eq!(
            stat(&format!("/srv/h{path}")),
            stat(&format!("/srv/l{path}")),
            "{path}"
        );
    }
    assert_eq!(stat("/srv/h/a/b/f"), "33 34 640 regular file\n");
    // Existing parents are left as they are.
    let before = stat("/srv");
    d.hutch_ok(&["file", "push", "-p", "--uid", "5", f, "c1/srv/h/a/g"]);
    assert_eq!(stat("/srv"), before);
    assert_eq!(stat("/srv/h/a"), "33 34 750 directory\n");
    // A file in the way of -p, and modes that are not octal, fail as with lxc.
    same(&d, &["file", "push", "-p", f, "c1/srv/h/a/b/f/under"]);
    assert_eq!(
        text(
            &d.hutch(&["file", "push", "-p", f, "c1/srv/h/a/b/f/under"], b"")
                .stderr
        ),
        "Error: srv/h/a/b/f is not a directory\n"
    );
    assert_eq!(
        text(
            &d.hutch(&["file", "push", "-r", "--mode", "644", f, "c1/srv/"], b"")
                .stderr
        ),
        "Error: Can't supply uid/gid/mode in recursive mode\n"
    );

    // -r keeps modes and symlinks; pull -r -p brings the tree back.
    let tree = local.join("tree");
    d.hutch_ok(&[
        "file",
        "push",
        "-r",
        "-p",
        tree.to_str().unwrap(),
        "c1/srv/trees/h/",
    ]);
    d.lxc_ok(&[
        "file",
        "push",
        "-r",
        "-p",
        tree.to_str().unwrap(),
        "c1/srv/trees/l/",
    ]);
    for path in ["/tree", "/tree/sub", "/tree/sub/x", "/tree/sub/link"] {
        assert_eq!(
            stat(&format!("/srv/trees/h{path}")),
            stat(&format!("/srv/trees/l{path}")),
            "{path}"
        );
    }
    let back = d.path().join("back");
    d.hutch_ok(&[
        "file",
        "pull",
        "-r",
        "-p",
        "c1/srv/trees/h/tree",
        &format!("{}/deep/", back.display()),
    ]);
    assert_eq!(
        fs::read_to_string(back.join("deep/tree/sub/x")).unwrap(),
        "x\n"
    );
    assert_eq!(
        fs::metadata(back.join("deep/tree/sub/x"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(fs::symlink_metadata(back.join("deep/tree/sub/link"))
        .unwrap()
        .file_type()
        .is_symlink());

    // file edit: from stdin, and with $EDITOR on a terminal; owner and mode are kept.
    d.hutch(&["file", "edit", "c1/srv/h/a/b/f"], b"piped\n");
    assert_eq!(
        d.lxc_ok(&["file", "pull", "c1/srv/h/a/b/f", "-"]),
        "piped\n"
    );
    let ed = editor(d.path(), "file.sh", "s/piped/edited/");
    edit_on_terminal(&d, &ed, "file edit c1/srv/h/a/b/f");
    assert_eq!(
        d.lxc_ok(&["file", "pull", "c1/srv/h/a/b/f", "-"]),
        "edited\n"
    );
    assert_eq!(stat("/srv/h/a/b/f"), "33 34 640 regular file\n");
    assert_eq!(
        same(&d, &["file", "pull", "c1/srv/h/a/b/f", "-"]),
        "edited\n"
    );
    d.lxc_with_stdin(&["file", "edit", "c1/srv/l/a/b/f"], b"piped\n");
    assert_eq!(
        d.hutch_ok(&["exec", "c1", "--", "cat", "/srv/l/a/b/f"]),
        "piped\n"
    );

    // delete, and the error for a missing file.
    d.hutch_ok(&["file", "delete", "c1/srv/h/a/g", "c1/srv/h/a/b/f"]);
    same(&d, &["file", "delete", "c1/srv/h/a/g"]);
    d.hutch_ok(&["delete", "-f", "c1"]);
    let dir = d.path().to_path_buf();
    drop(d);
    assert_no_leftovers(&dir, &prefix);
}
