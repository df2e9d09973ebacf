//! The network error type and its kind.

use std::path::PathBuf;

/// What a [`NetworkError`] means for a caller, whatever its variant: the daemon maps a kind
/// to an HTTP status in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidInput,
    AlreadyExists,
    InUse,
    Unsupported,
    Internal,
}

/// A failed network step, naming what it concerns. Messages never repeat their `#[source]`
/// (whoever prints the error prints the chain).
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// Bad configuration or input (a key's value, an address, a proxy's listen address):
    /// the text is the one the user sees, in LXD's wording.
    #[error("{0}")]
    Invalid(String),
    /// A NIC's bridge (managed or `parent`) is missing from the host.
    #[error("Parent bridge {0:?} doesn't exist")]
    NoBridge(String),
    /// A macvlan's parent device is missing from the host.
    #[error("Parent device {0:?} doesn't exist")]
    NoParent(String),
    /// A host interface with the network's name exists and is not a bridge.
    #[error("Interface {0:?} exists and is not a bridge")]
    NotABridge(String),
    /// Every candidate subnet of the family overlaps one in use.
    #[error("Failed to find a free {family} subnet")]
    NoFreeSubnet { family: &'static str },
    /// A proxy's forwarder could not start (its port is taken, its address is not local):
    /// the reason is the forwarder's own words.
    #[error("Proxy {device:?}: {reason}")]
    Proxy { device: String, reason: String },
    /// An interface that a step needs (just made, or made by the daemon) is missing.
    #[error("interface {name} not found {place}")]
    LinkMissing { name: String, place: String },
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file the daemon wrote for a helper (a NIC plan) does not parse.
    #[error("failed to parse {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("netlink: failed to {action}")]
    Netlink {
        action: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// The netlink worker is gone: it could not start (see the log), or a call panicked.
    #[error("netlink: the worker is gone")]
    WorkerGone,
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: &'static str,
        status: String,
        stderr: String,
    },
    #[error("failed to run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A helper process started but did not say it was ready in time.
    #[error("{program} did not start: {reason}")]
    NotReady {
        program: &'static str,
        reason: String,
    },
    #[error("failed to {action}")]
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

    pub fn netlink(action: impl Into<String>, source: rtnetlink::Error) -> Self {
        NetworkError::Netlink {
            action: action.into(),
            source,
        }
    }

    /// What the error means for the caller.
    pub fn kind(&self) -> ErrorKind {
        match self {
            NetworkError::Invalid(_)
            | NetworkError::NoBridge(_)
            | NetworkError::NoParent(_)
            | NetworkError::NotABridge(_)
            | NetworkError::NoFreeSubnet { .. }
            | NetworkError::Proxy { .. } => ErrorKind::InvalidInput,
            NetworkError::LinkMissing { .. }
            | NetworkError::Io { .. }
            | NetworkError::Parse { .. }
            | NetworkError::Netlink { .. }
            | NetworkError::WorkerGone
            | NetworkError::Command { .. }
            | NetworkError::Spawn { .. }
            | NetworkError::NotReady { .. }
            | NetworkError::Sys { .. } => ErrorKind::Internal,
        }
    }

    /// Whether this is the caller's mistake (a 400) rather than the host's.
    pub fn is_invalid(&self) -> bool {
        self.kind() == ErrorKind::InvalidInput
    }
}

pub type Result<T, E = NetworkError> = std::result::Result<T, E>;

/// An error and its causes as one line, for logs.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every cause printed once: a message never repeats its source's text.
    #[test]
    fn messages_do_not_repeat_their_source() {
        let errors = [
            NetworkError::Spawn {
                program: "dnsmasq".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            },
            NetworkError::Sys {
                action: "join the network namespace /proc/1/ns/net".into(),
                source: nix::Error::EPERM,
            },
            NetworkError::netlink("create bridge br0", rtnetlink::Error::RequestFailed),
            NetworkError::io(
                "open",
                "/x",
                std::io::Error::from_raw_os_error(libc::EACCES),
            ),
        ];
        for e in errors {
            let source = std::error::Error::source(&e).unwrap().to_string();
            assert!(!e.to_string().contains(&source), "{e}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(NetworkError::invalid("bad").kind(), ErrorKind::InvalidInput);
        assert_eq!(
            NetworkError::NoParent("eth9".into()).kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(NetworkError::WorkerGone.kind(), ErrorKind::Internal);
        assert!(NetworkError::Proxy {
            device: "p".into(),
            reason: "Failed to listen".into()
        }
        .is_invalid());
    }
}
