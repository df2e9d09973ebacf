//! The real [`Processes`]: dnsmasq as a detached child of the daemon (reaped here), proxy
//! forwarders as `hutchd-helper __proxy`, which detach from the daemon entirely.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{alive, start_time, terminate, ProcessId, Processes};
use crate::config::BridgeConfig;
use crate::dnsmasq::{self, DnsmasqFiles};
use crate::error::{NetworkError, Result};
use crate::proxy::{ProxySpec, PROXY_READY};

/// How long a dnsmasq or a forwarder may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// See the module documentation.
#[derive(Debug, Default)]
pub struct SystemProcesses {
    /// The dnsmasq children of this process by pid, reaped once they exit.
    children: Mutex<HashMap<i32, Child>>,
}

impl SystemProcesses {
    pub fn new() -> Self {
        Self::default()
    }

    fn children(&self) -> MutexGuard<'_, HashMap<i32, Child>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Processes for SystemProcesses {
    fn spawn_dnsmasq(
        &self,
        bridge: &str,
        cfg: &BridgeConfig,
        files: &DnsmasqFiles,
    ) -> Result<ProcessId> {
        let mut child = dnsmasq::spawn(bridge, cfg, files)?;
        let pid = child.id() as i32;
        let ready = dnsmasq::wait_ready(files, bridge, &mut child, READY_TIMEOUT)
            .and_then(|()| ProcessId::of(pid).ok_or_else(|| gone("dnsmasq")));
        match ready {
            Ok(id) => {
                self.children().insert(pid, child);
                Ok(id)
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    fn find_dnsmasq(&self, bridge: &str, files: &DnsmasqFiles) -> Option<ProcessId> {
        ProcessId::of(dnsmasq::running_pid(files, bridge)?)
    }

    fn arguments(&self, p: ProcessId) -> Option<Vec<String>> {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
        if !self.alive(p) {
            return None;
        }
        // NUL-terminated arguments, the program first.
        let text = String::from_utf8_lossy(&cmdline);
        let mut args: Vec<String> = text.split('\0').skip(1).map(str::to_string).collect();
        if args.last().is_some_and(String::is_empty) {
            args.pop();
        }
        Some(args)
    }

    fn spawn_proxy(
        &self,
        helper_bin: &Path,
        device: &str,
        spec: &ProxySpec,
        spec_file: &Path,
    ) -> Result<ProcessId> {
        let body = serde_json::to_vec(spec).expect("a proxy spec serializes");
        std::fs::write(spec_file, body).map_err(|e| NetworkError::io("write", spec_file, e))?;
        let mut child = Command::new(helper_bin)
            .arg("__proxy")
            .arg(spec_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| NetworkError::Spawn {
                program: helper_bin.display().to_string(),
                source: e,
            })?;
        let mut out = child.stdout.take().expect("piped stdout");
        // The first process leaves at once; the forwarder it forked closes stdout once ready.
        let _ = child.wait();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        let said = rx.recv_timeout(READY_TIMEOUT).unwrap_or_default();
        let line = said.lines().next().unwrap_or_default();
        if let Some(reason) = line.strip_prefix("error ") {
            return Err(NetworkError::Proxy {
                device: device.into(),
                reason: reason.into(),
            });
        }
        line.strip_prefix(PROXY_READY)
            .and_then(|p| p.trim().parse::<i32>().ok())
            .and_then(ProcessId::of)
            .ok_or_else(|| NetworkError::NotReady {
                program: "proxy forwarder",
                reason: format!("device {device:?} said {line:?}"),
            })
    }

    fn alive(&self, p: ProcessId) -> bool {
        {
            let mut children = self.children();
            if let Some(c) = children.get_mut(&p.pid) {
                // Our own child: try_wait reaps it once it has exited.
                if !matches!(c.try_wait(), Ok(None)) {
                    children.remove(&p.pid);
                    return false;
                }
            }
        }
        alive(p.pid) && start_time(p.pid) == Some(p.start_time)
    }

    fn stop(&self, ps: &[ProcessId], grace: Duration) {
        let live: Vec<ProcessId> = ps.iter().copied().filter(|p| self.alive(*p)).collect();
        if !live.is_empty() {
            let pids: Vec<i32> = live.iter().map(|p| p.pid).collect();
            terminate(&pids, grace, || live.iter().all(|p| !self.alive(*p)));
        }
        for p in ps {
            let child = self.children().remove(&p.pid);
            if let Some(mut c) = child {
                let _ = c.wait();
            }
        }
    }
}

fn gone(program: &'static str) -> NetworkError {
    NetworkError::NotReady {
        program,
        reason: "it exited as it started".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_reaps_and_forgets() {
        let p = SystemProcesses::new();
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let id = ProcessId::of(child.id() as i32).unwrap();
        p.children().insert(id.pid, child);
        assert!(p.alive(id));
        p.stop(&[id], Duration::from_secs(2));
        assert!(!p.alive(id));
        assert!(p.children().is_empty());
        // A recycled pid is not the process that was started.
        let other = ProcessId {
            pid: std::process::id() as i32,
            start_time: 1,
        };
        assert!(!p.alive(other));
    }

    #[test]
    fn a_proxy_binary_that_cannot_run_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = SystemProcesses::new();
        let spec = ProxySpec {
            listen: "tcp:127.0.0.1:1".into(),
            connect: "tcp:127.0.0.1:2".into(),
            bind_instance: false,
            instance_pid: 1,
        };
        let err = p
            .spawn_proxy(
                &dir.path().join("missing"),
                "p",
                &spec,
                &dir.path().join("spec.json"),
            )
            .unwrap_err();
        assert!(matches!(err, NetworkError::Spawn { .. }), "{err}");
    }
}
