//! End-to-end: OCI images from local archives. An image built here from the busybox
//! rootfs (a base layer, an upper layer with a whiteout, a user and a file) and a config
//! (Entrypoint, Cmd, Env, WorkingDir, User), written as an OCI archive and as a `docker
//! save` tarball, imported with `hutch image import --format oci`, launched: the process
//! runs where and as whom the image says, its output is in the console log, exec sees
//! its environment. Hostile archives are refused and leave nothing. Needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hutch_oci::{host_arch, write_docker_archive, write_oci_archive, ImageToWrite, RunConfig};
use hutch_tests::{busybox_rootfs, free_port, require_root, unique_name, wait_until, TestDaemon};
use serde_json::Value;

/// Generous: every wait below is for a state, never a measure of speed.
const LIMIT: Duration = Duration::from_secs(60);

/// A layer of `(name, content, kind)` entries, names written raw (so `../` gets in).
fn raw_layer(entries: &[(&str, &[u8], tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, kind, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        let gnu = h.as_gnu_mut().expect("gnu header");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    b.into_inner().expect("layer")
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> (&'a str, &'a [u8], tar::EntryType, &'a str) {
    (name, data, tar::EntryType::Regular, "")
}

/// The upper layer: a whiteout of /etc/inittab, a user `app`, and /srv/app/added.
fn upper_layer() -> Vec<u8> {
    raw_layer(&[
        file("etc/.wh.inittab", b""),
        file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/srv/app:/bin/sh\n",
        ),
        file("etc/group", b"root:x:0:\napp:x:1234:\n"),
        ("srv/", b"", tar::EntryType::Directory, ""),
        ("srv/app/", b"", tar::EntryType::Directory, ""),
        file("srv/app/added", b"added-by-layer-2\n"),
    ])
}

fn run_config() -> RunConfig {
    RunConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo hello-oci; sleep 1000".into()],
        env: vec![
            "PATH=/bin:/sbin:/usr/bin:/usr/sbin".into(),
            "OCI_GREETING=hi there".into(),
        ],
        working_dir: Some("/srv/app".into()),
        user: Some("app".into()),
        exposed_ports: vec!["8080/tcp".into()],
        labels: [("org.example.test".to_string(), "hutch".to_string())].into(),
    }
}

/// The test image as (OCI archive, docker-save tarball) in `dir`.
fn build_archives(dir: &Path) -> (PathBuf, PathBuf) {
    let rootfs = dir.join("bb-rootfs");
    busybox_rootfs(&rootfs).expect("busybox rootfs");
    let layers = vec![
        hutch_oci::tree_layer(&rootfs).expect("tar the rootfs"),
        upper_layer(),
    ];
    fs::remove_dir_all(&rootfs).expect("remove the rootfs");
    let run = run_config();
    let image = ImageToWrite {
        architecture: host_arch(),
        run: &run,
        layers: &layers,
        gzip: true,
    };
    let oci = dir.join("image-oci.tar");
    write_oci_archive(&oci, &image).expect("write the OCI archive");
    let docker = dir.join("image-docker.tar");
    write_docker_archive(
        &docker,
        &ImageToWrite {
            gzip: false,
            ..image
        },
    )
    .expect("docker");
    (oci, docker)
}

fn get(d: &TestDaemon, path: &str) -> Value {
    let (status, body) = d.http("GET", path, b"");
    assert_eq!(status, 200, "GET {path}: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["metadata"].clone()
}

/// Waits until the console log of `name` shows `text`.
fn wait_for_log(d: &TestDaemon, name: &str, text: &str) {
    wait_until(&format!("{text} in {name}'s console log"), LIMIT, || {
        d.hutch_ok(&["console", name, "--show-log"]).contains(text)
    });
}

#[test]
fn oci_and_docker_archives_run_their_process() {
    if !require_root("oci_and_docker_archives_run_their_process") {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let (oci, docker) = build_archives(d.path());
    for (archive, kind) in [(&oci, "oci"), (&docker, "docker")] {
        let alias = unique_name(&format!("app-{kind}"));
        let out = d.hutch_ok(&[
            "image",
            "import",
            "--format",
            "oci",
            archive.to_str().unwrap(),
            "--alias",
            &alias,
        ]);
        assert!(out.contains("Image imported with fingerprint"), "{out}");
        let fp = get(&d, &format!("/1.0/images/aliases/{alias}"))["target"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let image = get(&d, &format!("/1.0/images/{fp}"));
        let props = &image["properties"];
        assert_eq!(props["type"], "oci", "{image}");
        assert_eq!(props["oci.user"], "app", "{image}");
        assert_eq!(props["oci.exposed_ports"], "8080/tcp", "{image}");
        assert_eq!(props["oci.label.org.example.test"], "hutch", "{image}");
        assert_eq!(
            props["oci.manifest_digest"].is_string(),
            kind == "oci",
            "{image}"
        );

        let name = unique_name(&format!("oci-{kind}"));
        d.hutch_ok(&["launch", &alias, &name]);
        wait_for_log(&d, &name, "hello-oci");
        // The process (the first child of our PID 1; exec'd commands may be its children
        // too): its cwd, ids and environment, as the image said.
        let app = d
            .sh_ok(&name, "cut -d' ' -f1 /proc/1/task/1/children")
            .trim()
            .to_string();
        assert!(!app.is_empty(), "no child of PID 1");
        let cwd = d.sh_ok(&name, &format!("readlink /proc/{app}/cwd"));
        assert_eq!(cwd.trim(), "/srv/app");
        let ids = d.sh_ok(
            &name,
            &format!("awk '/^Uid:|^Gid:/ {{print $2}}' /proc/{app}/status"),
        );
        assert_eq!(ids.split_whitespace().collect::<Vec<_>>(), ["1234", "1234"]);
        let environ = d.sh_ok(&name, &format!("tr '\\0' '\\n' </proc/{app}/environ"));
        assert!(environ.contains("OCI_GREETING=hi there"), "{environ}");
        let info = d.hutch_ok(&["info", &name]);
        assert!(info.contains("Exposed ports: 8080/tcp"), "{info}");
        // exec gets the image's Env through environment.* keys.
        assert_eq!(d.sh_ok(&name, "echo \"$OCI_GREETING\"").trim(), "hi there");
        // The layers: the whiteout removed, the upper file present.
        d.sh_ok(&name, "test ! -e /etc/inittab");
        assert_eq!(
            d.sh_ok(&name, "cat /srv/app/added").trim(),
            "added-by-layer-2"
        );
        // PID 1 reaps orphans: a background process whose parent is gone ends reaped.
        d.sh_ok(&name, "(sleep 1 &); true");
        wait_until("orphans reaped", LIMIT, || {
            d.sh_ok(&name, "grep -l '^State:.*Z' /proc/[0-9]*/status || true")
                .trim()
                .is_empty()
                && !d.sh_ok(&name, "ps -o comm").contains("sleep 1")
        });
        let pid1 = d.sh_ok(&name, "cat /proc/1/comm");
        assert!(
            !["sh", "init"].contains(&pid1.trim()),
            "PID 1 is ours: {pid1}"
        );
        // SIGTERM reaches the shell through our PID 1, and the stop is clean.
        d.hutch_ok(&["stop", &name]);
        let state = get(&d, &format!("/1.0/instances/{name}/state"));
        assert_eq!(state["status"], "Stopped", "{state}");

        if kind == "docker" {
            // oci.* keys override the image's process.
            let over = unique_name("oci-over");
            d.hutch_ok(&[
                "launch",
                &alias,
                &over,
                "-c",
                r#"oci.entrypoint=["/bin/sh","-c","echo override-$(id -u); sleep 1000"]"#,
                "-c",
                "oci.cwd=/tmp",
                "-c",
                "oci.uid=0",
                "-c",
                "oci.gid=0",
            ]);
            wait_for_log(&d, &over, "override-0");
            let cwd = d.sh_ok(
                &over,
                "readlink /proc/$(cut -d' ' -f1 /proc/1/task/1/children)/cwd",
            );
            assert_eq!(cwd.trim(), "/tmp");
            d.hutch_ok(&["delete", &over, "--force"]);
            // An image's own init (busybox's, known by its name) is PID 1 itself, where
            // other processes run under ours.
            let own = unique_name("oci-init");
            d.hutch_ok(&[
                "launch",
                &alias,
                &own,
                "-c",
                r#"oci.entrypoint=["/sbin/init"]"#,
                "-c",
                "oci.uid=0",
                "-c",
                "oci.gid=0",
            ]);
            wait_until("the image's init as PID 1", LIMIT, || {
                d.sh(&own, "cat /proc/1/comm").1.trim() == "init"
            });
            d.hutch_ok(&["delete", &own, "--force"]);
            published_ports(&d, &alias);
            comes_back_with_autorestart(&d, &alias);
            // The container lives as long as its process.
            let short = unique_name("oci-short");
            d.hutch_ok(&[
                "launch",
                &alias,
                &short,
                "-c",
                r#"oci.entrypoint=["/bin/sh","-c","echo short-lived; exit 3"]"#,
            ]);
            wait_until(&format!("{short} stopped"), LIMIT, || {
                get(&d, &format!("/1.0/instances/{short}/state"))["status"] == "Stopped"
            });
            assert!(d
                .hutch_ok(&["console", &short, "--show-log"])
                .contains("short-lived"));
            d.hutch_ok(&["delete", &short]);
        }
        d.hutch_ok(&["delete", &name]);
        // A normal image: exported as a unified tarball, which imports back as the same
        // OCI image.
        let export = d.path().join(format!("export-{kind}"));
        d.hutch_ok(&["image", "export", &alias, export.to_str().unwrap()]);
        d.hutch_ok(&["image", "delete", &alias]);
        let tarball = export.with_extension("tar.gz");
        d.hutch_ok(&[
            "image",
            "import",
            tarball.to_str().unwrap(),
            "--alias",
            &alias,
        ]);
        let again = get(&d, &format!("/1.0/images/{fp}"));
        assert_eq!(again["properties"]["type"], "oci", "{again}");
        fs::remove_file(&tarball).expect("remove the export");
        d.hutch_ok(&["image", "delete", &alias]);
    }
    assert_nothing_left(&d);
}

/// `boot.autorestart`: the application's process killed, the container comes back with
/// a new one.
fn comes_back_with_autorestart(d: &TestDaemon, alias: &str) {
    let name = unique_name("oci-auto");
    d.hutch_ok(&["launch", alias, &name, "-c", "boot.autorestart=true"]);
    wait_for_log(d, &name, "hello-oci");
    let state = |d: &TestDaemon| get(d, &format!("/1.0/instances/{name}/state"));
    let first = state(d)["pid"].as_i64().unwrap_or_default();
    assert!(first > 0);
    d.sh_ok(&name, "kill -9 $(cut -d' ' -f1 /proc/1/task/1/children)");
    wait_until("the container back with a new process", LIMIT, || {
        let s = state(d);
        s["status"] == "Running" && s["pid"].as_i64().is_some_and(|p| p > 0 && p != first)
    });
    d.hutch_ok(&["delete", &name, "--force"]);
}

/// `launch --ports`: `all` makes a proxy device per exposed port (on the same host port;
/// checked unstarted, so no host port is taken); a given one reaches a server in the
/// container through the host's loopback; a bad spec makes nothing.
fn published_ports(d: &TestDaemon, alias: &str) {
    let idle = unique_name("oci-ports");
    d.hutch_ok(&["init", alias, &idle, "--ports", "all,9/udp"]);
    let devices = get(d, &format!("/1.0/instances/{idle}"))["devices"].clone();
    assert_eq!(devices["port-8080"]["type"], "proxy", "{devices}");
    assert_eq!(
        devices["port-8080"]["listen"], "tcp:0.0.0.0:8080",
        "{devices}"
    );
    assert_eq!(devices["port-8080"]["connect"], "tcp:127.0.0.1:8080");
    assert_eq!(devices["port-9-udp"]["connect"], "udp:127.0.0.1:9");
    d.hutch_ok(&["delete", &idle]);

    let host_port = free_port();
    let web = unique_name("oci-web");
    d.hutch_ok(&[
        "launch",
        alias,
        &web,
        "--ports",
        &format!("127.0.0.1:{host_port}:8080"),
        "--ports",
        "all",
    ]);
    let devices = get(d, &format!("/1.0/instances/{web}"))["devices"].clone();
    let names: Vec<&String> = devices.as_object().unwrap().keys().collect();
    assert_eq!(
        names,
        [&format!("port-{host_port}")],
        "8080 is published once"
    );
    d.sh_ok(&web, "httpd -p 8080 -h /srv/app");
    // Loopback is up in an application container too (nothing of the image's did it).
    let lo = d.sh_ok(&web, "cat /sys/class/net/lo/flags");
    assert_eq!(
        u32::from_str_radix(lo.trim().trim_start_matches("0x"), 16).unwrap() & 1,
        1,
        "{lo}"
    );
    let mut body = String::new();
    wait_until("the page through the published port", LIMIT, || {
        use std::io::{Read, Write};
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", host_port)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.write_all(b"GET /added HTTP/1.0\r\n\r\n");
        body.clear();
        let _ = conn.read_to_string(&mut body);
        body.contains("added-by-layer-2")
    });
    d.hutch_ok(&["delete", &web, "--force"]);

    let bad = unique_name("oci-bad");
    let err = d.hutch_err(&["launch", alias, &bad, "--ports", "80/sctp"]);
    assert!(err.contains("--ports"), "{err}");
    let (status, _) = d.http("GET", &format!("/1.0/instances/{bad}"), b"");
    assert_eq!(status, 404);
}

/// No image, no image volume and no upload debris in the daemon's state.
fn assert_nothing_left(d: &TestDaemon) {
    let images = get(d, "/1.0/images");
    assert_eq!(images, Value::Array(Vec::new()), "images left: {images}");
    let debris: Vec<_> = fs::read_dir(d.path().join("images"))
        .expect("images dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(debris.is_empty(), "files left in images/: {debris:?}");
    for pool in fs::read_dir(d.path().join("storage-pools"))
        .expect("pools")
        .flatten()
    {
        let vols = pool.path().join("images");
        let left: Vec<_> = fs::read_dir(&vols)
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "image volumes left in {vols:?}: {left:?}");
    }
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    if !require_root("hostile_archives_are_refused_and_leave_nothing") {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let outside = d.path().join("outside");
    fs::create_dir_all(&outside).expect("outside dir");
    let run = run_config();
    let base = raw_layer(&[
        ("etc/", b"", tar::EntryType::Directory, ""),
        file("etc/x", b"x"),
    ]);
    let write = |name: &str, layers: Vec<Vec<u8>>, arch: &str| -> PathBuf {
        let path = d.path().join(name);
        let image = ImageToWrite {
            architecture: arch,
            run: &run,
            layers: &layers,
            gzip: false,
        };
        write_oci_archive(&path, &image).expect("write");
        path
    };
    let escape = write(
        "escape.tar",
        vec![
            base.clone(),
            raw_layer(&[
                ("a", b"", tar::EntryType::Symlink, outside.to_str().unwrap()),
                file("a/pwned", b"pwned"),
            ]),
        ],
        host_arch(),
    );
    let dotdot = write(
        "dotdot.tar",
        vec![base.clone(), raw_layer(&[file("../../pwned", b"pwned")])],
        host_arch(),
    );
    let tampered = write(
        "tampered.tar",
        vec![
            base.clone(),
            raw_layer(&[file("etc/y", b"original-content")]),
        ],
        host_arch(),
    );
    let mut data = fs::read(&tampered).expect("read");
    let at = data
        .windows(16)
        .position(|w| w == b"original-content")
        .expect("content in the archive");
    data[at..at + 16].copy_from_slice(b"tampered-content");
    fs::write(&tampered, data).expect("write");
    let other = if host_arch() == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let wrong_arch = write("arch.tar", vec![base.clone()], other);
    let not_oci = d.path().join("not-oci.tar");
    fs::write(&not_oci, raw_layer(&[file("metadata.yaml", b"x")])).expect("write");

    let cases: [(&PathBuf, &[&str]); 5] = [
        (&escape, &["passes through the symlink"]),
        (&dotdot, &["escapes the root filesystem"]),
        (&tampered, &["digest mismatch for sha256:"]),
        (&wrong_arch, &["no image for linux/", other]),
        (&not_oci, &["not an OCI archive"]),
    ];
    for (archive, wants) in cases {
        let err = d.hutch_err(&[
            "image",
            "import",
            "--format",
            "oci",
            archive.to_str().unwrap(),
            "--alias",
            "hostile",
        ]);
        for want in wants {
            assert!(err.contains(want), "{archive:?}: {err}");
        }
        assert_nothing_left(&d);
    }
    assert!(!outside.join("pwned").exists(), "a layer wrote outside");
    assert!(!d.path().join("pwned").exists() && !Path::new("/pwned").exists());
}

#[test]
fn lxc_imports_and_launches_an_oci_archive() {
    if !require_root("lxc_imports_and_launches_an_oci_archive") {
        return;
    }
    if std::process::Command::new("lxc")
        .arg("--version")
        .output()
        .is_err()
    {
        hutch_tests::skipped(
            "lxc_imports_and_launches_an_oci_archive",
            "no lxc client (apt-get install lxd-client)",
        );
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let (oci, _docker) = build_archives(d.path());
    // LXD's client sends the archive as any image; hutchd recognises it.
    let alias = unique_name("app-lxc");
    let out = d.lxc_ok(&["image", "import", oci.to_str().unwrap(), "--alias", &alias]);
    assert!(out.contains("Image imported with fingerprint"), "{out}");
    let name = unique_name("oci-lxc");
    d.lxc_ok(&["launch", &alias, &name]);
    wait_for_log(&d, &name, "hello-oci");
    let out = d.lxc_ok(&["exec", &name, "--", "cat", "/srv/app/added"]);
    assert_eq!(out.trim(), "added-by-layer-2");
    d.lxc_ok(&["delete", &name, "--force"]);
    d.lxc_ok(&["image", "delete", &alias]);
    assert_nothing_left(&d);
}
