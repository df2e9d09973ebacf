//! The test images: the busybox root filesystem builds offline and its busybox runs; the
//! Debian one has systemd as init and is prepared for a container.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use hutch_tests::{busybox_rootfs, debian_rootfs, require_root, TestDir};

/// Resolves a symlink inside `root` the way the container will see it (one level).
fn link_inside(root: &Path, link: &str) -> std::path::PathBuf {
    let target = fs::read_link(root.join(link)).expect("a symlink");
    match target.strip_prefix("/") {
        Ok(abs) => root.join(abs),
        Err(_) => root.join(link).parent().unwrap().join(target),
    }
}

#[test]
fn busybox_rootfs_builds_and_runs() {
    // Building it needs no privilege; the tests that boot it do.
    let dir = TestDir::new();
    let root = dir.path().join("rootfs");
    busybox_rootfs(&root).expect("build the busybox rootfs");

    let busybox = root.join("bin/busybox");
    let init = link_inside(&root, "sbin/init");
    assert_eq!(
        fs::canonicalize(init).unwrap(),
        fs::canonicalize(&busybox).unwrap()
    );
    assert!(Command::new(&busybox)
        .arg("true")
        .status()
        .unwrap()
        .success());
    for applet in ["bin/sh", "sbin/ip", "usr/bin/env"] {
        assert_eq!(
            fs::canonicalize(link_inside(&root, applet)).unwrap(),
            fs::canonicalize(&busybox).unwrap(),
            "{applet}"
        );
    }
    let mode = fs::metadata(root.join("tmp")).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o1777);
    let inittab = fs::read_to_string(root.join("etc/inittab")).unwrap();
    assert!(inittab.contains("::sysinit:/etc/init.d/rcS"));
    assert!(!inittab.contains("respawn") && !inittab.contains("askfirst"));
    assert!(fs::read_to_string(root.join("etc/os-release"))
        .unwrap()
        .contains("ID=busybox"));

    let again = busybox_rootfs(&root).expect_err("a non-empty destination is refused");
    assert!(again.to_string().contains("not empty"), "{again:#}");
}

#[test]
fn debian_rootfs_has_systemd_as_init() {
    if std::env::var("HUTCH_TEST_DEBIAN").as_deref() == Ok("0") {
        hutch_tests::skipped("debian_rootfs_has_systemd_as_init", "HUTCH_TEST_DEBIAN=0");
        return;
    }
    if !require_root("debian_rootfs_has_systemd_as_init") {
        return;
    }
    let dir = TestDir::new();
    let root = dir.path().join("rootfs");
    debian_rootfs(&root).expect("build the Debian rootfs");

    let init = link_inside(&root, "sbin/init");
    assert_eq!(init.file_name().unwrap(), "systemd");
    assert!(init.is_file(), "{} is missing", init.display());
    assert!(fs::read_to_string(root.join("etc/os-release"))
        .unwrap()
        .contains("VERSION_CODENAME=bookworm"));
    assert_eq!(fs::read(root.join("etc/machine-id")).unwrap(), b"");
    assert!(!root.join("etc/hostname").exists());
    assert!(root.join("usr/bin/systemctl").is_file());
    assert!(root.join("bin/ip").is_file());
    let masked = fs::read_link(root.join("etc/systemd/system/systemd-journald-audit.socket"));
    assert_eq!(masked.unwrap(), Path::new("/dev/null"));
}
