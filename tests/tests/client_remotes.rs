//! The client's remotes: `hutch remote ...` beside LXD's `lxc remote ...` (same output, same
//! config file, each client with its own config dir), `REMOTE:` errors, and images on a
//! simplestreams remote served over HTTPS on loopback by the test image server: `image
//! list`, `image info` (compared with lxc's), `launch REMOTE:ALIAS` and `image copy`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hutch_images::streams_tree::{Published, StreamsFiles, StreamsImage, StreamsTree};
use hutch_tests::{
    busybox_rootfs, output_within, split_busybox, ImageServer, TestDaemon, TestDir, COMMAND_LIMIT,
};

/// One client's surroundings: its config dir, the CA it trusts, the daemon it talks to.
struct Env<'a> {
    conf: PathBuf,
    ca: Option<&'a Path>,
    daemon: Option<&'a Path>,
}

impl Env<'_> {
    fn hutch(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(hutch_tests::hutch_bin());
        cmd.args(args)
            .env("HUTCH_CONF", &self.conf)
            .env("HOME", &self.conf)
            .env_remove("HUTCH_REMOTE");
        // Without a daemon, a socket that is not there: nothing reaches a real one.
        let dir = self
            .daemon
            .map_or(self.conf.join("no-daemon"), Path::to_path_buf);
        cmd.env("HUTCH_DIR", dir);
        if let Some(ca) = self.ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        let mut out = output_within(&mut cmd, b"", COMMAND_LIMIT);
        if args.first() == Some(&"remote") && matches!(args.get(1), Some(&"list" | &"ls")) {
            out.stdout = without_docker(&String::from_utf8_lossy(&out.stdout)).into_bytes();
        }
        out
    }

    fn lxc(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("lxc");
        cmd.args(args)
            .env("LXD_CONF", &self.conf)
            .env("HOME", &self.conf)
            .env_remove("LXC_REMOTE");
        let dir = self
            .daemon
            .map_or(self.conf.join("no-daemon"), Path::to_path_buf);
        cmd.env("LXD_DIR", dir);
        if let Some(ca) = self.ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        output_within(&mut cmd, b"", COMMAND_LIMIT)
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.conf.join("config.yml")).unwrap_or_default()
    }
}

/// `remote list` without hutch's built-in `docker` remote (an OCI registry, which lxc 5.0
/// does not have), in any of its formats, so the rest compares with lxc's.
fn without_docker(text: &str) -> String {
    if let Some(start) = text.find("\"docker\":{") {
        // JSON: the object and the comma after it.
        let end = text[start..]
            .find("},")
            .map_or(text.len(), |e| start + e + 2);
        return format!("{}{}", &text[..start], &text[end..]);
    }
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let name = line.trim_start_matches(['|', ' ']);
        if line == "docker:" {
            // YAML: the block of indented lines under it.
            while lines.peek().is_some_and(|l| l.starts_with(' ')) {
                lines.next();
            }
        } else if name.starts_with("docker ") || name.starts_with("docker,") {
            // A table row and its separator line.
            if line.starts_with('|') {
                lines.next();
            }
        } else {
            out.push(line);
        }
    }
    out.iter().map(|l| format!("{l}\n")).collect()
}

/// What a run shows the user: exit status, stdout, and the `Error:` lines of stderr (lxc
/// also greets a first run there).
fn seen(out: &Output) -> (bool, String, String) {
    let err = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("Error:"))
        .collect::<Vec<_>>()
        .join("\n");
    (
        out.status.success(),
        properties_sorted(&String::from_utf8_lossy(&out.stdout)),
        err,
    )
}

