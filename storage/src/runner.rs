//! Running the system tools that own a storage job (`btrfs`, `mkfs.btrfs`, `zfs`, `zpool`,
//! `blkid`), behind a trait so the drivers' logic is tested without them.

use std::process::Command;

use crate::error::StorageError;

/// Runs a command to completion; an exit other than 0 is an error carrying its stderr.
pub trait CommandRunner: Send + Sync + std::fmt::Debug {
    fn run(&self, argv: &[String]) -> Result<String, StorageError>;
}

/// The real one.
#[derive(Debug, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, argv: &[String]) -> Result<String, StorageError> {
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
