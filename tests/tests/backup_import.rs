//! End-to-end: `lxc import` and `hutch import` into hutchd. A tarball in LXD's layout
//! built here (always), a backup made by the reference LXD 5.0 (when installed), an
//! optimized btrfs backup built with `btrfs send` (snapshots come back as snapshots; a
//! dir pool refuses it), name and pool overrides, hostile tarballs, and a cancel in the
//! middle of an upload: each refusal leaves nothing behind. Needs root.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hutch_tests::{
    busybox_image, busybox_rootfs, require_root, skipped, wait_until, ReferenceLxd, TestDaemon,
};
use serde_json::Value;

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn index_yaml(name: &str, backend: &str, snapshots: &[&str], optimized: bool) -> String {
    let list: String = snapshots.iter().map(|s| format!("- {s}\n")).collect();
    let snap_objs: String = snapshots
        .iter()
        .map(|s| {
            format!(
                "  - name: {s}\n    architecture: x86_64\n    created_at: 2024-01-02T03:04:05Z\n    \
                 config:\n      user.snap: {s}\n    devices: {{}}\n    profiles: [default]\n"
            )
        })
        .collect();
    format!(
        "name: {name}\nbackend: {backend}\npool: default\nsnapshots:\n{list}optimized: {optimized}\n\
         optimized_header: {optimized}\ntype: container\nconfig:\n  container:\n    name: {name}\n    \
         architecture: x86_64\n    config:\n      image.os: busybox\n      user.k: v\n      \
         volatile.idmap.current: '[]'\n    devices: {{}}\n    profiles: [default]\n    \
         created_at: 2024-01-01T00:00:00Z\n    type: container\n  snapshots:\n{snap_objs}  \
         pool:\n    name: default\n    driver: {backend}\n  volume:\n    name: {name}\n    \
         type: container\n"
    )
}

/// A tarball builder writing names as given (hostile ones included).
struct Tarball(tar::Builder<Vec<u8>>);

impl Tarball {
    fn new() -> Tarball {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        Tarball(b)
    }

