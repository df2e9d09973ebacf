//! The per-container monitor: starting it, and talking to it. A connection to its socket
//! ends when the monitor exits, which is after init is gone, cleaned up and its exit
//! recorded (`exit.json`, with whether a stop was asked for): the daemon's watchers hold
//! one open, unasked, to learn that a container stopped by itself.

mod process;
pub mod protocol;

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

pub use process::monitor_main;
use process::STATUS_FD;
use protocol::{recv, send, MonitorReply, MonitorRequest};

use crate::error::{Result, RuntimeError};
use crate::spawn::{self, ChildStdio};
use crate::spec::ContainerSpec;
use crate::state::{write_json_replace, ExitRecord, MonitorState, RuntimeDir};

/// How long a start may take before the starter gives up waiting for the monitor.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// What the monitor tells its starter once the container runs or failed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartReport {
    Started {
        init_pid: i32,
        monitor_pid: i32,
        /// Where the monitor's time went, in microseconds by step (none from an older one).
        #[serde(default)]
        steps: Vec<(String, u64)>,
    },
    Failed {
        message: String,
        invalid_spec: bool,
    },
}

/// A container that was just started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub init_pid: i32,
    pub monitor_pid: i32,
    /// Where the start's time went, in microseconds by step: the starter's spawn of the
    /// helper and the helper's start; then the monitor's: the container's cgroup, its user
    /// namespace, its root, the rest prepared, the namespaces and init's fork, init's
    /// mounts, the pre-start hooks (the NIC plug), init's exec, the state published.
    pub steps: Vec<(String, u64)>,
}

/// Starts `spec` under a new monitor (`<hutchd-helper> __monitor <dir>`), detached from the
/// caller, and returns once init runs. `dir` becomes the container's runtime directory.
pub fn start(helper_bin: &Path, dir: &Path, spec: &ContainerSpec) -> Result<Started> {
    let begun = Instant::now();
    spec.validate()?;
    if MonitorClient::connect(dir).is_ok() {
        return Err(RuntimeError::AlreadyRunning {
            dir: dir.to_path_buf(),
        });
    }
    let rd = RuntimeDir::new(dir);
    rd.create()?;
    // Unlinked first: ext4 flushes a file renamed over another before the rename returns
    // (auto_da_alloc), which an unsynced write would otherwise pay at every restart.
    let _ = std::fs::remove_file(rd.spec());
    write_json_replace(&rd.spec(), spec)?;
    let _ = std::fs::remove_file(rd.exit());

    let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RuntimeError::sys("create pipe", e))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(rd.monitor_log())
        .map_err(|e| RuntimeError::io("open", rd.monitor_log(), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| RuntimeError::io("dup", rd.monitor_log(), e))?;
    // From a read-only bind of hutchd-helper, as the exec helper (see `sys::helper_exe`).
    let exe = crate::sys::helper_exe(helper_bin).unwrap_or_else(|| helper_bin.to_path_buf());
    let child = spawn::spawn(
        &exe,
        &[
            helper_bin.as_os_str(),
            "__monitor".as_ref(),
            dir.as_os_str(),
        ],
        [ChildStdio::Null, spawn::fd(&log), spawn::fd(&log2)],
        (status_w.as_raw_fd(), STATUS_FD),
    )
    .map_err(|e| RuntimeError::io("run", helper_bin, e))?;
    drop((log, log2, status_w));
    let spawned = Instant::now();
    // The first monitor process forks the real one and exits at once.
    while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
    let forked = Instant::now();
    let report = read_report(File::from(status_r))?;
    match report {
        StartReport::Started {
            init_pid,
            monitor_pid,
            steps,
        } => {
            let us = |a: Instant, b: Instant| b.duration_since(a).as_micros() as u64;
            // The starter's own steps first: the runtime directory, the spec and the spawn;
            // then the helper's exec until its first process forked the monitor and exited.
            let mut all = vec![
                ("spawn".to_string(), us(begun, spawned)),
                ("helper".to_string(), us(spawned, forked)),
            ];
            all.extend(steps);
            Ok(Started {
                init_pid,
                monitor_pid,
                steps: all,
            })
        }
        StartReport::Failed {
            message,
            invalid_spec: true,
        } => Err(RuntimeError::InvalidSpec {
            field: "spec".into(),
            reason: message,
        }),
        StartReport::Failed { message, .. } => Err(RuntimeError::StartFailed { reason: message }),
    }
}

