//! `GET /1.0`: what the server is and what it implements; `PUT/PATCH /1.0`: its config
//! (the keys are in `server_config`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// API extensions hutch really implements, in LXD's order of names. Clients check for them.
/// `projects` is the default project alone (read-only, with `used_by`); `warnings` lists
/// what the daemon records, which today is nothing.
pub const API_EXTENSIONS: &[&str] = &[
    "certificate_update",
    "clustering",
    "clustering_join_token",
    "clustering_evacuation",
    "cluster_internal_copy",
    "storage",
    "container_only_migration",
    "container_push",
    "container_push_target",
    "container_incremental_copy",
    "snapshot_expiry_creation",
    "snapshot_expiry",
    "file_delete",
    "file_append",
    "network",
    "network_leases",
    "network_state",
    "instance_nic_network",
    "proxy",
    "instance_pool_move",
    "storage_volume_state",
    "storage_api_volume_snapshots",
    "storage_api_local_volume_handling",
    "storage_api_volume_rename",
    "directory_manipulation",
    "container_exec_recording",
    "container_exec_user_group_cwd",
    "api_filtering",
    "instances",
    "container_edit_metadata",
    "instance_get_full",
    "container_full",
    "file_symlinks",
    "image_create_aliases",
    "image_compression_algorithm",
    "resources",
    "resources_v2",
    "console",
    "projects",
    "certificate_project",
    "warnings",
    "operation_wait",
    "image_force_refresh",
    "certificate_token",
    "remote_token_expiry",
    "container_backup",
    "backup_compression",
    "backup_compression_algorithm",
    "container_backup_override_pool",
    "backup_override_name",
    "metrics",
    "metrics_cpu_seconds",
    // Incus's: `boot.autorestart`.
    "instance_auto_restart",
];

/// The writable part of the server: its config. `null` values unset keys; a write-only key
/// given as `true` (what `GET` shows) keeps its value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerPut {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub config: BTreeMap<String, serde_json::Value>,
}

/// `"config": null`, as Go clients send an unset map, reads as an empty map.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, serde_json::Value>, D::Error> {
    Ok(Option::deserialize(d)?.unwrap_or_default())
}

/// What `GET /1.0` shows a caller the server does not trust (LXD's `ServerUntrusted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerUntrusted {
    pub api_extensions: Vec<String>,
    pub api_status: String,
    pub api_version: String,
    pub auth: String,
    pub public: bool,
    pub auth_methods: Vec<String>,
}

impl ServerUntrusted {
    pub fn new() -> Self {
        ServerUntrusted {
            api_extensions: API_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            api_status: "stable".into(),
            api_version: "1.0".into(),
            auth: "untrusted".into(),
            public: false,
            auth_methods: vec!["tls".into()],
        }
    }
}

impl Default for ServerUntrusted {
    fn default() -> Self {
        Self::new()
    }
}

/// Server info.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub api_extensions: Vec<String>,
    pub api_status: String,
    pub api_version: String,
    pub auth: String,
    pub public: bool,
    pub auth_methods: Vec<String>,
    pub config: BTreeMap<String, serde_json::Value>,
    pub environment: ServerEnvironment,
}

/// The `environment` of server info.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEnvironment {
    pub addresses: Vec<String>,
    pub architectures: Vec<String>,
    pub certificate: String,
    pub certificate_fingerprint: String,
    pub driver: String,
    pub driver_version: String,
    pub firewall: String,
    pub kernel: String,
    pub kernel_architecture: String,
    pub kernel_features: BTreeMap<String, String>,
    pub kernel_version: String,
    pub lxc_features: BTreeMap<String, String>,
    pub os_name: String,
    pub os_version: String,
    pub project: String,
    pub server: String,
    pub server_clustered: bool,
    pub server_event_mode: String,
    pub server_name: String,
    pub server_pid: i64,
    pub server_version: String,
    pub storage: String,
    pub storage_version: String,
    pub storage_supported_drivers: Vec<StorageDriverInfo>,
}

/// One entry of `storage_supported_drivers` (capitalised keys, as LXD).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageDriverInfo {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Remote")]
    pub remote: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/api-extensions.md, which says what is advertised and why the rest is not.
    const EXTENSIONS_DOC: &str = include_str!("../../docs/api-extensions.md");

    /// The names in backquotes in `text`.
    fn quoted(text: &str) -> Vec<&str> {
        text.split('`').skip(1).step_by(2).collect()
    }

    /// The doc's section under `## {heading}`, up to the next heading.
    fn section(heading: &str) -> &'static str {
        let start = EXTENSIONS_DOC
            .find(&format!("\n## {heading}\n"))
            .unwrap_or_else(|| panic!("no \"## {heading}\" in docs/api-extensions.md"));
        let body = &EXTENSIONS_DOC[start + heading.len() + 5..];
        &body[..body.find("\n## ").unwrap_or(body.len())]
    }

    #[test]
    fn the_extensions_doc_lists_exactly_what_is_advertised() {
        // The first backquoted word of each list item; the rest of the line is a note.
        let documented: Vec<&str> = section("Advertised")
            .lines()
            .filter_map(|l| l.strip_prefix("- "))
            .flat_map(|item| quoted(item.split(':').next().unwrap_or(item)))
            .collect();
        for ext in API_EXTENSIONS {
            assert!(
                documented.contains(ext),
                "{ext} is advertised but not listed as such in docs/api-extensions.md"
            );
        }
        for ext in &documented {
            assert!(
                API_EXTENSIONS.contains(ext),
                "docs/api-extensions.md lists {ext} as advertised, but it is not"
            );
        }
    }

    #[test]
    fn nothing_the_extensions_doc_calls_unadvertised_is_advertised() {
        // The first column of the table: names, or prefixes ending in `*`.
        let unadvertised: Vec<&str> = section("Not advertised")
            .lines()
            .filter(|l| l.starts_with("| `"))
            .flat_map(|row| quoted(row.split(" | ").next().unwrap_or(row)))
            .collect();
        assert!(unadvertised.len() > 10, "{unadvertised:?}");
        for name in unadvertised {
            let matches = |ext: &&str| match name.strip_suffix('*') {
                Some(prefix) => ext.starts_with(prefix),
                None => *ext == name,
            };
            assert!(
                !API_EXTENSIONS.iter().any(matches),
                "docs/api-extensions.md says {name} is not advertised, but it is"
            );
        }
    }

    #[test]
    fn server_put_takes_null_and_missing_config() {
        for body in [r#"{"config":null}"#, "{}"] {
            let put: ServerPut = serde_json::from_str(body).unwrap();
            assert!(put.config.is_empty(), "{body}");
        }
        let put: ServerPut =
            serde_json::from_str(r#"{"config":{"core.trust_password":true}}"#).unwrap();
        assert_eq!(put.config["core.trust_password"], serde_json::json!(true));
    }
}
