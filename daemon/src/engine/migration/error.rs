//! What can go wrong in a migration, with LXD's messages where a client reads them.

use crate::error::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "Unable to perform container live migration. CRIU isn't installed on the source server"
    )]
    CriuMissing,
    /// A target asked to restore running state, which hutch cannot do.
    #[error("Unable to restore a live migration: CRIU isn't supported on the target server; retry with --stateless")]
    LiveRestore,
    #[error("Timed out waiting for migration connections")]
    ConnectTimeout,
    #[error("Mode {0:?} not implemented")]
    ModeNotImplemented(String),
    #[error("No matching migration types found. Offered types: [{offered}], our types: [{ours}]")]
    NoMatchingTypes { offered: String, ours: String },
    #[error("Unknown secret provided: {0}")]
    UnknownSecret(String),
    #[error("Missing migration secret {0:?}")]
    MissingSecret(&'static str),
    #[error("Invalid migration operation URL {0:?}")]
    BadOperationUrl(String),
    #[error("Invalid migration certificate")]
    BadCertificate(#[source] hutch_tls::TlsError),
    #[error("Failed connecting to the migration websocket {url}")]
    Dial {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The peer said it failed; its message as it gave it.
    #[error("{0}")]
    Peer(String),
    /// A message that is not what the protocol says comes here.
    #[error("Invalid {what} from the migration peer: {reason}")]
    BadMessage { what: &'static str, reason: String },
    #[error("Only binary messages allowed")]
    NotBinary,
    #[error("The migration peer closed the {0} connection")]
    Closed(&'static str),
    #[error("Websocket error on the {channel} connection")]
    Websocket {
        channel: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{program} failed for {volume}: {status} ({stderr})")]
    Tool {
        program: &'static str,
        volume: String,
        status: String,
        stderr: String,
    },
    #[error("Failed to run {program}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("Failed to {action} for the migration")]
    Io {
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("Operation cancelled")]
    Cancelled,
}

impl MigrationError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            MigrationError::ModeNotImplemented(_) => ErrorKind::NotImplemented,
            MigrationError::UnknownSecret(_)
            | MigrationError::MissingSecret(_)
            | MigrationError::BadOperationUrl(_)
            | MigrationError::BadCertificate(_) => ErrorKind::InvalidInput,
            _ => ErrorKind::Internal,
        }
    }

    pub fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> MigrationError {
        move |source| MigrationError::Io { action, source }
    }
}
