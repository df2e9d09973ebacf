//! The instance lifecycle: what creating, starting, stopping, deleting and inspecting an
//! instance means, tying database, storage, images and runtime together. No HTTP here.

mod autostart;
mod create;
mod exec;
pub mod files;
mod images;
mod lifecycle;
mod schedule;
mod snapshot;
mod spec;

pub use autostart::autostart;
pub use create::validate_name;
pub use create::{create_instance, reconcile_creates, validate_create};
pub use exec::{exec_instance, exec_request};
pub use images::{import_image, Upload};
pub use lifecycle::{
    delete_instance, freeze_instance, rename_instance, start_instance, stop_instance,
    unfreeze_instance,
};
pub use schedule::start_scheduler;
pub use snapshot::{
    create_snapshot, delete_snapshot, rename_snapshot, restore_snapshot, validate_snapshot_name,
};
pub use spec::{check_root_size, expand, limits_from as limits_of};

use hutch_api::instance::{Instance, InstanceState};
use hutch_api::operation::StatusCode;
use hutch_runtime::{container, Status};

use crate::daemon::Daemon;
use crate::db::instances::InstanceRow;
use crate::error::Result;

/// The runtime status of an instance: status text, code, init pid.
pub fn runtime_status(d: &Daemon, name: &str) -> (StatusCode, i64) {
    let rd = d.runtime_dir(name);
    match container::status(&rd) {
        Ok(Status::Running(state)) => {
            let frozen = container::is_frozen(&rd).unwrap_or(false);
            (
                if frozen {
                    StatusCode::Frozen
                } else {
                    StatusCode::Running
                },
                state.init_pid as i64,
            )
        }
        _ => (StatusCode::Stopped, -1),
    }
}

/// The API object of an instance.
pub fn instance_object(d: &Daemon, row: &InstanceRow) -> Result<Instance> {
    let expanded = expand(d, row)?;
    let (code, _) = runtime_status(d, &row.name);
    Ok(Instance {
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
    })
}

/// `GET .../state`.
pub fn instance_state(d: &Daemon, name: &str) -> Result<InstanceState> {
    let (code, pid) = runtime_status(d, name);
    let mut state = InstanceState {
        status: code.text().into(),
        status_code: code as u16,
        pid,
        ..Default::default()
    };
    if code == StatusCode::Stopped {
        state.pid = 0;
        return Ok(state);
    }
    if let Ok(u) = container::usage(&d.runtime_dir(name)) {
        state.processes = u.processes as i64;
        state.cpu.usage = u.cpu_time_ns as i64;
        state.memory.usage = u.memory_bytes as i64;
        state.memory.usage_peak = u.memory_peak_bytes.unwrap_or(0) as i64;
        state.memory.swap_usage = u.swap_bytes.unwrap_or(0) as i64;
    }
    state.network = Some(Default::default());
    Ok(state)
}
