use std::path::PathBuf;

/// Why a backup cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The tarball or one of its files is not what a backup must be (hostile or corrupt).
    #[error("invalid backup: {0}")]
    Invalid(String),
    #[error("invalid {what}")]
    Yaml {
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    /// What the backup would unpack to is larger than allowed.
    #[error("the backup unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("unknown compression algorithm {0:?} (gzip, bzip2, lzma, xz, zstd or none)")]
    UnknownCompression(String),
}

impl BackupError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BackupError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
