//! The `zfs` driver: volumes are datasets below the pool's dataset, mounted at the same
//! relative paths as on the other drivers; clones come from a snapshot of the source, as
//! LXD does it, driven through the `zfs` command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::driver::{DriverInfo, StorageDriver};
use crate::error::StorageError;
use crate::runner::CommandRunner;
use crate::usage::PoolUsage;

/// Snapshot that a clone is made from, taken fresh for each clone.
const CLONE_SNAPSHOT_PREFIX: &str = "hutch-clone-";

/// What a `zfs` pool can do.
pub(crate) const INFO: DriverInfo = DriverInfo {
    name: "zfs",
    instant_clone: true,
    atomic_snapshots: true,
    quotas: true,
};

#[derive(Debug)]
pub struct ZfsDriver {
    root: PathBuf,
    dataset: String,
    runner: Arc<dyn CommandRunner>,
}

impl ZfsDriver {
    pub fn new(root: &Path, dataset: &str, runner: Arc<dyn CommandRunner>) -> Self {
        ZfsDriver {
            root: root.to_path_buf(),
            dataset: dataset.trim_end_matches('/').to_string(),
            runner,
        }
    }

    /// The dataset of a volume (`<pool dataset>/containers/c1`).
    pub fn dataset(&self, vol: &Path) -> String {
        format!("{}/{}", self.dataset, vol.display())
    }

    fn zfs(&self, args: &[String]) -> Result<String, StorageError> {
        let argv: Vec<String> = std::iter::once("zfs".to_string())
            .chain(args.iter().cloned())
            .collect();
        self.runner.run(&argv)
    }

    fn s(v: &str) -> String {
        v.to_string()
    }
}

