//! The runtime's error type and the coarse kind every caller branches on.

use std::io;
use std::path::PathBuf;

/// What sort of failure an error is, for callers that map errors to status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidInput,
    InUse,
    Unsupported,
    Internal,
}

/// Every error the runtime returns.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid container spec: {field}: {reason}")]
    InvalidSpec { field: String, reason: String },

    #[error("failed to parse {path} line {line}: {reason}")]
    IdMapParse {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to {action}")]
    Sys {
        action: String,
        #[source]
        source: nix::Error,
    },

    #[error("cgroup {path}: invalid value {value:?} in {key}")]
    CgroupValue {
        path: PathBuf,
        key: String,
        value: String,
    },

    #[error("cgroup controller {controller} is not available on this host")]
    CgroupControllerMissing { controller: String },

    #[error("no cgroup hierarchy found under {root}")]
    CgroupNotMounted { root: PathBuf },

    #[error("container in {dir} is not running")]
    NotRunning { dir: PathBuf },

    #[error("container in {dir} is already running")]
    AlreadyRunning { dir: PathBuf },

    #[error("container failed to start: {reason}")]
    StartFailed { reason: String },

    #[error("device failed: {reason}")]
    DeviceFailed { reason: String },

    #[error("exec failed: {reason}")]
    ExecFailed { reason: String },

    #[error("unexpected message from {peer}: expected {expected}, got {got}")]
    Protocol {
        peer: &'static str,
        expected: &'static str,
        got: String,
    },

    #[error("timed out after {millis} ms waiting for {what}")]
    Timeout { what: &'static str, millis: u64 },
}

impl RuntimeError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::InvalidSpec { .. } | RuntimeError::CgroupValue { .. } => {
                ErrorKind::InvalidInput
            }
            RuntimeError::NotRunning { .. } => ErrorKind::InvalidInput,
            // A device the container's state cannot take (a symlink planted where its
            // mount point goes, a source gone): the request fails, not the daemon.
            RuntimeError::DeviceFailed { .. } => ErrorKind::InvalidInput,
            RuntimeError::AlreadyRunning { .. } => ErrorKind::InUse,
            RuntimeError::CgroupControllerMissing { .. }
            | RuntimeError::CgroupNotMounted { .. } => ErrorKind::Unsupported,
            RuntimeError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Internal,
        }
    }

    /// Shorthand for an I/O error on a path.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a failed system call.
    pub fn sys(action: impl Into<String>, source: nix::Error) -> Self {
        RuntimeError::Sys {
            action: action.into(),
            source,
        }
    }
}

/// The runtime's result type.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
