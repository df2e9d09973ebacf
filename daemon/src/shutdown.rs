//! `hutchd shutdown`, as `lxd shutdown`: asks the daemon of the state directory to stop
//! every container (highest `boot.stop.priority` first, each given
//! `boot.host_shutdown_timeout` seconds) and exit, and returns once it has. With no daemon
//! running, the same stops are made in this process. For host shutdown; a restart of the
//! daemon (an upgrade) never stops containers.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::init::{with_api, InitError};
use crate::layout::{lock_state_dir, LockError};

#[derive(clap::Args, Debug)]
pub struct ShutdownArgs {
    /// Seconds to wait for the containers to stop and the daemon to exit before giving up
    /// (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error(transparent)]
    Api(#[from] InitError),
    #[error("hutchd refused to shut down (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error(transparent)]
    Lock(LockError),
    #[error("hutchd is still running after {secs}s")]
    Timeout { secs: u64 },
}

/// Runs `hutchd shutdown`.
pub fn run(
    dir: &Path,
    hutchd: PathBuf,
    events: crate::events::EventHub,
    args: ShutdownArgs,
) -> Result<(), ShutdownError> {
    let (tx, rx) = mpsc::channel();
    let dir2 = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(shut_down(&dir2, hutchd, events));
    });
    if args.timeout == 0 {
        return rx.recv().unwrap_or(Ok(()));
    }
    match rx.recv_timeout(Duration::from_secs(args.timeout)) {
        Ok(res) => res,
        Err(_) => Err(ShutdownError::Timeout { secs: args.timeout }),
    }
}

fn shut_down(
    dir: &Path,
    hutchd: PathBuf,
    events: crate::events::EventHub,
) -> Result<(), ShutdownError> {
    let answer = with_api(dir, hutchd, events, |api| {
        api.send("PUT", "/internal/shutdown", None)
    });
    match answer {
        Ok((200, _)) => {}
        Ok((status, body)) => {
            let envelope: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Err(ShutdownError::Refused {
                status,
                message: envelope["error"].as_str().unwrap_or_default().to_string(),
            });
        }
        // The daemon exits as soon as its containers are stopped: its answer may be cut.
        Err(InitError::Io { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    wait_for_daemon_exit(dir)
}

/// Returns once no process holds the state directory's lock (the daemon has exited).
fn wait_for_daemon_exit(dir: &Path) -> Result<(), ShutdownError> {
    loop {
        match lock_state_dir(dir) {
            Ok(lock) => {
                drop(lock);
                return Ok(());
            }
            Err(LockError::Held { .. }) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(ShutdownError::Lock(e)),
        }
    }
}
