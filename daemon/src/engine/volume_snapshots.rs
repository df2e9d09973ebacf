//! Snapshots of custom volumes (read-only volumes under `custom-snapshots/<volume>/`): list,
//! show, take and delete; an instance's volume lists the instance's snapshots.

use std::path::PathBuf;
use std::sync::Arc;

use hutch_api::storage::{
    StorageVolumeSnapshot, StorageVolumeSnapshotPost, StorageVolumeSnapshotsPost,
};
use hutch_storage::StorageDriver;
use serde_json::json;

use super::volumes::{snapshot_names, snapshots_dir};
use super::{blocking, Engine, Work};
use crate::daemon::{custom_vol, Daemon};
use crate::error::{DaemonError, Result};

fn snapshot_object(name: &str) -> StorageVolumeSnapshot {
    StorageVolumeSnapshot {
        name: name.to_string(),
        description: String::new(),
        config: Default::default(),
        content_type: "filesystem".into(),
        expires_at: "0001-01-01T00:00:00Z".into(),
    }
}

/// The pool and volume of snapshot `snap` of custom volume `name` of `pool`, which must
/// exist.
pub(super) fn existing_snapshot(
    d: &Daemon,
    pool: &str,
    name: &str,
    snap: &str,
) -> Result<(Arc<dyn StorageDriver>, PathBuf)> {
    let p = d.pool(pool)?;
    d.db.volume(pool, name)?;
    let vol = snapshots_dir(name).join(snap);
    if snap.starts_with('.') || snap.contains('/') || !p.path(&vol).exists() {
        return Err(DaemonError::NotFound(
            "Storage volume snapshot not found".into(),
        ));
    }
    Ok((p, vol))
}

impl Engine {
    /// The snapshots of a volume: a custom volume's own, or an instance's.
    pub fn storage_volume_snapshots(
        &self,
        pool: &str,
        kind: &str,
        name: &str,
    ) -> Result<Vec<StorageVolumeSnapshot>> {
        let p = self.d.pool(pool)?;
        let names: Vec<String> = match kind {
            "custom" => {
                self.d.db.volume(pool, name)?;
                snapshot_names(&*p, name)
            }
            "container" => self
                .d
                .db
                .snapshots(name)?
                .into_iter()
                .map(|s| s.name)
                .collect(),
            _ => Vec::new(),
        };
        Ok(names.iter().map(|s| snapshot_object(s)).collect())
    }

    /// Snapshot `snap` of custom volume `name`, or LXD's 404.
    pub fn storage_volume_snapshot(
        &self,
        pool: &str,
        name: &str,
        snap: &str,
    ) -> Result<StorageVolumeSnapshot> {
        existing_snapshot(&self.d, pool, name, snap)?;
        Ok(snapshot_object(snap))
    }

    /// `POST .../volumes/custom/<name>/snapshots`: checked now (a taken name is 409); the
    /// snapshot itself is the work returned, to run as an operation.
    pub fn snapshot_storage_volume(
        &self,
        pool: &str,
        name: &str,
        req: StorageVolumeSnapshotsPost,
    ) -> Result<Work> {
        let p = self.d.pool(pool)?;
        self.d.db.volume(pool, name)?;
        let snaps = snapshots_dir(name);
        let snap = match req.name.as_str() {
            "" => (0..)
                .map(|n| format!("snap{n}"))
                .find(|c| !p.path(&snaps.join(c)).exists())
                .expect("a free name"),
            given => given.to_string(),
        };
        super::validate_snapshot_name(&snap)?;
        if snap.starts_with('.') {
            return Err(DaemonError::BadRequest(format!(
                "Invalid snapshot name {snap:?}"
            )));
        }
        if p.path(&snaps.join(&snap)).exists() {
            return Err(DaemonError::Conflict(format!(
                "Snapshot {snap:?} already exists"
            )));
        }
        let (events, url) = (
            self.d.clone(),
            format!("/1.0/storage-pools/{pool}/volumes/custom/{name}/snapshots/{snap}"),
        );
        let vol = custom_vol(name);
        Ok(Box::pin(async move {
            blocking(move || Ok(p.clone_volume(&vol, &snaps.join(&snap), true)?)).await?;
            events
                .events
                .lifecycle("storage-volume-snapshot-created", &url, json!({}));
            Ok(())
        }))
    }

    /// `POST .../volumes/custom/<name>/snapshots/<snap>`: a rename, checked now (a bad or
    /// taken name is refused); the rename is the work returned, to run as an operation.
    pub fn rename_storage_volume_snapshot(
        &self,
        pool: &str,
        name: &str,
        snap: &str,
        req: StorageVolumeSnapshotPost,
    ) -> Result<Work> {
        let (p, vol) = existing_snapshot(&self.d, pool, name, snap)?;
        if req.migration {
            return Err(DaemonError::BadRequest(
                "Moving a volume snapshot to another server is not supported".into(),
            ));
        }
        super::validate_snapshot_name(&req.name)?;
        if req.name.starts_with('.') {
            return Err(DaemonError::BadRequest(format!(
                "Invalid snapshot name {:?}",
                req.name
            )));
        }
        let to = snapshots_dir(name).join(&req.name);
        if p.path(&to).exists() {
            return Err(DaemonError::Conflict(format!(
                "Snapshot {:?} already exists",
                req.name
            )));
        }
        let (events, url) = (
            self.d.clone(),
            format!(
                "/1.0/storage-pools/{pool}/volumes/custom/{name}/snapshots/{}",
                req.name
            ),
        );
        let old_name = snap.to_string();
        Ok(Box::pin(async move {
            blocking(move || Ok(p.rename_volume(&vol, &to)?)).await?;
            events.events.lifecycle(
                "storage-volume-snapshot-renamed",
                &url,
                json!({ "old_name": old_name }),
            );
            Ok(())
        }))
    }

    /// `DELETE .../volumes/custom/<name>/snapshots/<snap>`: checked now; the delete is the
    /// work returned, to run as an operation.
    pub fn delete_storage_volume_snapshot(
        &self,
        pool: &str,
        name: &str,
        snap: &str,
    ) -> Result<Work> {
        let (p, vol) = existing_snapshot(&self.d, pool, name, snap)?;
        let (events, url) = (
            self.d.clone(),
            format!("/1.0/storage-pools/{pool}/volumes/custom/{name}/snapshots/{snap}"),
        );
        Ok(Box::pin(async move {
            blocking(move || Ok(p.delete_volume(&vol)?)).await?;
            events
                .events
                .lifecycle("storage-volume-snapshot-deleted", &url, json!({}));
            Ok(())
        }))
    }
}
