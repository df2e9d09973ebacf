//! Start, stop, freeze, unfreeze, rename and delete, each under the instance's lock.

use std::path::Path;
use std::time::Duration;

use hutch_api::operation::StatusCode;
use hutch_runtime::container;
use serde_json::json;

use super::blocking;
use super::devices;
use super::runtime_status;
use super::spec::{build_spec, expand};
use super::watch;
use crate::daemon::{instance_vol, snapshot_vol, AppState, Daemon};
use crate::error::{DaemonError, Result};

/// How long a stop with timeout -1 (no limit) may take before init is killed anyway.
const UNLIMITED_STOP: Duration = Duration::from_secs(24 * 3600);

fn source(name: &str) -> String {
    format!("/1.0/instances/{name}")
}

/// Where a start's time went, step by step: logged at debug level once the start is done
/// (`RUST_LOG=hutchd=debug`), to tell what grows when a host runs many containers.
struct StepClock {
    last: std::time::Instant,
    steps: Vec<(&'static str, u128)>,
    /// The runtime step's own steps, as the container's monitor timed them.
    runtime: Vec<(String, u64)>,
}

impl StepClock {
    fn new() -> Self {
        StepClock {
            last: std::time::Instant::now(),
            steps: Vec::new(),
            runtime: Vec::new(),
        }
    }

    fn step(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.steps
            .push((name, now.duration_since(self.last).as_micros()));
        self.last = now;
    }

    fn log(&self, what: &str, name: &str) {
        // Formatted only for a debug log: a start pays nothing for it otherwise.
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let total: u128 = self.steps.iter().map(|(_, us)| us).sum();
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(step, us)| format!("{step}={us}"))
            .collect();
        let runtime: Vec<String> = self
            .runtime
            .iter()
            .map(|(step, us)| format!("{step}={us}"))
            .collect();
        tracing::debug!(
            instance = name,
            total_us = total,
            steps = %steps.join(" "),
            runtime_steps = %runtime.join(" "),
            "{what}"
        );
    }
}

pub async fn start_instance(d: AppState, name: String) -> Result<()> {
    let mut clock = StepClock::new();
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    clock.step("lock");
    let row = d.db.instance_or_404(&name)?;
    if d.supervision.shutting_down() {
        return Err(DaemonError::BadRequest(
            "The daemon is shutting down".into(),
        ));
    }
    if runtime_status(&d, &name).0 != StatusCode::Stopped {
        return Err(DaemonError::BadRequest(
            "The instance is already running".into(),
        ));
    }
    let expanded = expand(&d, &row)?;
    super::create::secure_instance_volume(&d, &row, &expanded)?;
    clock.step("read");
    let (d2, row2, expanded2) = (d.clone(), row.clone(), expanded.clone());
    blocking(move || super::templates::apply_due(&d2, &row2, &expanded2)).await?;
    clock.step("templates");
    let mut spec = build_spec(&d, &row, &expanded)?;
    devices::prepare_start(&d, &row, &expanded, &mut spec)?;
    spec.pre_start_hooks
        .extend(devices::start_hook(&d, &row, &expanded)?);
    clock.step("spec");
    let (helper, rd) = (d.helper.clone(), d.runtime_dir(&name));
    let started = blocking(move || Ok(hutch_runtime::start(&helper, &rd, &spec)?)).await?;
    clock.step("runtime");
    clock.runtime = started.steps;
    let pid = runtime_status(&d, &name).1;
    if let Err(e) = devices::start_proxies(&d, &name, pid as i32, &expanded).await {
        // A device that cannot start fails the start, as in LXD.
        let rd = d.runtime_dir(&name);
        let _ = blocking(move || Ok(container::stop(&rd, Duration::from_secs(0), true)?)).await;
        return Err(e);
    }
    clock.step("proxies");
    let mut row = d.db.instance_or_404(&name)?;
    row.last_used_at = crate::now();
    d.db.update_instance(&row)?;
    d.db.set_instance_config_key(&name, "volatile.last_state.power", Some("RUNNING"))?;
    // A start begins a new autorestart record (an autorestart writes its own after).
    for key in [watch::KEY_RESTARTS, watch::KEY_LAST, watch::KEY_GAVE_UP] {
        if row.config.contains_key(key) {
            d.db.set_instance_config_key(&name, key, None)?;
        }
    }
    clock.step("record");
    watch::watch(&d, &name);
    d.events
        .lifecycle("instance-started", &source(&name), json!({}));
    clock.step("events");
    clock.log("started", &name);
    Ok(())
}

/// Stops the instance: a clean halt waiting `timeout` seconds (-1: no limit), or a kill
/// when `force` or `timeout` is 0. Ephemeral instances are deleted after.
pub async fn stop_instance(d: AppState, name: String, timeout: i64, force: bool) -> Result<()> {
    let force = force || timeout == 0;
    let wait = if timeout < 0 {
        UNLIMITED_STOP
    } else {
        Duration::from_secs(timeout as u64)
    };
    let event = if force {
        "instance-stopped"
    } else {
        "instance-shutdown"
    };
    stop_with(d, name, wait, force, Some("STOPPED"), event).await
}

/// Host shutdown's stop: a clean halt, killed after `timeout`. The power state stays
/// RUNNING so that the next daemon start brings the instance back.
pub async fn stop_for_host_shutdown(d: AppState, name: String, timeout: Duration) -> Result<()> {
    stop_with(d, name, timeout, false, None, "instance-shutdown").await
}