/// `image info` with its `Properties:` lines sorted: lxc prints them in Go's random map
/// order, hutch sorted.
fn properties_sorted(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_props = false;
    for line in text.lines() {
        if in_props && line.starts_with("    ") {
            block.push(line);
            continue;
        }
        if in_props {
            block.sort();
            out.extend(block.drain(..).map(String::from));
        }
        in_props = line == "Properties:";
        out.push(line.to_string());
    }
    block.sort();
    out.extend(block.drain(..).map(String::from));
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lxc_available(test: &str) -> bool {
    let ok = Command::new("lxc")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        hutch_tests::skipped(test, "LXD's lxc client is not installed");
    }
    ok
}

/// The two clients, each with its own config dir under `dir`.
fn pair<'a>(dir: &Path, ca: Option<&'a Path>, daemon: Option<&'a Path>) -> (Env<'a>, Env<'a>) {
    let env = |name: &str| {
        // lxc writes its config only into a directory that exists.
        std::fs::create_dir_all(dir.join(name)).unwrap();
        Env {
            conf: dir.join(name),
            ca,
            daemon,
        }
    };
    (env("hutch-conf"), env("lxc-conf"))
}

/// Runs each command with both clients and asserts they answer alike; after each, the two
/// config files are alike too once both exist.
fn same_as_lxc(hutch: &Env, lxc: &Env, commands: &[&[&str]]) {
    for args in commands {
        let (h, l) = (seen(&hutch.hutch(args)), seen(&lxc.lxc(args)));
        assert_eq!(
            h, l,
            "hutch and lxc differ on {args:?} (hutch left, lxc right)"
        );
        let (hc, lc) = (hutch.config(), lxc.config());
        if !hc.is_empty() && !lc.is_empty() {
            assert_eq!(hc, lc, "config.yml differs after {args:?}");
        }
    }
}

#[test]
fn remote_commands_answer_and_store_as_lxc_does() {
    let test = "remote_commands_answer_and_store_as_lxc_does";
    if !lxc_available(test) {
        return;
    }
    let dir = TestDir::new();
    let (hutch, lxc) = pair(dir.path(), None, None);
    same_as_lxc(
        &hutch,
        &lxc,
        &[
            &["remote", "list"],
            &["remote", "get-default"],
            &[
                "remote",
                "add",
                "mirror",
                "https://127.0.0.1:9",
                "--protocol",
                "simplestreams",
            ],
            &[
                "remote",
                "add",
                "mirror",
                "https://127.0.0.1:9",
                "--protocol",
                "simplestreams",
            ],
            &[
                "remote",
                "add",
                "plain",
                "http://127.0.0.1:9",
                "--protocol",
                "simplestreams",
            ],
            &[
                "remote",
                "add",
                "bare",
                "127.0.0.1:9",
                "--protocol",
                "simplestreams",
            ],
            &["remote", "add", "odd", "https://x", "--protocol", "bogus"],
            &[
                "remote",
                "add",
                "a:b",
                "https://x",
                "--protocol",
                "simplestreams",
            ],
            &[
                "remote",
                "add",
                "ubuntu",
                "https://x",
                "--protocol",
                "simplestreams",
            ],
            &["remote", "list", "--format", "csv"],
            &["remote", "list", "--format", "yaml"],
            &["remote", "list", "--format", "json"],
            &["remote", "list", "--format", "compact"],
            &["remote", "switch", "mirror"],
            &["remote", "get-default"],
            &["remote", "remove", "mirror"],
            &["remote", "rename", "mirror", "mirror2"],
            &["remote", "ls"],
            &["remote", "set-url", "mirror2", "https://127.0.0.1:10"],
            &["remote", "set-url", "nope", "https://127.0.0.1:10"],
            &["remote", "set-url", "local", "unix:///x"],
            &["remote", "remove", "local"],
            &["remote", "remove", "ubuntu"],
            &["remote", "rename", "ubuntu-daily", "daily"],
            &["remote", "rename", "images", "local"],
            &["remote", "switch", "nope"],
            &["remote", "switch", "local"],
            &["remote", "rm", "images"],
            &["remote", "mv", "mirror2", "mirror3"],
            &["remote", "list", "--format", "json"],
            &["remote", "list"],
        ],
    );
    assert!(hutch.config().contains("mirror3"), "{}", hutch.config());
}

