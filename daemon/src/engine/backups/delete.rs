//! Deleting and renaming backups, expiry, and what an instance's delete or rename does to
//! its backups; plus the start-up clean-up of backups a crash left half-made.

use std::path::Path;

use hutch_api::backup::InstanceBackupPost;
use serde_json::json;
use time::OffsetDateTime;

use super::{
    backup_container_vol, backup_dir, backup_snapshot_vol, ready_backup, validate_backup_name,
};
use crate::daemon::{AppState, Daemon};
use crate::engine::{blocking, Engine, Work};
use crate::error::{DaemonError, Result};

impl Engine {
    /// Checks the backup exists; the work removes it.
    pub fn delete_backup(&self, name: &str, backup: &str) -> Result<Work> {
        ready_backup(&self.d, name, backup)?;
        let (d, name, backup) = (self.clone(), name.to_string(), backup.to_string());
        Ok(Box::pin(async move {
            let lock = d.instance_lock(&name);
            let _g = lock.lock().await;
            ready_backup(&d, &name, &backup)?;
            let (d2, n2, b2) = (d.clone(), name.clone(), backup.clone());
            blocking(move || remove_backup(&d2, &n2, &b2)).await?;
            d.events.lifecycle(
                "instance-backup-deleted",
                &format!("/1.0/instances/{name}/backups/{backup}"),
                json!({}),
            );
            Ok(())
        }))
    }

    /// Checks a rename; the work does it (the volumes' directory, then the row).
    pub fn rename_backup(&self, name: &str, backup: &str, req: InstanceBackupPost) -> Result<Work> {
        ready_backup(&self.d, name, backup)?;
        validate_backup_name(&req.name)?;
        let (d, name, old, new) = (self.clone(), name.to_string(), backup.to_string(), req.name);
        Ok(Box::pin(async move {
            let lock = d.instance_lock(&name);
            let _g = lock.lock().await;
            let row = ready_backup(&d, &name, &old)?;
            if d.db.backup(&name, &new).is_ok() {
                return Err(DaemonError::Conflict(format!(
                    "Backup {new:?} already exists"
                )));
            }
            let pool = d.pool(&row.pool)?;
            let (from, to) = (backup_dir(&name, &old), backup_dir(&name, &new));
            let p2 = pool.clone();
            let (f2, t2) = (from.clone(), to.clone());
            blocking(move || Ok(p2.rename_volume(&f2, &t2)?)).await?;
            if let Err(e) = d.db.rename_backup(&name, &old, &new) {
                let _ = pool.rename_volume(&to, &from);
                return Err(e);
            }
            d.events.lifecycle(
                "instance-backup-renamed",
                &format!("/1.0/instances/{name}/backups/{new}"),
                json!({"old_name": old}),
            );
            Ok(())
        }))
    }
}

/// Removes a backup: marked `deleting` (so a crash is finished at start), its volumes,
/// their directories, then its row. Safe to run again.
pub(crate) fn remove_backup(d: &Daemon, name: &str, backup: &str) -> Result<()> {
    let row = match d.db.backup(name, backup) {
        Ok(row) => row,
        Err(DaemonError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    d.db.set_backup_state(name, backup, "deleting")?;
    if let Ok(pool) = d.pool(&row.pool) {
        let snaps = pool.path(&backup_dir(name, backup).join("snapshots"));
        // What is on disk, not only what the row names: a create may have stopped midway.
        let on_disk: Vec<String> = std::fs::read_dir(&snaps)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for snap in on_disk {
            pool.delete_volume(&backup_snapshot_vol(name, backup, &snap))?;
        }
        pool.delete_volume(&backup_container_vol(name, backup))?;
        for dir in [
            backup_dir(name, backup).join("snapshots"),
            backup_dir(name, backup),
            Path::new("backups").join(name),
        ] {
            // Only empty directories go; a sibling backup keeps its parent.
            let _ = std::fs::remove_dir(pool.path(&dir));
        }
    }
    d.db.delete_backup(name, backup)
}

/// Every backup of an instance being deleted.
pub(crate) fn remove_instance_backups(d: &Daemon, name: &str) -> Result<()> {
    for b in d.db.backups(name)? {
        remove_backup(d, name, &b.name)?;
    }
    Ok(())
}

/// Moves the backups' volumes of an instance renamed from `old` to `new` (the rows moved
/// with the instance's row). Done only where the old exists and the new does not, so
/// running it again after a crash finishes the job.
pub(crate) fn rename_instance_backups(d: &Daemon, pool: &str, old: &str, new: &str) -> Result<()> {
    let pool = d.pool(pool)?;
    let (from, to) = (
        Path::new("backups").join(old),
        Path::new("backups").join(new),
    );
    if pool.path(&from).exists() && !pool.path(&to).exists() {
        pool.rename_volume(&from, &to)?;
    }
    Ok(())
}

/// Deletes backups whose `expires_at` has passed (the scheduler calls it).
pub(crate) async fn remove_expired_backups(d: &AppState, now: OffsetDateTime) {
    let Ok(rows) = d.db.all_backups() else { return };
    for b in rows {
        if b.state != "ready" || !crate::engine::schedule::expired(&b.expires_at, now) {
            continue;
        }
        let work = d.delete_backup(&b.instance, &b.name);
        match match work {
            Ok(w) => w.await,
            Err(e) => Err(e),
        } {
            Ok(()) => {
                tracing::info!(instance = %b.instance, backup = %b.name, "expired backup deleted")
            }
            Err(e) => {
                tracing::warn!(instance = %b.instance, backup = %b.name, error = %e.chain(), "deleting an expired backup failed")
            }
        }
    }
}

/// At start: removes backups whose create or delete a crash interrupted.
pub(crate) fn reconcile_backups(d: &Daemon) -> Result<()> {
    for b in d.db.all_backups()? {
        if b.state != "ready" {
            tracing::info!(instance = %b.instance, backup = %b.name, state = %b.state, "removing a backup a crash left half-made");
            if let Err(e) = remove_backup(d, &b.instance, &b.name) {
                tracing::error!(backup = %b.name, error = %e.chain(), "remove a half-made backup");
            }
        }
    }
    Ok(())
}