/// Stops a running instance, records `power` as its last power state (when given), and
/// deletes it after when it is ephemeral.
async fn stop_with(
    d: AppState,
    name: String,
    wait: Duration,
    force: bool,
    power: Option<&'static str>,
    event: &'static str,
) -> Result<()> {
    let ephemeral = {
        let lock = d.instance_lock(&name);
        let _g = lock.lock().await;
        let row = d.db.instance_or_404(&name)?;
        if runtime_status(&d, &name).0 == StatusCode::Stopped {
            return Err(DaemonError::BadRequest(
                "The instance is already stopped".into(),
            ));
        }
        // An application's process that ignores SIGTERM is killed after docker's wait.
        let wait = match wait == UNLIMITED_STOP && super::oci::is_oci(&row.config) {
            true => super::oci::STOP_TIMEOUT,
            false => wait,
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
        if let Some(power) = power {
            d.db.set_instance_config_key(&name, "volatile.last_state.power", Some(power))?;
        }
        d.events.lifecycle(event, &source(&name), json!({}));
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
    // The intent first: the row, marked, outlives its files, so a restart finishes a delete
    // a crash interrupted, and no volume is ever left that no record explains.
    d.db.set_instance_state(&name, "deleting")?;
    devices::forget_instance(&d, &name)?;
    let (d2, name2) = (d.clone(), name.clone());
    blocking(move || finish_delete(&d2, &name2, &row.pool)).await?;
    d.supervision.forget(&name);
    d.prune_instance_locks();
    d.release_instance_name(&name).await;
    d.events
        .lifecycle("instance-deleted", &source(&name), json!({}));
    Ok(())
}

/// Removes what a deleted instance left (its runtime files, logs, snapshots and volume),
/// then its rows. Each step tolerates what is already gone: startup calls it again for a
/// delete that a crash interrupted.
pub fn finish_delete(d: &Daemon, name: &str, pool: &str) -> Result<()> {
    let _ = std::fs::remove_dir_all(d.runtime_dir(name));
    let _ = std::fs::remove_dir_all(d.dir.join("logs").join(name));
    // Backups first: on zfs their copies are clones of the volumes below.
    super::backups::remove_instance_backups(d, name)?;
    let pool = d.pool(pool)?;
    for snap in d.db.snapshots(name)? {
        pool.delete_volume(&snapshot_vol(name, &snap.name))?;
    }
    let _ = std::fs::remove_dir(pool.path(&Path::new("containers-snapshots").join(name)));
    pool.delete_volume(&instance_vol(name))?;
    d.db.delete_instance_snapshots(name)?;
    d.db.delete_instance(name)
}

pub async fn rename_instance(d: AppState, name: String, new: String) -> Result<()> {
    super::create::validate_name(&new)?;
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    let row = d.db.instance_or_404(&name)?;
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
    let claim = d.claim_instance_name(&new).await?;
    let renamed = rename_claimed(&d, &name, &new, &row.pool).await;
    claim.end(renamed.is_ok()).await;
    renamed?;
    d.release_instance_name(&name).await;
    d.events
        .lifecycle("instance-renamed", &source(&new), json!({"old_name": name}));
    Ok(())
}

/// The rename itself, its new name claimed in a cluster.
async fn rename_claimed(d: &AppState, name: &str, new: &str, pool: &str) -> Result<()> {
    let (name, new) = (name.to_string(), new.to_string());
    // The rows and the intent in one transaction, then the files follow; a crash anywhere
    // after is finished at the next start (see `reconcile`), never lost.
    d.db.begin_instance_rename(&name, &new)?;
    super::fault::point("rename-recorded");
    let (d2, old2, new2, pool2) = (d.clone(), name.clone(), new.clone(), pool.to_string());
    let moved = blocking(move || move_instance_files(&d2, &pool2, &old2, &new2)).await;
    if let Err(e) = moved {
        let (d2, old2, new2, pool) = (d.clone(), name.clone(), new.clone(), pool.to_string());
        let back = blocking(move || move_instance_files(&d2, &pool, &new2, &old2)).await;
        if back.is_ok() {
            d.db.undo_instance_rename(&name, &new)?;
        }
        return Err(e);
    }
    d.db.end_instance_rename(&name)?;
    super::templates::defer(d, &new, "rename")?;
    // Host entries are written again, under the new name, at the next start.
    devices::forget_instance(d, &name)?;
    d.supervision.forget(&name);
    d.prune_instance_locks();
    Ok(())
}

/// Moves an instance's files from name `old` to `new`: its volume, its snapshots, its
/// runtime directory and logs. Each move is done only where the old exists and the new does
/// not, so running it again after a crash finishes the job.
pub fn move_instance_files(d: &Daemon, pool: &str, old: &str, new: &str) -> Result<()> {
    let pool_name = pool;
    let pool = d.pool(pool)?;
    let snaps = Path::new("containers-snapshots");
    for (from, to) in [
        (instance_vol(old), instance_vol(new)),
        (snaps.join(old), snaps.join(new)),
    ] {
        if pool.path(&from).exists() && !pool.path(&to).exists() {
            pool.rename_volume(&from, &to)?;
            super::fault::point("rename-volume-moved");
        }
    }
    super::backups::rename_instance_backups(d, pool_name, old, new)?;
    for (from, to) in [
        (d.runtime_dir(old), d.runtime_dir(new)),
        (d.dir.join("logs").join(old), d.dir.join("logs").join(new)),
    ] {
        if from.exists() && !to.exists() {
            std::fs::rename(&from, &to).map_err(|e| DaemonError::io("rename", &from, e))?;
        }
    }
    Ok(())
}
