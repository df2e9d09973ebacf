//! Storage pools and their volumes as `/1.0/storage-pools` shows and takes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::instance::null_as_default;

/// The writable part of a pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoragePoolPut {
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
}

/// A storage pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoragePool {
    pub name: String,
    pub driver: String,
    #[serde(flatten)]
    pub put: StoragePoolPut,
    pub used_by: Vec<String>,
    /// `Created`, or `Unavailable` when it could not be mounted.
    pub status: String,
    pub locations: Vec<String>,
}

/// `POST /1.0/storage-pools`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoragePoolsPost {
    pub name: String,
    pub driver: String,
    #[serde(flatten)]
    pub put: StoragePoolPut,
}

/// Used and total of one resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUsage {
    pub used: u64,
    pub total: u64,
}

/// `GET /1.0/storage-pools/<pool>/resources`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoragePoolResources {
    pub space: ResourceUsage,
    pub inodes: ResourceUsage,
}

/// The writable part of a volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumePut {
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
    /// `PUT` only: replace the volume's content with this snapshot's (`lxc storage volume
    /// restore`); every other field is ignored then.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub restore: String,
}

/// A volume of a pool: an instance's (`container`), an image's (`image`, named by its
/// fingerprint) or a custom one (`custom`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageVolume {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub put: StorageVolumePut,
    pub content_type: String,
    pub location: String,
    pub used_by: Vec<String>,
    pub created_at: String,
}

/// Where a new volume's content comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeSource {
    /// `copy`, or empty for an empty volume.
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub kind: String,
    /// The source volume, `vol` or `vol/snapshot`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// The source pool (this one if empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub pool: String,
    /// Copy the volume without its snapshots.
    #[serde(default, deserialize_with = "null_as_default")]
    pub volume_only: bool,
}

/// `POST /1.0/storage-pools/<pool>/volumes[/custom]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumesPost {
    pub name: String,
    /// `custom` (the only type made by hand), or empty.
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub content_type: String,
    #[serde(flatten)]
    pub put: StorageVolumePut,
    #[serde(default, deserialize_with = "null_as_default")]
    pub source: StorageVolumeSource,
}

/// `POST /1.0/storage-pools/<pool>/volumes/custom/<name>`: a rename, or a move to `pool`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumePost {
    /// The new name (the same if empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// The pool to move to (the same if empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub pool: String,
}

/// A snapshot of a custom volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeSnapshot {
    pub name: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
    pub content_type: String,
    pub expires_at: String,
}

/// `POST .../volumes/custom/<name>/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeSnapshotsPost {
    /// The snapshot's name (`snap<N>` if empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
}

/// `POST .../volumes/custom/<name>/snapshots/<snap>`: a rename (`migration` is a move to
/// another server, which hutch has not).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageVolumeSnapshotPost {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub migration: bool,
}

/// Bytes a volume uses and may use (`total` is -1 without a limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageVolumeUsage {
    pub used: u64,
    pub total: i64,
}

/// `GET .../volumes/<type>/<name>/state`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageVolumeState {
    pub usage: StorageVolumeUsage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_take_lxd_bodies_and_refuse_a_bad_config() {
        let post: StorageVolumesPost = serde_json::from_str(
            r#"{"name":"v2","type":"custom","config":null,"content_type":"filesystem",
                "source":{"type":"copy","name":"v1","pool":"","volume_only":true,"mode":"pull"}}"#,
        )
        .unwrap();
        assert_eq!(post.source.kind, "copy");
        assert!(post.source.volume_only && post.put.config.is_empty());
        let bad = serde_json::from_str::<StorageVolumesPost>(r#"{"name":"v","config":{"size":5}}"#);
        assert!(bad.is_err(), "a number is not a config value");
        let pool: StoragePoolsPost =
            serde_json::from_str(r#"{"name":"p","driver":"dir","config":{"source":"/x"}}"#)
                .unwrap();
        assert_eq!(pool.put.config["source"], "/x");
    }

    #[test]
    fn objects_have_lxd_keys() {
        let v = StorageVolume {
            name: "v".into(),
            kind: "custom".into(),
            put: StorageVolumePut::default(),
            content_type: "filesystem".into(),
            location: "none".into(),
            used_by: vec![],
            created_at: String::new(),
        };
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["type"], "custom");
        assert!(json["config"].is_object() && json["description"] == "");
    }
}
