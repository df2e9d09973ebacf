//! The instance lifecycle: what creating, starting, stopping, deleting and inspecting an
//! instance means, tying database, storage, images and runtime together. No HTTP here.

// The engine's state (directories, pools, locks) and its database. Their insides are
// visible to the engine only, so the HTTP layer cannot reach them.
#[path = "../daemon.rs"]
pub mod daemon;
#[path = "../db/mod.rs"]
pub mod db;

mod autostart;
pub(crate) mod backup_config;
mod backup_import;
pub(crate) mod backup_yaml;
mod backups;
pub(crate) mod cancel;
pub mod certificates;
pub mod cluster;
pub mod console;
pub(crate) mod create;
pub mod devices;
pub mod exec;
pub mod fault;
#[cfg(test)]
mod fault_tests;
pub mod files;
mod host_shutdown;
mod idmaps;
mod image_catalog;
mod image_pull;
mod image_tasks;
mod images;
mod instances;
mod lifecycle;
mod logs;
mod lxcfs;
pub mod metrics;
pub mod migration;
pub mod net_state;
pub mod networks;
mod oci;
pub mod pools;
mod profiles;
mod reconcile;
pub mod recover;
mod resources;
mod restart_limit;
pub mod revert;
mod schedule;
mod server;
mod snapshot;
mod spec;
pub mod supervision;
mod templates;
mod volume_copy;
mod volume_snapshots;
pub mod volumes;
mod watch;

pub use autostart::autostart;
pub use backup_import::BackupUpload;
pub use backups::backup_resources as backups_resources;
pub use create::validate_name;
pub use create::{create_instance, validate_create};
pub use image_catalog::{ExportedFile, ImageExport, ImageUpload, ImageWork};
pub use images::{import_image, publish_image};
pub use lifecycle::{
    delete_instance, freeze_instance, rename_instance, start_instance, stop_instance,
    unfreeze_instance,
};
pub use reconcile::reconcile;
pub use schedule::start_scheduler;
pub(crate) use server::split_listen_address;
pub use snapshot::{create_snapshot, delete_snapshot, restore_snapshot, validate_snapshot_name};
pub use spec::{
    check_root_size, expand, limits_from as limits_of, root_pool, root_size as spec_root_size,
};

use std::sync::Arc;

use hutch_api::instance::{Instance, InstanceState};
use hutch_api::operation::StatusCode;
use hutch_runtime::container;

use crate::daemon::Daemon;
use crate::db::instances::InstanceRow;
use crate::error::Result;
use crate::events::EventHub;
use crate::operations::Operations;

/// The only thing the API calls: one typed method per action, taking `hutch-api` request
/// types and returning API objects. Its state is private to this module tree, so the HTTP
/// layer cannot reach the database, a driver, a file or a process. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct Engine {
    d: Arc<Daemon>,
    /// The request histogram and start time `GET /1.0/metrics` reports.
    metrics: Arc<metrics::MetricsState>,
}

impl Engine {
    pub fn new(daemon: Daemon) -> Self {
        let d = Arc::new(daemon);
        // Weak: the hub lives in the daemon, which must not own itself.
        let weak = Arc::downgrade(&d);
        d.events
            .observe_lifecycle(Box::new(move |action: &str, source: &str| {
                if let Some(d) = weak.upgrade() {
                    backup_yaml::on_lifecycle(&d, action, source);
                }
            }));
        Engine {
            d,
            metrics: Arc::default(),
        }
    }

    /// Operations (the API lists, waits on and cancels them).
    pub fn operations(&self) -> &Operations {
        &self.d.ops
    }

    /// The event hub (the API streams it).
    pub fn events(&self) -> &EventHub {
        &self.d.events
    }
}

impl Engine {
    /// Before the API answers: finishes what a crash interrupted, makes sure the default
    /// profile exists, brings managed networks up and re-attaches proxies.
    pub async fn recover(&self) -> Result<()> {
        self.finish_interrupted()?;
        self.ensure_default_profile()?;
        let d = self.clone();
        blocking(move || {
            backup_yaml::write_all(&d);
            networks::start_networks(&d);
            Ok(())
        })
        .await?;
        devices::restore_proxies(self).await;
        Ok(())
    }

