//! Finding the pools without the database: every directory under `storage-pools/`, every
//! loop file `disks/<name>.img`, the database's pools and those the caller names. A pool
//! not in the database is described by the `.hutch-pool.yaml` at its root (mounting its
//! loop file first where it is not mounted), or by the driver and source the caller gave.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hutch_api::storage::StoragePoolsPost;

use super::super::backup_yaml::{PoolDefinition, POOL_FILE};
use super::super::pools::validate_pool_name;
use crate::daemon::Daemon;
use crate::error::{DaemonError, Result};

/// A pool recover looks at.
#[derive(Debug)]
pub struct FoundPool {
    pub def: PoolDefinition,
    /// Its row exists.
    pub in_db: bool,
    /// Where its volumes are (mounted).
    pub root: PathBuf,
    /// Mounted by this recover (a dry run unmounts it again).
    pub mounted_here: bool,
}

/// The names of the pools to look at: those asked for, else every one the state directory
/// and the database know.
pub fn pool_names(d: &Daemon, asked: &[StoragePoolsPost]) -> Result<Vec<String>> {
    if !asked.is_empty() {
        return Ok(asked.iter().map(|p| p.name.clone()).collect());
    }
    let mut names: BTreeSet<String> = d.db.pools()?.into_iter().map(|p| p.name).collect();
    for entry in read_names(&d.dir.join("storage-pools")) {
        names.insert(entry);
    }
    for entry in read_names(&d.dir.join("disks")) {
        if let Some(name) = entry.strip_suffix(".img") {
            names.insert(name.to_string());
        }
    }
    Ok(names.into_iter().collect())
}

fn read_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Reads the definition at a pool's root, checking that it names the pool.
fn read_definition(root: &Path, name: &str) -> Result<Option<PoolDefinition>> {
    let path = root.join(POOL_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DaemonError::io("read", &path, e)),
    };
    let def: PoolDefinition = serde_yaml::from_str(&text)
        .map_err(|e| DaemonError::BadRequest(format!("{}: {e}", path.display())))?;
    if def.name != name {
        return Err(DaemonError::BadRequest(format!(
            "{} names pool {:?}",
            path.display(),
            def.name
        )));
    }
    check_driver(&def.driver)?;
    Ok(Some(def))
}

fn check_driver(driver: &str) -> Result<()> {
    match driver.split(':').next() {
        Some("dir" | "btrfs" | "zfs") => Ok(()),
        _ => Err(DaemonError::BadRequest(format!(
            "unknown storage driver {driver:?}"
        ))),
    }
}

/// The definition a caller gave: `driver` (`dir`, `btrfs`, `zfs`) and `config.source`.
fn given_definition(asked: &StoragePoolsPost) -> Result<PoolDefinition> {
    check_driver(&asked.driver)?;
    let mut config = asked.put.config.clone();
    let source = config.get("source").cloned().unwrap_or_default();
    if source.is_empty() {
        return Err(DaemonError::BadRequest(format!(
            "pool {:?}: a driver needs a source",
            asked.name
        )));
    }
    let driver = if asked.driver == "zfs" {
        // An existing dataset, as `zfs` pools on a user's dataset are recorded.
        format!("zfs:{source}")
    } else {
        asked.driver.clone()
    };
    config.insert("source".into(), source);
    Ok(PoolDefinition {
        name: asked.name.clone(),
        driver,
        description: asked.put.description.clone(),
        config,
    })
}

