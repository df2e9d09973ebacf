//! The client's own config file: `$HUTCH_CONF/config.yml`, else
//! `~/.config/hutch/config.yml` (lxc keeps its own in `~/.config/lxc/config.yml`). It holds
//! the user's command aliases; other keys in it are kept as they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_yaml::{Mapping, Value};

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

/// The user's aliases, name to command line.
pub fn aliases() -> Result<BTreeMap<String, String>> {
    aliases_in(&path())
}

fn aliases_in(p: &Path) -> Result<BTreeMap<String, String>> {
    let all = load_all(p)?;
    let mut out = BTreeMap::new();
    if let Some(Value::Mapping(m)) = all.get("aliases") {
        for (k, v) in m {
            if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                out.insert(k.to_string(), v.to_string());
            }
        }
    }
    Ok(out)
}

/// Replaces the aliases, keeping the rest of the file; written to a temporary file and
/// renamed so that a crash never leaves half a file.
pub fn save_aliases(aliases: &BTreeMap<String, String>) -> Result<()> {
    save_aliases_in(&path(), aliases)
}

fn save_aliases_in(p: &Path, aliases: &BTreeMap<String, String>) -> Result<()> {
    let mut all = load_all(p)?;
    let mut m = Mapping::new();
    for (k, v) in aliases {
        m.insert(Value::String(k.clone()), Value::String(v.clone()));
    }
    all.insert(Value::String("aliases".into()), Value::Mapping(m));
    let dir = p.parent().context("config path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(".config.yml.tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&all)?)
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, p).with_context(|| format!("write {}", p.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
