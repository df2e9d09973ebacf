//! The storage error type.

use std::path::PathBuf;

/// A failed storage step, naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("failed to run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {action}")]
    Sys {
        action: String,
        #[source]
        source: nix::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("unknown storage driver {0:?} (known: dir, btrfs, zfs)")]
    UnknownDriver(String),
}

impl StorageError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
