//! An instance's log files: `lxc.log` (its monitor's log) and the recorded output of exec
//! (`exec_<id>.stdout|stderr` under `logs/<name>/`).

use std::path::PathBuf;

use super::{blocking, Engine};
use crate::error::{DaemonError, Result};

/// The log that is the monitor's, as LXD names it.
const MONITOR_LOG: &str = "lxc.log";

impl Engine {
    /// Where the recorded output of exec in instance `name` goes.
    pub(super) fn exec_logs_dir(&self, name: &str) -> PathBuf {
        self.d.dir.join("logs").join(name)
    }

    /// Where log `file` of instance `name` lives; only names LXD exposes are accepted.
    fn log_path(&self, name: &str, file: &str) -> Result<PathBuf> {
        if file == MONITOR_LOG {
            return Ok(self.d.runtime_dir(name).join("monitor.log"));
        }
        let ok = file.starts_with("exec_") && !file.contains('/') && !file.contains("..");
        if !ok {
            return Err(DaemonError::NotFound("not found".into()));
        }
        Ok(self.exec_logs_dir(name).join(file))
    }

    /// The names of an instance's logs: `lxc.log` first, then the exec logs, sorted.
    pub async fn instance_logs(&self, name: &str) -> Result<Vec<String>> {
        self.d.db.instance_or_404(name)?;
        let dir = self.exec_logs_dir(name);
        blocking(move || {
            let mut names: Vec<String> = match std::fs::read_dir(&dir) {
                Ok(entries) => entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("exec_"))
                    .collect(),
                Err(_) => Vec::new(),
            };
            names.sort();
            names.insert(0, MONITOR_LOG.to_string());
            Ok(names)
        })
        .await
    }

    /// The content of log `file` (an `lxc.log` not yet written is empty).
    pub async fn instance_log(&self, name: &str, file: &str) -> Result<Vec<u8>> {
        self.d.db.instance_or_404(name)?;
        let path = self.log_path(name, file)?;
        let monitor = file == MONITOR_LOG;
        blocking(move || match std::fs::read(&path) {
            Ok(data) => Ok(data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && monitor => Ok(Vec::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(DaemonError::NotFound("not found".into()))
            }
            Err(e) => Err(DaemonError::io("read", &path, e)),
        })
        .await
    }

    /// Deletes an exec log (`lxc.log` stays).
    pub async fn delete_instance_log(&self, name: &str, file: &str) -> Result<()> {
        self.d.db.instance_or_404(name)?;
        if file == MONITOR_LOG {
            return Err(DaemonError::BadRequest("lxc.log cannot be deleted".into()));
        }
        let path = self.log_path(name, file)?;
        blocking(move || {
            std::fs::remove_file(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    DaemonError::NotFound("not found".into())
                } else {
                    DaemonError::io("remove", &path, e)
                }
            })
        })
        .await
    }
}
