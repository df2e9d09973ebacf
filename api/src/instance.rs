//! Instances: the object, its writable part, creation, state, and exec requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::profile::Devices;

/// The writable part of an instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstancePut {
    #[serde(default)]
    pub architecture: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub devices: Devices,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub profiles: Option<Vec<String>>,
    #[serde(default)]
    pub stateful: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub restore: String,
}

/// Treats JSON `null` like a missing field.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An instance as `GET /1.0/instances/<name>` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub architecture: String,
    pub config: BTreeMap<String, String>,
    pub devices: Devices,
    pub ephemeral: bool,
    pub profiles: Vec<String>,
    pub stateful: bool,
    pub description: String,
    pub created_at: String,
    pub last_used_at: String,
    pub expanded_config: BTreeMap<String, String>,
    pub expanded_devices: Devices,
    pub name: String,
    pub status: String,
    pub status_code: u16,
    pub location: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub project: String,
}

/// `source` of `POST /1.0/instances`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSource {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub alias: String,
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub server: String,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub source: String,
    /// Copies: leave the source's snapshots behind.
    #[serde(default)]
    pub instance_only: bool,
    /// The older name of `instance_only`, which `lxc` still sends beside it.
    #[serde(default)]
    pub container_only: bool,
    /// Image pulls from an LXD-protocol server: its certificate (PEM), pinned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate: String,
    /// Image pulls: the one-time secret of an image that is not public.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret: String,
}

/// `POST /1.0/instances`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstancesPost {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(flatten)]
    pub put: InstancePut,
    #[serde(default)]
    pub source: InstanceSource,
}

/// `POST /1.0/instances/<name>`: rename.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstancePost {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub migration: bool,
    /// Move the instance's volumes to this pool (LXD's `instance_pool_move`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub pool: String,
}

/// `POST /1.0/instances/<name>/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSnapshotsPost {
    /// Empty: the next name from `snapshots.pattern`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub stateful: bool,
    /// RFC 3339; empty or null: `snapshots.expiry` applies.
    #[serde(default, deserialize_with = "null_as_default")]
    pub expires_at: String,
}

/// `PUT`/`PATCH /1.0/instances/<name>/snapshots/<snapshot>`: the one writable field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSnapshotPut {
    /// RFC 3339; the zero time (`0001-01-01T00:00:00Z`), empty or null: never.
    #[serde(default, deserialize_with = "null_as_default")]
    pub expires_at: String,
}

/// `POST /1.0/instances/<name>/snapshots/<snapshot>`: rename.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSnapshotPost {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub migration: bool,
}

/// `PUT /1.0/instances/<name>/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatePut {
    pub action: String,
    #[serde(default = "minus_one")]
    pub timeout: i64,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub stateful: bool,
}

fn minus_one() -> i64 {
    -1
}

/// `GET /1.0/instances/<name>/state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    pub status: String,
    pub status_code: u16,
    pub pid: i64,
    pub processes: i64,
    pub cpu: InstanceStateCpu,
    pub memory: InstanceStateMemory,
    pub disk: BTreeMap<String, serde_json::Value>,
    pub network: Option<BTreeMap<String, serde_json::Value>>,
    /// hutch's own: what `/proc/meminfo`, `/proc/cpuinfo`, `/proc/stat`, `/proc/uptime` and
    /// `/sys/devices/system/cpu` show inside a running container (so `free`, `top`,
    /// `uptime`, `nproc`): [`RESOURCE_VIEW_LXCFS`] (its own limits, from lxcfs) or
    /// [`RESOURCE_VIEW_HOST`] (the host's: lxcfs was not running when it started).
    /// Absent while stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_view: Option<String>,
}

/// [`InstanceState::resource_view`] of a container that sees its limits through lxcfs.
pub const RESOURCE_VIEW_LXCFS: &str = "lxcfs";
/// [`InstanceState::resource_view`] of a container that sees the host's totals.
pub const RESOURCE_VIEW_HOST: &str = "host";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStateCpu {
    pub usage: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceStateMemory {
    pub usage: i64,
    pub usage_peak: i64,
    pub swap_usage: i64,
    pub swap_usage_peak: i64,
}

/// `POST /1.0/instances/<name>/exec`. pylxd sends nulls for user, group and cwd.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceExecPost {
    pub command: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub environment: BTreeMap<String, String>,
    #[serde(rename = "wait-for-websocket", default)]
    pub wait_for_websocket: bool,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub width: u16,
    #[serde(default)]
    pub height: u16,
    #[serde(rename = "record-output", default)]
    pub record_output: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub group: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub cwd: String,
}

/// A control-socket message of exec and console: resize or signal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecControl {
    pub command: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub args: BTreeMap<String, String>,
    #[serde(default)]
    pub signal: i32,
}

/// `POST /1.0/instances/<name>/console`: the console type (`console`, the text console,
/// when empty) and the terminal's size (unset when 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceConsolePost {
    #[serde(default, deserialize_with = "null_as_default")]
    pub width: u16,
    #[serde(default, deserialize_with = "null_as_default")]
    pub height: u16,
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pylxd_nulls_are_accepted() {
        let req: InstanceExecPost = serde_json::from_str(r#"{"command":["ls"],"environment":null,"wait-for-websocket":true,"interactive":false,"user":null,"group":null,"cwd":null}"#).unwrap();
        assert_eq!((req.user, req.group, req.cwd.as_str()), (0, 0, ""));
        let put: InstancePut =
            serde_json::from_str(r#"{"config":null,"profiles":null,"restore":"snap0"}"#).unwrap();
        assert!(put.config.is_empty() && put.profiles.is_none());
    }

    #[test]
    fn create_requests_parse_as_lxc_sends_them() {
        let body = r#"{"name":"c1","type":"container","profiles":null,"config":{},"devices":{},"ephemeral":false,
            "source":{"type":"image","alias":"bb","certificate":"","allow_inconsistent":false}}"#;
        let req: InstancesPost = serde_json::from_str(body).unwrap();
        assert_eq!(req.name, "c1");
        assert_eq!(req.source.kind, "image");
        assert_eq!(req.source.alias, "bb");
        assert_eq!(req.put.profiles, None);
    }

    #[test]
    fn state_put_defaults_timeout() {
        let s: InstanceStatePut = serde_json::from_str(r#"{"action":"stop"}"#).unwrap();
        assert_eq!((s.timeout, s.force), (-1, false));
    }
}
