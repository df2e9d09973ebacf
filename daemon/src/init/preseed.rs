//! LXD's preseed: the YAML `lxd init --preseed` reads (server `config`, `storage_pools`,
//! `networks`, `profiles`), parsed strictly, and the one `--auto` builds from its flags.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::InitError;

/// What `hutchd init` applies: LXD's `initDataNode`. A field hutchd does not know is an
/// error, never ignored: a typo must not leave half a setup silently.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preseed {
    /// Server config keys (`core.https_address`...), merged into the server's.
    #[serde(default, deserialize_with = "string_map")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "seq_or_null")]
    pub networks: Vec<NetworkSeed>,
    #[serde(default, deserialize_with = "seq_or_null")]
    pub storage_pools: Vec<PoolSeed>,
    #[serde(default, deserialize_with = "seq_or_null")]
    pub profiles: Vec<ProfileSeed>,
    /// LXD's projects: only the `default` project exists in hutchd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<serde_yaml::Value>,
    /// LXD's clustering: enable a cluster (`server_name`, `enabled`) or join one
    /// (`cluster_token`), after everything else is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<hutch_api::cluster::ClusterPut>,
}

/// A network to create, or to update when it exists (`POST /1.0/networks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSeed {
    pub name: String,
    #[serde(rename = "type", default, deserialize_with = "string_or_null")]
    pub kind: String,
    #[serde(default, deserialize_with = "string_map")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_or_null")]
    pub description: String,
    /// LXD writes `project: default` in dumps; any other project is refused.
    #[serde(default, deserialize_with = "string_or_null")]
    pub project: String,
}

/// A storage pool to create, or to update when it exists (`POST /1.0/storage-pools`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSeed {
    pub name: String,
    #[serde(default, deserialize_with = "string_or_null")]
    pub driver: String,
    #[serde(default, deserialize_with = "string_map")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_or_null")]
    pub description: String,
}

/// A profile to create, or to update when it exists (`POST /1.0/profiles`): its config
/// keys and devices are merged into the existing ones, device by device, key by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSeed {
    pub name: String,
    #[serde(default, deserialize_with = "string_map")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "devices_map")]
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "string_or_null")]
    pub description: String,
}

impl Preseed {
    /// Parses and checks a preseed; nothing is applied yet.
    pub fn parse(text: &str) -> Result<Preseed, InitError> {
        // An empty document is an empty preseed, as LXD takes it.
        if text.trim().is_empty() {
            return Ok(Preseed::default());
        }
        let seed: Preseed = serde_yaml::from_str(text).map_err(InitError::Parse)?;
        seed.check()?;
        Ok(seed)
    }

    /// What the server checks only later, or not at all: names, duplicates, and the
    /// parts of LXD's preseed hutchd has no use for.
    pub fn check(&self) -> Result<(), InitError> {
        let bad = |m: String| Err(InitError::InvalidPreseed(m));
        if let Some(projects) = self.projects.as_ref().filter(|p| !p.is_null()) {
            let names = projects
                .as_sequence()
                .map(|s| s.iter().map(|p| p.get("name").and_then(|n| n.as_str())));
            let only_default = names.is_some_and(|mut n| n.all(|n| n == Some("default")));
            if !only_default {
                return bad("projects other than \"default\" are not supported by hutchd".into());
            }
        }
        let mut seen = BTreeSet::new();
        for (kind, name) in self
            .networks
            .iter()
            .map(|n| ("network", &n.name))
            .chain(self.storage_pools.iter().map(|p| ("storage pool", &p.name)))
            .chain(self.profiles.iter().map(|p| ("profile", &p.name)))
        {
            if name.is_empty() {
                return bad(format!("a {kind} has no name"));
            }
            if name.contains('/') || name.contains('?') || name.contains('#') {
                return bad(format!("invalid {kind} name {name:?}"));
            }
            if !seen.insert((kind, name)) {
                return bad(format!("{kind} {name:?} is listed twice"));
            }
        }
        for n in &self.networks {
            if !matches!(n.project.as_str(), "" | "default") {
                return bad(format!(
                    "network {:?} is in project {:?}: only \"default\" exists in hutchd",
                    n.name, n.project
                ));
            }
        }
        for (name, dev) in self
            .profiles
            .iter()
            .flat_map(|p| p.devices.iter().map(move |(d, dev)| ((&p.name, d), dev)))
        {
            if dev.is_empty() {
                return bad(format!(
                    "device {:?} of profile {:?} has no options",
                    name.1, name.0
                ));
            }
        }
        Ok(())
    }

