//! The client's own config file: `$HUTCH_CONF/config.yml`, else
//! `~/.config/hutch/config.yml` (lxc keeps its own in `~/.config/lxc/config.yml`), in lxc's
//! shape: `default-remote`, `remotes` and `aliases`. Other keys in it are kept as they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

/// The public image server of linuxcontainers.org, lxc's `images:`.
pub const IMAGES_URL: &str = "https://images.linuxcontainers.org";

/// The public registry of Docker Hub, hutch's built-in `docker:` (an OCI registry).
pub const DOCKER_URL: &str = "https://docker.io";

/// One remote as lxc 5.0 stores it (its YAML keys, in its order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    #[serde(default)]
    pub addr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    /// `simplestreams`, `oci` (a registry), or `lxd` (also when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default)]
    pub public: bool,
    /// Built in and unchangeable (`local`, `ubuntu`, `ubuntu-daily`, `docker`); never
    /// written.
    #[serde(skip)]
    pub is_static: bool,
}

impl Remote {
    fn streams(addr: &str, is_static: bool) -> Self {
        Remote {
            addr: addr.into(),
            protocol: "simplestreams".into(),
            public: true,
            is_static,
            ..Remote::default()
        }
    }

    /// A unix-socket remote (`unix://` is hutchd's own socket).
    pub fn is_unix(&self) -> bool {
        self.addr.starts_with("unix:")
    }

    pub fn is_simplestreams(&self) -> bool {
        self.protocol == "simplestreams"
    }

    /// An OCI registry (protocol `oci`).
    pub fn is_oci(&self) -> bool {
        self.protocol == "oci"
    }
}

/// The remotes lxc 5.0.2 always has, whatever the file says.
fn static_remotes() -> BTreeMap<String, Remote> {
    let mut m = BTreeMap::new();
    m.insert(
        "local".to_string(),
        Remote {
            addr: "unix://".into(),
            is_static: true,
            ..Remote::default()
        },
    );
    m.insert(
        "ubuntu".to_string(),
        Remote::streams("https://cloud-images.ubuntu.com/releases", true),
    );
    m.insert(
        "ubuntu-daily".to_string(),
        Remote::streams("https://cloud-images.ubuntu.com/daily", true),
    );
    m.insert(
        "docker".to_string(),
        Remote {
            addr: DOCKER_URL.into(),
            protocol: "oci".into(),
            public: true,
            is_static: true,
            ..Remote::default()
        },
    );
    m
}

/// The remotes of a new config: `images` (removable) and `local`.
fn default_remotes() -> BTreeMap<String, Remote> {
    let mut m = BTreeMap::new();
    m.insert("images".to_string(), Remote::streams(IMAGES_URL, false));
    m.insert(
        "local".to_string(),
        Remote {
            addr: "unix://".into(),
            ..Remote::default()
        },
    );
    m
}

/// The whole client config, loaded from one file.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub default_remote: String,
    /// Every remote, the static ones included.
    pub remotes: BTreeMap<String, Remote>,
    pub aliases: BTreeMap<String, String>,
    /// The file as read, so that keys hutch does not know survive a save.
    all: Mapping,
    path: PathBuf,
}

/// The config file's path.
pub fn path() -> PathBuf {
    if let Some(dir) = std::env::var_os("HUTCH_CONF").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("config.yml");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".config/hutch/config.yml")
}

