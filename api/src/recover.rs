//! `POST /internal/recover/validate` and `/internal/recover/import` (unix socket only):
//! what `hutchd recover` asks for and what it is told. The request is LXD's
//! (`{"pools":[StoragePoolsPost]}`); the answer is hutch's own, a report per pool.

use serde::{Deserialize, Serialize};

use crate::storage::StoragePoolsPost;

/// The pools to look at. Empty: every pool the state directory holds (each directory under
/// `storage-pools/`, each `disks/*.img`, each pool of the database). A pool given with a
/// driver (and `config.source`) is opened from that; one given by name alone is found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoverPost {
    pub pools: Vec<StoragePoolsPost>,
}

/// What recover found (validate) or did (import).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoverReport {
    pub pools: Vec<RecoverPool>,
    /// Profiles the database lacked, (re-)created from the instances' backup files (to be
    /// created, in a validate).
    pub profiles: Vec<String>,
}

impl RecoverReport {
    /// Whether anything was refused (then `hutchd recover` exits non-zero).
    pub fn refused(&self) -> bool {
        self.pools.iter().any(|p| {
            p.status == RecoverStatus::Refused
                || p.instances
                    .iter()
                    .chain(&p.volumes)
                    .any(|i| i.status == RecoverStatus::Refused)
        })
    }
}

/// What becomes of a pool, instance or volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoverStatus {
    /// Its row exists: nothing to do.
    #[default]
    Known,
    /// On disk, not in the database: would be recovered (validate).
    Missing,
    /// Its rows were made (import).
    Recovered,
    /// Not recovered: `reason` says why.
    Refused,
}

/// One pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoverPool {
    pub name: String,
    pub driver: String,
    pub source: String,
    pub status: RecoverStatus,
    pub reason: String,
    /// Instances on the pool whose rows are missing (or refused).
    pub instances: Vec<RecoverItem>,
    /// Custom volumes on the pool whose rows are missing (or refused).
    pub volumes: Vec<RecoverItem>,
}

/// One instance or custom volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoverItem {
    pub name: String,
    pub snapshots: usize,
    pub status: RecoverStatus,
    pub reason: String,
}