    /// Whether there is nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.config.is_empty()
            && self.networks.is_empty()
            && self.storage_pools.is_empty()
            && self.profiles.is_empty()
            && self.cluster.is_none()
    }
}

/// The flags of `hutchd init --auto`, as LXD's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoFlags {
    /// Server keys from `--network-address`/`--network-port` and `--trust-password`.
    pub config: BTreeMap<String, String>,
    /// `--storage-backend`; `None`: btrfs where it works, else dir.
    pub backend: Option<String>,
    /// `--storage-create-loop`: the loop file's size in GiB.
    pub loop_gib: Option<u64>,
    /// `--storage-pool`: the new pool's name with a loop file, else an existing source
    /// (a directory, a btrfs subvolume, a zfs dataset) the pool uses.
    pub pool: Option<String>,
    /// `--network-bridge`: the managed bridge to make (`None`: no network).
    pub bridge: Option<String>,
    /// `--join`: a cluster join token, used once the rest is applied.
    pub join: Option<String>,
}

/// What `--auto` needs to know of the server before it chooses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Current {
    /// Names of the existing storage pools.
    pub pools: Vec<String>,
    /// The default profile's devices (empty when there is no default profile).
    pub default_devices: BTreeMap<String, BTreeMap<String, String>>,
    /// Whether `bridge` exists: `Some(true)` managed by hutchd, `Some(false)` another host
    /// interface, `None` absent.
    pub bridge: Option<bool>,
}

/// Why `--auto` made no network although one was asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Skipped {
    /// A host interface of that name exists and is not hutchd's.
    HostInterface(String),
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::HostInterface(n) => {
                write!(
                    f,
                    "an interface named {n:?} exists already; no network is made"
                )
            }
        }
    }
}

impl AutoFlags {
    /// Refuses the flag combinations LXD refuses, before anything is asked of the server.
    /// `backend` is the backend that will be used (the flag, or the detected one).
    pub fn check(&self, backend: &str) -> Result<(), InitError> {
        if !matches!(backend, "dir" | "btrfs" | "zfs") {
            return Err(InitError::Usage(format!(
                "the requested backend {backend:?} isn't supported by hutchd init (dir, btrfs, zfs)"
            )));
        }
        if backend == "dir" && (self.loop_gib.is_some() || self.pool.is_some()) {
            return Err(InitError::Usage(
                "none of --storage-pool or --storage-create-loop may be used with the \"dir\" backend"
                    .into(),
            ));
        }
        if self.loop_gib == Some(0) {
            return Err(InitError::Usage(
                "--storage-create-loop needs a size of at least 1 (GiB)".into(),
            ));
        }
        Ok(())
    }

    /// LXD's `--auto`: a pool when there is none (the flags say which), the managed bridge
    /// when it is missing, and the default profile's root disk and `eth0` where it has
    /// none. Applied twice, the second run changes nothing.
    pub fn preseed(
        &self,
        backend: &str,
        current: &Current,
    ) -> Result<(Preseed, Vec<Skipped>), InitError> {
        let storage_flags =
            self.backend.is_some() || self.loop_gib.is_some() || self.pool.is_some();
        if !current.pools.is_empty() && storage_flags {
            return Err(InitError::StorageConfigured(current.pools.join(", ")));
        }
        let mut seed = Preseed::default();
        let mut skipped = Vec::new();
        let mut devices = BTreeMap::new();
        if current.pools.is_empty() {
            let mut pool = PoolSeed {
                name: "default".into(),
                driver: backend.to_string(),
                ..Default::default()
            };
            match (self.loop_gib, &self.pool) {
                (Some(gib), name) => {
                    pool.config.insert("size".into(), format!("{gib}GiB"));
                    if let Some(name) = name {
                        pool.name = name.clone();
                    }
                }
                (None, Some(source)) => {
                    pool.config.insert("source".into(), source.clone());
                }
                (None, None) => {}
            }
            if !current.default_devices.contains_key("root") {
                devices.insert(
                    "root".to_string(),
                    device(&[("type", "disk"), ("path", "/"), ("pool", &pool.name)]),
                );
            }
            seed.storage_pools.push(pool);
        }
        if let Some(bridge) = &self.bridge {
            match current.bridge {
                Some(false) => skipped.push(Skipped::HostInterface(bridge.clone())),
                found => {
                    if found.is_none() {
                        seed.networks.push(NetworkSeed {
                            name: bridge.clone(),
                            kind: "bridge".into(),
                            config: [("ipv4.address", "auto"), ("ipv6.address", "none")]
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                            ..Default::default()
                        });
                    }
                    if !current.default_devices.contains_key("eth0") {
                        devices.insert(
                            "eth0".to_string(),
                            device(&[("type", "nic"), ("network", bridge), ("name", "eth0")]),
                        );
                    }
                }
            }
        }
        if !devices.is_empty() {
            seed.profiles.push(ProfileSeed {
                name: "default".into(),
                devices,
                ..Default::default()
            });
        }
        Ok((seed, skipped))
    }
}