    /// Finishes what a crash interrupted (creates rolled back, deletes, renames and
    /// recorded intents finished), so that nothing acts on half-made state.
    pub fn finish_interrupted(&self) -> Result<()> {
        reconcile(&self.d)
    }

    /// The daemon's background work: network supervision, autostart, scheduled snapshots.
    pub fn start_background_tasks(&self) {
        if let Err(e) = self.resume_cluster() {
            tracing::error!(error = %e.chain(), "cluster membership not resumed");
        }
        networks::start_supervisor(self.clone());
        watch::watch_running(self);
        autostart(self.clone());
        start_scheduler(self.clone());
        image_tasks::start_image_tasks(self.clone());
    }

    /// Waits for the `backup.yaml` files the last changes made stale to be rewritten (at
    /// exit; a few seconds at most, the next start rewrites them all anyway).
    pub async fn flush_backup_files(&self) {
        let d = self.d.clone();
        let _ = tokio::task::spawn_blocking(move || {
            d.backup_files.flush(std::time::Duration::from_secs(5))
        })
        .await;
    }

    /// Makes every database commit made so far durable: one `fdatasync` of the WAL for
    /// all of them, at the end of a change (see db/durable.rs); nothing when none is owed.
    pub async fn make_durable(&self) {
        use crate::operations::Durability;
        let wal = self.d.db.wal_sync();
        if wal.owed() {
            let _ = tokio::task::spawn_blocking(move || wal.sync()).await;
        }
    }

    /// LXD always has a `default` profile.
    pub fn ensure_default_profile(&self) -> Result<()> {
        if self.d.db.profile("default")?.is_none() {
            let put = hutch_api::profile::ProfilePut {
                description: "Default hutch profile".into(),
                ..Default::default()
            };
            self.d.db.insert_profile("default", &put)?;
        }
        Ok(())
    }
}

/// Engine code reads the daemon's state through the engine. The state's fields, methods
/// and database are visible to `engine/` only, so from anywhere else this reaches nothing.
impl std::ops::Deref for Engine {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.d
    }
}

/// Work an action goes on with after it was accepted; the API runs it as an operation.
pub type Work = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// An object, and the part of it that its ETag covers (its writable fields).
#[derive(Debug)]
pub struct Versioned<T> {
    pub object: T,
    pub version: serde_json::Value,
}

/// A stable digest of a value, for ETags.
pub fn etag<T: serde::Serialize>(value: &T) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        serde_json::to_vec(value).unwrap_or_default(),
    ))
}

/// Refuses a write whose If-Match (`if_match`, without quotes) does not match the ETag of
/// `current`; no If-Match, or an empty one, always passes.
pub fn check_version<T: serde::Serialize>(if_match: Option<&str>, current: &T) -> Result<()> {
    let Some(client) = if_match.map(|c| c.trim_matches('"')) else {
        return Ok(());
    };
    let server = etag(current);
    if client.is_empty() || client == server {
        Ok(())
    } else {
        Err(crate::error::DaemonError::PreconditionFailed {
            server,
            client: client.to_string(),
        })
    }
}

/// Runs blocking work (storage drivers, the runtime) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    // Events sent from the work name the request's requestor.
    tokio::task::spawn_blocking(crate::auth::on_behalf_blocking(f)).await?
}

/// What the runtime says of an instance: status, init pid and, when it runs, the state its
/// monitor published.
pub struct RuntimeInfo {
    pub code: StatusCode,
    pub pid: i64,
    pub state: Option<hutch_runtime::MonitorState>,
}

