//! The files of one container's runtime directory and the records kept in it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupLayout;
use crate::error::{Result, RuntimeError};
use crate::spec::Seccomp;

/// Longest path a unix socket address can hold.
const SUN_PATH_MAX: usize = 107;

/// Paths inside a container's runtime directory.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    root: PathBuf,
}

impl RuntimeDir {
    /// The runtime directory at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RuntimeDir { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
    /// The spec the monitor was started with.
    pub fn spec(&self) -> PathBuf {
        self.root.join("spec.json")
    }
    /// The monitor's socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("monitor.sock")
    }
    /// What a running container's monitor published ([`MonitorState`]).
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// How the container last ended ([`ExitRecord`]).
    pub fn exit(&self) -> PathBuf {
        self.root.join("exit.json")
    }
    /// Console output, bounded.
    pub fn console_log(&self) -> PathBuf {
        self.root.join("console.log")
    }
    /// The monitor's own diagnostics.
    pub fn monitor_log(&self) -> PathBuf {
        self.root.join("monitor.log")
    }

    /// Creates the directory and checks that the socket path fits a unix address.
    pub fn create(&self) -> Result<()> {
        let sock = self.socket();
        if sock.as_os_str().len() > SUN_PATH_MAX {
            return Err(RuntimeError::InvalidSpec {
                field: "runtime directory".into(),
                reason: format!("{} is too long for a unix socket", sock.display()),
            });
        }
        fs::create_dir_all(&self.root).map_err(|e| RuntimeError::io("create", &self.root, e))
    }
}

/// What a running container's monitor records for the daemon and the exec helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorState {
    pub name: String,
    /// Host pid of the container's init.
    pub init_pid: i32,
    /// Start time of init (clock ticks since boot), to detect pid reuse.
    pub init_start_time: u64,
    pub monitor_pid: i32,
    pub privileged: bool,
    pub nesting: bool,
    pub cgroup_layout: CgroupLayout,
    /// The container's cgroup path relative to each hierarchy's root.
    pub cgroup: String,
    pub halt_signal: i32,
    /// Unix time the container started.
    pub started_at: u64,
    /// Whether the root filesystem is an idmapped mount (else shifted or privileged).
    pub idmapped: bool,
    /// The seccomp policy exec'd commands run under, as init does.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// Whether lxcfs's views of /proc and /sys files were bound in at start.
    #[serde(default)]
    pub lxcfs: bool,
}

/// How a container's init ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code, when init exited.
    pub code: Option<i32>,
    /// Signal number, when init was killed by a signal.
    pub signal: Option<i32>,
    /// Unix time it ended.
    pub stopped_at: u64,
    /// Whether someone asked for the stop (the monitor's `Stop`), rather than init ending
    /// by itself.
    #[serde(default)]
    pub requested: bool,
}

/// Why a container's init ended, as far as the host can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    /// A stop was asked of the monitor.
    Requested,
    /// `poweroff` or `halt` inside: the kernel ends a pid namespace's init with SIGINT.
    Poweroff,
    /// `reboot` inside: the kernel ends a pid namespace's init with SIGHUP.
    Reboot,
    /// Anything else: init exited, crashed or was killed.
    Ended,
}

impl ExitRecord {
    /// How the container ended. From the host only SIGKILL and SIGSTOP reach an init that
    /// has no handler, so a death by SIGINT or SIGHUP is the kernel's reboot(2) verdict.
    pub fn cause(&self) -> ExitCause {
        if self.requested {
            return ExitCause::Requested;
        }
        match self.signal {
            Some(libc::SIGINT) => ExitCause::Poweroff,
            Some(libc::SIGHUP) => ExitCause::Reboot,
            _ => ExitCause::Ended,
        }
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes JSON to a temporary name, syncs it, and renames it into place: whole, and kept
/// through a power loss (the exit record, which says why a container stopped).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_json(path, value, true)
}

/// Writes JSON to a temporary name and renames it into place, unsynced: whole for every
/// reader, but not kept through a power loss. For the records of a running container (its
/// spec, its monitor's state), which a host's crash makes moot, as it ends the container.
/// A start pays no sync: on a host writing much (a pool's loop file on the same
/// filesystem), an fsync waits for the journal, and the wait grew with the host's load.
pub fn write_json_replace<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_json(path, value, false)
}

fn write_json<T: Serialize>(path: &Path, value: &T, sync: bool) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec(value).expect("runtime records serialize");
    let mut f = fs::File::create(&tmp).map_err(|e| RuntimeError::io("create", &tmp, e))?;
    f.write_all(&data)
        .map_err(|e| RuntimeError::io("write", &tmp, e))?;
    if sync {
        f.sync_all()
            .map_err(|e| RuntimeError::io("sync", &tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| RuntimeError::io("rename into place", path, e))
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map(Some).map_err(|e| {
            RuntimeError::io(
                "parse",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("read", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let rd = RuntimeDir::new(dir.path());
        let rec = ExitRecord {
            code: Some(0),
            signal: None,
            stopped_at: 5,
            requested: false,
        };
        write_json_atomic(&rd.exit(), &rec).unwrap();
        assert_eq!(read_json::<ExitRecord>(&rd.exit()).unwrap(), Some(rec));
        assert!(!rd.exit().with_extension("json.tmp").exists());
        assert_eq!(read_json::<ExitRecord>(&rd.state()).unwrap(), None);
    }

    #[test]
    fn causes_follow_the_request_and_the_kernels_reboot_signals() {
        let rec = |signal: Option<i32>, code: Option<i32>, requested: bool| ExitRecord {
            code,
            signal,
            stopped_at: 1,
            requested,
        };
        assert_eq!(
            rec(Some(libc::SIGINT), None, false).cause(),
            ExitCause::Poweroff
        );
        assert_eq!(
            rec(Some(libc::SIGHUP), None, false).cause(),
            ExitCause::Reboot
        );
        assert_eq!(
            rec(Some(libc::SIGKILL), None, false).cause(),
            ExitCause::Ended
        );
        assert_eq!(rec(None, Some(3), false).cause(), ExitCause::Ended);
        assert_eq!(rec(None, Some(0), false).cause(), ExitCause::Ended);
        // A stop asked for wins, whatever signal ended init.
        assert_eq!(
            rec(Some(libc::SIGKILL), None, true).cause(),
            ExitCause::Requested
        );
        assert_eq!(
            rec(Some(libc::SIGINT), None, true).cause(),
            ExitCause::Requested
        );
    }

    #[test]
    fn older_records_read_as_not_requested() {
        let rec: ExitRecord =
            serde_json::from_str(r#"{"code":null,"signal":9,"stopped_at":3}"#).unwrap();
        assert!(!rec.requested);
    }

    #[test]
    fn overlong_socket_paths_are_refused() {
        let rd = RuntimeDir::new(format!("/tmp/{}", "x".repeat(120)));
        assert!(rd.create().is_err());
    }
}
