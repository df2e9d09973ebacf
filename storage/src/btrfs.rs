//! The `btrfs` driver: volumes are subvolumes, clones and snapshots are btrfs snapshots
//! (instant, sharing extents), driven through the `btrfs` command as LXD does (the runner
//! makes the subvolume commands by ioctl: see runner.rs).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::driver::{in_parent, DriverInfo, StorageDriver};
use crate::error::StorageError;
use crate::runner::CommandRunner;

/// What a `btrfs` pool can do.
pub(crate) const INFO: DriverInfo = DriverInfo {
    name: "btrfs",
    instant_clone: true,
    atomic_snapshots: true,
    quotas: true,
};

#[derive(Debug)]
pub struct BtrfsDriver {
    root: PathBuf,
    runner: Arc<dyn CommandRunner>,
}

impl BtrfsDriver {
    pub fn new(root: &Path, runner: Arc<dyn CommandRunner>) -> Self {
        BtrfsDriver {
            root: root.to_path_buf(),
            runner,
        }
    }

    fn btrfs(&self, args: &[&str], path: &Path) -> Result<String, StorageError> {
        let mut argv: Vec<String> = std::iter::once("btrfs")
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect();
        argv.push(path.display().to_string());
        self.runner.run(&argv)
    }
}

/// Subvolumes nested below `path` (a subvolume root has its own device number), deepest
/// first, so they can be deleted before their parent.
fn nested_subvolumes(path: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(top) = std::fs::symlink_metadata(path) else {
        return found;
    };
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            // The entry's type comes with the directory listing: only directories are
            // stat'ed (a Debian rootfs has ten times more files than directories).
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(m) = entry.metadata() else { continue };
            if m.dev() != top.dev() && m.ino() == 256 {
                found.push(entry.path());
            }
            stack.push(entry.path());
        }
    }
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

