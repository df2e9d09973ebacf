//! The daemon's helper processes that outlive it (dnsmasq, proxy forwarders), behind the
//! [`Processes`] seam: [`SystemProcesses`] starts, finds and stops real ones;
//! [`FakeProcesses`] records the calls and can fail a spawn, for unit tests.

mod fake;
mod system;

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use fake::{FakeProcesses, ProcessCall};
pub use system::SystemProcesses;

use crate::config::BridgeConfig;
use crate::dnsmasq::DnsmasqFiles;
use crate::error::Result;
use crate::proxy::ProxySpec;

/// A process as the kernel knows it: its pid and its start time (clock ticks after boot),
/// which together never name a recycled pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessId {
    /// The live process `pid`, if there is one.
    pub fn of(pid: i32) -> Option<Self> {
        Some(ProcessId {
            pid,
            start_time: start_time(pid)?,
        })
    }
}

/// Starts, finds and stops the daemon's helper processes.
pub trait Processes: Send + Sync + fmt::Debug {
    /// Starts dnsmasq for `bridge`, detached, and returns once it serves (its pid file is
    /// written); a failure leaves no process behind.
    fn spawn_dnsmasq(
        &self,
        bridge: &str,
        cfg: &BridgeConfig,
        files: &DnsmasqFiles,
    ) -> Result<ProcessId>;
    /// The live dnsmasq of `bridge` that its pid file names (one a previous daemon started).
    fn find_dnsmasq(&self, bridge: &str, files: &DnsmasqFiles) -> Option<ProcessId>;
    /// The arguments `p` runs with (after its program), while it runs.
    fn arguments(&self, p: ProcessId) -> Option<Vec<String>>;
    /// Starts the forwarder of proxy `device` (`hutchd-helper __proxy <spec_file>`, the spec
    /// written first), and returns once it has bound its ports or said why it could not;
    /// it is nobody's child.
    fn spawn_proxy(
        &self,
        helper_bin: &Path,
        device: &str,
        spec: &ProxySpec,
        spec_file: &Path,
    ) -> Result<ProcessId>;
    /// Whether `p` still runs (not gone, not a zombie, not a recycled pid).
    fn alive(&self, p: ProcessId) -> bool;
    /// SIGTERM to each of `ps`, SIGKILL after `grace` to those still there; returns once
    /// all are gone (or after `grace` more).
    fn stop(&self, ps: &[ProcessId], grace: Duration);
}

/// The start time of process `pid` (field 22 of its stat), if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// SIGTERM to each of `pids`, SIGKILL after `grace` to those that `gone` does not yet
/// report gone; returns once it does (or after `grace` more).
pub fn terminate(pids: &[i32], grace: Duration, mut gone: impl FnMut() -> bool) {
    let signal_all = |s| {
        for pid in pids {
            let _ = kill(Pid::from_raw(*pid), s);
        }
    };
    signal_all(Signal::SIGTERM);
    let start = Instant::now();
    while !gone() {
        if start.elapsed() > grace * 2 {
            return;
        }
        if start.elapsed() > grace {
            signal_all(Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_terminated_and_seen_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(alive(pid));
        let id = ProcessId::of(pid).unwrap();
        assert_eq!(ProcessId::of(pid), Some(id));
        terminate(&[pid], Duration::from_secs(2), || {
            !matches!(child.try_wait(), Ok(None))
        });
        assert!(!alive(pid));
        assert_eq!(ProcessId::of(pid), None);
    }
}
