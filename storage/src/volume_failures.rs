//! Volumes made on btrfs and zfs where any one command fails: nothing is left behind (no
//! directory, no subvolume, no dataset or snapshot), and what was there before stays.

use std::path::Path;
use std::sync::Arc;

use crate::driver::{copy_volume_across, StorageDriver};
use crate::fake::{FakeRunner, FakeWorld};
use crate::{BtrfsDriver, DirDriver, ZfsDriver};

/// Runs `step` with command 1, 2, ... failing until it runs without reaching the failure;
/// `check` sees the runner and whether the step failed, after each run.
fn for_every_failure(
    setup: impl Fn(&Arc<FakeRunner>),
    step: impl Fn(&Arc<FakeRunner>) -> Result<(), crate::StorageError>,
    check: impl Fn(&Arc<FakeRunner>, usize, bool),
) {
    for n in 1.. {
        let runner = Arc::new(FakeRunner::with_world(FakeWorld::default()));
        setup(&runner);
        let before = runner.lines().len();
        *runner.fail_nth.lock().unwrap() = Some(before + n);
        let result = step(&runner);
        if runner.lines().len() < before + n {
            result.unwrap();
            check(&runner, n, false);
            return;
        }
        check(&runner, n, result.is_err());
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

#[test]
fn a_btrfs_volume_with_a_quota_is_whole_or_absent() {
    let dir = tempfile::tempdir().unwrap();
    let vol = Path::new("custom/v1");
    let custom = dir.path().join("custom");
    std::fs::create_dir(&custom).unwrap();
    for_every_failure(
        |_| {},
        |r| {
            let d = BtrfsDriver::new(dir.path(), r.clone());
            d.create_volume(vol)?;
            if let Err(e) = d.set_quota(vol, Some(1 << 20)) {
                d.delete_volume(vol)?;
                return Err(e);
            }
            Ok(())
        },
        |_, n, failed| {
            if failed {
                assert!(entries(&custom).is_empty(), "command {n}");
            } else {
                assert!(custom.join("v1").is_dir());
            }
            let _ = std::fs::remove_dir_all(custom.join("v1"));
        },
    );
}

/// The fake world with zpool `tank` in it.
fn with_tank(r: &Arc<FakeRunner>) {
    let mut world = r.world.lock().unwrap();
    world
        .as_mut()
        .expect("a fake world")
        .datasets
        .insert("tank".into(), None);
}

#[test]
fn a_zfs_clone_is_whole_or_absent_and_its_source_stays() {
    let d = |r: &Arc<FakeRunner>| ZfsDriver::new(Path::new("/pool"), "tank", r.clone());
    for_every_failure(
        |r| {
            with_tank(r);
            d(r).create_volume(Path::new("images/fp")).unwrap();
        },
        |r| d(r).clone_volume(Path::new("images/fp"), Path::new("containers/c1"), false),
        |r, n, failed| {
            let w = r.world().unwrap();
            assert!(w.datasets.contains_key("tank/images/fp"), "command {n}");
            if failed {
                assert!(w.is_empty_below("tank/containers"), "command {n}: {w:?}");
                assert!(w.snapshots.is_empty(), "command {n}: {w:?}");
            } else {
                assert!(w.datasets.contains_key("tank/containers/c1"));
            }
        },
    );
}

#[test]
fn a_zfs_restore_that_fails_keeps_the_volume() {
    let d = |r: &Arc<FakeRunner>| ZfsDriver::new(Path::new("/pool"), "tank", r.clone());
    let (vol, snap) = (
        Path::new("containers/c1"),
        Path::new("containers-snapshots/c1/s0"),
    );
    for_every_failure(
        |r| {
            with_tank(r);
            d(r).create_volume(vol).unwrap();
            d(r).clone_volume(vol, snap, true).unwrap();
        },
        |r| d(r).restore(vol, snap),
        |r, n, _| {
            let w = r.world().unwrap();
            assert!(
                w.datasets.contains_key("tank/containers/c1"),
                "command {n}: {w:?}"
            );
            assert!(w.datasets.contains_key("tank/containers-snapshots/c1/s0"));
            assert!(
                w.is_empty_below("tank/containers/.c1.restoring"),
                "command {n}: {w:?}"
            );
            // The old copy stays only where the swap was done and its removal failed.
            let restored = w.datasets["tank/containers/c1"]
                .as_deref()
                .is_some_and(|o| o.starts_with("tank/containers-snapshots/c1/s0@"));
            assert!(
                restored || w.is_empty_below("tank/containers/.c1.old"),
                "command {n}: {w:?}"
            );
            let leftover_snaps = w
                .snapshots
                .iter()
                .filter(|s| s.starts_with("tank/containers-snapshots/c1/s0@"))
                .count();
            assert!(
                leftover_snaps <= usize::from(restored),
                "command {n}: {w:?}"
            );
        },
    );
}

#[test]
fn a_copy_into_btrfs_is_whole_or_absent() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = DirDriver::new(a.path());
    let vol = Path::new("containers/c1");
    std::fs::create_dir_all(src.path(vol).join("rootfs/etc")).unwrap();
    std::fs::write(src.path(vol).join("rootfs/etc/hostname"), "c1\n").unwrap();
    let to = Path::new("images/fp");
    for_every_failure(
        |_| {},
        |r| {
            let dst = BtrfsDriver::new(b.path(), r.clone());
            copy_volume_across(&src, vol, &dst, to, true)
        },
        |_, n, failed| {
            if failed {
                assert!(entries(b.path()).is_empty(), "command {n}");
            } else {
                let copied = b.path().join("images/fp/rootfs/etc/hostname");
                assert_eq!(std::fs::read_to_string(copied).unwrap(), "c1\n");
            }
            let _ = std::fs::remove_dir_all(b.path().join("images"));
        },
    );
}

#[test]
fn a_zfs_clone_deleted_can_be_made_again() {
    let r = Arc::new(FakeRunner::with_world(FakeWorld::default()));
    with_tank(&r);
    let d = ZfsDriver::new(Path::new("/pool"), "tank", r.clone());
    let (image, c1) = (Path::new("images/fp"), Path::new("containers/c1"));
    d.create_volume(image).unwrap();
    d.clone_volume(image, c1, false).unwrap();
    d.delete_volume(c1).unwrap();
    assert!(
        r.world().unwrap().snapshots.is_empty(),
        "the clone's snapshot went with it"
    );
    d.clone_volume(image, c1, false).unwrap();
}
