//! End-to-end: the `hutch` client against a real hutchd. Needs root.

use std::fs;

use hutch_tests::{require_root, TestDaemon, Via};

fn daemon_with_image() -> TestDaemon {
    let d = TestDaemon::start();
    d.import_busybox(Via::Hutch);
    d
}

#[test]
fn hutch_manages_containers_end_to_end() {
    if !require_root("hutch_manages_containers_end_to_end") {
        return;
    }
    let d = daemon_with_image();
    d.hutch_ok(&["launch", "bb", "web", "-c", "limits.processes=200"]);
    assert_eq!(
        d.hutch_ok(&["list", "--format", "csv", "-c", "ns"]).trim(),
        "web,RUNNING"
    );
    let json: serde_json::Value =
        serde_json::from_str(&d.hutch_ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(json[0]["name"], "web");
    assert!(d.hutch_ok(&["list"]).contains("| web  | RUNNING |"));

    // exec: output, stdin, separate streams, exit codes.
    assert_eq!(
        d.hutch_ok(&["exec", "web", "--", "cat", "/proc/1/comm"])
            .trim(),
        "init"
    );
    let out = d.hutch(
        &["exec", "web", "--", "sh", "-c", "cat; echo err >&2; exit 4"],
        b"hello",
    );
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(
        d.hutch(&["exec", "web", "--", "sh", "-c", "kill -9 $$"], b"")
            .status
            .code(),
        Some(137)
    );

    // files with owner and mode, recursive push and pull.
    let local = d.path().join("site");
    fs::create_dir_all(local.join("css")).unwrap();
    fs::write(local.join("index.html"), "<h1>hi</h1>").unwrap();
    fs::write(local.join("css/a.css"), "body{}").unwrap();
    d.hutch_ok(&[
        "file",
        "push",
        local.join("index.html").to_str().unwrap(),
        "web/root/index.html",
        "--uid",
        "33",
        "--gid",
        "33",
        "--mode",
        "0640",
    ]);
    assert_eq!(
        d.hutch_ok(&[
            "exec",
            "web",
            "--",
            "stat",
            "-c",
            "%u %g %a",
            "/root/index.html"
        ])
        .trim(),
        "33 33 640"
    );
    d.hutch_ok(&["file", "push", "-r", local.to_str().unwrap(), "web/root/"]);
    assert_eq!(
        d.hutch_ok(&["exec", "web", "--", "cat", "/root/site/css/a.css"]),
        "body{}"
    );
    let pulled = d.path().join("pulled");
    fs::create_dir(&pulled).unwrap();
    d.hutch_ok(&[
        "file",
        "pull",
        "-r",
        "web/root/site",
        pulled.to_str().unwrap(),
    ]);
    assert_eq!(
        fs::read_to_string(pulled.join("site/index.html")).unwrap(),
        "<h1>hi</h1>"
    );
    d.hutch_ok(&["file", "delete", "web/root/index.html"]);
    assert!(!d
        .hutch(
            &[
                "file",
                "pull",
                "web/root/index.html",
                pulled.to_str().unwrap()
            ],
            b""
        )
        .status
        .success());

    // config and devices.
    d.hutch_ok(&["config", "set", "web", "limits.memory", "48MiB"]);
    assert_eq!(
        d.hutch_ok(&["config", "get", "web", "limits.memory"])
            .trim(),
        "48MiB"
    );
    assert!(d
        .hutch_ok(&["config", "show", "web"])
        .contains("limits.memory: 48MiB"));
    d.hutch_ok(&["config", "unset", "web", "limits.memory"]);
    assert_eq!(
        d.hutch_ok(&["config", "get", "web", "limits.memory"])
            .trim(),
        ""
    );
    let bad = d.hutch(&["config", "set", "web", "nope.key=1"], b"");
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.starts_with("Error: ") && err.contains("nope.key") && err.lines().count() == 1,
        "{err}"
    );
    let shared = d.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::write(shared.join("note"), "from the host").unwrap();
    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "web",
        "data",
        "disk",
        &format!("source={}", shared.display()),
        "path=/mnt/data",
        "readonly=true",
    ]);
    assert_eq!(
        d.hutch_ok(&["config", "device", "list", "web"]).trim(),
        "data"
    );
    d.hutch_ok(&["restart", "web", "--force"]);
    assert_eq!(
        d.hutch_ok(&["exec", "web", "--", "cat", "/mnt/data/note"]),
        "from the host"
    );
    assert_ne!(
        d.hutch(&["exec", "web", "--", "touch", "/mnt/data/x"], b"")
            .status
            .code(),
        Some(0)
    );

    // pause, stop, rename, delete.
    d.hutch_ok(&["pause", "web"]);
    assert_eq!(
        d.hutch_ok(&["list", "--format", "csv", "-c", "s"]).trim(),
        "FROZEN"
    );
    d.hutch_ok(&["start", "web"]);
    d.hutch_ok(&["stop", "web", "--force"]);
    d.hutch_ok(&["rename", "web", "www"]);
    assert_eq!(
        d.hutch_ok(&["list", "--format", "csv", "-c", "ns"]).trim(),
        "www,STOPPED"
    );
    d.hutch_ok(&["start", "www"]);
    assert!(
        !d.hutch(&["delete", "www"], b"").status.success(),
        "deleted a running instance"
    );
    d.hutch_ok(&["delete", "www", "--force"]);
    assert_eq!(d.hutch_ok(&["list", "--format", "csv"]).trim(), "");
}

