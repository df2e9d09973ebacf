//! Instance backups (`/1.0/instances/<name>/backups`), LXD's `api.InstanceBackup*`.

use serde::{Deserialize, Serialize};

use crate::instance::null_as_default;

/// A stored backup as `GET …/backups/<name>` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceBackup {
    pub name: String,
    pub created_at: String,
    /// The zero time (`0001-01-01T00:00:00Z`): never.
    pub expires_at: String,
    pub instance_only: bool,
    pub container_only: bool,
    pub optimized_storage: bool,
}

/// `POST /1.0/instances/<name>/backups`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceBackupsPost {
    /// Empty: `backup<N>`, the next free number.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// RFC 3339; empty, null or the zero time: never.
    #[serde(default, deserialize_with = "null_as_default")]
    pub expires_at: String,
    #[serde(default)]
    pub instance_only: bool,
    /// The older name of `instance_only`.
    #[serde(default)]
    pub container_only: bool,
    #[serde(default)]
    pub optimized_storage: bool,
    /// `gzip`, `xz`, `zstd`, `none` (with arguments, as LXD: `gzip -9`); empty: the
    /// server's `backups.compression_algorithm`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub compression_algorithm: String,
}

/// `POST /1.0/instances/<name>/backups/<backup>`: a rename.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceBackupPost {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
}