impl StorageDriver for BtrfsDriver {
    fn info(&self) -> DriverInfo {
        INFO
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn create_volume(&self, vol: &Path) -> Result<(), StorageError> {
        let p = self.path(vol);
        in_parent(&p, || self.btrfs(&["subvolume", "create"], &p).map(|_| ()))
    }

    fn clone_volume(&self, from: &Path, to: &Path, readonly: bool) -> Result<(), StorageError> {
        let dst = self.path(to);
        let mut argv: Vec<String> = ["btrfs", "subvolume", "snapshot"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if readonly {
            argv.push("-r".into());
        }
        argv.push(self.path(from).display().to_string());
        argv.push(dst.display().to_string());
        in_parent(&dst, || self.runner.run(&argv).map(|_| ()))
    }

    fn delete_volume(&self, vol: &Path) -> Result<(), StorageError> {
        let p = self.path(vol);
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            return Ok(());
        };
        // Not a subvolume (a subvolume's root is inode 256): a plain leftover directory.
        if meta.ino() != 256 {
            return std::fs::remove_dir_all(&p).map_err(|e| StorageError::io("delete", &p, e));
        }
        // Read-only snapshots (images, instance snapshots) must be made writable to delete
        // what a container nested inside them; the subvolume itself goes either way.
        for nested in nested_subvolumes(&p) {
            let _ = self.runner.run(&[
                "btrfs".into(),
                "property".into(),
                "set".into(),
                "-ts".into(),
                nested.display().to_string(),
                "ro".into(),
                "false".into(),
            ]);
            self.btrfs(&["subvolume", "delete"], &nested)?;
        }
        self.btrfs(&["subvolume", "delete"], &p).map(|_| ())
    }

    fn set_quota(&self, vol: &Path, bytes: Option<u64>) -> Result<(), StorageError> {
        // Quotas are off on a new filesystem; enabling them again is harmless.
        self.btrfs(&["quota", "enable"], &self.root)?;
        let limit = bytes
            .map(|b| b.to_string())
            .unwrap_or_else(|| "none".into());
        self.btrfs(&["qgroup", "limit", &limit], &self.path(vol))
            .map(|_| ())
    }

    fn send_argv(&self, vol: &Path, parent: Option<&Path>) -> Option<Vec<String>> {
        let mut argv = vec!["btrfs".to_string(), "send".to_string()];
        if let Some(p) = parent {
            argv.push("-p".into());
            argv.push(self.path(p).display().to_string());
        }
        argv.push(self.path(vol).display().to_string());
        Some(argv)
    }

    fn receive_argv(&self, into: &Path) -> Option<Vec<String>> {
        // The stream comes from another host: `--chroot` confines every path it names to
        // the landing directory, so a hostile stream cannot write elsewhere on this host.
        Some(vec![
            "btrfs".into(),
            "receive".into(),
            "--chroot".into(),
            self.path(into).display().to_string(),
        ])
    }

    fn set_readonly(&self, vol: &Path, readonly: bool) -> Result<(), StorageError> {
        let mut argv = vec!["btrfs".to_string(), "property".into(), "set".into()];
        if !readonly {
            // A received volume (`received_uuid` set) is made writable only by force.
            argv.push("-f".into());
        }
        argv.extend([
            "-ts".into(),
            self.path(vol).display().to_string(),
            "ro".into(),
            readonly.to_string(),
        ]);
        self.runner.run(&argv).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRunner;

    /// A pool root of the test's own: the driver makes missing parents of a new volume,
    /// and a shared path would be made and removed under tests running beside it.
    fn pool() -> (tempfile::TempDir, impl Fn(&str) -> String) {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().to_path_buf();
        (root, move |vol: &str| base.join(vol).display().to_string())
    }

    #[test]
    fn commands_are_the_btrfs_ones() {
        let (root, at) = pool();
        let runner = Arc::new(FakeRunner::default());
        let d = BtrfsDriver::new(root.path(), runner.clone());
        d.clone_volume(Path::new("images/fp"), Path::new("containers/c1"), false)
            .unwrap();
        d.clone_volume(
            Path::new("containers/c1"),
            Path::new("containers-snapshots/c1/s0"),
            true,
        )
        .unwrap();
        d.set_readonly(Path::new("images/fp"), true).unwrap();
        let calls = runner.calls.lock().unwrap().clone();
        assert_eq!(
            calls[0],
            [
                "btrfs",
                "subvolume",
                "snapshot",
                &at("images/fp"),
                &at("containers/c1")
            ]
        );
        assert_eq!(
            calls[1],
            [
                "btrfs",
                "subvolume",
                "snapshot",
                "-r",
                &at("containers/c1"),
                &at("containers-snapshots/c1/s0")
            ]
        );
        assert_eq!(
            calls[2],
            [
                "btrfs",
                "property",
                "set",
                "-ts",
                &at("images/fp"),
                "ro",
                "true"
            ]
        );
    }

    #[test]
    fn sends_and_receives_are_btrfs_streams() {
        let d = BtrfsDriver::new(Path::new("/pool"), Arc::new(FakeRunner::default()));
        assert_eq!(
            d.send_argv(Path::new("s/c1/b"), Some(Path::new("s/c1/a")))
                .unwrap(),
            ["btrfs", "send", "-p", "/pool/s/c1/a", "/pool/s/c1/b"]
        );
        assert_eq!(
            d.receive_argv(Path::new("containers/.c1.migrating"))
                .unwrap(),
            [
                "btrfs",
                "receive",
                "--chroot",
                "/pool/containers/.c1.migrating"
            ]
        );
        let dir = crate::DirDriver::new(Path::new("/pool"));
        assert!(dir.send_argv(Path::new("a"), None).is_none());
    }

    #[test]
    fn failures_carry_the_command_and_its_stderr() {
        let (root, at) = pool();
        let runner = Arc::new(FakeRunner::default());
        *runner.fail_on.lock().unwrap() = Some("snapshot".into());
        let d = BtrfsDriver::new(root.path(), runner);
        let err = d
            .clone_volume(Path::new("a"), Path::new("b"), false)
            .unwrap_err();
        let command = format!("btrfs subvolume snapshot {} {} failed", at("a"), at("b"));
        assert!(err.to_string().contains(&command), "{err}");
    }
}