    fn raw(&mut self, h: &mut tar::Header, path: &str, data: &[u8]) {
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        self.0.append(h, data).unwrap();
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn file(&mut self, path: &str, data: &[u8]) {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.raw(&mut h, path, data);
    }

    fn link(&mut self, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = Self::header(kind, 0o777, 0);
        h.set_link_name_literal(target).unwrap();
        self.raw(&mut h, path, &[]);
    }

    fn tree(&mut self, name: &str, dir: &Path) {
        self.0.append_dir_all(name, dir).unwrap();
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A volume in LXD's layout: metadata.yaml, templates/, rootfs/ (busybox) with a marker.
fn volume(dir: &Path, marker: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1\nproperties:\n  os: busybox\n",
    )
    .unwrap();
    busybox_rootfs(&dir.join("rootfs")).unwrap();
    std::fs::write(dir.join("rootfs/etc/marker"), marker).unwrap();
    std::os::unix::fs::chown(dir.join("rootfs/etc/marker"), Some(33), Some(44)).unwrap();
    dir.to_path_buf()
}

/// A gzipped backup of `name` in LXD's layout with snapshots s0 and s1 (markers say
/// which volume a file came from).
fn lxd_layout_backup(work: &Path, name: &str) -> Vec<u8> {
    let mut t = Tarball::new();
    t.file(
        "backup/index.yaml",
        index_yaml(name, "dir", &["s0", "s1"], false).as_bytes(),
    );
    for s in ["s0", "s1"] {
        let v = volume(&work.join(s), s);
        t.tree(&format!("backup/snapshots/{s}"), &v);
    }
    let v = volume(&work.join("main"), "main");
    t.tree("backup/container", &v);
    gzip(&t.finish())
}

fn snapshots_of(d: &TestDaemon, name: &str) -> Vec<String> {
    let (_, body) = d.http(
        "GET",
        &format!("/1.0/instances/{name}/snapshots?recursion=1"),
        b"",
    );
    parse(&body)["metadata"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn instances(d: &TestDaemon) -> Vec<Value> {
    let (_, body) = d.http("GET", "/1.0/instances", b"");
    parse(&body)["metadata"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Nothing of an import is left: no instance, no volume, no staging directory.
fn assert_nothing_left(d: &TestDaemon, pool: &str, what: &str) {
    assert_eq!(instances(d), Vec::<Value>::new(), "{what}: instances left");
    for dir in ["containers", "containers-snapshots"] {
        let path = d.path().join(format!("storage-pools/{pool}/{dir}"));
        let left: Vec<_> = std::fs::read_dir(&path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            left.is_empty(),
            "{what}: left in {}: {left:?}",
            path.display()
        );
    }
}

fn marker(d: &TestDaemon, pool: &str, vol: &str) -> String {
    let p = d
        .path()
        .join(format!("storage-pools/{pool}/{vol}/rootfs/etc/marker"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_tarball_in_lxds_layout_imports_with_lxc_and_hutch() {
    let test = "a_tarball_in_lxds_layout_imports_with_lxc_and_hutch";
    if !require_root(test) {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let work = d.path().join("work");
    let file = d.path().join("c1.tar.gz");
    std::fs::write(&file, lxd_layout_backup(&work, "c1")).unwrap();
    let file = file.to_str().unwrap();

    // `lxc import FILE`: the backup's own name.
    d.lxc_ok(&["import", file]);
    assert_eq!(snapshots_of(&d, "c1"), ["s0", "s1"]);
    assert_eq!(marker(&d, "default", "containers/c1"), "main");
    assert_eq!(marker(&d, "default", "containers-snapshots/c1/s0"), "s0");
    assert_eq!(marker(&d, "default", "containers-snapshots/c1/s1"), "s1");
    let m = std::fs::metadata(
        d.path()
            .join("storage-pools/default/containers/c1/rootfs/etc/marker"),
    )
    .unwrap();
    assert_eq!((m.uid(), m.gid()), (33, 44), "owners as in the tarball");
    let (_, body) = d.http("GET", "/1.0/instances/c1", b"");
    let c1 = parse(&body)["metadata"].clone();
    assert_eq!(c1["config"]["user.k"], "v", "{c1}");
    assert_eq!(c1["status"], "Stopped");
    let (_, body) = d.http("GET", "/1.0/instances/c1/snapshots/s0", b"");
    assert_eq!(
        parse(&body)["metadata"]["config"]["user.snap"],
        "s0",
        "{body}"
    );
    // It runs, and inside the owners are the container's.
    d.hutch_ok(&["start", "c1"]);
    let owners = d.hutch_ok(&["exec", "c1", "--", "stat", "-c", "%u:%g", "/etc/marker"]);
    assert_eq!(owners.trim(), "33:44");
    d.hutch_ok(&["stop", "c1", "--force"]);

    // The same name again: refused, c1 untouched.
    let out = d.lxc(&["import", file]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(snapshots_of(&d, "c1"), ["s0", "s1"]);

    // `hutch import FILE NAME --storage POOL`: another name, another pool.
    d.hutch_ok(&["storage", "create", "p2", "dir"]);
    d.hutch_ok(&["import", file, "c2", "--storage", "p2"]);
    assert_eq!(snapshots_of(&d, "c2"), ["s0", "s1"]);
    assert_eq!(marker(&d, "p2", "containers/c2"), "main");
    assert_eq!(marker(&d, "p2", "containers-snapshots/c2/s1"), "s1");
    let (_, body) = d.http("GET", "/1.0/instances/c2", b"");
    let c2 = parse(&body)["metadata"].clone();
    assert_eq!(c2["expanded_devices"]["root"]["pool"], "p2", "{c2}");
    // `lxc import -s POOL FILE NAME` too (X-LXD-pool, X-LXD-name).
    d.lxc_ok(&["import", "-s", "p2", file, "c3"]);
    assert_eq!(marker(&d, "p2", "containers-snapshots/c3/s0"), "s0");
    // An unknown pool: refused, nothing made.
    let err = d.hutch_err(&["import", file, "c4", "--storage", "nowhere"]);
    assert!(err.to_lowercase().contains("not found"), "{err}");
    assert_eq!(instances(&d).len(), 3);
}

/// What a hostile backup's test needs: a good start (index, a snapshot, the volume).
fn hostile(index: &str, extra: impl FnOnce(&mut Tarball)) -> Vec<u8> {
    let mut t = Tarball::new();
    t.file("backup/index.yaml", index.as_bytes());
    t.file("backup/snapshots/s0/metadata.yaml", b"x");
    t.file("backup/container/metadata.yaml", b"x");
    t.file("backup/container/rootfs/etc/hostname", b"h\n");
    extra(&mut t);
    t.finish()
}

#[test]
fn hostile_backups_are_refused_and_leave_nothing() {
    let test = "hostile_backups_are_refused_and_leave_nothing";
    if !require_root(test) {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let outside = d.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out_s = outside.to_str().unwrap().to_string();
    let index = index_yaml("evil", "dir", &["s0"], false);
    let depth = "../".repeat(12);
    let good = gzip(&hostile(&index, |_| {}));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a ../ path",
            hostile(&index, |t| {
                t.file(
                    &format!("backup/container/{depth}{}/dotdot", &out_s[1..]),
                    b"x",
                )
            }),
            "climbs out",
        ),
        (
            "a write through a symlink",
            hostile(&index, |t| {
                t.link(tar::EntryType::Symlink, "backup/container/rootfs/l", &out_s);
                t.file("backup/container/rootfs/l/through", b"x");
            }),
            "symlink",
        ),
        (
            "an absolute path",
            hostile(&index, |t| t.file(&format!("{out_s}/abs"), b"x")),
            "absolute",
        ),
        (
            "a device node",
            hostile(&index, |t| {
                let mut h = Tarball::header(tar::EntryType::Char, 0o666, 0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                t.raw(&mut h, "backup/container/rootfs/null", &[]);
            }),
            "device node",
        ),
        (
            "a hard link outside its volume",
            hostile(&index, |t| {
                t.link(
                    tar::EntryType::Link,
                    "backup/container/rootfs/h",
                    "/etc/passwd",
                )
            }),
            "absolute",
        ),
        (
            "a hard link into another volume",
            hostile(&index, |t| {
                t.link(
                    tar::EntryType::Link,
                    "backup/container/rootfs/h",
                    "backup/snapshots/s0/metadata.yaml",
                )
            }),
            "hard link out",
        ),
        (
            "an index listing a missing snapshot",
            hostile(&index_yaml("evil", "dir", &["s0", "gone"], false), |_| {}),
            "lacks it",
        ),
        (
            "a snapshot the index does not list",
            hostile(&index_yaml("evil", "dir", &[], false), |_| {}),
            "does not list",
        ),
        (
            "a missing index",
            {
                let mut t = Tarball::new();
                t.file("backup/container/metadata.yaml", b"x");
                t.finish()
            },
            "Backup is missing index.yaml",
        ),
        (
            "a truncated gzip stream",
            good[..good.len() - 40].to_vec(),
            "",
        ),
    ];
    let mut cases: Vec<(&str, Vec<u8>, &str, &str)> = cases
        .into_iter()
        .map(|(what, data, expect)| (what, data, expect, "default"))
        .collect();
    // A 10 GB sparse file on a small pool: its size alone is refused, nothing is written.
    let small = if std::process::Command::new("mkfs.btrfs")
        .arg("--version")
        .output()
        .is_ok()
    {
        d.hutch_ok(&["storage", "create", "small", "btrfs", "size=256MiB"]);
        "small"
    } else {
        skipped(test, "the small-pool case: btrfs-progs is not installed");
        "default"
    };
    let sparse = |size: u64| {
        hostile(&index, |t| {
            let mut h = Tarball::header(tar::EntryType::GNUSparse, 0o644, 512);
            let gnu = h.as_gnu_mut().unwrap();
            gnu.set_real_size(size);
            gnu.sparse[0].set_offset(size - 512);
            gnu.sparse[0].set_length(512);
            t.raw(&mut h, "backup/container/rootfs/sparse", &[1u8; 512]);
        })
    };
    cases.push(("a 10 GB sparse file", sparse(10 << 30), "more than", small));
    // Past the hard cap (1 TiB) whatever the pool.
    cases.push((
        "a 2 TB sparse file",
        sparse(2 << 40),
        "more than",
        "default",
    ));
    for (what, data, expect, pool) in cases {
        let file = d.path().join("evil.tar");
        std::fs::write(&file, &data).unwrap();
        let out = d.lxc(&["import", "-s", pool, file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{what}: accepted");
        assert!(err.contains(expect), "{what}: {err}");
        assert_nothing_left(&d, pool, what);
        let escaped: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().collect();
        assert!(escaped.is_empty(), "{what}: wrote outside: {escaped:?}");
    }
    // The good one imports.
    let file = d.path().join("good.tar.gz");
    std::fs::write(&file, &good).unwrap();
    d.lxc_ok(&["import", file.to_str().unwrap()]);
    assert_eq!(snapshots_of(&d, "evil"), ["s0"]);
}

/// Sends `POST /1.0/instances` with a backup body of `total` bytes whose first `part`
/// bytes are written now; the caller finishes (or drops) the stream.
fn start_upload(d: &TestDaemon, data: &[u8], part: usize) -> std::os::unix::net::UnixStream {
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    let head = format!(
        "POST /1.0/instances HTTP/1.1\r\nHost: unix.socket\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&data[..part]).unwrap();
    s
}

#[test]
fn a_cancelled_import_leaves_nothing() {
    let test = "a_cancelled_import_leaves_nothing";
    if !require_root(test) {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    // Uncompressed, with 8 MiB of content: half of it is on its way when the cancel comes.
    let mut t = Tarball::new();
    t.file(
        "backup/index.yaml",
        index_yaml("slow", "dir", &[], false).as_bytes(),
    );
    t.file("backup/container/metadata.yaml", b"x");
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
    t.file("backup/container/rootfs/big", &big);
    let data = t.finish();
    let mut upload = start_upload(&d, &data, data.len() / 2);
    // The operation is there while the body streams, with its progress.
    let op = import_op(&d);
    assert_eq!(
        op["resources"]["instances"][0], "/1.0/instances/slow",
        "{op}"
    );
    assert_eq!(op["may_cancel"], true, "{op}");
    let id = op["id"].as_str().unwrap().to_string();
    let (status, body) = d.http("DELETE", &format!("/1.0/operations/{id}"), b"");
    assert_eq!(status, 200, "{body}");
    // The client goes on sending; it gets the cancelled operation at the end.
    upload.write_all(&data[data.len() / 2..]).unwrap();
    let mut resp = String::new();
    let _ = upload.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 202"), "{resp}");
    let (_, body) = d.http("GET", &format!("/1.0/operations/{id}/wait?timeout=60"), b"");
    assert_eq!(parse(&body)["metadata"]["status"], "Cancelled", "{body}");
    assert_nothing_left(&d, "default", "a cancelled import");
    // A client that goes away mid-upload: the same.
    let upload = start_upload(&d, &data, data.len() / 2);
    let id = import_op(&d)["id"].as_str().unwrap().to_string();
    drop(upload);
    let (_, body) = d.http("GET", &format!("/1.0/operations/{id}/wait?timeout=60"), b"");
    assert_eq!(parse(&body)["metadata"]["status"], "Failure", "{body}");
    assert_nothing_left(&d, "default", "an abandoned import");
}

/// The running import's operation, once it reports bytes received.
fn import_op(d: &TestDaemon) -> Value {
    let mut op = Value::Null;
    wait_until("the import's operation", Duration::from_secs(60), || {
        let (_, body) = d.http("GET", "/1.0/operations?recursion=1", b"");
        op = parse(&body)["metadata"]["running"]
            .as_array()
            .and_then(|a| a.iter().find(|o| o["description"] == "Restoring backup"))
            .cloned()
            .unwrap_or(Value::Null);
        op["metadata"]["progress"]["processed"]
            .as_str()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
            > 0
    });
    op
}

/// hutchd on a btrfs pool with `c1` (busybox, snapshots s0 and s1, a marker per volume),
/// and an optimized backup of it built with `btrfs send` as LXD lays one out.
fn optimized_backup(d: &TestDaemon) -> Vec<u8> {
    let image = d.path().join("bb.tar.gz");
    busybox_image(d.path(), &image).expect("busybox image");
    d.hutch_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    d.hutch_ok(&["init", "bb", "c1"]);
    let pool = d.path().join("storage-pools/default");
    for s in ["s0", "s1"] {
        std::fs::write(pool.join("containers/c1/rootfs/etc/marker"), s).unwrap();
        d.hutch_ok(&["snapshot", "c1", s]);
    }
    std::fs::write(pool.join("containers/c1/rootfs/etc/marker"), "main").unwrap();
    let ro = pool.join("containers/.c1.backup");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("btrfs")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "btrfs {args:?}: {out:?}");
        out.stdout
    };
    run(&[
        "subvolume",
        "snapshot",
        "-r",
        pool.join("containers/c1").to_str().unwrap(),
        ro.to_str().unwrap(),
    ]);
    let snap = |s: &str| pool.join(format!("containers-snapshots/c1/{s}"));
    let s0 = run(&["send", "-q", snap("s0").to_str().unwrap()]);
    let s1 = run(&[
        "send",
        "-q",
        "-p",
        snap("s0").to_str().unwrap(),
        snap("s1").to_str().unwrap(),
    ]);
    let main = run(&[
        "send",
        "-q",
        "-p",
        snap("s1").to_str().unwrap(),
        ro.to_str().unwrap(),
    ]);
    run(&["subvolume", "delete", ro.to_str().unwrap()]);
    let mut t = Tarball::new();
    t.file(
        "backup/index.yaml",
        index_yaml("c1", "btrfs", &["s0", "s1"], true).as_bytes(),
    );
    t.file(
        "backup/optimized_header.yaml",
        b"subvolumes:\n- path: /\n  snapshot: s0\n  readonly: true\n  uuid: ''\n\
          - path: /\n  snapshot: s1\n  readonly: true\n  uuid: ''\n\
          - path: /\n  snapshot: ''\n  readonly: false\n  uuid: ''\n",
    );
    t.file("backup/snapshots/s0.bin", &s0);
    t.file("backup/snapshots/s1.bin", &s1);
    t.file("backup/container.bin", &main);
    gzip(&t.finish())
}

#[test]
fn an_optimized_btrfs_backup_restores_snapshots_as_snapshots() {
    let test = "an_optimized_btrfs_backup_restores_snapshots_as_snapshots";
    if !require_root(test) {
        return;
    }
    if std::process::Command::new("mkfs.btrfs")
        .arg("--version")
        .output()
        .is_err()
    {
        skipped(test, "btrfs-progs is not installed");
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "btrfs"]);
    let file = d.path().join("c1.opt.tar.gz");
    std::fs::write(&file, optimized_backup(&d)).unwrap();
    let file = file.to_str().unwrap();
    // Onto a dir pool: refused with the drivers named, nothing left.
    d.hutch_ok(&["storage", "create", "plain", "dir"]);
    let out = d.lxc(&["import", "-s", "plain", file, "c2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(r#"Optimized backup storage driver "btrfs" differs from the target storage pool driver "dir""#),
        "{err}"
    );
    let plain = d.path().join("storage-pools/plain/containers");
    assert!(std::fs::read_dir(&plain)
        .map(|r| r.count() == 0)
        .unwrap_or(true));
    // Onto the btrfs pool under another name: the snapshots are subvolumes again.
    d.lxc_ok(&["import", file, "c2"]);
    assert_eq!(snapshots_of(&d, "c2"), ["s0", "s1"]);
    for (vol, want) in [
        ("containers-snapshots/c2/s0", "s0"),
        ("containers-snapshots/c2/s1", "s1"),
        ("containers/c2", "main"),
    ] {
        assert_eq!(marker(&d, "default", vol), want, "{vol}");
        let p = d.path().join(format!("storage-pools/default/{vol}"));
        // A subvolume's root directory is inode 256.
        assert_eq!(
            std::fs::metadata(&p).unwrap().ino(),
            256,
            "{vol} is a subvolume"
        );
    }
    let staging: Vec<_> = std::fs::read_dir(d.path().join("storage-pools/default/containers"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");
    d.hutch_ok(&["start", "c2"]);
    assert_eq!(
        d.hutch_ok(&["exec", "c2", "--", "cat", "/etc/marker"]),
        "main"
    );
    d.hutch_ok(&["stop", "c2", "--force"]);
}

/// An LXD with `c1`, a busybox container with two snapshots and a file owned by 33:44.
fn lxd_with_container(test: &str) -> Option<ReferenceLxd> {
    let lxd = ReferenceLxd::start(test)?;
    lxd.import_busybox();
    lxd.lxc_ok(&["init", "bb", "c1", "-c", "user.from=lxd"]);
    let owned = lxd.lxd_dir().join("owned");
    std::fs::write(&owned, "from lxd\n").unwrap();
    lxd.lxc_ok(&[
        "file",
        "push",
        owned.to_str().unwrap(),
        "c1/etc/owned",
        "--uid",
        "33",
        "--gid",
        "44",
    ]);
    lxd.lxc_ok(&["start", "c1"]);
    lxd.lxc_ok(&["stop", "c1", "--force"]);
    lxd.lxc_ok(&["snapshot", "c1", "s0"]);
    lxd.lxc_ok(&["snapshot", "c1", "s1"]);
    Some(lxd)
}

#[test]
fn a_backup_made_by_lxd_imports_into_hutchd() {
    let test = "a_backup_made_by_lxd_imports_into_hutchd";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = lxd_with_container(test) else {
        return;
    };
    let file = lxd.lxd_dir().join("c1.tar.gz");
    lxd.lxc_ok(&["export", "c1", file.to_str().unwrap()]);
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d.lxc_ok(&["import", file.to_str().unwrap()]);
    assert_eq!(snapshots_of(&d, "c1"), ["s0", "s1"]);
    let (_, body) = d.http("GET", "/1.0/instances/c1", b"");
    let c1 = parse(&body)["metadata"].clone();
    assert_eq!(c1["config"]["user.from"], "lxd", "{c1}");
    let rootfs = d.path().join("storage-pools/default/containers/c1/rootfs");
    let busybox = std::fs::symlink_metadata(rootfs.join("bin/busybox")).unwrap();
    assert_eq!((busybox.uid(), busybox.gid()), (0, 0), "stored unshifted");
    let owned = std::fs::metadata(rootfs.join("etc/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (33, 44));
    let snap = d
        .path()
        .join("storage-pools/default/containers-snapshots/c1/s1/rootfs/etc/owned");
    assert_eq!(std::fs::read_to_string(snap).unwrap(), "from lxd\n");
    // The same backup through `hutch import` under another name.
    d.hutch_ok(&["import", file.to_str().unwrap(), "c2"]);
    assert_eq!(snapshots_of(&d, "c2"), ["s0", "s1"]);
    d.hutch_ok(&["start", "c1"]);
    let ls = d.hutch_ok(&["exec", "c1", "--", "stat", "-c", "%u:%g", "/etc/owned"]);
    assert_eq!(ls.trim(), "33:44");
    d.hutch_ok(&["stop", "c1", "--force"]);
}

/// Removes what a test made on the reference LXD's btrfs pool (its loop file and mount)
/// even when the test fails.
struct LxdPoolGuard<'a>(&'a ReferenceLxd, &'static str, &'static str);

impl Drop for LxdPoolGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.lxc(&["delete", "-f", self.2]);
        let _ = self.0.lxc(&["storage", "delete", self.1]);
    }
}

#[test]
fn an_optimized_backup_made_by_lxd_on_btrfs_imports_with_its_snapshots() {
    let test = "an_optimized_backup_made_by_lxd_on_btrfs_imports_with_its_snapshots";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = ReferenceLxd::start(test) else {
        return;
    };
    let out = lxd.lxc(&["storage", "create", "bp", "btrfs", "size=1GiB"]);
    if !out.status.success() {
        skipped(
            test,
            &format!(
                "the reference LXD cannot make a btrfs pool here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return;
    }
    let _guard = LxdPoolGuard(&lxd, "bp", "c1");
    lxd.import_busybox();
    lxd.lxc_ok(&["init", "bb", "c1", "-s", "bp"]);
    let owned = lxd.lxd_dir().join("owned");
    std::fs::write(&owned, "from lxd\n").unwrap();
    lxd.lxc_ok(&[
        "file",
        "push",
        owned.to_str().unwrap(),
        "c1/etc/owned",
        "--uid",
        "33",
        "--gid",
        "44",
    ]);
    lxd.lxc_ok(&["start", "c1"]);
    lxd.lxc_ok(&["stop", "c1", "--force"]);
    lxd.lxc_ok(&["snapshot", "c1", "s0"]);
    lxd.lxc_ok(&["snapshot", "c1", "s1"]);
    let file = lxd.lxd_dir().join("c1.opt.tar.gz");
    lxd.lxc_ok(&[
        "export",
        "c1",
        file.to_str().unwrap(),
        "--optimized-storage",
    ]);

    let d = TestDaemon::start_with(&["--storage-backend", "btrfs"]);
    d.lxc_ok(&["import", file.to_str().unwrap()]);
    assert_eq!(snapshots_of(&d, "c1"), ["s0", "s1"]);
    let pool = d.path().join("storage-pools/default");
    for vol in [
        "containers/c1",
        "containers-snapshots/c1/s0",
        "containers-snapshots/c1/s1",
    ] {
        let p = pool.join(vol);
        assert_eq!(
            std::fs::metadata(&p).unwrap().ino(),
            256,
            "{vol} is a subvolume"
        );
        let busybox = std::fs::symlink_metadata(p.join("rootfs/bin/busybox")).unwrap();
        assert_eq!(
            (busybox.uid(), busybox.gid()),
            (0, 0),
            "{vol}: stored unshifted"
        );
        let m = std::fs::metadata(p.join("rootfs/etc/owned")).unwrap();
        assert_eq!((m.uid(), m.gid()), (33, 44), "{vol}");
    }
    d.hutch_ok(&["start", "c1"]);
    let ls = d.hutch_ok(&["exec", "c1", "--", "stat", "-c", "%u:%g", "/etc/owned"]);
    assert_eq!(ls.trim(), "33:44");
    d.hutch_ok(&["stop", "c1", "--force"]);
}
