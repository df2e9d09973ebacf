//! LXD's backup tarball (`lxc export` / `lxc import`, stored instance backups) and the
//! `backup.yaml` every instance volume carries: the formats, nothing of the daemon.
//!
//! - [`config`]: `backup.yaml` ([`Config`]) and `backup/index.yaml` ([`Index`]) in LXD's
//!   shapes, read leniently (an LXD of another version writes more or fewer keys).
//! - [`compress`] / [`write`]: the tarball as a stream, produced while it is sent.
//! - [`decompress`] / [`read`]: a tarball taken from a stream, refusing hostile entries.

pub mod compress;
pub mod config;
pub mod decompress;
mod error;
pub mod read;
pub mod write;

pub use config::{Config, Index, OptimizedHeader};
pub use error::BackupError;
