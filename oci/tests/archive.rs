//! Whole archives, OCI layout and docker-save, read and flattened; digests and platforms
//! checked.

use std::fs;
use std::path::Path;

use hutch_oci::{
    host_arch, is_oci_archive, resolve_user, unpack_archive, write_docker_archive,
    write_oci_archive, FlattenLimits, ImageToWrite, OciError, RunConfig,
};

fn file_layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn run() -> RunConfig {
    RunConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo hi".into()],
        env: vec!["A=1".into()],
        working_dir: Some("/srv".into()),
        user: Some("app:staff".into()),
        exposed_ports: vec!["80/tcp".into()],
        labels: [("org.example".to_string(), "x".to_string())].into(),
    }
}

fn layers() -> Vec<Vec<u8>> {
    vec![
        file_layer(&[
            (
                "etc/passwd",
                b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
            ),
            ("etc/group", b"root:x:0:\nstaff:x:50:\n"),
            ("etc/gone", b"g"),
        ]),
        file_layer(&[("etc/.wh.gone", b""), ("srv/added", b"layer 2 content")]),
    ]
}

fn check_unpacked(archive: &Path, want_manifest: bool) {
    let dir = tempfile::tempdir().unwrap();
    let image = unpack_archive(archive, dir.path(), FlattenLimits::default()).unwrap();
    assert_eq!(image.run, run());
    assert_eq!(image.architecture, host_arch());
    assert_eq!(image.manifest_digest.is_some(), want_manifest);
    assert!(!dir.path().join("etc/gone").exists());
    assert_eq!(
        fs::read(dir.path().join("srv/added")).unwrap(),
        b"layer 2 content"
    );
    assert_eq!(resolve_user(dir.path(), "app:staff").unwrap(), (1000, 50));
    assert_eq!(resolve_user(dir.path(), "app").unwrap(), (1000, 1000));
    assert_eq!(resolve_user(dir.path(), "7:8").unwrap(), (7, 8));
    assert!(matches!(
        resolve_user(dir.path(), "nobody"),
        Err(OciError::UnknownUser(_))
    ));
}

#[test]
fn oci_archives_unpack() {
    let dir = tempfile::tempdir().unwrap();
    let (run, layers) = (run(), layers());
    for gzip in [false, true] {
        let path = dir.path().join(format!("image-{gzip}.tar"));
        let image = ImageToWrite {
            architecture: host_arch(),
            run: &run,
            layers: &layers,
            gzip,
        };
        write_oci_archive(&path, &image).unwrap();
        assert!(hutch_oci::is_oci_archive(&path));
        check_unpacked(&path, true);
    }
}

#[test]
fn docker_save_archives_unpack() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.tar");
    let (run, layers) = (run(), layers());
    let image = ImageToWrite {
        architecture: host_arch(),
        run: &run,
        layers: &layers,
        gzip: false,
    };
    write_docker_archive(&path, &image).unwrap();
    assert!(hutch_oci::is_oci_archive(&path));
    check_unpacked(&path, false);
}

/// Changes `from` into `to` (same length) in the archive file: a layer's content altered
/// after its digest was taken.
fn tamper(path: &Path, from: &[u8], to: &[u8]) {
    let mut data = fs::read(path).unwrap();
    let at = data.windows(from.len()).position(|w| w == from).unwrap();
    data[at..at + to.len()].copy_from_slice(to);
    fs::write(path, data).unwrap();
}

/// The test image for `architecture`, written in `dir` as an OCI and a docker-save archive.
fn both_archives(dir: &Path, architecture: &str) -> [std::path::PathBuf; 2] {
    let (run, layers) = (run(), layers());
    let image = ImageToWrite {
        architecture,
        run: &run,
        layers: &layers,
        gzip: false,
    };
    let oci = dir.join("oci.tar");
    write_oci_archive(&oci, &image).unwrap();
    let docker = dir.join("docker.tar");
    write_docker_archive(&docker, &image).unwrap();
    [oci, docker]
}

#[test]
fn digest_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for path in &both_archives(dir.path(), host_arch()) {
        tamper(path, b"layer 2 content", b"layer X content");
        let root = tempfile::tempdir().unwrap();
        let err = unpack_archive(path, root.path(), FlattenLimits::default()).unwrap_err();
        let OciError::DigestMismatch { digest, .. } = &err else {
            panic!("{err}");
        };
        assert!(err.to_string().contains(digest.as_str()));
    }
}

#[test]
fn images_for_another_architecture_are_refused() {
    let other = if host_arch() == "s390x" {
        "amd64"
    } else {
        "s390x"
    };
    let dir = tempfile::tempdir().unwrap();
    for path in &both_archives(dir.path(), other) {
        let root = tempfile::tempdir().unwrap();
        let err = unpack_archive(path, root.path(), FlattenLimits::default()).unwrap_err();
        assert!(matches!(err, OciError::WrongPlatform { .. }), "{err}");
        assert!(err.to_string().contains(other), "{err}");
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }
}

#[test]
fn oci_archives_are_told_from_lxd_images_and_compressed_uploads() {
    let dir = tempfile::tempdir().unwrap();
    for path in &both_archives(dir.path(), host_arch()) {
        assert!(is_oci_archive(path), "{}", path.display());
    }
    // An LXD image: known at its first entry, whatever follows.
    let lxd = dir.path().join("lxd.tar");
    let mut b = tar::Builder::new(fs::File::create(&lxd).unwrap());
    for (name, data) in [
        ("metadata.yaml", &b"architecture: x86_64\n"[..]),
        ("manifest.json", b"[]"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    b.finish().unwrap();
    assert!(!is_oci_archive(&lxd));
    let gz = dir.path().join("image.tar.gz");
    fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]).unwrap();
    assert!(!is_oci_archive(&gz));
}
