//! Pools made, opened and destroyed over a fake runner and a fake mount table, including
//! every failure of every step.

use std::path::PathBuf;

use super::*;
use crate::error::ErrorKind;
use crate::fake::{FakeRunner, FakeWorld};
use crate::mounts::FakeMounter;

struct Fixture {
    dir: tempfile::TempDir,
    runner: Arc<FakeRunner>,
    mounter: Arc<FakeMounter>,
    host: PoolHost,
}

fn fixture(runner: FakeRunner, mounter: FakeMounter) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (runner, mounter) = (Arc::new(runner), Arc::new(mounter));
    let host = PoolHost::new(dir.path(), runner.clone(), mounter.clone(), "hutch-1234");
    Fixture {
        dir,
        runner,
        mounter,
        host,
    }
}

fn world() -> FakeRunner {
    FakeRunner::with_world(FakeWorld::default())
}

fn new_pool(driver: &str, config: &[(&str, &str)]) -> NewPool {
    NewPool {
        name: "p".into(),
        driver: driver.into(),
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        size: Some(1 << 20),
    }
}

/// What the engine does: the backing store, then the mount; a failed mount destroys what
/// was made.
fn make(host: &PoolHost, new: &NewPool) -> Result<PoolRecord, StorageError> {
    let rec = host.create(new)?;
    if let Err(e) = host.open(&rec) {
        let _ = host.destroy(&rec);
        return Err(e);
    }
    Ok(rec)
}

/// Files and directories below `dir`, relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Only the empty directory for loop files may remain.
fn assert_nothing_left(f: &Fixture, what: &str) {
    let left: Vec<PathBuf> = tree(f.dir.path())
        .into_iter()
        .filter(|p| p != Path::new("disks") && p != Path::new("storage-pools"))
        .collect();
    assert!(left.is_empty(), "{what}: left {left:?}");
    assert!(f.mounter.mounted.lock().unwrap().is_empty(), "{what}");
    if let Some(w) = f.runner.world() {
        assert!(
            w.zpools.is_empty() && w.datasets.is_empty(),
            "{what}: {w:?}"
        );
    }
}

#[test]
fn a_btrfs_pool_on_a_loop_file_is_made_mounted_and_destroyed() {
    let f = fixture(world(), FakeMounter::default());
    let rec = f.host.create(&new_pool("btrfs", &[])).unwrap();
    let file = f.dir.path().join("disks/p.img");
    assert_eq!(rec.driver, "btrfs");
    assert_eq!(rec.config["source"], file.display().to_string());
    assert_eq!(rec.config["size"], (1u64 << 20).to_string());
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 1 << 20);
    assert_eq!(
        f.runner.lines(),
        [format!("mkfs.btrfs -q {}", file.display())]
    );
    let pool = f.host.open(&rec).unwrap();
    let root = f.dir.path().join("storage-pools/p");
    assert_eq!(pool.root(), root);
    assert_eq!(pool.info().name, "btrfs");
    assert_eq!(
        *f.mounter.calls.lock().unwrap(),
        [format!("loop btrfs {} {}", file.display(), root.display())]
    );
    // Opening again (a daemon restart) does not mount twice.
    f.host.open(&rec).unwrap();
    assert_eq!(f.mounter.calls.lock().unwrap().len(), 1);
    f.host.destroy(&rec).unwrap();
    assert_nothing_left(&f, "destroyed");
    // Destroying again finishes nothing and fails nothing.
    f.host.destroy(&rec).unwrap();
}

#[test]
fn a_zfs_pool_on_a_loop_file_is_its_own_zpool_imported_after_a_reboot() {
    let f = fixture(world(), FakeMounter::with_filesystems(&["zfs"]));
    let rec = make(&f.host, &new_pool("zfs", &[])).unwrap();
    let file = f.dir.path().join("disks/p.img");
    assert_eq!(rec.driver, "zfs:hutch-1234-p");
    assert_eq!(rec.config["zfs.pool_name"], "hutch-1234-p");
    assert_eq!(rec.config["source"], file.display().to_string());
    assert_eq!(f.host.driver_info(&rec.driver).unwrap().name, "zfs");
    // After a reboot the zpool is not imported: opening imports it.
    *f.runner.world.lock().unwrap() = Some(FakeWorld::default());
    f.host.open(&rec).unwrap();
    assert!(f.runner.lines().contains(&format!(
        "zpool import -d {} hutch-1234-p",
        f.dir.path().join("disks").display()
    )));
    f.runner
        .reply("zfs list -Hp -o used,available", "4096\t1044480\n");
    let usage = f.host.open(&rec).unwrap().pool_usage().unwrap();
    assert_eq!((usage.space_used, usage.space_total), (4096, 1 << 20));
    f.host.destroy(&rec).unwrap();
    assert!(f
        .runner
        .lines()
        .contains(&"zpool destroy -f hutch-1234-p".to_string()));
    assert_nothing_left(&f, "destroyed");
}

