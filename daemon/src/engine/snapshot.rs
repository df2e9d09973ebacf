//! Instance snapshots: create (consistent: atomic on btrfs, under a freeze elsewhere),
//! delete, rename and restore, each under the instance's lock.

use hutch_api::instance::{InstanceSnapshotPost, InstanceSnapshotPut, InstanceSnapshotsPost};
use hutch_api::operation::StatusCode;
use serde_json::{json, Value};

use super::revert::Revert;
use super::{blocking, Engine, Versioned, Work};
use super::{runtime_status, start_instance, stop_instance};
use crate::daemon::{instance_vol, snapshot_vol, AppState, Daemon};
use crate::db::intents::IntentKind;
use crate::db::snapshots::SnapshotRow;
use crate::error::{DaemonError, Result};

/// The zero time: a snapshot that never expires, as LXD writes it.
const NEVER: &str = "0001-01-01T00:00:00Z";

/// A snapshot as LXD shows it.
pub fn snapshot_object(s: &SnapshotRow) -> Value {
    json!({
        "name": s.name,
        "architecture": s.architecture,
        "config": s.config,
        "devices": s.devices,
        "ephemeral": s.ephemeral,
        "profiles": s.profiles,
        "stateful": false,
        "created_at": s.created_at,
        "last_used_at": "0001-01-01T00:00:00Z",
        "expires_at": s.expires_at,
        "expanded_config": s.config,
        "expanded_devices": s.devices,
        "size": -1,
    })
}

impl Engine {
    /// The snapshots of an instance: URLs, or objects when `recursion` > 0.
    pub fn list_snapshots(&self, name: &str, recursion: u8) -> Result<Vec<Value>> {
        self.d.db.instance_or_404(name)?;
        let snaps = self.d.db.snapshots(name)?;
        Ok(snaps
            .iter()
            .map(|s| {
                if recursion > 0 {
                    snapshot_object(s)
                } else {
                    Value::String(format!("/1.0/instances/{name}/snapshots/{}", s.name))
                }
            })
            .collect())
    }

    /// One snapshot; its ETag covers its expiry (the one writable field).
    pub fn snapshot(&self, name: &str, snap: &str) -> Result<Versioned<Value>> {
        self.d.db.instance_or_404(name)?;
        let s = self.d.db.snapshot(name, snap)?;
        Ok(Versioned {
            object: snapshot_object(&s),
            version: json!([s.expires_at]),
        })
    }

    /// Checks a snapshot request; the work takes it.
    pub fn create_snapshot(&self, name: &str, req: InstanceSnapshotsPost) -> Result<Work> {
        self.d.db.instance_or_404(name)?;
        if req.stateful {
            return Err(DaemonError::BadRequest(
                "Stateful snapshots are not supported".into(),
            ));
        }
        let snap = Some(req.name).filter(|s| !s.is_empty());
        if let Some(s) = &snap {
            validate_snapshot_name(s)?;
            if self.d.db.snapshot(name, s).is_ok() {
                return Err(DaemonError::Conflict(format!(
                    "Snapshot {s:?} already exists"
                )));
            }
        }
        let expires_at = Some(req.expires_at).filter(|e| !e.is_empty());
        if let Some(e) = &expires_at {
            time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                .map_err(|_| DaemonError::BadRequest(format!("Invalid expires_at {e:?}")))?;
        }
        let (e, name) = (self.clone(), name.to_string());
        Ok(Box::pin(async move {
            create_snapshot(e, name, snap, expires_at).await.map(|_| ())
        }))
    }

