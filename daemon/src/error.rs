//! The daemon's error type, and the one place where an error becomes an HTTP response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hutch_api::Response as Envelope;
use hutch_runtime::{ErrorKind, RuntimeError};

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
    #[error(transparent)]
    Config(#[from] hutch_api::config::ConfigError),
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Storage(#[from] hutch_storage::StorageError),
    #[error(transparent)]
    Network(#[from] hutch_network::NetworkError),
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
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

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            DaemonError::NotFound(_) => StatusCode::NOT_FOUND,
            DaemonError::BadRequest(_) | DaemonError::Config(_) => StatusCode::BAD_REQUEST,
            DaemonError::Conflict(_) => StatusCode::CONFLICT,
            DaemonError::Forbidden(_) => StatusCode::FORBIDDEN,
            DaemonError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            DaemonError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            DaemonError::Runtime(e) => match e.kind() {
                ErrorKind::NotFound => StatusCode::NOT_FOUND,
                ErrorKind::InvalidInput | ErrorKind::Unsupported => StatusCode::BAD_REQUEST,
                ErrorKind::AlreadyExists | ErrorKind::InUse => StatusCode::CONFLICT,
                ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            },
            DaemonError::Storage(hutch_storage::StorageError::Unsupported(_)) => {
                StatusCode::BAD_REQUEST
            }
            DaemonError::Network(e) if e.is_invalid() => StatusCode::BAD_REQUEST,
            DaemonError::Database(_)
            | DaemonError::Io { .. }
            | DaemonError::Internal(_)
            | DaemonError::Storage(_)
            | DaemonError::Network(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message with its causes, as one line.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            let s = e.to_string();
            if !out.ends_with(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            cur = e.source();
        }
        out
    }
}

impl IntoResponse for DaemonError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Envelope::error(status.as_u16(), &self.chain());
        (
            status,
            [("X-Content-Type-Options", "nosniff")],
            axum::Json(body),
        )
            .into_response()
    }
}
