//! Copies of custom volumes (a clone within a pool, a copy across pools; snapshots too
//! unless `volume_only`) and moves to another pool (a copy, then the source deleted):
//! checked when asked, then run as an operation; a copy that fails removes what it made.

use std::path::PathBuf;
use std::sync::Arc;

use hutch_api::storage::{StorageVolumePost, StorageVolumePut, StorageVolumesPost};
use hutch_storage::StorageDriver;
use serde_json::json;

use super::cancel::{canceled, Cancel};
use super::create::copy_volume_until;
use super::revert::Revert;
use super::volumes::{
    check_volume_config, check_volume_kind, custom_volume, delete_volume, ensure_unused,
    remove_volume_and_snapshots, snapshot_names, snapshots_dir, validate_volume_name, volume_url,
};
use super::{blocking, Engine, Work};
use crate::daemon::{custom_vol, Daemon};
use crate::db::volumes::VolumeRow;
use crate::error::{DaemonError, Result};

/// A copy checked and ready to run: source and target pools and volumes.
struct VolumeCopy {
    src: Arc<dyn StorageDriver>,
    /// The source volume: the volume or one of its snapshots.
    from: PathBuf,
    /// The source volume's name, when its snapshots come too.
    with_snapshots_of: Option<String>,
    dst: Arc<dyn StorageDriver>,
    row: VolumeRow,
    size: Option<u64>,
}

/// Checks a copy of `src` (`vol` or `vol/snapshot`) of `src_pool` to a new volume.
fn plan_copy(
    d: &Daemon,
    src_pool: &str,
    src: &str,
    volume_only: bool,
    dst_pool: &str,
    dst: &str,
    put: StorageVolumePut,
) -> Result<VolumeCopy> {
    validate_volume_name(dst)?;
    let dst_p = d.pool(dst_pool)?;
    let (src_name, snap) = match src.split_once('/') {
        Some((v, s)) => (v, Some(s)),
        None => (src, None),
    };
    let (src_p, _) = custom_volume(d, src_pool, src_name)?;
    let from = match snap {
        Some(s) if !s.starts_with('.') && !s.contains('/') => snapshots_dir(src_name).join(s),
        Some(_) => PathBuf::from(".none"),
        None => custom_vol(src_name),
    };
    if !src_p.path(&from).exists() {
        return Err(DaemonError::NotFound(
            "Storage volume snapshot not found".into(),
        ));
    }
    if d.db.volume(dst_pool, dst).is_ok() {
        return Err(DaemonError::Conflict(format!(
            "Volume by that name already exists: {dst}"
        )));
    }
    let size = check_volume_config(&*dst_p, &put.config)?;
    Ok(VolumeCopy {
        src: src_p,
        from,
        with_snapshots_of: (snap.is_none() && !volume_only).then(|| src_name.to_string()),
        dst: dst_p,
        row: VolumeRow {
            pool: dst_pool.to_string(),
            name: dst.to_string(),
            description: put.description,
            config: put.config,
            created_at: crate::now(),
        },
        size,
    })
}

/// Runs a copy: the row, then the volume, its snapshots and its quota; a failure or a
/// cancel removes what was made.
fn run_copy(d: &Arc<Daemon>, c: VolumeCopy, cancel: &Cancel) -> Result<()> {
    d.db.insert_volume(&c.row)?;
    let mut revert = Revert::new();
    let (d2, pool, name) = (d.clone(), c.row.pool.clone(), c.row.name.clone());
    revert.add(move || {
        if let Err(e) = remove_volume_and_snapshots(&*d2.pool(&pool).expect("open"), &name)
            .and_then(|()| d2.db.delete_volume(&pool, &name))
        {
            tracing::error!(pool, volume = name, error = %e.chain(), "undo a volume copy");
        }
    });
    let to = custom_vol(&c.row.name);
    copy_volume_until(&c.src, &c.from, &c.dst, &to, false, cancel)?;
    if let Some(src_name) = &c.with_snapshots_of {
        for s in snapshot_names(&*c.src, src_name) {
            let (from, to) = (
                snapshots_dir(src_name).join(&s),
                snapshots_dir(&c.row.name).join(&s),
            );
            cancel.check()?;
            copy_volume_until(&c.src, &from, &c.dst, &to, true, cancel)?;
        }
    }
    if c.size.is_some() {
        c.dst.set_quota(&to, c.size)?;
    }
    cancel.check()?;
    revert.success();
    Ok(())
}

impl Engine {
    /// `POST .../volumes/custom` with a `copy` source (`lxc storage volume copy`): checked
    /// now; the copy itself is the work returned, to run as an operation.
    pub fn copy_storage_volume(&self, pool: &str, req: StorageVolumesPost) -> Result<Work> {
        check_volume_kind(&req)?;
        if req.source.kind != "copy" {
            return Err(DaemonError::BadRequest(format!(
                "Invalid source type {:?}",
                req.source.kind
            )));
        }
        // The source pool defaults to this one.
        let src_pool = match req.source.pool.as_str() {
            "" => pool,
            other => other,
        };
        let plan = plan_copy(
            &self.d,
            src_pool,
            &req.source.name,
            req.source.volume_only,
            pool,
            &req.name,
            req.put,
        )?;
        let (d, url) = (self.d.clone(), volume_url(pool, &req.name));
        Ok(Box::pin(async move {
            let (d2, cancel) = (d.clone(), Cancel::current());
            let cancel2 = cancel.clone();
            blocking(move || run_copy(&d2, plan, &cancel2))
                .await
                .map_err(|e| if cancel.is_cancelled() { canceled() } else { e })?;
            d.events
                .lifecycle("storage-volume-created", &url, json!({}));
            Ok(())
        }))
    }

    /// `POST .../volumes/custom/<name>` to another pool (`lxc storage volume move`):
    /// checked now; the work returned copies it there, then deletes the source.
    pub fn move_storage_volume(
        &self,
        pool: &str,
        name: &str,
        req: StorageVolumePost,
    ) -> Result<Work> {
        let (_, row) = custom_volume(&self.d, pool, name)?;
        let new_name = if req.name.is_empty() { name } else { &req.name }.to_string();
        ensure_unused(&self.d, pool, name)?;
        let put = StorageVolumePut {
            config: row.config,
            description: row.description,
            restore: String::new(),
        };
        let plan = plan_copy(&self.d, pool, name, false, &req.pool, &new_name, put)?;
        let (d, pool, name) = (self.d.clone(), pool.to_string(), name.to_string());
        Ok(Box::pin(async move {
            blocking(move || {
                run_copy(&d, plan, &Cancel::none())?;
                delete_volume(&d, &pool, &name)
            })
            .await
        }))
    }
}