#[test]
fn every_failed_command_or_mount_of_a_new_pool_leaves_nothing() {
    for (driver, fs) in [("btrfs", ""), ("zfs", "zfs")] {
        for n in 1.. {
            let runner = world();
            *runner.fail_nth.lock().unwrap() = Some(n);
            let f = fixture(runner, FakeMounter::with_filesystems(&[fs]));
            let made = make(&f.host, &new_pool(driver, &[]));
            if f.runner.lines().len() < n {
                made.unwrap();
                break;
            }
            // A failure the step gets over (a zpool not imported yet) makes a whole pool.
            if let Ok(rec) = made {
                f.host.open(&rec).unwrap();
                f.host.destroy(&rec).unwrap();
            }
            assert_nothing_left(&f, &format!("{driver}, command {n} failed"));
        }
        for n in 1.. {
            let mounter = FakeMounter::with_filesystems(&[fs]);
            *mounter.fail_nth.lock().unwrap() = Some(n);
            let f = fixture(world(), mounter);
            let made = make(&f.host, &new_pool(driver, &[]));
            if f.mounter.calls.lock().unwrap().len() < n {
                made.unwrap();
                break;
            }
            // A failure the step gets over (a zpool not imported yet) makes a whole pool.
            if let Ok(rec) = made {
                f.host.open(&rec).unwrap();
                f.host.destroy(&rec).unwrap();
            }
            assert_nothing_left(&f, &format!("{driver}, mount {n} failed"));
        }
    }
}

#[test]
fn a_dir_pool_on_a_directory_of_the_users_is_bound_and_left_as_it_was() {
    let f = fixture(world(), FakeMounter::default());
    let ext = f.dir.path().join("ext");
    std::fs::create_dir(&ext).unwrap();
    std::fs::write(ext.join("keep-me"), "x").unwrap();
    let rec = f
        .host
        .create(&new_pool("dir", &[("source", &ext.display().to_string())]))
        .unwrap();
    let pool = f.host.open(&rec).unwrap();
    let root = f.dir.path().join("storage-pools/p");
    assert_eq!(
        *f.mounter.calls.lock().unwrap(),
        [format!("bind {} {}", ext.display(), root.display())]
    );
    assert!(pool.pool_usage().unwrap().space_total > 0);
    f.host.destroy(&rec).unwrap();
    assert!(ext.join("keep-me").exists());
    assert!(!root.exists());
    // With no source, the pool is its own directory, and nothing is mounted.
    let rec = f.host.create(&new_pool("dir", &[])).unwrap();
    assert_eq!(rec.config["source"], root.display().to_string());
    f.host.open(&rec).unwrap();
    std::fs::write(root.join("file"), "x").unwrap();
    assert_eq!(f.mounter.calls.lock().unwrap().len(), 2, "only the unmount");
    f.host.destroy(&rec).unwrap();
    assert!(!root.exists());
}

#[test]
fn pools_on_the_users_zfs_dataset_leave_it() {
    let runner = world();
    runner
        .world
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .datasets
        .insert("tank/hutch".into(), None);
    let f = fixture(runner, FakeMounter::with_filesystems(&["zfs"]));
    let rec = make(&f.host, &new_pool("zfs", &[("source", "tank/hutch")])).unwrap();
    assert_eq!(rec.driver, "zfs:tank/hutch");
    let pool = f.host.open(&rec).unwrap();
    pool.create_volume(Path::new("custom/v")).unwrap();
    pool.delete_volume(Path::new("custom/v")).unwrap();
    f.host.destroy(&rec).unwrap();
    assert!(f
        .runner
        .world()
        .unwrap()
        .datasets
        .contains_key("tank/hutch"));
    assert!(!f.dir.path().join("storage-pools/p").exists());
}

#[test]
fn bad_drivers_and_sources_are_refused_with_their_kind() {
    let f = fixture(world(), FakeMounter::default());
    let kind = |new: NewPool| f.host.create(&new).unwrap_err();
    let e = kind(new_pool("nosuch", &[]));
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        e.to_string(),
        "Unknown storage pool driver \"nosuch\" (known: dir, btrfs, zfs)"
    );
    assert_eq!(
        kind(new_pool("zfs:tank", &[])).kind(),
        ErrorKind::InvalidInput
    );
    let e = kind(new_pool("dir", &[("source", "/no/such/dir")]));
    assert_eq!(e.to_string(), "Source \"/no/such/dir\" is not a directory");
    let tmp = f.dir.path().display().to_string();
    let e = kind(new_pool("btrfs", &[("source", &tmp)]));
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = kind(new_pool("btrfs", &[("source", "/dev/null")]));
    assert_eq!(e.to_string(), "Source \"/dev/null\" is not a block device");
    let e = kind(new_pool("btrfs", &[("source", "/dev/no-such-disk")]));
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = kind(new_pool("zfs", &[]));
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(
        e.to_string(),
        "zfs is not available on this host (no zfs kernel module)"
    );
    let f = fixture(world(), FakeMounter::with_filesystems(&["zfs"]));
    let e = f
        .host
        .create(&new_pool("zfs", &[("source", "tank/none")]))
        .unwrap_err();
    assert_eq!(e.to_string(), "Source \"tank/none\" is not a zfs dataset");
    assert_nothing_left(&f, "refused");
    assert!(f.runner.lines().iter().all(|l| l.starts_with("zfs list")));
}

#[test]
fn the_drivers_are_listed_once() {
    let names: Vec<&str> = supported_drivers().iter().map(|d| d.name).collect();
    assert_eq!(names, ["dir", "btrfs", "zfs"]);
    let runner: Arc<dyn CommandRunner> = Arc::new(FakeRunner::default());
    let root = Path::new("/pool");
    assert_eq!(
        open_driver("zfs:tank", root, runner.clone())
            .unwrap()
            .info()
            .name,
        "zfs"
    );
    assert!(open_driver("zfs", root, runner.clone()).is_err());
    assert!(open_driver("ext4", root, runner).is_err());
}