fn device(opts: &[(&str, &str)]) -> BTreeMap<String, String> {
    opts.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A YAML scalar as the string the API takes: LXD writes `size: 5` or `ipv4.nat: true`
/// in preseeds and means "5" and "true".
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A map of scalars (absent or null: empty).
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m: Option<BTreeMap<String, Scalar>> = Option::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// Devices: a map of maps of scalars (absent or null: empty).
fn devices_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, D::Error> {
    let m: Option<BTreeMap<String, Option<BTreeMap<String, Scalar>>>> = Option::deserialize(d)?;
    Ok(m.unwrap_or_default()
        .into_iter()
        .map(|(k, dev)| {
            let dev = dev
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            (k, dev)
        })
        .collect())
}

fn string_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?
        .map(|s| s.0)
        .unwrap_or_default())
}

fn seq_or_null<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
config:
  core.https_address: "127.0.0.1:18443"
  images.auto_update_interval: 15
networks:
- name: lan0
  type: bridge
  description: the lab
  config:
    ipv4.address: 10.99.1.1/24
    ipv4.nat: true
    ipv6.address: none
  project: default
storage_pools:
- name: fast
  driver: btrfs
  config:
    size: 5GiB
profiles:
- name: default
  config:
    limits.memory: 256MiB
  devices:
    root:
      path: /
      pool: fast
      type: disk
    eth0:
      type: nic
      network: lan0
      name: eth0
