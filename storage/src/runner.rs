//! Running the system tools that own a storage job (`btrfs`, `mkfs.btrfs`, `zfs`, `zpool`,
//! `blkid`), behind a trait so the drivers' logic is tested without them.

use std::process::Command;

use crate::error::StorageError;

/// Runs a command to completion; an exit other than 0 is an error carrying its stderr.
pub trait CommandRunner: Send + Sync + std::fmt::Debug {
    fn run(&self, argv: &[String]) -> Result<String, StorageError>;
}

/// The real one. The subvolume commands of every launch, copy, snapshot and delete are
/// made in-process, by the ioctls the `btrfs` tool would make ([`crate::btrfs_ioctl`]):
/// the same effect and the same error shape, without starting a process for each.
#[derive(Debug, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, argv: &[String]) -> Result<String, StorageError> {
        if let Some(done) = subvolume_call(argv) {
            return done
                .map(|()| String::new())
                .map_err(|e| StorageError::Command {
                    program: argv.join(" "),
                    status: "ioctl failed".into(),
                    code: None,
                    stderr: e.to_string(),
                });
        }
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .map_err(|source| StorageError::Spawn {
                program: argv[0].clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(StorageError::Command {
                program: argv.join(" "),
                status: out.status.to_string(),
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `btrfs subvolume create|snapshot [-r]|delete` made directly; None for anything else.
fn subvolume_call(argv: &[String]) -> Option<std::io::Result<()>> {
    use crate::btrfs_ioctl::{create_subvolume, delete_subvolume, snapshot_subvolume};
    use std::path::Path;
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    Some(match args.as_slice() {
        ["btrfs", "subvolume", "create", path] => create_subvolume(Path::new(path)),
        ["btrfs", "subvolume", "snapshot", from, to] => {
            snapshot_subvolume(Path::new(from), Path::new(to), false)
        }
        ["btrfs", "subvolume", "snapshot", "-r", from, to] => {
            snapshot_subvolume(Path::new(from), Path::new(to), true)
        }
        ["btrfs", "subvolume", "delete", path] => delete_subvolume(Path::new(path)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_subvolume_commands_are_made_in_process() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(subvolume_call(&argv(&["btrfs", "quota", "enable", "/x"])).is_none());
        assert!(subvolume_call(&argv(&["btrfs", "subvolume", "show", "/x"])).is_none());
        assert!(subvolume_call(&argv(&["zfs", "destroy", "p/x"])).is_none());
        // A made call fails here the way the tool would: /nonexistent has no parent.
        let err = SystemRunner
            .run(&argv(&["btrfs", "subvolume", "create", "/nonexistent/v"]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("btrfs subvolume create /nonexistent/v failed"),
            "{err}"
        );
    }
}
