//! The daemon's error type. Each error answers a [`ErrorKind`]; the API maps a kind to an
//! HTTP status in one place (`api::status_of`).

use hutch_api::Response as Envelope;

/// What kind of failure an error is, whatever layer it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist.
    NotFound,
    /// The request is malformed or asks for something this host cannot do.
    InvalidInput,
    /// The object exists already, or is in a state (in use, running) that forbids this.
    Conflict,
    Forbidden,
    /// The client's ETag does not match the object's.
    PreconditionFailed,
    NotImplemented,
    /// The disk under the state directory (or a pool) is full: SQLite's `SQLITE_FULL` or
    /// an `ENOSPC` anywhere in the causes. Reads still work; writes work again once space
    /// returns.
    NoSpace,
    /// A service the request needs is out of reach (the cluster's etcd): try again later.
    Unavailable,
    /// The host failed: a disk, a command, the database.
    Internal,
}

/// A library crate's kind (each crate has the same six) as the daemon's.
macro_rules! library_kind {
    ($krate:ident, $kind:expr) => {{
        use $krate::ErrorKind as K;
        match $kind {
            K::NotFound => ErrorKind::NotFound,
            K::InvalidInput | K::Unsupported => ErrorKind::InvalidInput,
            K::AlreadyExists | K::InUse => ErrorKind::Conflict,
            K::Internal => ErrorKind::Internal,
        }
    }};
}

/// Everything a request or an operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The object does not exist; the message is LXD's ("Instance not found").
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("ETag doesn't match: {server} vs {client}")]
    PreconditionFailed { server: String, client: String },
    #[error("not implemented")]
    NotImplemented,
    /// The cluster's shared state (etcd) cannot be reached; the message says which.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Config(#[from] hutch_api::config::ConfigError),
    #[error("database")]
    Database(#[from] rusqlite::Error),
    /// The database was not opened (a newer schema, a damaged file).
    #[error(transparent)]
    DatabaseOpen(#[from] crate::db::OpenError),
    #[error(transparent)]
    Runtime(#[from] hutch_runtime::RuntimeError),
    #[error(transparent)]
    Storage(#[from] hutch_storage::StorageError),
    #[error(transparent)]
    Network(#[from] hutch_network::NetworkError),
    #[error(transparent)]
    Image(#[from] hutch_images::ImageError),
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A step on an object failed for a reason kept as the source.
    #[error("failed to {action} {object}")]
    Failed {
        action: &'static str,
        object: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Migration(#[from] crate::engine::migration::MigrationError),
    #[error(transparent)]
    Backup(#[from] hutch_backup::BackupError),
    /// Blocking work panicked or was cancelled.
    #[error("background task")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

impl DaemonError {
    pub fn io(
        action: &'static str,
        path: impl AsRef<std::path::Path>,
        source: std::io::Error,
    ) -> Self {
        DaemonError::Io {
            action,
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// `action` on `object` failed because of `source`.
    pub fn failed(
        action: &'static str,
        object: impl std::fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        DaemonError::Failed {
            action,
            object: object.to_string(),
            source: source.into(),
        }
    }

    /// The kind of failure, from this error or the library error it wraps.
    pub fn kind(&self) -> ErrorKind {
        // A full disk surfaces through any layer (SQLite, a file write, a library's io
        // error), so the causes decide, not the variant.
        if no_space_in(self) {
            return ErrorKind::NoSpace;
        }
        match self {
            DaemonError::NotFound(_) => ErrorKind::NotFound,
            DaemonError::BadRequest(_) | DaemonError::Config(_) => ErrorKind::InvalidInput,
            DaemonError::Conflict(_) => ErrorKind::Conflict,
            DaemonError::Forbidden(_) => ErrorKind::Forbidden,
            DaemonError::PreconditionFailed { .. } => ErrorKind::PreconditionFailed,
            DaemonError::NotImplemented => ErrorKind::NotImplemented,
            DaemonError::Unavailable(_) => ErrorKind::Unavailable,
            DaemonError::Runtime(e) => library_kind!(hutch_runtime, e.kind()),
            DaemonError::Storage(e) => library_kind!(hutch_storage, e.kind()),
            DaemonError::Network(e) => library_kind!(hutch_network, e.kind()),
            DaemonError::Image(e) => library_kind!(hutch_images, e.kind()),
            DaemonError::Migration(e) => e.kind(),
            DaemonError::Backup(hutch_backup::BackupError::Io { .. }) => ErrorKind::Internal,
            DaemonError::Backup(_) => ErrorKind::InvalidInput,
            DaemonError::Database(_)
            | DaemonError::DatabaseOpen(_)
            | DaemonError::Io { .. }
            | DaemonError::Failed { .. }
            | DaemonError::Task(_) => ErrorKind::Internal,
        }
    }

    /// The message with its causes, as one line.
    pub fn chain(&self) -> String {
        let message = chain(self);
        // Clients match LXD's lowercase wording; SQLite says "database or disk is full"
        // and the kernel "No space left on device".
        if self.kind() == ErrorKind::NoSpace && !message.contains("no space left") {
            return format!("no space left on device: {message}");
        }
        message
    }

    /// LXD's error envelope for this error under `status`.
    pub fn envelope(&self, status: u16) -> Envelope {
        Envelope::error(status, &self.chain())
    }
}

/// Whether `err` or one of its causes is a full disk.
fn no_space_in(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::ENOSPC) {
                return true;
            }
        }
        if let Some(sql) = e.downcast_ref::<rusqlite::Error>() {
            if sql.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// An error and its causes as one line ("failed to mount x: permission denied").
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

    #[test]
    fn causes_are_printed_once_each() {
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        let e = DaemonError::failed("mount", "pool p1", io);
        assert_eq!(
            e.chain(),
            "failed to mount pool p1: Permission denied (os error 13)"
        );
        assert_eq!(e.kind(), ErrorKind::Internal);
        let db = DaemonError::from(rusqlite::Error::InvalidQuery);
        assert_eq!(db.chain(), "database: Query is not read-only");
    }

    #[test]
    fn a_full_disk_is_its_own_kind_with_lxds_words() {
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let e = DaemonError::from(full);
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        let msg = e.envelope(500).error;
        assert!(
            msg.starts_with("no space left on device: database"),
            "{msg}"
        );
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = DaemonError::failed("write", "backup.yaml", DaemonError::io("write", "f", io));
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        let other = DaemonError::io("write", "f", std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(other.kind(), ErrorKind::Internal);
    }
}
