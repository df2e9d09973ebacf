//! Custom volumes beyond create and delete: copies (a clone within a pool, a copy across
//! pools; snapshots too unless `volume_only`), renames and moves between pools, and config
//! updates. Each step is undone when a later one fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hutch_storage::StorageDriver;

use super::create::copy_volume;
use crate::daemon::{custom_vol, Daemon};
use crate::db::volumes::VolumeRow;
use crate::error::{DaemonError, Result};

/// The directory holding the snapshots of custom volume `name`.
pub fn snapshots_dir(name: &str) -> PathBuf {
    Path::new("custom-snapshots").join(name)
}

/// Names of the snapshots of custom volume `name` on `pool`.
pub fn snapshot_names(pool: &dyn StorageDriver, name: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pool.path(&snapshots_dir(name)))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// A valid custom volume name: it becomes a path component on the pool, so nothing that
/// could climb out of `custom/` (`/`, `..`, a leading `.`) or confuse a shell or a log.
pub fn validate_volume_name(name: &str) -> Result<()> {
    let bad_char = |c: char| c == '/' || c == '\\' || c.is_control() || c.is_whitespace();
    if name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.starts_with('-')
        || name.contains(bad_char)
    {
        return Err(DaemonError::BadRequest(format!(
            "Invalid volume name {name:?}"
        )));
    }
    Ok(())
}

/// Checks a custom volume's config for `pool`; returns its `size` in bytes, if set.
pub fn check_volume_config(
    pool: &dyn StorageDriver,
    config: &BTreeMap<String, String>,
) -> Result<Option<u64>> {
    if let Some(key) = config.keys().find(|k| *k != "size") {
        return Err(DaemonError::BadRequest(format!(
            "invalid value for config key {key:?}: unknown volume config key"
        )));
    }
    let size = match config.get("size").filter(|s| !s.is_empty()) {
        Some(s) => Some(hutch_api::config::parse_memory(s, 0).map_err(|e| {
            DaemonError::BadRequest(format!("invalid value for config key \"size\": {e}"))
        })?),
        None => None,
    };
    if size.is_some() && !pool.info().quotas {
        return Err(DaemonError::BadRequest(format!(
            "{} pools cannot limit the size of a volume",
            pool.info().name
        )));
    }
    Ok(size)
}

/// What a copy is asked to make.
pub struct VolumeCopy {
    /// Source pool and volume, `vol` or `vol/snapshot`.
    pub src_pool: String,
    pub src: String,
    pub dst_pool: String,
    pub dst: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
    pub volume_only: bool,
}

/// Copies a custom volume (or one of its snapshots) to a new custom volume.
pub fn copy_custom_volume(d: &Daemon, c: &VolumeCopy) -> Result<()> {
    let (src_pool, dst_pool, dst) = (c.src_pool.as_str(), c.dst_pool.as_str(), c.dst.as_str());
    validate_volume_name(dst)?;
    let (src_p, dst_p) = (d.pool(src_pool)?, d.pool(dst_pool)?);
    let (src_name, snap) = match c.src.split_once('/') {
        Some((v, s)) => (v, Some(s)),
        None => (c.src.as_str(), None),
    };
    d.db.volume(src_pool, src_name)?;
    let from = match snap {
        Some(s) => snapshots_dir(src_name).join(s),
        None => custom_vol(src_name),
    };
    if !src_p.path(&from).exists() {
        return Err(DaemonError::NotFound(
            "Storage volume snapshot not found".into(),
        ));
    }
    let size = check_volume_config(&*dst_p, &c.config)?;
    d.db.insert_volume(&VolumeRow {
        pool: dst_pool.to_string(),
        name: dst.to_string(),
        description: c.description.clone(),
        config: c.config.clone(),
        created_at: crate::now(),
    })?;
    let snapshots = match snap {
        Some(_) => Vec::new(),
        None if c.volume_only => Vec::new(),
        None => snapshot_names(&*src_p, src_name),
    };
    let to = custom_vol(dst);
    let copied = (|| -> Result<()> {
        copy_volume(&src_p, &from, &dst_p, &to, false)?;
        for s in &snapshots {
            copy_volume(
                &src_p,
                &snapshots_dir(src_name).join(s),
                &dst_p,
                &snapshots_dir(dst).join(s),
                true,
            )?;
        }
        if size.is_some() {
            dst_p.set_quota(&to, size)?;
        }
        Ok(())
    })();
    if let Err(e) = copied {
        let _ = remove_volume_and_snapshots(&*dst_p, dst);
        let _ = d.db.delete_volume(dst_pool, dst);
        return Err(e);
    }
    Ok(())
}

/// Renames custom volume `name` of `pool` to `new_name` on `new_pool` (the same pool: a
/// rename; another: a copy, then the source goes).
pub fn move_custom_volume(
    d: &Daemon,
    pool: &str,
    name: &str,
    new_pool: &str,
    new_name: &str,
) -> Result<()> {
    let row = d.db.volume(pool, name)?;
    validate_volume_name(new_name)?;
    if new_pool != pool {
        copy_custom_volume(
            d,
            &VolumeCopy {
                src_pool: pool.to_string(),
                src: name.to_string(),
                dst_pool: new_pool.to_string(),
                dst: new_name.to_string(),
                description: row.description.clone(),
                config: row.config.clone(),
                volume_only: false,
            },
        )?;
        let p = d.pool(pool)?;
        d.db.delete_volume(pool, name)?;
        return remove_volume_and_snapshots(&*p, name);
    }
    if new_name == name {
        return Ok(());
    }
    let p = d.pool(pool)?;
    d.db.insert_volume(&VolumeRow {
        name: new_name.to_string(),
        ..row
    })?;
    let renamed = rename_volume_and_snapshots(&p, name, new_name);
    if let Err(e) = renamed {
        let _ = d.db.delete_volume(pool, new_name);
        return Err(e);
    }
    d.db.delete_volume(pool, name)
}

/// Renames the volume, then its snapshots' directory as one (as instance renames do: a
/// read-only btrfs snapshot cannot move to another directory by itself); a failure puts
/// the volume back.
fn rename_volume_and_snapshots(p: &Arc<dyn StorageDriver>, from: &str, to: &str) -> Result<()> {
    p.rename_volume(&custom_vol(from), &custom_vol(to))?;
    if p.path(&snapshots_dir(from)).exists() {
        if let Err(e) = p.rename_volume(&snapshots_dir(from), &snapshots_dir(to)) {
            let _ = p.rename_volume(&custom_vol(to), &custom_vol(from));
            return Err(e.into());
        }
    }
    Ok(())
}

/// Removes a custom volume and its snapshots from `p`; what is gone already is fine.
pub fn remove_volume_and_snapshots(p: &dyn StorageDriver, name: &str) -> Result<()> {
    for s in snapshot_names(p, name) {
        p.delete_volume(&snapshots_dir(name).join(s))?;
    }
    let _ = std::fs::remove_dir(p.path(&snapshots_dir(name)));
    Ok(p.delete_volume(&custom_vol(name))?)
}

/// `PUT`/`PATCH`: a new description and config (`size` applied to the volume first).
pub fn update_custom_volume(
    d: &Daemon,
    pool: &str,
    name: &str,
    description: String,
    config: BTreeMap<String, String>,
) -> Result<()> {
    let row = d.db.volume(pool, name)?;
    let p = d.pool(pool)?;
    let size = check_volume_config(&*p, &config)?;
    if size.is_some() || row.config.contains_key("size") {
        p.set_quota(&custom_vol(name), size)?;
    }
    d.db.update_volume(&VolumeRow {
        description,
        config,
        ..row
    })
}