/// The runtime status of an instance, read from its published state (no monitor round
/// trip) and its freezer.
pub fn runtime_info(d: &Daemon, name: &str) -> RuntimeInfo {
    match container::running_state(&d.runtime_dir(name)) {
        Some(state) => {
            let frozen = container::cgroup_of_state(&state)
                .is_frozen()
                .unwrap_or(false);
            let code = if frozen {
                StatusCode::Frozen
            } else {
                StatusCode::Running
            };
            RuntimeInfo {
                code,
                pid: state.init_pid as i64,
                state: Some(state),
            }
        }
        None => RuntimeInfo {
            code: StatusCode::Stopped,
            pid: -1,
            state: None,
        },
    }
}

/// The runtime status of an instance: status code and init pid.
pub fn runtime_status(d: &Daemon, name: &str) -> (StatusCode, i64) {
    let info = runtime_info(d, name);
    (info.code, info.pid)
}

/// The API object of an instance from its row, status and expansion over its profiles.
pub fn instance_object_expanded(
    row: &InstanceRow,
    code: StatusCode,
    expanded: spec::Expanded,
) -> Instance {
    Instance {
        architecture: row.architecture.clone(),
        config: row.config.clone(),
        devices: row.devices.clone(),
        ephemeral: row.ephemeral,
        profiles: row.profiles.clone(),
        stateful: row.stateful,
        description: row.description.clone(),
        created_at: row.created_at.clone(),
        last_used_at: row.last_used_at.clone(),
        expanded_config: expanded.config,
        expanded_devices: expanded.devices,
        name: row.name.clone(),
        status: code.text().to_string(),
        status_code: code as u16,
        location: "none".into(),
        kind: row.kind.clone(),
        project: "default".into(),
    }
}

/// `GET .../state`.
pub fn instance_state(d: &Daemon, name: &str) -> Result<InstanceState> {
    let row = d.db.instance_or_404(name)?;
    let devices = expand(d, &row)?.devices;
    Ok(instance_state_with(
        d,
        &row,
        &devices,
        &runtime_info(d, name),
        None,
    ))
}

/// `GET .../state` from what is already at hand: the row, its expanded devices, the runtime
/// information, and (in listings) its interfaces.
pub fn instance_state_with(
    d: &Daemon,
    row: &InstanceRow,
    devices: &hutch_api::profile::Devices,
    info: &RuntimeInfo,
    ifaces: Option<hutch_network::nic::Interfaces>,
) -> InstanceState {
    let mut state = InstanceState {
        status: info.code.text().into(),
        status_code: info.code as u16,
        pid: info.pid,
        ..Default::default()
    };
    let Some(published) = &info.state else {
        state.pid = 0;
        return state;
    };
    if let Ok(u) = container::cgroup_of_state(published).usage() {
        state.processes = u.processes as i64;
        state.cpu.usage = u.cpu_time_ns as i64;
        state.memory.usage = u.memory_bytes as i64;
        state.memory.usage_peak = u.memory_peak_bytes.unwrap_or(0) as i64;
        state.memory.swap_usage = u.swap_bytes.unwrap_or(0) as i64;
    }
    state.resource_view = Some(lxcfs::resource_view(published).into());
    state.network = Some(devices::instance_network(
        &*d.net.netlink,
        info.pid as i32,
        ifaces,
        &row.config,
        devices,
    ));
    state
}

/// Hooks for tests elsewhere in the crate to reach the engine's state.
#[cfg(test)]
pub mod testing {
    use super::Engine;
    use crate::db::intents::IntentKind;

    pub fn record_image_delete(e: &Engine, fp: &str) {
        e.d.db.record_intent(IntentKind::Image, "", fp).unwrap();
    }

    pub fn reconcile(e: &Engine) {
        super::reconcile(&e.d).unwrap();
    }

    /// Records the `default` pool with `driver` in the database of state dir `dir`, before
    /// a daemon opens it.
    pub fn record_default_pool(dir: &std::path::Path, driver: &str) {
        std::fs::create_dir_all(dir.join("database")).expect("database dir");
        crate::db::Db::open(&dir.join("database/local.db"))
            .and_then(|db| {
                db.insert_pool(&crate::db::pools::PoolRow {
                    name: "default".into(),
                    driver: driver.into(),
                    description: String::new(),
                    config: Default::default(),
                })
            })
            .expect("default pool");
    }
}
