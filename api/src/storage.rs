//! Storage pools as `/1.0/storage-pools` shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A storage pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoragePool {
    pub name: String,
    pub driver: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
    pub used_by: Vec<String>,
    pub status: String,
    pub locations: Vec<String>,
}
