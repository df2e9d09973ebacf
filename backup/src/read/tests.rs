use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use super::*;

/// A sink that unpacks each volume into `<root>/<main|snap-name>` and records calls.
struct DirSink {
    root: PathBuf,
    log: Vec<String>,
    received: Vec<(Part, Vec<u8>)>,
}

impl DirSink {
    fn new(root: &Path) -> DirSink {
        DirSink {
            root: root.to_path_buf(),
            log: Vec::new(),
            received: Vec::new(),
        }
    }
    fn dir(&self, part: &Part) -> PathBuf {
        match part {
            Part::Main => self.root.join("main"),
            Part::Snapshot(s) => self.root.join(format!("snap-{s}")),
        }
    }
}

impl Sink for DirSink {
    fn index(&mut self, index: &Index, _: Option<&OptimizedHeader>) -> Result<u64, BackupError> {
        self.log.push(format!("index {}", index.name));
        Ok(u64::MAX)
    }
    fn open_volume(&mut self, part: &Part) -> Result<PathBuf, BackupError> {
        let d = self.dir(part);
        std::fs::create_dir(&d).unwrap();
        self.log.push(format!("open {part}"));
        Ok(d)
    }
    fn close_volume(&mut self, part: &Part) -> Result<(), BackupError> {
        self.log.push(format!("close {part}"));
        Ok(())
    }
    fn receive(&mut self, part: &Part, stream: &mut dyn Read) -> Result<(), BackupError> {
        let mut data = Vec::new();
        stream.read_to_end(&mut data).unwrap();
        self.received.push((part.clone(), data));
        Ok(())
    }
}

const INDEX: &str = "name: c1\nbackend: dir\npool: default\nsnapshots:\n- snap0\n\
                     optimized: false\ntype: container\n";

enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Dev(&'a str),
}

fn tarball(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_000_000);
        h.set_size(0);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_cksum();
                append(&mut b, &mut h, p, &[][..]);
            }
            E::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o4755);
                h.set_size(data.len() as u64);
                h.set_cksum();
                append(&mut b, &mut h, p, data);
            }
            E::Symlink(p, t) | E::Hard(p, t) => {
                h.set_entry_type(if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                h.set_link_name_literal(t).unwrap();
                append(&mut b, &mut h, p, &[][..]);
            }
            E::Dev(p) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                h.set_cksum();
                append(&mut b, &mut h, p, &[][..]);
            }
        }
    }
    b.into_inner().unwrap()
}

/// Appends with the path written as is (the tar crate refuses `..` and absolute paths).
fn append(b: &mut tar::Builder<Vec<u8>>, h: &mut tar::Header, path: &str, data: &[u8]) {
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_cksum();
    b.append(h, data).unwrap();
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn read(data: Vec<u8>, root: &Path) -> (Result<Summary, BackupError>, DirSink) {
    let mut sink = DirSink::new(root);
    let r = read_backup(Cursor::new(data), &mut sink, Limits { max_bytes: 1 << 20 });
    (r, sink)
}

fn good() -> Vec<E<'static>> {
    vec![
        E::File("backup/index.yaml", INDEX.as_bytes()),
        E::Dir("backup/snapshots/snap0/"),
        E::File("backup/snapshots/snap0/metadata.yaml", b"m"),
        E::Dir("backup/snapshots/snap0/rootfs/"),
        E::File("backup/snapshots/snap0/rootfs/a", b"old"),
        E::Dir("backup/container/"),
        E::File("backup/container/backup.yaml", b"b"),
        E::Dir("backup/container/rootfs/"),
        E::Dir("backup/container/rootfs/etc/"),
        E::File("backup/container/rootfs/etc/passwd", b"root:x:0:0"),
        E::Symlink("backup/container/rootfs/abs", "/etc/shadow"),
        E::Hard(
            "backup/container/rootfs/hard",
            "backup/container/rootfs/etc/passwd",
        ),
    ]
}

#[test]
fn a_plain_backup_unpacks_each_volume_with_owners_modes_and_times() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (r, sink) = read(gz(&tarball(&good())), dir.path());
    let summary = r.unwrap();
    assert_eq!(summary.index.name, "c1");
    assert_eq!(summary.compression, Compression::Gzip);
    assert!(!summary.optimized);
    assert_eq!(
        sink.log,
        [
            "index c1",
            "open snapshot \"snap0\"",
            "close snapshot \"snap0\"",
            "open the instance's volume",
            "close the instance's volume"
        ]
    );
    let main = dir.path().join("main");
    assert_eq!(
        std::fs::read(main.join("rootfs/etc/passwd")).unwrap(),
        b"root:x:0:0"
    );
    assert_eq!(
        std::fs::read(dir.path().join("snap-snap0/rootfs/a")).unwrap(),
        b"old"
    );
    let m = std::fs::metadata(main.join("rootfs/etc/passwd")).unwrap();
    if nix::unistd::geteuid().is_root() {
        assert_eq!((m.uid(), m.gid()), (1000, 1000));
        // Set-id kept in the rootfs, dropped outside it.
        assert_eq!(m.mode() & 0o7777, 0o4755);
        let b = std::fs::metadata(main.join("backup.yaml")).unwrap();
        assert_eq!(b.mode() & 0o7777, 0o755);
    }
    assert_eq!(m.mtime(), 1_000_000);
    assert_eq!(m.nlink(), 2);
    assert_eq!(
        std::fs::read_link(main.join("rootfs/abs")).unwrap(),
        Path::new("/etc/shadow")
    );
    let d = std::fs::metadata(main.join("rootfs/etc")).unwrap();
    assert_eq!(d.mtime(), 1_000_000);
}