    /// `PUT`/`PATCH` of a snapshot (`snapshot_expiry`): a new expiry, when `if_match` (the
    /// client's ETag, if any) names the current one; checked now, stored by the work under
    /// the instance's lock. The zero time or empty means never.
    pub fn update_snapshot(
        &self,
        name: &str,
        snap: &str,
        put: InstanceSnapshotPut,
        if_match: Option<String>,
    ) -> Result<Work> {
        self.d.db.instance_or_404(name)?;
        let current = self.d.db.snapshot(name, snap)?;
        super::check_version(if_match.as_deref(), &json!([current.expires_at]))?;
        let expires_at = match put.expires_at.as_str() {
            "" => NEVER.to_string(),
            e => {
                time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| DaemonError::BadRequest(format!("Invalid expires_at {e:?}")))?;
                e.to_string()
            }
        };
        let (e, name, snap) = (self.clone(), name.to_string(), snap.to_string());
        Ok(Box::pin(async move {
            let lock = e.d.instance_lock(&name);
            let _g = lock.lock().await;
            e.d.db.set_snapshot_expiry(&name, &snap, &expires_at)?;
            e.d.events.lifecycle(
                "instance-snapshot-updated",
                &format!("/1.0/instances/{name}/snapshots/{snap}"),
                json!({}),
            );
            Ok(())
        }))
    }

    /// Checks a rename; the work does it.
    pub fn rename_snapshot(
        &self,
        name: &str,
        snap: &str,
        req: InstanceSnapshotPost,
    ) -> Result<Work> {
        self.d.db.instance_or_404(name)?;
        self.d.db.snapshot(name, snap)?;
        if req.migration {
            return Err(DaemonError::BadRequest(
                "Migration is not supported yet".into(),
            ));
        }
        validate_snapshot_name(&req.name)?;
        Ok(Box::pin(rename_snapshot(
            self.clone(),
            name.to_string(),
            snap.to_string(),
            req.name,
        )))
    }

    /// Checks the snapshot exists; the work removes it.
    pub fn delete_snapshot(&self, name: &str, snap: &str) -> Result<Work> {
        self.d.db.instance_or_404(name)?;
        self.d.db.snapshot(name, snap)?;
        Ok(Box::pin(delete_snapshot(
            self.clone(),
            name.to_string(),
            snap.to_string(),
        )))
    }
}

/// Removes a snapshot: its intent recorded (`record`, unless the reconciliation finishes
/// one), its volume, its row, then the intent cleared. Safe to run again after a crash.
pub fn finish_delete_snapshot(d: &Daemon, name: &str, snap: &str, record: bool) -> Result<()> {
    let key = format!("{name}/{snap}");
    if record {
        d.db.record_intent(IntentKind::Snapshot, "", &key)?;
    }
    if let Ok(pool) = d.instance_pool(name) {
        pool.delete_volume(&snapshot_vol(name, snap))?;
    }
    if d.db.snapshot(name, snap).is_ok() {
        d.db.delete_snapshot(name, snap)?;
    }
    d.db.clear_intent(IntentKind::Snapshot, "", &key)
}

/// Snapshot names are path segments.
pub fn validate_snapshot_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.len() > 255 {
        return Err(DaemonError::BadRequest(format!(
            "Invalid snapshot name {name:?}"
        )));
    }
    Ok(())
}

/// The next free name from `snapshots.pattern` (default `snap%d`).
pub fn next_name(pattern: &str, taken: &[String]) -> String {
    let pattern = if pattern.contains("%d") {
        pattern
    } else {
        "snap%d"
    };
    (0..)
        .map(|n| pattern.replace("%d", &n.to_string()))
        .find(|c| !taken.contains(c))
        .expect("a free name")
}

/// Takes a snapshot; returns its name.
pub async fn create_snapshot(
    d: AppState,
    name: String,
    snap: Option<String>,
    expires_at: Option<String>,
) -> Result<String> {
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    let row = d.db.instance_or_404(&name)?;
    let expanded = super::expand(&d, &row)?;
    let taken: Vec<String> = d.db.snapshots(&name)?.into_iter().map(|s| s.name).collect();
    let pattern = expanded
        .config
        .get("snapshots.pattern")
        .map(String::as_str)
        .unwrap_or("snap%d");
    let snap = match snap.filter(|s| !s.is_empty()) {
        Some(s) => s,
        None => next_name(pattern, &taken),
    };
    // An explicit expiry wins; else `snapshots.expiry` from now; else never.
    let expires_at = match expires_at {
        Some(e) => e,
        None => match expanded
            .config
            .get("snapshots.expiry")
            .filter(|e| !e.is_empty())
        {
            Some(e) => {
                let secs = hutch_api::schedule::parse_expiry(e).map_err(DaemonError::BadRequest)?;
                let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs as i64);
                at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            }
            None => NEVER.into(),
        },
    };
    validate_snapshot_name(&snap)?;
    if taken.contains(&snap) {
        return Err(DaemonError::Conflict(format!(
            "Snapshot {snap:?} already exists"
        )));
    }
    let running = runtime_status(&d, &name).0 == StatusCode::Running;
    // A copy of a live tree is only consistent while the container is frozen.
    let freeze = running && !d.instance_pool(&name)?.info().atomic_snapshots;
    let (d2, name2, snap2) = (d.clone(), name.clone(), snap.clone());
    blocking(move || {
        let rd = d2.runtime_dir(&name2);
        if freeze {
            hutch_runtime::container::freeze(&rd)?;
        }
        let cloned = d2.instance_pool(&name2)?.clone_volume(
            &instance_vol(&name2),
            &snapshot_vol(&name2, &snap2),
            true,
        );
        if freeze {
            let _ = hutch_runtime::container::thaw(&rd);
        }
        Ok(cloned?)
    })
    .await?;
    let mut revert = Revert::new();
    {
        let (d, name, snap) = (d.clone(), name.clone(), snap.clone());
        revert.add(move || {
            if let Ok(pool) = d.instance_pool(&name) {
                let _ = pool.delete_volume(&snapshot_vol(&name, &snap));
            }
        });
    }
    let record = SnapshotRow {
        instance: name.clone(),
        name: snap.clone(),
        created_at: crate::now(),
        expires_at,
        architecture: row.architecture.clone(),
        config: row.config.clone(),
        devices: row.devices.clone(),
        profiles: row.profiles.clone(),
        ephemeral: row.ephemeral,
    };
    d.db.insert_snapshot(&record)?;
    revert.success();
    d.events.lifecycle(
        "instance-snapshot-created",
        &format!("/1.0/instances/{name}/snapshots/{snap}"),
        json!({}),
    );
    Ok(snap)
}

