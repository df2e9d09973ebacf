//! `backup.yaml` (LXD's `backup/config.Config`) and `backup/index.yaml` (`backup.Info`).
//!
//! Every field has a default and unknown keys are ignored: a file written by another LXD
//! version, or a hostile one, parses as far as its shape allows, and callers check what
//! they need (a name, a pool, snapshot names) before they act on it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::BackupError;

/// Devices: name → key → value.
pub type Devices = BTreeMap<String, BTreeMap<String, String>>;

/// The zero time, LXD's "never".
pub const NEVER: &str = "0001-01-01T00:00:00Z";

fn never() -> String {
    NEVER.to_string()
}

/// `backup.yaml`: everything needed to re-create an instance (or a custom volume) from its
/// volume alone. Also the `config` of `index.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Instance>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<InstanceSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<StoragePool>,
    /// With an instance: every profile it uses (LXD writes all of the project's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<Profile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<StorageVolume>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_snapshots: Vec<StorageVolumeSnapshot>,
}

impl Config {
    pub fn from_yaml(text: &str) -> Result<Config, BackupError> {
        serde_yaml::from_str(text).map_err(|source| BackupError::Yaml {
            what: "backup.yaml",
            source,
        })
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a backup config serializes")
    }
}

/// LXD's `api.Instance`, as far as a backup needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    pub name: String,
    pub description: String,
    pub architecture: String,
    pub config: BTreeMap<String, String>,
    pub devices: Devices,
    pub ephemeral: bool,
    pub profiles: Vec<String>,
    pub stateful: bool,
    pub created_at: String,
    pub last_used_at: String,
    pub expanded_config: BTreeMap<String, String>,
    pub expanded_devices: Devices,
    pub status: String,
    pub status_code: u16,
    pub location: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub project: String,
}

impl Default for Instance {
    fn default() -> Self {
        Instance {
            name: String::new(),
            description: String::new(),
            architecture: String::new(),
            config: BTreeMap::new(),
            devices: Devices::new(),
            ephemeral: false,
            profiles: Vec::new(),
            stateful: false,
            created_at: never(),
            last_used_at: never(),
            expanded_config: BTreeMap::new(),
            expanded_devices: Devices::new(),
            status: "Stopped".into(),
            status_code: 102,
            location: "none".into(),
            kind: "container".into(),
            project: "default".into(),
        }
    }
}

/// LXD's `api.InstanceSnapshot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceSnapshot {
    pub name: String,
    pub description: String,
    pub architecture: String,
    pub config: BTreeMap<String, String>,
    pub devices: Devices,
    pub ephemeral: bool,
    pub profiles: Vec<String>,
    pub stateful: bool,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    pub expanded_config: BTreeMap<String, String>,
    pub expanded_devices: Devices,
    pub size: i64,
}

impl Default for InstanceSnapshot {
    fn default() -> Self {
        InstanceSnapshot {
            name: String::new(),
            description: String::new(),
            architecture: String::new(),
            config: BTreeMap::new(),
            devices: Devices::new(),
            ephemeral: false,
            profiles: Vec::new(),
            stateful: false,
            created_at: never(),
            last_used_at: never(),
            expires_at: never(),
            expanded_config: BTreeMap::new(),
            expanded_devices: Devices::new(),
            size: -1,
        }
    }
}

/// LXD's `api.StoragePool`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoragePool {
    pub name: String,
    pub description: String,
    pub driver: String,
    pub config: BTreeMap<String, String>,
    pub used_by: Vec<String>,
    pub status: String,
    pub locations: Vec<String>,
}

/// LXD's `api.Profile`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
    pub devices: Devices,
    pub used_by: Vec<String>,
}

/// LXD's `api.StorageVolume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageVolume {
    pub name: String,
    pub description: String,
    /// `container`, `custom`, `image`, `virtual-machine`.
    #[serde(rename = "type")]
    pub kind: String,
    pub config: BTreeMap<String, String>,
    pub content_type: String,
    pub used_by: Vec<String>,
    pub location: String,
    pub created_at: String,
}

/// A snapshot of a custom volume (`volume_snapshots`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageVolumeSnapshot {
    pub name: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
    pub content_type: String,
    pub expires_at: String,
}

impl Default for StorageVolumeSnapshot {
    fn default() -> Self {
        StorageVolumeSnapshot {
            name: String::new(),
            description: String::new(),
            config: BTreeMap::new(),
            content_type: "filesystem".into(),
            expires_at: never(),
        }
    }
}

/// `backup/index.yaml`: what the tarball holds. Written first, so a reader of the stream
/// knows what follows before the data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Index {
    pub name: String,
    /// The source pool's driver (`dir`, `btrfs`, `zfs`).
    pub backend: String,
    pub pool: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// `None` in an older index: optimized if `backup/container.bin` is present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimized: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimized_header: Option<bool>,
    /// `container`, `virtual-machine` or `custom`; empty means container.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
}

impl Index {
    pub fn from_yaml(text: &str) -> Result<Index, BackupError> {
        serde_yaml::from_str(text).map_err(|source| BackupError::Yaml {
            what: "backup/index.yaml",
            source,
        })
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a backup index serializes")
    }
}

/// `backup/optimized_header.yaml` (btrfs): the subvolumes of each volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizedHeader {
    pub subvolumes: Vec<OptimizedSubvolume>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimizedSubvolume {
    /// `/` for the volume itself; nested subvolumes by their path inside it.
    pub path: String,
    /// The snapshot's name; empty for the main volume.
    pub snapshot: String,
    pub readonly: bool,
    pub uuid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_from_lxd_parses_and_keeps_what_matters() {
        let text = "name: c1\nbackend: btrfs\npool: default\nsnapshots:\n- snap0\n\
                    optimized: true\noptimized_header: true\ntype: container\n\
                    config:\n  container:\n    name: c1\n    architecture: x86_64\n    \
                    config:\n      image.os: busybox\n    some_new_key: 1\n  \
                    snapshots:\n  - name: snap0\n    created_at: 2024-01-01T00:00:00Z\n";
        let index = Index::from_yaml(text).unwrap();
        assert_eq!(index.name, "c1");
        assert_eq!(index.optimized, Some(true));
        let config = index.config.unwrap();
        let c = config.container.unwrap();
        assert_eq!(c.config["image.os"], "busybox");
        assert_eq!(c.kind, "container");
        assert_eq!(config.snapshots[0].expires_at, NEVER);
    }

    #[test]
    fn an_index_without_optional_keys_round_trips() {
        let index = Index {
            name: "c1".into(),
            backend: "dir".into(),
            pool: "default".into(),
            kind: "container".into(),
            ..Default::default()
        };
        let text = index.to_yaml();
        assert!(!text.contains("optimized"), "{text}");
        assert_eq!(Index::from_yaml(&text).unwrap(), index);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Index::from_yaml("name: [unclosed").is_err());
        assert!(Config::from_yaml("- a list").is_err());
    }
}
