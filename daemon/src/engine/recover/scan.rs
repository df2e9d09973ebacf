//! What a found pool holds that the database lacks: each instance volume with the
//! `backup.yaml` that describes it, each custom volume with its file, checked before
//! anything is made. A file is hostile input (a container never writes it, but a copied
//! or damaged pool may hold anything): every name is checked, nothing panics.

use std::collections::BTreeSet;
use std::path::Path;

use hutch_api::recover::{RecoverItem, RecoverStatus};
use hutch_backup::Config;

use super::super::backup_yaml::{volume_file, INSTANCE_FILE};
use super::super::volumes::validate_volume_name;
use super::pools::{base_driver, FoundPool};
use crate::daemon::Daemon;
use crate::error::Result;

/// An instance volume on a pool without a row.
#[derive(Debug)]
pub struct FoundInstance {
    pub name: String,
    /// The parsed `backup.yaml`, when the checks passed.
    pub config: Option<Config>,
    pub snapshots: usize,
    /// Why it cannot be recovered.
    pub refused: Option<String>,
}

/// A custom volume on a pool without a row.
#[derive(Debug)]
pub struct FoundVolume {
    pub name: String,
    /// Its file, when there is one.
    pub config: Option<Config>,
    pub snapshots: usize,
    pub refused: Option<String>,
}

impl FoundInstance {
    pub fn item(&self) -> RecoverItem {
        item(&self.name, self.snapshots, &self.refused)
    }
}

impl FoundVolume {
    pub fn item(&self) -> RecoverItem {
        item(&self.name, self.snapshots, &self.refused)
    }
}

fn item(name: &str, snapshots: usize, refused: &Option<String>) -> RecoverItem {
    RecoverItem {
        name: name.to_string(),
        snapshots,
        status: if refused.is_some() {
            RecoverStatus::Refused
        } else {
            RecoverStatus::Missing
        },
        reason: refused.clone().unwrap_or_default(),
    }
}

/// The names of the entries of `dir` (none starting with `.`: staging copies, temporary
/// files), sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The instance volumes of `pool` that no row owns.
pub fn instances(d: &Daemon, pool: &FoundPool) -> Result<Vec<FoundInstance>> {
    let mut out = Vec::new();
    for name in entries(&pool.root.join("containers")) {
        if let Some(row) = d.db.instance(&name)? {
            if row.pool == pool.def.name {
                continue;
            }
            out.push(FoundInstance {
                name: name.clone(),
                config: None,
                snapshots: 0,
                refused: Some(format!(
                    "an instance named {name:?} exists already (on pool {:?})",
                    row.pool
                )),
            });
            continue;
        }
        out.push(check_instance(pool, &name));
    }
    Ok(out)
}

/// Reads and checks one instance volume's `backup.yaml`.
fn check_instance(pool: &FoundPool, name: &str) -> FoundInstance {
    let on_disk = entries(&pool.root.join("containers-snapshots").join(name));
    let mut found = FoundInstance {
        name: name.to_string(),
        config: None,
        snapshots: on_disk.len(),
        refused: None,
    };
    match read_instance(pool, name, &on_disk) {
        Ok(config) => found.config = Some(config),
        Err(why) => found.refused = Some(why),
    }
    found
}

fn read_instance(pool: &FoundPool, name: &str, on_disk: &[String]) -> Result<Config, String> {
    super::super::validate_name(name).map_err(|e| e.to_string())?;
    let path = pool.root.join("containers").join(name).join(INSTANCE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("no backup.yaml in its volume".into())
        }
        Err(e) => return Err(format!("cannot read its backup.yaml: {e}")),
    };
    let config = Config::from_yaml(&text).map_err(|e| crate::error::chain(&e))?;
    let Some(c) = &config.container else {
        return Err("its backup.yaml describes no instance".into());
    };
    if c.name != name {
        return Err(format!(
            "its backup.yaml names the instance {:?}, not {name:?}",
            c.name
        ));
    }
    check_pool(pool, &config)?;
    let listed: BTreeSet<&str> = config.snapshots.iter().map(|s| s.name.as_str()).collect();
    let present: BTreeSet<&str> = on_disk.iter().map(String::as_str).collect();
    if listed != present {
        let only_disk: Vec<&str> = present.difference(&listed).copied().collect();
        let only_file: Vec<&str> = listed.difference(&present).copied().collect();
        return Err(format!(
            "snapshots differ: on disk only {only_disk:?}, in backup.yaml only {only_file:?}"
        ));
    }
    Ok(config)
}

/// The pool a backup config names must be this one, with the same driver.
fn check_pool(pool: &FoundPool, config: &Config) -> Result<(), String> {
    let Some(p) = &config.pool else {
        return Err("its backup file names no pool".into());
    };
    if p.name != pool.def.name {
        return Err(format!(
            "its backup file names pool {:?}, not {:?}",
            p.name, pool.def.name
        ));
    }
    let driver = base_driver(&pool.def.driver);
    if !p.driver.is_empty() && base_driver(&p.driver) != driver {
        return Err(format!(
            "its backup file names driver {:?}, the pool is {driver:?}",
            p.driver
        ));
    }
    Ok(())
}