impl StorageDriver for ZfsDriver {
    fn info(&self) -> DriverInfo {
        INFO
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn create_volume(&self, vol: &Path) -> Result<(), StorageError> {
        let mountpoint = format!("mountpoint={}", self.path(vol).display());
        self.zfs(&[
            Self::s("create"),
            Self::s("-p"),
            Self::s("-o"),
            mountpoint,
            self.dataset(vol),
        ])
        .map(|_| ())
    }

    fn clone_volume(&self, from: &Path, to: &Path, readonly: bool) -> Result<(), StorageError> {
        let snap = format!(
            "{}@{CLONE_SNAPSHOT_PREFIX}{}",
            self.dataset(from),
            to.display().to_string().replace('/', "-")
        );
        self.zfs(&[Self::s("snapshot"), snap.clone()])?;
        let mut args = vec![
            Self::s("clone"),
            Self::s("-p"),
            Self::s("-o"),
            format!("mountpoint={}", self.path(to).display()),
        ];
        if readonly {
            args.extend([Self::s("-o"), Self::s("readonly=on")]);
        }
        args.extend([snap.clone(), self.dataset(to)]);
        let cloned = self.zfs(&args);
        if cloned.is_err() {
            let _ = self.zfs(&[Self::s("destroy"), snap]);
        }
        cloned.map(|_| ())
    }

    fn delete_volume(&self, vol: &Path) -> Result<(), StorageError> {
        let ds = self.dataset(vol);
        let Ok(listed) = self.zfs(&[
            Self::s("list"),
            Self::s("-H"),
            Self::s("-o"),
            Self::s("name,origin"),
            ds.clone(),
        ]) else {
            return Ok(());
        };
        // A dataset whose snapshots still have clones (an image its instances came from)
        // cannot be destroyed: park it under deleted/, as LXD does, out of the way.
        match self.zfs(&[Self::s("destroy"), Self::s("-r"), ds.clone()]) {
            Ok(_) => {
                // The snapshot a clone was made from goes with it, or a volume of the same
                // name could not be cloned again; it is no volume, so a failure is no
                // failure of this delete.
                let origin = listed.split('\t').nth(1).unwrap_or_default().trim();
                if origin.contains(&format!("@{CLONE_SNAPSHOT_PREFIX}")) {
                    let _ = self.zfs(&[Self::s("destroy"), origin.to_string()]);
                }
                Ok(())
            }
            Err(_) => {
                let parked = format!(
                    "{}/deleted/{}",
                    self.dataset,
                    vol.display().to_string().replace('/', "-")
                );
                self.zfs(&[Self::s("rename"), Self::s("-p"), ds, parked.clone()])?;
                self.zfs(&[Self::s("set"), Self::s("mountpoint=none"), parked])
                    .map(|_| ())
            }
        }
    }

    fn set_readonly(&self, vol: &Path, readonly: bool) -> Result<(), StorageError> {
        let v = if readonly {
            "readonly=on"
        } else {
            "readonly=off"
        };
        self.zfs(&[Self::s("set"), Self::s(v), self.dataset(vol)])
            .map(|_| ())
    }

    fn set_quota(&self, vol: &Path, bytes: Option<u64>) -> Result<(), StorageError> {
        let v = bytes
            .map(|b| format!("refquota={b}"))
            .unwrap_or_else(|| "refquota=none".into());
        self.zfs(&[Self::s("set"), v, self.dataset(vol)])
            .map(|_| ())
    }

    /// The pool's dataset's space (its root is a plain directory on the host's filesystem,
    /// so statvfs would tell nothing); zfs has no inode limit to report.
    fn pool_usage(&self) -> Result<PoolUsage, StorageError> {
        let out = self.zfs(&[
            Self::s("list"),
            Self::s("-Hp"),
            Self::s("-o"),
            Self::s("used,available"),
            self.dataset.clone(),
        ])?;
        let numbers: Vec<u64> = out
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let (used, available) = match numbers[..] {
            [used, available] => (used, available),
            _ => {
                return Err(StorageError::Command {
                    program: format!("zfs list -Hp -o used,available {}", self.dataset),
                    status: "unexpected output".into(),
                    code: None,
                    stderr: out.trim().to_string(),
                })
            }
        };
        Ok(PoolUsage {
            space_used: used,
            space_total: used + available,
            ..PoolUsage::default()
        })
    }

    fn rename_volume(&self, from: &Path, to: &Path) -> Result<(), StorageError> {
        self.zfs(&[
            Self::s("rename"),
            Self::s("-p"),
            self.dataset(from),
            self.dataset(to),
        ])?;
        let mounted = self.zfs(&[
            Self::s("set"),
            format!("mountpoint={}", self.path(to).display()),
            self.dataset(to),
        ]);
        if let Err(e) = mounted {
            // Back under its old name, where its mount point still is.
            let _ = self.zfs(&[Self::s("rename"), self.dataset(to), self.dataset(from)]);
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRunner;

    fn driver() -> (Arc<FakeRunner>, ZfsDriver) {
        let runner = Arc::new(FakeRunner::default());
        (
            runner.clone(),
            ZfsDriver::new(
                Path::new("/var/lib/hutch/storage-pools/default"),
                "tank/hutch",
                runner,
            ),
        )
    }

    fn calls(r: &FakeRunner) -> Vec<String> {
        r.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.join(" "))
            .collect()
    }

    #[test]
    fn zfs_offers_no_send_stream_until_one_matches_lxds_layout() {
        // Migration offers its BTRFS transport and backups their optimized layout to a
        // driver with a send stream: zfs must not claim btrfs's.
        let (_, d) = driver();
        assert!(d.send_argv(Path::new("containers/c1"), None).is_none());
        assert!(d.receive_argv(Path::new("containers")).is_none());
    }

    #[test]
    fn volumes_are_datasets_mounted_at_the_pool_paths() {
        let (r, d) = driver();
        d.create_volume(Path::new("images/fp")).unwrap();
        d.set_readonly(Path::new("images/fp"), true).unwrap();
        d.clone_volume(Path::new("images/fp"), Path::new("containers/c1"), false)
            .unwrap();
        d.clone_volume(
            Path::new("containers/c1"),
            Path::new("containers-snapshots/c1/s0"),
            true,
        )
        .unwrap();
        assert_eq!(
            calls(&r),
            vec![
                "zfs create -p -o mountpoint=/var/lib/hutch/storage-pools/default/images/fp tank/hutch/images/fp",
                "zfs set readonly=on tank/hutch/images/fp",
                "zfs snapshot tank/hutch/images/fp@hutch-clone-containers-c1",
                "zfs clone -p -o mountpoint=/var/lib/hutch/storage-pools/default/containers/c1 tank/hutch/images/fp@hutch-clone-containers-c1 tank/hutch/containers/c1",
                "zfs snapshot tank/hutch/containers/c1@hutch-clone-containers-snapshots-c1-s0",
                "zfs clone -p -o mountpoint=/var/lib/hutch/storage-pools/default/containers-snapshots/c1/s0 -o readonly=on tank/hutch/containers/c1@hutch-clone-containers-snapshots-c1-s0 tank/hutch/containers-snapshots/c1/s0",
            ]
        );
    }

    #[test]
    fn a_failed_clone_removes_its_snapshot() {
        let (r, d) = driver();
        *r.fail_on.lock().unwrap() = Some("clone".into());
        assert!(d
            .clone_volume(Path::new("images/fp"), Path::new("containers/c1"), false)
            .is_err());
        let c = calls(&r);
        assert_eq!(
            c.last().unwrap(),
            "zfs destroy tank/hutch/images/fp@hutch-clone-containers-c1"
        );
    }

    #[test]
    fn deleting_a_dataset_with_clones_parks_it() {
        let (r, d) = driver();
        *r.fail_on.lock().unwrap() = Some("destroy".into());
        d.delete_volume(Path::new("images/fp")).unwrap();
        let c = calls(&r);
        assert_eq!(c[0], "zfs list -H -o name,origin tank/hutch/images/fp");
        assert_eq!(
            c[2],
            "zfs rename -p tank/hutch/images/fp tank/hutch/deleted/images-fp"
        );
        assert_eq!(c[3], "zfs set mountpoint=none tank/hutch/deleted/images-fp");
    }

    #[test]
    fn restore_swaps_by_dataset_renames() {
        let (r, d) = driver();
        d.restore(
            Path::new("containers/c1"),
            Path::new("containers-snapshots/c1/s0"),
        )
        .unwrap();
        let c = calls(&r);
        assert!(
            c.iter().any(
                |l| l == "zfs rename -p tank/hutch/containers/c1 tank/hutch/containers/.c1.old"
            ),
            "{c:#?}"
        );
        assert!(
            c.iter().any(|l| l
                == "zfs rename -p tank/hutch/containers/.c1.restoring tank/hutch/containers/c1"),
            "{c:#?}"
        );
    }
}
