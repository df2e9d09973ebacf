//! The storage error type, and the kind of failure each error is.

use std::path::PathBuf;

/// What kind of failure a [`StorageError`] is; the daemon turns a kind into a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object (a dataset, a volume) does not exist.
    NotFound,
    /// The request names something that cannot be used (a driver, a source, a config).
    InvalidInput,
    /// The object exists already.
    AlreadyExists,
    /// The object is used by something else (a mount, another filesystem).
    InUse,
    /// The driver or the host cannot do this.
    Unsupported,
    /// The host failed: a disk, a command, a system call.
    Internal,
}

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
    /// A command ran and failed; its stderr is the only account of why.
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        /// The exit code, where the command exited rather than died of a signal.
        code: Option<i32>,
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
    /// A driver without the feature (`dir` pools and quotas).
    #[error("{driver} pools cannot {action}")]
    Unsupported {
        driver: &'static str,
        action: &'static str,
    },
    /// The host lacks what a driver needs (the zfs kernel module).
    #[error("{driver} is not available on this host ({reason})")]
    Unavailable {
        driver: &'static str,
        reason: &'static str,
    },
    #[error("Unknown storage pool driver {name:?} (known: {known})")]
    UnknownDriver { name: String, known: String },
    /// A pool's `source` that cannot back it: `reason` says what it is instead.
    #[error("Source {source_path:?} {reason}")]
    InvalidSource { source_path: String, reason: String },
    /// A block device with a filesystem hutch would have to wipe.
    #[error("{device} holds a {fstype} filesystem; hutch formats only empty devices")]
    DeviceInUse { device: PathBuf, fstype: String },
    /// What should be unmounted is still mounted.
    #[error("{path} is still mounted")]
    StillMounted { path: PathBuf },
}

impl StorageError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The kind of failure, for the daemon's status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StorageError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                ErrorKind::AlreadyExists
            }
            StorageError::Io { .. }
            | StorageError::Command { .. }
            | StorageError::Sys { .. }
            | StorageError::Spawn { .. } => ErrorKind::Internal,
            StorageError::Unsupported { .. } | StorageError::Unavailable { .. } => {
                ErrorKind::Unsupported
            }
            StorageError::UnknownDriver { .. } | StorageError::InvalidSource { .. } => {
                ErrorKind::InvalidInput
            }
            StorageError::DeviceInUse { .. } | StorageError::StillMounted { .. } => {
                ErrorKind::InUse
            }
        }
    }
}