/// Finds pool `name` (and mounts it if needed) as the database, the caller or the pool
/// itself describes it.
pub fn find_pool(d: &Daemon, name: &str, asked: Option<&StoragePoolsPost>) -> Result<FoundPool> {
    validate_pool_name(name)?;
    if let Some(row) = d.db.pool(name)? {
        let root = d.pool(name)?.root().to_path_buf();
        return Ok(FoundPool {
            def: PoolDefinition::of(&row),
            in_db: true,
            root,
            mounted_here: false,
        });
    }
    let root = d.pool_host.root(name);
    let loop_file = d.dir.join("disks").join(format!("{name}.img"));
    let mounted = crate::layout::is_mount_point(&root);
    let guess = match asked.filter(|a| !a.driver.is_empty()) {
        Some(a) => Some(given_definition(a)?),
        None if mounted => None,
        None if loop_file.exists() => Some(PoolDefinition {
            name: name.to_string(),
            driver: "btrfs".into(),
            description: String::new(),
            config: [("source".to_string(), loop_file.display().to_string())].into(),
        }),
        None => None,
    };
    let mut mounted_here = false;
    if let Some(def) = &guess {
        if !crate::layout::is_mount_point(&root) {
            d.pool_host.open(&def.row().record())?;
            mounted_here = crate::layout::is_mount_point(&root);
        }
    }
    let def = match read_definition(&root, name) {
        Ok(Some(def)) => def,
        Ok(None) => match guess {
            Some(def) => def,
            None if root.join("containers").is_dir() || root.join("custom").is_dir() => {
                // A pool made before pools described themselves: a directory.
                PoolDefinition {
                    name: name.to_string(),
                    driver: "dir".into(),
                    description: String::new(),
                    config: [("source".to_string(), root.display().to_string())].into(),
                }
            }
            None => {
                return Err(DaemonError::BadRequest(format!(
                    "nothing describes pool {name:?}: give --pool {name}=DRIVER:SOURCE"
                )))
            }
        },
        Err(e) => {
            if mounted_here {
                let _ = d
                    .pool_host
                    .unmount(&guess.unwrap_or_default().row().record());
            }
            return Err(e);
        }
    };
    Ok(FoundPool {
        def,
        in_db: false,
        root,
        mounted_here,
    })
}

/// Unmounts what [`find_pool`] mounted (a dry run leaves the host as it was).
pub fn release(d: &Daemon, pool: &FoundPool) {
    if pool.mounted_here {
        if let Err(e) = d.pool_host.unmount(&pool.def.row().record()) {
            tracing::warn!(pool = %pool.def.name, error = %e, "unmount after a dry run");
        }
    }
}

/// The driver a pool's definition names, as users see it (`zfs` for `zfs:<dataset>`).
pub fn base_driver(driver: &str) -> &str {
    driver.split(':').next().unwrap_or(driver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_must_name_its_pool() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_definition(dir.path(), "p").unwrap().is_none());
        std::fs::write(dir.path().join(POOL_FILE), "name: q\ndriver: dir\n").unwrap();
        assert!(read_definition(dir.path(), "p").is_err());
        std::fs::write(dir.path().join(POOL_FILE), "name: p\ndriver: nfs\n").unwrap();
        assert!(read_definition(dir.path(), "p").is_err());
        std::fs::write(dir.path().join(POOL_FILE), "{{{").unwrap();
        assert!(read_definition(dir.path(), "p").is_err());
        std::fs::write(
            dir.path().join(POOL_FILE),
            "name: p\ndriver: btrfs\nconfig:\n  source: /x.img\n",
        )
        .unwrap();
        let def = read_definition(dir.path(), "p").unwrap().unwrap();
        assert_eq!(def.driver, "btrfs");
        assert_eq!(def.config["source"], "/x.img");
    }

    #[test]
    fn a_given_pool_needs_a_known_driver_and_a_source() {
        let mut asked = StoragePoolsPost {
            name: "p".into(),
            driver: "zfs".into(),
            ..Default::default()
        };
        assert!(given_definition(&asked).is_err());
        asked
            .put
            .config
            .insert("source".into(), "tank/hutch".into());
        assert_eq!(given_definition(&asked).unwrap().driver, "zfs:tank/hutch");
        asked.driver = "lvm".into();
        assert!(given_definition(&asked).is_err());
    }
}