fn refused(entries: Vec<E>, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = read(tarball(&entries), dir.path());
    let err = r
        .err()
        .unwrap_or_else(|| panic!("accepted, wanted {expect}"));
    assert!(err.to_string().contains(expect), "{err} (wanted {expect})");
}

#[test]
fn hostile_backups_are_refused() {
    let with = |extra: Vec<E<'static>>| {
        let mut v = good();
        v.extend(extra);
        v
    };
    refused(vec![E::File("backup/container/x", b"")], MISSING_INDEX);
    refused(
        with(vec![E::File("backup/container/../../evil", b"x")]),
        "climbs out",
    );
    refused(with(vec![E::File("/etc/evil", b"x")]), "absolute");
    refused(with(vec![E::File("elsewhere/x", b"x")]), "unexpected entry");
    refused(
        with(vec![
            E::Symlink("backup/container/rootfs/l", "/tmp"),
            E::File("backup/container/rootfs/l/x", b"x"),
        ]),
        "symlink",
    );
    refused(
        with(vec![E::Dev("backup/container/rootfs/null")]),
        "device node",
    );
    refused(
        with(vec![E::Hard(
            "backup/container/rootfs/h",
            "backup/snapshots/snap0/rootfs/a",
        )]),
        "hard link out",
    );
    refused(
        with(vec![E::Hard("backup/container/rootfs/h", "/etc/passwd")]),
        "absolute",
    );
    // A later entry may not turn a directory into a symlink, nor write a directory
    // through one.
    refused(
        with(vec![E::Symlink("backup/container/rootfs/etc", "/tmp")]),
        "would replace a directory",
    );
    refused(
        with(vec![
            E::Symlink("backup/container/rootfs/d", "/tmp"),
            E::Dir("backup/container/rootfs/d/"),
        ]),
        "not a directory",
    );
    // An index that lies: a snapshot it lacks, and one it does not list.
    let mut missing = good();
    missing.drain(1..5);
    refused(missing, "lacks it");
    let mut extra = good();
    extra.insert(1, E::File("backup/snapshots/other/x", b"x"));
    refused(extra, "does not list");
    // A file bigger than the limit is refused before it is written.
    let big = vec![0u8; (1 << 20) + 1];
    let mut v = good();
    v.push(E::File("backup/container/rootfs/big", &big));
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = read(tarball(&v), dir.path());
    assert!(matches!(r, Err(BackupError::TooLarge { .. })), "{r:?}");
    assert!(!dir.path().join("main/rootfs/big").exists());
}

#[test]
fn truncated_streams_are_errors() {
    let full = gz(&tarball(&good()));
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = read(full[..full.len() - 20].to_vec(), dir.path());
    assert!(r.is_err());
    let plain = tarball(&good());
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = read(plain[..plain.len() / 2].to_vec(), dir.path());
    assert!(r.is_err());
}

#[test]
fn an_optimized_backup_hands_each_stream_to_the_receiver() {
    let index = "name: c1\nbackend: btrfs\npool: p\nsnapshots: [s0]\noptimized: true\n";
    let data = tarball(&[
        E::File("backup/index.yaml", index.as_bytes()),
        E::File(
            "backup/optimized_header.yaml",
            b"subvolumes:\n- path: /\n  snapshot: s0\n  readonly: true\n",
        ),
        E::File("backup/snapshots/s0.bin", b"stream0"),
        E::File("backup/container.bin", b"stream1"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (r, sink) = read(data, dir.path());
    assert!(r.unwrap().optimized);
    assert_eq!(
        sink.received,
        [
            (Part::Snapshot("s0".into()), b"stream0".to_vec()),
            (Part::Main, b"stream1".to_vec())
        ]
    );
    // Files in an optimized backup are refused.
    let data = tarball(&[
        E::File("backup/index.yaml", index.as_bytes()),
        E::File("backup/container/x", b"x"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    assert!(read(data, dir.path()).0.is_err());
}