/// The whole file at `p` (empty when there is none).
fn load_all(p: &Path) -> Result<Mapping> {
    match std::fs::read_to_string(p) {
        Ok(text) if text.trim().is_empty() => Ok(Mapping::new()),
        Ok(text) => serde_yaml::from_str(&text).with_context(|| format!("read {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Mapping::new()),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    }
}

impl ClientConfig {
    /// The user's config (defaults when there is no file).
    pub fn load() -> Result<Self> {
        Self::load_from(&path())
    }

    /// The config at `p`. As lxc: the static remotes always replace the file's, and private
    /// LXD remotes without an auth type use `tls`. Unlike lxc, a file without `remotes`
    /// (hutch wrote only `aliases` before it had remotes) gets the default ones.
    pub fn load_from(p: &Path) -> Result<Self> {
        let all = load_all(p)?;
        let default_remote = match all.get("default-remote") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => "local".to_string(),
        };
        let mut remotes = match all.get("remotes") {
            None | Some(Value::Null) => default_remotes(),
            Some(v) => serde_yaml::from_value::<BTreeMap<String, Remote>>(v.clone())
                .with_context(|| format!("read {}: remotes", p.display()))?,
        };
        for r in remotes.values_mut() {
            if !r.public && r.auth_type.is_empty() {
                r.auth_type = "tls".into();
            }
        }
        remotes.extend(static_remotes());
        let mut aliases = BTreeMap::new();
        if let Some(Value::Mapping(m)) = all.get("aliases") {
            for (k, v) in m {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    aliases.insert(k.to_string(), v.to_string());
                }
            }
        }
        let default_remote = std::env::var("HUTCH_REMOTE")
            .ok()
            .filter(|r| !r.is_empty())
            .unwrap_or(default_remote);
        Ok(ClientConfig {
            default_remote,
            remotes,
            aliases,
            all,
            path: p.to_path_buf(),
        })
    }

    /// Writes the config back, as lxc does: static remotes other than `local` left out;
    /// to a temporary file renamed into place so a crash never leaves half a file.
    pub fn save(&self) -> Result<()> {
        let mut all = self.all.clone();
        all.insert(
            Value::String("default-remote".into()),
            Value::String(self.default_remote.clone()),
        );
        let mut remotes = Mapping::new();
        for (name, r) in &self.remotes {
            if r.is_static && name != "local" {
                continue;
            }
            let mut r = r.clone();
            if name == "local" {
                // The static `local` has no auth type; lxc writes it so.
                r.auth_type.clear();
            }
            remotes.insert(Value::String(name.clone()), serde_yaml::to_value(&r)?);
        }
        all.insert(Value::String("remotes".into()), Value::Mapping(remotes));
        let mut aliases = Mapping::new();
        for (k, v) in &self.aliases {
            aliases.insert(Value::String(k.clone()), Value::String(v.clone()));
        }
        all.insert(Value::String("aliases".into()), Value::Mapping(aliases));
        let p = &self.path;
        let dir = p.parent().context("config path has no directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let tmp = dir.join(".config.yml.tmp");
        std::fs::write(&tmp, serde_yaml::to_string(&all)?)
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, p).with_context(|| format!("write {}", p.display()))?;
        Ok(())
    }

    /// Splits `REMOTE:NAME` as lxc's ParseRemote does: no colon means the default remote;
    /// a snapshot name with a colon (`c1/snap:1`) is not a remote.
    pub fn parse_remote(&self, raw: &str) -> Result<(String, String)> {
        let Some((remote, rest)) = raw.split_once(':') else {
            return Ok((self.default_remote.clone(), raw.to_string()));
        };
        if !self.remotes.contains_key(remote) {
            if raw.contains('/') && remote.contains('/') {
                return Ok((self.default_remote.clone(), raw.to_string()));
            }
            bail!("The remote \"{remote}\" doesn't exist");
        }
        Ok((remote.to_string(), rest.to_string()))
    }

    /// The remote called `name`.
    pub fn remote(&self, name: &str) -> Result<&Remote> {
        match self.remotes.get(name) {
            Some(r) => Ok(r),
            None => bail!("The remote \"{name}\" doesn't exist"),
        }
    }
}

/// The user's aliases, name to command line.
pub fn aliases() -> Result<BTreeMap<String, String>> {
    Ok(ClientConfig::load()?.aliases)
}

/// Replaces the aliases, keeping the rest of the file.
pub fn save_aliases(aliases: &BTreeMap<String, String>) -> Result<()> {
    save_aliases_in(&path(), aliases)
}

fn save_aliases_in(p: &Path, aliases: &BTreeMap<String, String>) -> Result<()> {
    let mut conf = ClientConfig::load_from(p)?;
    conf.aliases = aliases.clone();
    conf.save()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases_in(p: &Path) -> Result<BTreeMap<String, String>> {
        Ok(ClientConfig::load_from(p)?.aliases)
    }

    #[test]
    fn aliases_round_trip_and_other_keys_stay() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/config.yml");
        assert!(aliases_in(&p).unwrap().is_empty());
        let mut a = BTreeMap::new();
        a.insert("ll".to_string(), "list -c ns".to_string());
        save_aliases_in(&p, &a).unwrap();
        assert_eq!(aliases_in(&p).unwrap(), a);
        std::fs::write(&p, "default-remote: local\naliases:\n  x: version\n").unwrap();
        save_aliases_in(&p, &a).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("default-remote: local"), "{text}");
        assert_eq!(aliases_in(&p).unwrap(), a);
        std::fs::write(&p, "aliases: [not, a, map").unwrap();
        assert!(aliases_in(&p).is_err());
    }

    #[test]
    fn a_new_config_is_written_as_lxc_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yml");
        let conf = ClientConfig::load_from(&p).unwrap();
        assert_eq!(conf.default_remote, "local");
        assert_eq!(
            conf.remotes.keys().collect::<Vec<_>>(),
            ["docker", "images", "local", "ubuntu", "ubuntu-daily"]
        );
        conf.save().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "default-remote: local\nremotes:\n  images:\n    addr: https://images.linuxcontainers.org\n    protocol: simplestreams\n    public: true\n  local:\n    addr: unix://\n    public: false\naliases: {}\n"
        );
    }

    #[test]
    fn remotes_round_trip_keep_unknown_keys_and_static_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.yml");
        std::fs::write(
            &p,
            "default-remote: mine\nremotes:\n  mine:\n    addr: https://127.0.0.1:8443\n    protocol: simplestreams\n    public: true\n  lxd1:\n    addr: https://10.0.0.1:8443\n  ubuntu:\n    addr: https://evil.example\n    protocol: simplestreams\n    public: true\n  local:\n    addr: unix://\n    public: false\nextra: 1\n",
        )
        .unwrap();
        let conf = ClientConfig::load_from(&p).unwrap();
        assert_eq!(conf.default_remote, "mine");
        assert!(!conf.remotes.contains_key("images"));
        assert_eq!(
            conf.remotes["ubuntu"].addr,
            "https://cloud-images.ubuntu.com/releases"
        );
        assert_eq!(conf.remotes["lxd1"].auth_type, "tls");
        conf.save().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("extra: 1"), "{text}");
        assert!(!text.contains("ubuntu"), "{text}");
        assert!(text.contains("auth_type: tls"), "{text}");
        let again = ClientConfig::load_from(&p).unwrap();
        assert_eq!(again.remotes, conf.remotes);
    }

    #[test]
    fn remote_prefixes_parse_as_lxc_parses_them() {
        let dir = tempfile::tempdir().unwrap();
        let conf = ClientConfig::load_from(&dir.path().join("config.yml")).unwrap();
        let p = |s: &str| conf.parse_remote(s).map_err(|e| e.to_string());
        assert_eq!(
            p("images:debian/12"),
            Ok(("images".into(), "debian/12".into()))
        );
        assert_eq!(p("images:"), Ok(("images".into(), "".into())));
        assert_eq!(p("busybox"), Ok(("local".into(), "busybox".into())));
        assert_eq!(p("local:c1"), Ok(("local".into(), "c1".into())));
        assert_eq!(p("c1/snap:1"), Ok(("local".into(), "c1/snap:1".into())));
        assert_eq!(
            p("nope:x"),
            Err("The remote \"nope\" doesn't exist".to_string())
        );
        assert_eq!(
            conf.remote("nope").map_err(|e| e.to_string()).err(),
            Some("The remote \"nope\" doesn't exist".to_string())
        );
    }
}
