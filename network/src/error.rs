//! The network error type.

use std::path::PathBuf;

/// A failed network step, naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Bad configuration or input: the daemon answers 400 with this text.
    #[error("{0}")]
    Invalid(String),
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: failed to {action}: {message}")]
    Netlink { action: String, message: String },
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("failed to run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {action}: {source}")]
    Sys {
        action: String,
        #[source]
        source: nix::Error,
    },
}

impl NetworkError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NetworkError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        NetworkError::Invalid(msg.into())
    }

    pub fn netlink(action: impl Into<String>, e: impl std::fmt::Display) -> Self {
        NetworkError::Netlink {
            action: action.into(),
            message: e.to_string(),
        }
    }

    /// Whether this is the caller's mistake (a 400) rather than the host's.
    pub fn is_invalid(&self) -> bool {
        matches!(self, NetworkError::Invalid(_))
    }
}

pub type Result<T, E = NetworkError> = std::result::Result<T, E>;
