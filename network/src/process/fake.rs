//! A recording [`Processes`] for unit tests: spawns are recorded and "run" as entries in a
//! table of live fake processes (pids no kernel hands out), and the spawn it is told to
//! fail fails, so callers' undo paths can be checked without dnsmasq or root.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{ProcessId, Processes};
use crate::config::BridgeConfig;
use crate::dnsmasq::{dnsmasq_args, DnsmasqFiles};
use crate::error::{NetworkError, Result};
use crate::journal::Journal;
use crate::proxy::ProxySpec;

/// Above any pid the kernel hands out (`pid_max` is at most 2^22).
const FIRST_PID: i32 = 5_000_000;

/// One call made to a [`FakeProcesses`], with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessCall {
    SpawnDnsmasq { bridge: String, args: Vec<String> },
    FindDnsmasq { bridge: String },
    SpawnProxy { device: String, spec: ProxySpec },
    Stop(Vec<ProcessId>),
}

#[derive(Debug, Default)]
struct Table {
    calls: Vec<ProcessCall>,
    spawns: usize,
    /// The number (1-based, over the fake's life) of the spawn that fails.
    fail_at: Option<usize>,
    next_pid: i32,
    /// Live fake processes and the spawn that made each.
    live: Vec<(ProcessId, ProcessCall)>,
    journal: Option<Journal>,
}

impl Table {
    fn record(&mut self, call: ProcessCall) {
        if let Some(j) = &self.journal {
            j.push(format!("process {call:?}"));
        }
        self.calls.push(call);
    }

    fn spawn(&mut self, call: ProcessCall) -> Result<ProcessId> {
        self.record(call.clone());
        self.spawns += 1;
        if self.fail_at == Some(self.spawns) {
            return Err(NetworkError::NotReady {
                program: "fake process",
                reason: format!("{call:?} failed (injected)"),
            });
        }
        self.next_pid += 1;
        let id = ProcessId {
            pid: FIRST_PID + self.next_pid,
            start_time: 1,
        };
        self.live.push((id, call));
        Ok(id)
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct FakeProcesses {
    table: Mutex<Table>,
}

impl FakeProcesses {
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Also writes every call to `journal`.
    pub fn journal_to(&self, journal: &Journal) {
        self.table().journal = Some(journal.clone());
    }

    /// Makes the `n`th spawn from now fail (1: the next one); nothing is left running.
    pub fn fail_spawn(&self, n: usize) {
        let mut t = self.table();
        t.fail_at = Some(t.spawns + n);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<ProcessCall> {
        self.table().calls.clone()
    }

    /// The spawns of the processes still running, oldest first.
    pub fn live(&self) -> Vec<ProcessCall> {
        self.table().live.iter().map(|(_, c)| c.clone()).collect()
    }

    /// Takes the arguments starting with `prefix` from the live dnsmasq of `bridge`, as
    /// if an older daemon, which did not give them, had started it.
    pub fn drop_dnsmasq_arguments(&self, bridge: &str, prefix: &str) {
        for (_, c) in &mut self.table().live {
            if let ProcessCall::SpawnDnsmasq { bridge: b, args } = c {
                if b == bridge {
                    args.retain(|a| !a.starts_with(prefix));
                }
            }
        }
    }

    /// Ends process `p` as if it had crashed.
    pub fn kill(&self, p: ProcessId) {
        self.table().live.retain(|(id, _)| *id != p);
    }
}

impl Processes for FakeProcesses {
    fn spawn_dnsmasq(
        &self,
        bridge: &str,
        cfg: &BridgeConfig,
        files: &DnsmasqFiles,
    ) -> Result<ProcessId> {
        self.table().spawn(ProcessCall::SpawnDnsmasq {
            bridge: bridge.into(),
            args: dnsmasq_args(bridge, cfg, files),
        })
    }

    fn find_dnsmasq(&self, bridge: &str, _files: &DnsmasqFiles) -> Option<ProcessId> {
        let mut t = self.table();
        t.record(ProcessCall::FindDnsmasq {
            bridge: bridge.into(),
        });
        t.live.iter().find_map(|(id, c)| match c {
            ProcessCall::SpawnDnsmasq { bridge: b, .. } if b == bridge => Some(*id),
            _ => None,
        })
    }

    fn arguments(&self, p: ProcessId) -> Option<Vec<String>> {
        self.table().live.iter().find_map(|(id, c)| match c {
            ProcessCall::SpawnDnsmasq { args, .. } if *id == p => Some(args.clone()),
            _ => None,
        })
    }

    fn spawn_proxy(
        &self,
        _helper_bin: &Path,
        device: &str,
        spec: &ProxySpec,
        _spec_file: &Path,
    ) -> Result<ProcessId> {
        self.table().spawn(ProcessCall::SpawnProxy {
            device: device.into(),
            spec: spec.clone(),
        })
    }

    fn alive(&self, p: ProcessId) -> bool {
        self.table().live.iter().any(|(id, _)| *id == p)
    }

    fn stop(&self, ps: &[ProcessId], _grace: Duration) {
        let mut t = self.table();
        t.record(ProcessCall::Stop(ps.to_vec()));
        t.live.retain(|(id, _)| !ps.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawns_are_recorded_and_the_nth_fails() {
        let p = FakeProcesses::new();
        let spec = ProxySpec {
            listen: "tcp:0.0.0.0:80".into(),
            connect: "tcp:127.0.0.1:80".into(),
            bind_instance: false,
            instance_pid: 7,
        };
        let a = p
            .spawn_proxy(Path::new("/h"), "web", &spec, Path::new("/x"))
            .unwrap();
        assert!(p.alive(a));
        assert!(a.pid > 4_194_304);
        p.fail_spawn(1);
        assert!(p
            .spawn_proxy(Path::new("/h"), "web2", &spec, Path::new("/y"))
            .is_err());
        assert_eq!(p.live().len(), 1);
        p.stop(&[a], Duration::ZERO);
        assert!(!p.alive(a));
        assert!(p.live().is_empty());
        assert_eq!(p.calls().len(), 3);
    }
}
