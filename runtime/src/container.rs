//! Operations on a container by its runtime directory: status, stop, freeze, limits and
//! usage. Cgroup work reads state.json and goes straight to the cgroup, not via the monitor.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cgroup::{self, CgroupDriver, CgroupUsage, RealCgroupFs};
use crate::console;
use crate::error::{Result, RuntimeError};
use crate::monitor::MonitorClient;
use crate::spec::Limits;
use crate::state::{read_json, ExitRecord, MonitorState, RuntimeDir};

/// Whether a container runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Running(Box<MonitorState>),
    /// Not running; how it last ended, when known.
    Stopped(Option<ExitRecord>),
}

/// Asks the monitor (the only authority on whether init lives).
pub fn status(dir: &Path) -> Result<Status> {
    match MonitorClient::connect(dir).and_then(|mut c| c.state()) {
        Ok(state) => Ok(Status::Running(Box::new(state))),
        Err(RuntimeError::NotRunning { .. }) => {
            Ok(Status::Stopped(read_json(&RuntimeDir::new(dir).exit())?))
        }
        Err(e) => Err(e),
    }
}

/// What the monitor published, if its container runs: read from state.json, with init's
/// start time checked against /proc so a recycled pid never passes. No round trip to the
/// monitor: this is what listing many containers uses.
pub fn running_state(dir: &Path) -> Option<MonitorState> {
    let state: MonitorState = read_json(&RuntimeDir::new(dir).state()).ok()??;
    (crate::sys::process_start_time(state.init_pid) == Some(state.init_start_time)).then_some(state)
}

/// How the container last ended, from the record its monitor left (none when it never
/// stopped, or the record is unreadable).
pub fn last_exit(dir: &Path) -> Option<ExitRecord> {
    read_json(&RuntimeDir::new(dir).exit()).ok().flatten()
}

/// The cgroup of a running container, from its published state.
pub fn cgroup_of_state(state: &MonitorState) -> Box<dyn CgroupDriver> {
    cgroup::open(&state.cgroup_layout, &state.cgroup, Arc::new(RealCgroupFs))
}

/// Stops the container: init's halt signal, then SIGKILL after `timeout`; at once if `force`.
/// A container whose monitor was killed (its init runs on, reparented) is stopped here,
/// through its cgroup, and cleaned up as its monitor would have.
pub fn stop(dir: &Path, timeout: Duration, force: bool) -> Result<ExitRecord> {
    match MonitorClient::connect(dir) {
        Ok(monitor) => monitor.stop(timeout, force),
        Err(RuntimeError::NotRunning { dir: d }) => match running_state(dir) {
            Some(state) => Ok(stop_orphan(dir, &state, timeout, force)),
            None => Err(RuntimeError::NotRunning { dir: d }),
        },
        Err(e) => Err(e),
    }
}

/// Stops a container that has no monitor. Its init is no child of ours, so its exit status
/// is unknown: the record says only when it stopped.
fn stop_orphan(dir: &Path, state: &MonitorState, timeout: Duration, force: bool) -> ExitRecord {
    let cgroup = cgroup_of_state(state);
    let _ = cgroup.thaw();
    let init_lives =
        || crate::sys::process_start_time(state.init_pid) == Some(state.init_start_time);
    if !force {
        if init_lives() {
            // SAFETY: kill with plain integers; the start time check rules out a recycled pid.
            unsafe { libc::kill(state.init_pid, state.halt_signal) };
        }
        let start = std::time::Instant::now();
        while init_lives() && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = cgroup.kill_all();
    let _ = cgroup.destroy();
    let rd = RuntimeDir::new(dir);
    let record = ExitRecord {
        code: None,
        signal: None,
        stopped_at: crate::state::unix_now(),
        requested: true,
    };
    let _ = crate::state::write_json_atomic(&rd.exit(), &record);
    let _ = std::fs::remove_file(rd.socket());
    let _ = std::fs::remove_file(rd.state());
    record
}

/// The container's console output so far.
pub fn console_log(dir: &Path) -> Result<Vec<u8>> {
    console::read_log(&RuntimeDir::new(dir).console_log())
}

/// The cgroup of a running container.
pub fn cgroup_of(dir: &Path) -> Result<Box<dyn CgroupDriver>> {
    let state: MonitorState =
        read_json(&RuntimeDir::new(dir).state())?.ok_or_else(|| RuntimeError::NotRunning {
            dir: dir.to_path_buf(),
        })?;
    Ok(cgroup::open(
        &state.cgroup_layout,
        &state.cgroup,
        Arc::new(RealCgroupFs),
    ))
}

/// Freezes every process of the container.
pub fn freeze(dir: &Path) -> Result<()> {
    cgroup_of(dir)?.freeze()
}

/// Thaws a frozen container.
pub fn thaw(dir: &Path) -> Result<()> {
    cgroup_of(dir)?.thaw()
}

/// Whether the container is frozen.
pub fn is_frozen(dir: &Path) -> Result<bool> {
    cgroup_of(dir)?.is_frozen()
}

/// Applies new limits to a running container.
pub fn set_limits(dir: &Path, limits: &Limits) -> Result<()> {
    cgroup_of(dir)?.apply_limits(limits)
}

/// Memory, CPU and process usage.
pub fn usage(dir: &Path) -> Result<CgroupUsage> {
    cgroup_of(dir)?.usage()
}

/// Gives a running container the devices of `new` (allowlist rules beyond the standard
/// ones) in place of those of `old`.
pub fn set_device_rules(dir: &Path, old: &[String], new: &[String]) -> Result<()> {
    cgroup::set_device_rules(cgroup_of(dir)?.as_ref(), old, new)
}
