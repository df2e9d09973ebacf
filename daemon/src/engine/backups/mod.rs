//! Stored instance backups (`/1.0/instances/<n>/backups`), as LXD keeps them: create
//! (read-only copies of the instance's volumes where they are instant, on btrfs and zfs,
//! and its `backup.yaml` captured), list, rename, delete, expiry, and the export stream
//! made from them on each download.
//!
//! A backup's volumes sit on the instance's pool under `backups/<instance>/<backup>/`:
//! `container` and `snapshots/<snap>` (on dir the directory stays empty: see
//! [`captures_volumes`]). Its row carries a state (`creating`, `ready`,
//! `deleting`) so that the start-up reconciliation removes what a crash left half-made.

mod create;
mod delete;
mod export;

use std::path::{Path, PathBuf};

use hutch_api::backup::InstanceBackup;
use serde_json::Value;

pub(crate) use delete::{
    reconcile_backups, remove_expired_backups, remove_instance_backups, rename_instance_backups,
};

use super::Engine;
use crate::daemon::Daemon;
use crate::db::backups::BackupRow;
use crate::error::{DaemonError, Result};

/// The pool-relative directory of a backup's volumes.
pub fn backup_dir(instance: &str, backup: &str) -> PathBuf {
    Path::new("backups").join(instance).join(backup)
}

/// The captured copy of the instance's volume.
pub fn backup_container_vol(instance: &str, backup: &str) -> PathBuf {
    backup_dir(instance, backup).join("container")
}

/// The captured copy of one of its snapshots.
pub fn backup_snapshot_vol(instance: &str, backup: &str, snap: &str) -> PathBuf {
    backup_dir(instance, backup).join("snapshots").join(snap)
}

/// Whether a backup on `pool` holds copies of the volumes, made when it is created: only
/// where a copy costs nothing whatever the size (btrfs, zfs). Elsewhere (dir) a copy would
/// need the container's size again on the pool, so the backup reads the instance's own
/// volume and snapshots when it is exported, as LXD's dir driver reads them when it writes
/// its tarball; its contents are then those of the export's time.
pub fn captures_volumes(pool: &dyn hutch_storage::StorageDriver) -> bool {
    pool.info().instant_clone
}

/// A backup as LXD shows it.
pub fn backup_object(b: &BackupRow) -> InstanceBackup {
    InstanceBackup {
        name: b.name.clone(),
        created_at: b.created_at.clone(),
        expires_at: b.expires_at.clone(),
        instance_only: b.instance_only,
        container_only: b.instance_only,
        optimized_storage: b.optimized_storage,
    }
}

/// Backup names are path segments (LXD refuses a `/`).
pub fn validate_backup_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.len() > 255 {
        return Err(DaemonError::BadRequest(format!(
            "Invalid backup name {name:?}"
        )));
    }
    Ok(())
}

/// LXD's default name: `backup<N>`, one above the highest such number taken.
pub fn next_backup_name(taken: &[String]) -> String {
    let next = taken
        .iter()
        .filter_map(|n| n.strip_prefix("backup")?.parse::<u64>().ok())
        .max()
        .map_or(0, |n| n + 1);
    format!("backup{next}")
}

/// The operation resources of work on a backup; `backups` renders as
/// `/1.0/backups/<name>`, the shape `lxc export` trims to find the name.
pub fn backup_resources(
    instance: &str,
    backup: &str,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut r = crate::operations::instance_resources(instance);
    r.insert("backups".into(), vec![format!("/1.0/backups/{backup}")]);
    r
}

impl Engine {
    /// The ready backups of an instance: URLs, or objects when `recursion` > 0.
    pub fn list_backups(&self, name: &str, recursion: u8) -> Result<Vec<Value>> {
        self.d.db.instance_or_404(name)?;
        Ok(self
            .d
            .db
            .backups(name)?
            .iter()
            .filter(|b| b.state == "ready")
            .map(|b| {
                if recursion > 0 {
                    serde_json::to_value(backup_object(b)).unwrap_or(Value::Null)
                } else {
                    Value::String(format!("/1.0/instances/{name}/backups/{}", b.name))
                }
            })
            .collect())
    }

    /// One ready backup.
    pub fn backup(&self, name: &str, backup: &str) -> Result<InstanceBackup> {
        Ok(backup_object(&ready_backup(&self.d, name, backup)?))
    }
}

/// The row of a ready backup of an existing instance; 404 otherwise.
fn ready_backup(d: &Daemon, name: &str, backup: &str) -> Result<BackupRow> {
    d.db.instance_or_404(name)?;
    let row = d.db.backup(name, backup)?;
    if row.state != "ready" {
        return Err(DaemonError::NotFound("Instance backup not found".into()));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_count_up_from_the_highest() {
        assert_eq!(next_backup_name(&[]), "backup0");
        let taken = ["backup0", "backup7", "mine", "backupx"].map(String::from);
        assert_eq!(next_backup_name(&taken), "backup8");
    }

    #[test]
    fn names_with_a_slash_are_refused() {
        assert!(validate_backup_name("a/b").is_err());
        assert!(validate_backup_name("").is_err());
        assert!(validate_backup_name("b0").is_ok());
    }

    #[test]
    fn resources_render_as_lxc_expects() {
        let r = backup_resources("c1", "b0");
        assert_eq!(r["backups"], ["/1.0/backups/b0"]);
        assert_eq!(r["instances"], ["/1.0/instances/c1"]);
    }
}