#[test]
fn hutch_profiles_images_and_errors() {
    if !require_root("hutch_profiles_images_and_errors") {
        return;
    }
    let d = daemon_with_image();
    d.hutch_ok(&["profile", "create", "tiny"]);
    d.hutch_ok(&["profile", "set", "tiny", "limits.processes", "64"]);
    assert_eq!(
        d.hutch_ok(&["profile", "get", "tiny", "limits.processes"])
            .trim(),
        "64"
    );
    assert!(d
        .hutch_ok(&["profile", "list", "--format", "csv"])
        .contains("tiny"));
    d.hutch_ok(&["init", "bb", "c1", "-p", "default", "-p", "tiny"]);
    assert!(d
        .hutch_ok(&["config", "show", "c1", "--expanded"])
        .contains("limits.processes: \"64\""));
    assert!(!d
        .hutch(&["profile", "delete", "tiny"], b"")
        .status
        .success());
    d.hutch_ok(&["delete", "c1"]);
    d.hutch_ok(&["profile", "delete", "tiny"]);

    // publish: a running instance only with --force, which starts it again afterwards.
    d.hutch_ok(&["launch", "bb", "p1"]);
    d.hutch_ok(&["exec", "p1", "--", "touch", "/root/published"]);
    assert!(!d
        .hutch(&["publish", "p1", "--alias", "pub"], b"")
        .status
        .success());
    let out = d.hutch_ok(&["publish", "p1", "--force", "--alias", "pub", "role=web"]);
    assert!(out.contains("Instance published with fingerprint"), "{out}");
    assert_eq!(
        d.hutch_ok(&["list", "p1", "--format", "csv", "-c", "s"])
            .trim(),
        "RUNNING"
    );
    d.hutch_ok(&["launch", "pub", "p2"]);
    d.hutch_ok(&["exec", "p2", "--", "test", "-e", "/root/published"]);
    d.hutch_ok(&["delete", "--force", "p1", "p2"]);
    d.hutch_ok(&["image", "delete", "pub"]);

    d.hutch_ok(&["image", "alias", "create", "busybox", "bb"]);
    assert!(d
        .hutch_ok(&["image", "alias", "list", "--format", "csv"])
        .contains("busybox"));
    assert!(d
        .hutch_ok(&["image", "info", "busybox"])
        .contains("Architecture: x86_64"));
    // As lxc, a file target gets the image's extension.
    let export = d.path().join("export");
    d.hutch_ok(&["image", "export", "bb", export.to_str().unwrap()]);
    assert_eq!(
        fs::read(d.path().join("export.tar.gz")).unwrap(),
        fs::read(d.path().join("bb.tar.gz")).unwrap()
    );

    for (args, want) in [
        (vec!["info", "nope"], "Instance not found"),
        (
            vec!["launch", "no-such-image", "x"],
            "Image \"no-such-image\" not found",
        ),
        (
            vec!["launch", "nope:debian/12", "x"],
            "The remote \"nope\" doesn't exist",
        ),
        (vec!["launch", "bb", "bad_name"], "Invalid instance name"),
    ] {
        let out = d.hutch(&args, b"");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Without a daemon, a launch says that, not that the image is missing.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(hutch_tests::hutch_bin())
        .args(["launch", "bb", "x"])
        .env("HUTCH_DIR", empty.path())
        .env("HOME", empty.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach hutchd"), "{err}");
    d.hutch_ok(&["image", "delete", "bb"]);
    assert_eq!(d.hutch_ok(&["image", "list", "--format", "csv"]).trim(), "");
}

#[test]
fn hutch_console_attaches_and_detaches() {
    if !require_root("hutch_console_attaches_and_detaches") {
        return;
    }
    let d = daemon_with_image();
    d.hutch_ok(&["launch", "bb", "c1"]);
    let cmd = format!("{} console c1", hutch_tests::hutch_bin().display());
    let mut term =
        hutch_tests::TerminalSession::start(&cmd, &[("HUTCH_DIR", d.path().as_os_str())]);
    term.wait_for("HELLO-CONSOLE", |seen| {
        if seen.contains("detach") {
            d.hutch_ok(&[
                "exec",
                "c1",
                "--",
                "sh",
                "-c",
                "echo HELLO-CONSOLE > /dev/console",
            ]);
        }
    });
    term.type_keys(&[b"\x01", b"q"]);
    let status = term.wait();
    assert!(status.success(), "console did not detach cleanly: {status}");
    let log = d.hutch_ok(&["console", "c1", "--show-log"]);
    assert!(log.contains("HELLO-CONSOLE"), "{log}");
    d.hutch_ok(&["delete", "c1", "--force"]);
}

#[test]
fn interactive_exec_gets_a_terminal() {
    if !require_root("interactive_exec_gets_a_terminal") {
        return;
    }
    use std::process::Command;
    let d = daemon_with_image();
    d.hutch_ok(&["launch", "bb", "c1"]);
    // `script` gives the client a terminal, so exec is interactive (a pty inside).
    for (client, env_key) in [
        (hutch_tests::hutch_bin().display().to_string(), "HUTCH_DIR"),
        ("lxc".to_string(), "LXD_DIR"),
    ] {
        let cmd =
            format!("stty cols 123 rows 45; {client} exec c1 -- sh -c 'tty; stty size; exit 3'");
        let out = hutch_tests::output_within(
            Command::new("script")
                .args(["-qfec", &cmd, "/dev/null"])
                .env(env_key, d.path())
                .env("LXD_CONF", d.path().join("lxc-conf")),
            b"",
            hutch_tests::COMMAND_LIMIT,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("/dev/pts/"), "{client}: {text}");
        assert!(
            text.contains("45 123"),
            "{client}: window size not passed: {text}"
        );
        assert_eq!(out.status.code(), Some(3), "{client}: {text}");
    }
    d.hutch_ok(&["delete", "c1", "--force"]);
}