projects: []
"#;

    #[test]
    fn lxd_preseed_parses_with_scalars_as_strings() {
        let seed = Preseed::parse(FULL).unwrap();
        assert_eq!(seed.config["images.auto_update_interval"], "15");
        assert_eq!(seed.networks[0].config["ipv4.nat"], "true");
        assert_eq!(seed.networks[0].kind, "bridge");
        assert_eq!(seed.storage_pools[0].config["size"], "5GiB");
        assert_eq!(seed.profiles[0].devices["root"]["pool"], "fast");
        assert_eq!(seed.profiles[0].devices["eth0"]["network"], "lan0");
        assert!(!seed.is_empty());
    }

    #[test]
    fn empty_and_null_parts_are_empty() {
        assert!(Preseed::parse("").unwrap().is_empty());
        assert!(Preseed::parse("config:\nnetworks:\nprofiles: []\n")
            .unwrap()
            .is_empty());
        let seed = Preseed::parse("profiles:\n- name: p\n  config:\n  devices:\n").unwrap();
        assert_eq!(seed.profiles[0].name, "p");
        assert!(seed.profiles[0].devices.is_empty());
    }

    #[test]
    fn unknown_fields_are_errors_that_name_them() {
        for (text, field) in [
            ("storage_pool:\n- name: x\n", "storage_pool"),
            ("storage_pools:\n- name: x\n  drvier: dir\n", "drvier"),
            ("networks:\n- name: n\n  ipv4: x\n", "ipv4"),
            ("profiles:\n- name: p\n  device: {}\n", "device"),
        ] {
            let err = Preseed::parse(text).unwrap_err();
            let chain = crate::chain(&err);
            assert!(
                chain.starts_with("failed to parse the preseed: "),
                "{chain}"
            );
            assert!(
                chain.contains(&format!("unknown field `{field}`")),
                "{chain}"
            );
            // Below the top level, serde_yaml says where.
            if field != "storage_pool" {
                assert!(chain.contains("line"), "the position is given: {chain}");
            }
        }
    }

    #[test]
    fn values_that_are_not_scalars_are_refused() {
        let err = Preseed::parse("config:\n  core.https_address: [a, b]\n").unwrap_err();
        assert!(
            crate::chain(&err).contains("expected a string, a number or a boolean"),
            "{}",
            crate::chain(&err)
        );
    }

    #[test]
    fn lxds_cluster_section_is_read() {
        let seed = Preseed::parse(
            "cluster:\n  server_name: n2\n  enabled: true\n  cluster_token: abc\n  \
             cluster_certificate_path: \"\"\n",
        )
        .unwrap();
        let c = seed.cluster.unwrap();
        assert_eq!((c.server_name.as_str(), c.enabled), ("n2", true));
        assert_eq!(c.cluster_token, "abc");
    }

    #[test]
    fn what_hutchd_lacks_or_repeats_is_refused() {
        for (text, want) in [
            ("projects:\n- name: web\n", "projects other than"),
            ("networks:\n- name: n\n  project: web\n", "project \"web\""),
            (
                "profiles:\n- name: p\n- name: p\n",
                "profile \"p\" is listed twice",
            ),
            ("storage_pools:\n- driver: dir\n", "missing field `name`"),
            (
                "storage_pools:\n- name: \"\"\n",
                "a storage pool has no name",
            ),
            ("networks:\n- name: a/b\n", "invalid network name"),
            (
                "profiles:\n- name: p\n  devices:\n    d:\n",
                "has no options",
            ),
        ] {
            let err = Preseed::parse(text).unwrap_err();
            assert!(
                crate::chain(&err).contains(want),
                "{text}: {}",
                crate::chain(&err)
            );
        }
        // The same name in two kinds is fine; `projects: [default]` too.
        Preseed::parse("networks:\n- name: x\nprofiles:\n- name: x\nprojects:\n- name: default\n")
            .unwrap();
    }

    fn auto(backend: Option<&str>, bridge: Option<&str>) -> AutoFlags {
        AutoFlags {
            backend: backend.map(String::from),
            bridge: bridge.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn auto_on_a_fresh_server_makes_pool_bridge_and_profile() {
        let (seed, skipped) = auto(None, Some("br9"))
            .preseed("btrfs", &Current::default())
            .unwrap();
        assert!(skipped.is_empty());
        assert_eq!(seed.storage_pools.len(), 1);
        assert_eq!(seed.storage_pools[0].name, "default");
        assert_eq!(seed.storage_pools[0].driver, "btrfs");
        assert!(seed.storage_pools[0].config.is_empty());
        assert_eq!(seed.networks[0].name, "br9");
        assert_eq!(seed.networks[0].config["ipv4.address"], "auto");
        let devs = &seed.profiles[0].devices;
        assert_eq!(devs["root"]["pool"], "default");
        assert_eq!(devs["eth0"]["network"], "br9");
    }

    #[test]
    fn auto_again_changes_nothing_and_keeps_what_the_user_set() {
        let current = Current {
            pools: vec!["default".into()],
            default_devices: [
                (
                    "root".to_string(),
                    device(&[("type", "disk"), ("pool", "mine")]),
                ),
                (
                    "eth0".to_string(),
                    device(&[("type", "nic"), ("network", "other")]),
                ),
            ]
            .into(),
            bridge: Some(true),
        };
        let (seed, _) = auto(None, Some("br9")).preseed("btrfs", &current).unwrap();
        assert!(seed.is_empty(), "{seed:?}");
        // With storage flags, LXD refuses: storage is set up already.
        let err = auto(Some("dir"), None)
            .preseed("dir", &current)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "storage has already been configured (storage pools: default)"
        );
    }

    #[test]
    fn auto_leaves_a_foreign_interface_alone() {
        let current = Current {
            bridge: Some(false),
            ..Default::default()
        };
        let (seed, skipped) = auto(Some("dir"), Some("eth9"))
            .preseed("dir", &current)
            .unwrap();
        assert!(seed.networks.is_empty());
        assert!(!seed.profiles[0].devices.contains_key("eth0"));
        assert_eq!(skipped, vec![Skipped::HostInterface("eth9".into())]);
    }

    #[test]
    fn auto_storage_flags_as_lxd() {
        let loop_named = AutoFlags {
            loop_gib: Some(7),
            pool: Some("big".into()),
            ..Default::default()
        };
        loop_named.check("btrfs").unwrap();
        let (seed, _) = loop_named.preseed("btrfs", &Current::default()).unwrap();
        assert_eq!(seed.storage_pools[0].name, "big");
        assert_eq!(seed.storage_pools[0].config["size"], "7GiB");
        assert_eq!(seed.profiles[0].devices["root"]["pool"], "big");

        let source = AutoFlags {
            pool: Some("tank/hutch".into()),
            ..Default::default()
        };
        let (seed, _) = source.preseed("zfs", &Current::default()).unwrap();
        assert_eq!(seed.storage_pools[0].name, "default");
        assert_eq!(seed.storage_pools[0].config["source"], "tank/hutch");

        for (flags, backend, want) in [
            (
                loop_named.clone(),
                "dir",
                "may be used with the \"dir\" backend",
            ),
            (auto(None, None), "lvm", "isn't supported by hutchd init"),
            (
                AutoFlags {
                    loop_gib: Some(0),
                    ..Default::default()
                },
                "btrfs",
                "at least 1",
            ),
        ] {
            let err = flags.check(backend).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
