//! Start, stop, freeze, unfreeze, rename and delete, each under the instance's lock.

use std::time::Duration;

use hutch_api::operation::StatusCode;
use hutch_runtime::container;
use serde_json::json;

use super::blocking;
use super::devices;
use super::runtime_status;
use super::spec::{build_spec, expand};
use crate::daemon::{instance_vol, snapshot_vol, AppState};
use crate::error::{DaemonError, Result};

/// How long a stop with timeout -1 (no limit) may take before init is killed anyway.
const UNLIMITED_STOP: Duration = Duration::from_secs(24 * 3600);

fn source(name: &str) -> String {
    format!("/1.0/instances/{name}")
}

pub async fn start_instance(d: AppState, name: String) -> Result<()> {
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    let row = d.db.instance_or_404(&name)?;
    if runtime_status(&d, &name).0 != StatusCode::Stopped {
        return Err(DaemonError::BadRequest(
            "The instance is already running".into(),
        ));
    }
    let expanded = expand(&d, &row)?;
    let mut spec = build_spec(&d, &row, &expanded)?;
    spec.pre_start_hooks
        .extend(devices::start_hook(&d, &row, &expanded)?);
    let (hutchd, rd) = (d.hutchd.clone(), d.runtime_dir(&name));
    blocking(move || Ok(hutch_runtime::start(&hutchd, &rd, &spec)?)).await?;
    let pid = runtime_status(&d, &name).1;
    if let Err(e) = devices::start_proxies(&d, &name, pid as i32, &expanded).await {
        // A device that cannot start fails the start, as in LXD.
        let rd = d.runtime_dir(&name);
        let _ = blocking(move || Ok(container::stop(&rd, Duration::from_secs(0), true)?)).await;
        return Err(e);
    }
    let mut row = d.db.instance_or_404(&name)?;
    row.last_used_at = crate::now();
    d.db.update_instance(&row)?;
    d.db.set_instance_config_key(&name, "volatile.last_state.power", Some("RUNNING"))?;
    d.events
        .lifecycle("instance-started", &source(&name), json!({}));
    Ok(())
}

/// Stops the instance: a clean halt waiting `timeout` seconds (-1: no limit), or a kill
/// when `force` or `timeout` is 0. Ephemeral instances are deleted after.
pub async fn stop_instance(d: AppState, name: String, timeout: i64, force: bool) -> Result<()> {
    let ephemeral = {
        let lock = d.instance_lock(&name);
        let _g = lock.lock().await;
        let row = d.db.instance_or_404(&name)?;
        if runtime_status(&d, &name).0 == StatusCode::Stopped {
            return Err(DaemonError::BadRequest(
                "The instance is already stopped".into(),
            ));
        }
        let force = force || timeout == 0;
        let wait = if timeout < 0 {
            UNLIMITED_STOP
        } else {
            Duration::from_secs(timeout as u64)
        };
        let (d2, n2) = (d.clone(), name.clone());
        blocking(move || {
            devices::stop_proxies(&d2, &n2);
            Ok(())
        })
        .await?;
        let rd = d.runtime_dir(&name);
        blocking(move || Ok(container::stop(&rd, wait, force)?)).await?;
        devices::forget_host_names(&d, &row)?;
        d.db.set_instance_config_key(&name, "volatile.last_state.power", Some("STOPPED"))?;
        d.events.lifecycle(
            if force {
                "instance-stopped"
            } else {
                "instance-shutdown"
            },
            &source(&name),
            json!({}),
        );
        row.ephemeral
    };
    if ephemeral {
        delete_instance(d, name).await?;
    }
    Ok(())
}

pub async fn freeze_instance(d: AppState, name: String) -> Result<()> {
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    d.db.instance_or_404(&name)?;
    match runtime_status(&d, &name).0 {
        StatusCode::Running => {}
        StatusCode::Frozen => {
            return Err(DaemonError::BadRequest(
                "The instance is already frozen".into(),
            ))
        }
        _ => return Err(DaemonError::BadRequest("The instance isn't running".into())),
    }
    let rd = d.runtime_dir(&name);
    blocking(move || Ok(container::freeze(&rd)?)).await?;
    d.events
        .lifecycle("instance-paused", &source(&name), json!({}));
    Ok(())
}