#[test]
fn remote_prefixes_that_do_not_work_fail_as_lxc_fails() {
    let test = "remote_prefixes_that_do_not_work_fail_as_lxc_fails";
    if !lxc_available(test) {
        return;
    }
    let dir = TestDir::new();
    let (hutch, lxc) = pair(dir.path(), None, None);
    same_as_lxc(
        &hutch,
        &lxc,
        &[
            &["image", "list", "nope:"],
            &["image", "info", "nope:busybox"],
            &["launch", "nope:busybox", "c1"],
            &["init", "images:busybox", "images:c1"],
            &["image", "copy", "nope:busybox", "local:"],
            &["remote", "switch", "images"],
            &["list"],
        ],
    );
    // An LXD-protocol HTTPS remote is contacted before it is stored, as lxc does: one
    // that does not answer is not added.
    let out = hutch.hutch(&["remote", "add", "far", "https://127.0.0.1:9", "--public"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error: Get \"https://127.0.0.1:9\": Unable to connect to: 127.0.0.1:9"),
        "{err}"
    );
    let out = hutch.hutch(&["image", "list", "far:"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("The remote \"far\" doesn't exist"), "{err}");
}

/// A tree with one busybox image (aliases `busybox/1`, `busybox`) in `dir/tree`.
fn busybox_tree(dir: &Path) -> (PathBuf, Published) {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let serial = "20240501_05:24";
    let (meta, rootfs) = split_busybox(&work, serial);
    let tree_dir = dir.join("tree");
    let published = StreamsTree::new(&tree_dir)
        .add(&StreamsImage {
            os: "busybox".into(),
            release: "1".into(),
            release_title: String::new(),
            version: "1".into(),
            arch: "amd64".into(),
            variant: "default".into(),
            serial: serial.into(),
            aliases: vec!["busybox/1".into(), "busybox".into()],
            files: StreamsFiles::Split { meta, rootfs },
        })
        .unwrap();
    (tree_dir, published)
}

#[test]
fn simplestreams_images_list_and_show_as_lxc_shows_them() {
    let test = "simplestreams_images_list_and_show_as_lxc_shows_them";
    if !lxc_available(test) {
        return;
    }
    let dir = TestDir::new();
    let (tree, image) = busybox_tree(dir.path());
    let server = ImageServer::https(&tree);
    let ca = server.ca_file();
    let (hutch, lxc) = pair(dir.path(), Some(&ca), None);
    let url = server.url();
    let add: &[&str] = &[
        "remote",
        "add",
        "bb",
        &url,
        "--protocol",
        "simplestreams",
        "--public",
    ];
    let info_by_fp = image.fingerprint[..12].to_string();
    same_as_lxc(
        &hutch,
        &lxc,
        &[
            add,
            &["image", "list", "bb:"],
            &[
                "image",
                "list",
                "bb:",
                "--format",
                "csv",
                "-c",
                "lLfFpdasut",
            ],
            &["image", "list", "bb:busybox"],
            &["image", "list", "bb:", "os=busybox", "--format", "csv"],
            &["image", "list", "bb:", "os=nothing", "--format", "csv"],
            &["image", "info", "bb:busybox/1"],
            &["image", "info", "bb:busybox"],
            &["image", "info", &format!("bb:{info_by_fp}")],
            // The default remote may be the image server.
            &["remote", "switch", "bb"],
            &["image", "list", "--format", "csv"],
            &["image", "info", "busybox"],
            &["remote", "switch", "local"],
        ],
    );
    let listed = ok(
        hutch.hutch(&["image", "list", "bb:", "-c", "F", "-f", "csv"]),
        "image list",
    );
    assert_eq!(listed.trim(), image.fingerprint);
    // A name the server does not have fails on both (the wording is each one's own).
    assert!(!hutch
        .hutch(&["image", "info", "bb:nothing/here"])
        .status
        .success());
    assert!(!lxc
        .lxc(&["image", "info", "bb:nothing/here"])
        .status
        .success());
}

#[test]
fn launch_and_copy_from_a_simplestreams_remote() {
    let test = "launch_and_copy_from_a_simplestreams_remote";
    if !hutch_tests::require_root(test) {
        return;
    }
    let dir = TestDir::new();
    let (tree, image) = busybox_tree(dir.path());
    let server = ImageServer::https(&tree);
    let ca = server.ca_file();
    let d = TestDaemon::start_with_env(&[], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let env = Env {
        conf: dir.path().join("hutch-conf"),
        ca: Some(&ca),
        daemon: Some(d.path()),
    };
    let url = server.url();
    ok(
        env.hutch(&[
            "remote",
            "add",
            "bb",
            &url,
            "--protocol",
            "simplestreams",
            "--public",
        ]),
        "remote add",
    );

    // Launch by alias: the daemon pulls, the instance runs.
    let name = hutch_tests::unique_name("rc");
    let out = ok(env.hutch(&["launch", "bb:busybox/1", &name]), "launch");
    assert_eq!(out, format!("Creating {name}\nStarting {name}\n"));
    let state = ok(env.hutch(&["list", &name, "-c", "s", "-f", "csv"]), "list");
    assert_eq!(state.trim(), "RUNNING");
    let cached = ok(
        env.hutch(&["image", "list", "-c", "F", "-f", "csv"]),
        "image list",
    );
    assert!(cached.contains(&image.fingerprint), "{cached}");
    ok(env.hutch(&["delete", "--force", &name]), "delete");

    // Copy with an alias and auto-update; then the aliases the server gives it.
    let out = ok(
        env.hutch(&[
            "image",
            "copy",
            "bb:busybox",
            "local:",
            "--alias",
            "bbx",
            "--auto-update",
        ]),
        "image copy",
    );
    assert_eq!(out, "Image copied successfully!\n");
    let info = ok(env.hutch(&["image", "info", "bbx"]), "image info");
    assert!(
        info.contains(&format!("Fingerprint: {}", image.fingerprint)),
        "{info}"
    );
    assert!(info.contains("Auto update: enabled"), "{info}");
    ok(
        env.hutch(&["image", "copy", "bb:busybox", "local:", "--copy-aliases"]),
        "image copy --copy-aliases",
    );
    let aliases = ok(
        env.hutch(&["image", "alias", "list", "-f", "csv"]),
        "alias list",
    );
    for a in ["bbx,", "busybox,", "busybox/1,"] {
        assert!(aliases.contains(a), "{a} missing: {aliases}");
    }
    let out = ok(env.hutch(&["image", "refresh", "bbx"]), "image refresh");
    assert_eq!(out, "Image already up to date.\n");

    // Another hutchd's socket as a remote reads the same for both clients.
    let lxc = Env {
        conf: dir.path().join("lxc-conf"),
        ca: Some(&ca),
        daemon: Some(d.path()),
    };
    ok(
        lxc.lxc(&[
            "remote",
            "add",
            "bb",
            &url,
            "--protocol",
            "simplestreams",
            "--public",
        ]),
        "lxc remote add",
    );
    let socket = format!("unix://{}", d.socket().display());
    same_as_lxc(
        &env,
        &lxc,
        &[
            &["remote", "add", "other", &socket],
            &["remote", "list", "-f", "csv"],
            &["image", "list", "other:", "-c", "F", "-f", "csv"],
        ],
    );
}

#[test]
fn download_progress_is_drawn_on_a_terminal_and_nowhere_else() {
    let test = "download_progress_is_drawn_on_a_terminal_and_nowhere_else";
    if !hutch_tests::require_root(test) {
        return;
    }
    let dir = TestDir::new();
    // Incompressible bytes make a download long enough for progress to be reported.
    let work = dir.path().join("work");
    let tree = work.join("big");
    let rootfs = tree.join("rootfs");
    busybox_rootfs(&rootfs).expect("busybox rootfs");
    let mut noise = vec![0u8; 32 << 20];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    std::fs::write(rootfs.join("noise"), &noise).unwrap();
    std::fs::write(
        tree.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: big\n  release: \"1\"\n",
    )
    .unwrap();
    let meta = work.join("meta.tar.xz");
    let root = work.join("root.tar.gz");
    for (out, from, what, flags) in [
        (&meta, &tree, "metadata.yaml", "-cJf"),
        (&root, &rootfs, ".", "-czf"),
    ] {
        let status = Command::new("tar")
            .arg("-C")
            .arg(from)
            .args(["--numeric-owner", flags])
            .arg(out)
            .arg(what)
            .status()
            .unwrap();
        assert!(status.success(), "tar {what}");
    }
    let tree_dir = dir.path().join("tree");
    StreamsTree::new(&tree_dir)
        .add(&StreamsImage {
            os: "big".into(),
            release: "1".into(),
            release_title: String::new(),
            version: "1".into(),
            arch: "amd64".into(),
            variant: "default".into(),
            serial: "20240501_05:24".into(),
            aliases: vec!["big".into()],
            files: StreamsFiles::Split { meta, rootfs: root },
        })
        .unwrap();
    let server = ImageServer::https(&tree_dir);
    let ca = server.ca_file();
    let d = TestDaemon::start_with_env(&[], &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let env = Env {
        conf: dir.path().join("hutch-conf"),
        ca: Some(&ca),
        daemon: Some(d.path()),
    };
    let url = server.url();
    ok(
        env.hutch(&["remote", "add", "bs", &url, "--protocol", "simplestreams"]),
        "remote add",
    );

    let vars: [(&str, &std::ffi::OsStr); 3] = [
        ("HUTCH_CONF", env.conf.as_os_str()),
        ("HUTCH_DIR", d.path().as_os_str()),
        ("SSL_CERT_FILE", ca.as_os_str()),
    ];
    let hutch = hutch_tests::hutch_bin();
    let done = "Image copied successfully!";
    let mut term = hutch_tests::TerminalSession::start(
        &format!("{} image copy bs:big local: --alias big1", hutch.display()),
        &vars,
    );
    term.wait_for(done, |_| {});
    let seen = std::mem::take(&mut term.seen);
    assert!(term.wait().success());
    // Whatever was drawn is lxc's line for this command, each redraw after a `\r`, and the
    // line is blanked before the last word.
    let seen = seen.replace("\r\n", "\n");
    let (drawn, last) = seen.rsplit_once('\r').unwrap_or(("", &seen));
    assert_eq!(last, format!("{done}\n"), "{seen:?}");
    for part in drawn.split('\r').filter(|p| !p.trim().is_empty()) {
        assert!(
            part.starts_with("Copying the image: "),
            "{part:?} in {seen:?}"
        );
    }

    // Not on a terminal, or --quiet on one: no progress at all.
    ok(env.hutch(&["image", "delete", "big1"]), "image delete");
    let out = ok(
        env.hutch(&["image", "copy", "bs:big", "local:", "--alias", "big2"]),
        "copy",
    );
    assert_eq!(out, format!("{done}\n"));
    ok(env.hutch(&["image", "delete", "big2"]), "image delete");
    let mut term = hutch_tests::TerminalSession::start(
        &format!(
            "{} -q image copy bs:big local: && echo END",
            hutch.display()
        ),
        &vars,
    );
    term.wait_for("END", |_| {});
    let seen = std::mem::take(&mut term.seen);
    assert!(term.wait().success());
    assert_eq!(seen.trim(), "END", "{seen:?}");
}