fn read_report(mut pipe: File) -> Result<StartReport> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RuntimeError::Timeout {
                what: "the monitor to start the container",
                millis: START_TIMEOUT.as_millis() as u64,
            });
        }
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(RuntimeError::sys("wait for the monitor", e)),
        }
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RuntimeError::io("read", "monitor status", e)),
        }
    }
    serde_json::from_slice(&data).map_err(|_| RuntimeError::StartFailed {
        reason: format!(
            "the monitor died before reporting ({})",
            String::from_utf8_lossy(&data).trim()
        ),
    })
}

/// A connection to a running container's monitor.
#[derive(Debug)]
pub struct MonitorClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl MonitorClient {
    /// Connects to the monitor of the container in `dir`; `NotRunning` if there is none.
    pub fn connect(dir: &Path) -> Result<Self> {
        let sock = RuntimeDir::new(dir).socket();
        let stream = UnixStream::connect(&sock).map_err(|_| RuntimeError::NotRunning {
            dir: dir.to_path_buf(),
        })?;
        let writer = stream
            .try_clone()
            .map_err(|e| RuntimeError::io("dup", &sock, e))?;
        Ok(MonitorClient {
            reader: BufReader::new(stream),
            writer,
        })
    }

    fn request(&mut self, req: &MonitorRequest, expected: &'static str) -> Result<MonitorReply> {
        send(&mut self.writer, req)?;
        match recv::<MonitorReply>(&mut self.reader, "monitor", expected)? {
            Some(MonitorReply::Error { message }) => {
                Err(RuntimeError::StartFailed { reason: message })
            }
            Some(reply) => Ok(reply),
            None => Err(RuntimeError::Protocol {
                peer: "monitor",
                expected,
                got: "end of stream".into(),
            }),
        }
    }

    /// What the monitor knows of its container.
    pub fn state(&mut self) -> Result<MonitorState> {
        match self.request(&MonitorRequest::State, "state")? {
            MonitorReply::State(s) => Ok(*s),
            other => Err(unexpected("state", &other)),
        }
    }

    /// Sends `signal` to init.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        match self.request(&MonitorRequest::Signal { signal }, "ok")? {
            MonitorReply::Ok => Ok(()),
            other => Err(unexpected("ok", &other)),
        }
    }

    /// Stops the container and returns once it is gone and cleaned up.
    pub fn stop(mut self, timeout: Duration, force: bool) -> Result<ExitRecord> {
        let req = MonitorRequest::Stop {
            timeout_ms: timeout.as_millis() as u64,
            force,
        };
        match self.request(&req, "stopped") {
            Ok(MonitorReply::Stopped(record)) => {
                // The monitor exits right after this reply; its end closes the socket, so
                // waiting for EOF means nothing of the container is left when we return.
                let mut rest = Vec::new();
                let _ = self.reader.read_to_end(&mut rest);
                Ok(record)
            }
            Ok(other) => Err(unexpected("stopped", &other)),
            Err(e) => Err(e),
        }
    }

    /// Sets the console's window size.
    pub fn resize_console(&mut self, cols: u16, rows: u16) -> Result<()> {
        match self.request(&MonitorRequest::ResizeConsole { cols, rows }, "ok")? {
            MonitorReply::Ok => Ok(()),
            other => Err(unexpected("ok", &other)),
        }
    }

    /// Attaches to the console: the returned stream carries raw console bytes both ways.
    pub fn attach_console(mut self) -> Result<UnixStream> {
        send(&mut self.writer, &MonitorRequest::AttachConsole)?;
        // Read the reply a byte at a time: console bytes may follow it at once.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            match self.reader.get_mut().read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                Ok(_) => {
                    return Err(RuntimeError::Protocol {
                        peer: "monitor",
                        expected: "ok",
                        got: "end of stream".into(),
                    })
                }
                Err(e) => return Err(RuntimeError::io("read from", "monitor socket", e)),
            }
        }
        match serde_json::from_slice::<MonitorReply>(&line) {
            Ok(MonitorReply::Ok) => Ok(self.writer),
            _ => Err(RuntimeError::Protocol {
                peer: "monitor",
                expected: "ok",
                got: String::from_utf8_lossy(&line).trim().to_string(),
            }),
        }
    }
}

fn unexpected(expected: &'static str, got: &MonitorReply) -> RuntimeError {
    RuntimeError::Protocol {
        peer: "monitor",
        expected,
        got: format!("{got:?}"),
    }
}