/// The custom volumes of `pool` that no row owns.
pub fn volumes(d: &Daemon, pool: &FoundPool) -> Result<Vec<FoundVolume>> {
    let known: BTreeSet<String> = if pool.in_db {
        d.db.volumes(&pool.def.name)?
            .into_iter()
            .map(|v| v.name)
            .collect()
    } else {
        BTreeSet::new()
    };
    let mut out = Vec::new();
    for name in entries(&pool.root.join("custom")) {
        if known.contains(&name) {
            continue;
        }
        let snapshots = entries(&pool.root.join("custom-snapshots").join(&name)).len();
        let (config, refused) = match read_volume(pool, &name) {
            Ok(config) => (config, None),
            Err(why) => (None, Some(why)),
        };
        out.push(FoundVolume {
            name,
            config,
            snapshots,
            refused,
        });
    }
    Ok(out)
}

/// A custom volume's file (none is fine: the volume comes back with an empty config).
fn read_volume(pool: &FoundPool, name: &str) -> Result<Option<Config>, String> {
    validate_volume_name(name).map_err(|e| e.to_string())?;
    let path = volume_file(&pool.root, name);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let config = Config::from_yaml(&text).map_err(|e| crate::error::chain(&e))?;
    let Some(v) = &config.volume else {
        return Err("its backup file describes no volume".into());
    };
    if v.name != name {
        return Err(format!(
            "its backup file names the volume {:?}, not {name:?}",
            v.name
        ));
    }
    check_pool(pool, &config)?;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::backup_yaml::PoolDefinition;

    fn pool(root: &Path) -> FoundPool {
        FoundPool {
            def: PoolDefinition {
                name: "p".into(),
                driver: "btrfs".into(),
                ..Default::default()
            },
            in_db: false,
            root: root.to_path_buf(),
            mounted_here: false,
        }
    }

    fn put(root: &Path, name: &str, yaml: &str, snaps: &[&str]) {
        let vol = root.join("containers").join(name);
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("backup.yaml"), yaml).unwrap();
        for s in snaps {
            std::fs::create_dir_all(root.join("containers-snapshots").join(name).join(s)).unwrap();
        }
    }

    fn refused(root: &Path, name: &str) -> String {
        check_instance(&pool(root), name)
            .refused
            .unwrap_or_default()
    }

    #[test]
    fn hostile_or_mismatched_files_are_refused_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let good =
            "container: {name: c1}\npool: {name: p, driver: btrfs}\nsnapshots: [{name: s0}]\n";
        put(root, "c1", good, &["s0"]);
        assert_eq!(check_instance(&pool(root), "c1").refused, None);
        assert_eq!(check_instance(&pool(root), "c1").snapshots, 1);

        put(root, "c2", "\u{0}garbage: [", &[]);
        assert!(refused(root, "c2").contains("backup.yaml"));
        put(
            root,
            "c3",
            "container: {name: ../c3}\npool: {name: p}\n",
            &[],
        );
        assert!(refused(root, "c3").contains("names the instance"));
        put(
            root,
            "c4",
            "container: {name: c4}\npool: {name: other}\n",
            &[],
        );
        assert!(refused(root, "c4").contains("pool \"other\""));
        put(
            root,
            "c5",
            "container: {name: c5}\npool: {name: p, driver: dir}\n",
            &[],
        );
        assert!(refused(root, "c5").contains("driver"));
        put(
            root,
            "c6",
            "container: {name: c6}\npool: {name: p}\n",
            &["extra"],
        );
        assert!(refused(root, "c6").contains("snapshots differ"));
        put(root, "c7", "pool: {name: p}\n", &[]);
        assert!(refused(root, "c7").contains("no instance"));
        std::fs::create_dir_all(root.join("containers/c8")).unwrap();
        assert!(refused(root, "c8").contains("no backup.yaml"));
        put(
            root,
            "bad_name",
            "container: {name: bad_name}\npool: {name: p}\n",
            &[],
        );
        assert!(!refused(root, "bad_name").is_empty());
    }

    #[test]
    fn volumes_without_a_file_come_back_and_lying_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("custom/v1")).unwrap();
        assert_eq!(read_volume(&pool(root), "v1"), Ok(None));
        std::fs::create_dir_all(root.join("custom-backups")).unwrap();
        std::fs::write(
            volume_file(root, "v1"),
            "volume: {name: v2}\npool: {name: p}\n",
        )
        .unwrap();
        assert!(read_volume(&pool(root), "v1").is_err());
        std::fs::write(
            volume_file(root, "v1"),
            "volume: {name: v1, config: {size: 1GiB}}\npool: {name: p}\n",
        )
        .unwrap();
        let c = read_volume(&pool(root), "v1").unwrap().unwrap();
        assert_eq!(c.volume.unwrap().config["size"], "1GiB");
    }
}