pub async fn delete_snapshot(d: AppState, name: String, snap: String) -> Result<()> {
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    d.db.snapshot(&name, &snap)?;
    let (d2, name2, snap2) = (d.clone(), name.clone(), snap.clone());
    blocking(move || finish_delete_snapshot(&d2, &name2, &snap2, true)).await?;
    d.events.lifecycle(
        "instance-snapshot-deleted",
        &format!("/1.0/instances/{name}/snapshots/{snap}"),
        json!({}),
    );
    Ok(())
}

pub async fn rename_snapshot(d: AppState, name: String, snap: String, new: String) -> Result<()> {
    validate_snapshot_name(&new)?;
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    d.db.snapshot(&name, &snap)?;
    if d.db.snapshot(&name, &new).is_ok() {
        return Err(DaemonError::Conflict(format!(
            "Snapshot {new:?} already exists"
        )));
    }
    let (from, to) = (snapshot_vol(&name, &snap), snapshot_vol(&name, &new));
    let pool = d.instance_pool(&name)?;
    pool.rename_volume(&from, &to)?;
    let mut revert = Revert::new();
    revert.add(move || {
        let _ = pool.rename_volume(&to, &from);
    });
    d.db.rename_snapshot(&name, &snap, &new)?;
    revert.success();
    d.events.lifecycle(
        "instance-snapshot-renamed",
        &format!("/1.0/instances/{name}/snapshots/{new}"),
        json!({ "old_name": snap }),
    );
    Ok(())
}

/// Restores the instance's root filesystem and config from a snapshot; a running instance
/// is stopped first and started again after.
pub async fn restore_snapshot(d: AppState, name: String, snap: String) -> Result<()> {
    let was_running = runtime_status(&d, &name).0 != StatusCode::Stopped;
    if was_running {
        stop_instance(d.clone(), name.clone(), 0, true).await?;
    }
    {
        let lock = d.instance_lock(&name);
        let _g = lock.lock().await;
        let mut row = d.db.instance_or_404(&name)?;
        let s = d.db.snapshot(&name, &snap)?;
        let (d2, name2, snap2) = (d.clone(), name.clone(), snap.clone());
        blocking(move || {
            Ok(d2
                .instance_pool(&name2)?
                .restore(&instance_vol(&name2), &snapshot_vol(&name2, &snap2))?)
        })
        .await?;
        // The snapshot's config, keeping the daemon's own volatile keys.
        let volatile: Vec<(String, String)> = row
            .config
            .iter()
            .filter(|(k, _)| k.starts_with("volatile."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        row.config = s.config;
        row.config.extend(volatile);
        row.devices = s.devices;
        row.profiles = s.profiles;
        d.db.update_instance(&row)?;
    }
    d.events.lifecycle(
        "instance-restored",
        &format!("/1.0/instances/{name}"),
        json!({"snapshot": snap}),
    );
    if was_running {
        start_instance(d, name).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pattern() {
        assert_eq!(next_name("snap%d", &[]), "snap0");
        assert_eq!(
            next_name("snap%d", &["snap0".into(), "snap1".into()]),
            "snap2"
        );
        assert_eq!(next_name("daily-%d", &["daily-0".into()]), "daily-1");
        assert_eq!(next_name("bogus", &[]), "snap0");
        assert!(validate_snapshot_name("a/b").is_err());
        validate_snapshot_name("before-upgrade").unwrap();
    }
}