pub async fn unfreeze_instance(d: AppState, name: String) -> Result<()> {
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    d.db.instance_or_404(&name)?;
    if runtime_status(&d, &name).0 != StatusCode::Frozen {
        return Err(DaemonError::BadRequest("The instance is not frozen".into()));
    }
    let rd = d.runtime_dir(&name);
    blocking(move || Ok(container::thaw(&rd)?)).await?;
    d.events
        .lifecycle("instance-resumed", &source(&name), json!({}));
    Ok(())
}

pub async fn delete_instance(d: AppState, name: String) -> Result<()> {
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    let row = d.db.instance_or_404(&name)?;
    if runtime_status(&d, &name).0 != StatusCode::Stopped {
        return Err(DaemonError::BadRequest("Instance is running".into()));
    }
    if super::spec::flag(&row.config, "security.protection.delete") {
        return Err(DaemonError::BadRequest("Instance is protected".into()));
    }
    let pool = d.pool(&row.pool)?;
    // The row goes first: a crash after it leaves only files, which no record owns.
    d.db.delete_instance(&name)?;
    devices::forget_instance(&d, &name)?;
    let (rd, logs) = (d.runtime_dir(&name), d.dir.join("logs").join(&name));
    let d2 = d.clone();
    let name2 = name.clone();
    blocking(move || {
        let _ = std::fs::remove_dir_all(&rd);
        let _ = std::fs::remove_dir_all(&logs);
        for snap in d2.db.snapshots(&name2)? {
            pool.delete_volume(&snapshot_vol(&name2, &snap.name))?;
        }
        d2.db.delete_instance_snapshots(&name2)?;
        let _ = std::fs::remove_dir(
            pool.path(&std::path::Path::new("containers-snapshots").join(&name2)),
        );
        Ok(pool.delete_volume(&instance_vol(&name2))?)
    })
    .await?;
    d.forget_instance_lock(&name);
    d.events
        .lifecycle("instance-deleted", &source(&name), json!({}));
    Ok(())
}

pub async fn rename_instance(d: AppState, name: String, new: String) -> Result<()> {
    super::create::validate_name(&new)?;
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    let pool = d.pool(&d.db.instance_or_404(&name)?.pool)?;
    if runtime_status(&d, &name).0 != StatusCode::Stopped {
        return Err(DaemonError::BadRequest(
            "Renaming of running container not allowed".into(),
        ));
    }
    if d.db.instance(&new)?.is_some() {
        return Err(DaemonError::Conflict(format!(
            "Name {new:?} already in use"
        )));
    }
    let (old_vol, new_vol) = (instance_vol(&name), instance_vol(&new));
    pool.rename_volume(&old_vol, &new_vol)?;
    let _ = std::fs::rename(d.runtime_dir(&name), d.runtime_dir(&new));
    let _ = std::fs::rename(
        d.dir.join("logs").join(&name),
        d.dir.join("logs").join(&new),
    );
    let snaps = std::path::Path::new("containers-snapshots");
    let has_snapshots = pool.path(&snaps.join(&name)).exists();
    if has_snapshots {
        pool.rename_volume(&snaps.join(&name), &snaps.join(&new))?;
    }
    if let Err(e) = d.db.rename_instance(&name, &new) {
        let _ = pool.rename_volume(&new_vol, &old_vol);
        if has_snapshots {
            let _ = pool.rename_volume(&snaps.join(&new), &snaps.join(&name));
        }
        return Err(e);
    }
    d.db.rename_instance_snapshots(&name, &new)?;
    // Host entries are written again, under the new name, at the next start.
    devices::forget_instance(&d, &name)?;
    d.forget_instance_lock(&name);
    d.events
        .lifecycle("instance-renamed", &source(&new), json!({"old_name": name}));
    Ok(())
}
