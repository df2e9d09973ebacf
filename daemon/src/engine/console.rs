//! An instance's console: attached through its monitor, which holds the console pty, and
//! the console log the monitor keeps (`console.log`, rotated to `console.log.1`).
//!
//! An attached console's operation outlives the daemon: its identity lies in the runtime
//! directory (`consoles/<id>.json`) while it runs, and a new daemon serves it again under
//! the same id and secrets ([`Engine::kept_consoles`]); the pty is the monitor's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use hutch_api::instance::InstanceConsolePost;
use hutch_api::operation::StatusCode;
use hutch_runtime::MonitorClient;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{blocking, runtime_status, Engine};
use crate::error::{DaemonError, Result};

/// A console the engine accepted (the instance runs, the text console is asked for), ready
/// to attach.
#[derive(Debug)]
pub struct Console {
    controls: ConsoleControls,
    size: Option<(u16, u16)>,
}

/// The attached console's bytes, both ways.
#[derive(Debug)]
pub struct ConsoleStream {
    pub reader: OwnedReadHalf,
    pub writer: OwnedWriteHalf,
}

/// Resizes an attached console.
#[derive(Debug, Clone)]
pub struct ConsoleControls {
    runtime_dir: PathBuf,
}

/// What a new daemon needs to serve an attached console again as the same operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsoleIdentity {
    pub id: String,
    pub instance: String,
    pub created_at: String,
    /// Websocket secrets by fd (`0`, `control`).
    pub secrets: BTreeMap<String, String>,
    /// The operation's metadata as clients saw it.
    #[serde(default)]
    pub metadata: serde_json::Value,
}

fn consoles_dir(rundir: &Path) -> PathBuf {
    rundir.join("consoles")
}

impl Engine {
    /// Records a console operation's identity while it runs.
    pub fn keep_console(&self, identity: &ConsoleIdentity) -> Result<()> {
        let dir = consoles_dir(&self.d.runtime_dir(&identity.instance));
        let path = dir.join(format!("{}.json", identity.id));
        let json = serde_json::to_vec(identity)
            .map_err(|e| DaemonError::failed("write", "the console identity", e))?;
        // It holds the websocket secrets.
        crate::layout::write_private(&path, &json).map_err(|e| DaemonError::io("write", &path, e))
    }

    /// Forgets a console operation that ended.
    pub fn forget_console(&self, instance: &str, id: &str) {
        let dir = consoles_dir(&self.d.runtime_dir(instance));
        let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
    }

    /// The consoles earlier daemons had attached, on instances still running, ready to
    /// attach again (blocking); the identities of the others are removed.
    pub fn kept_consoles(&self) -> Vec<(ConsoleIdentity, Console)> {
        let mut found = Vec::new();
        let Ok(instances) = std::fs::read_dir(self.d.dir.join("containers")) else {
            return found;
        };
        for instance in instances.flatten() {
            let Ok(entries) = std::fs::read_dir(consoles_dir(&instance.path())) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let identity = std::fs::read(&path)
                    .ok()
                    .and_then(|raw| serde_json::from_slice::<ConsoleIdentity>(&raw).ok());
                let console = identity.as_ref().and_then(|id| {
                    self.console(&id.instance, &InstanceConsolePost::default())
                        .ok()
                });
                match (identity, console) {
                    (Some(identity), Some(console)) => found.push((identity, console)),
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        found
    }

    /// Checks `POST .../console`: the instance exists and is not stopped, and only the text
    /// console is asked for.
    pub fn console(&self, name: &str, req: &InstanceConsolePost) -> Result<Console> {
        self.d.db.instance_or_404(name)?;
        if runtime_status(&self.d, name).0 == StatusCode::Stopped {
            return Err(DaemonError::BadRequest("Instance is not running".into()));
        }
        if !req.kind.is_empty() && req.kind != "console" {
            return Err(DaemonError::BadRequest(
                "Only the text console is supported".into(),
            ));
        }
        Ok(Console {
            controls: ConsoleControls {
                runtime_dir: self.d.runtime_dir(name),
            },
            size: (req.width > 0 && req.height > 0).then_some((req.width, req.height)),
        })
    }

    /// What the instance wrote to its console so far.
    pub async fn console_log(&self, name: &str) -> Result<Vec<u8>> {
        self.d.db.instance_or_404(name)?;
        let dir = self.d.runtime_dir(name);
        blocking(move || Ok(hutch_runtime::container::console_log(&dir)?)).await
    }

    /// Empties the console log.
    pub async fn clear_console_log(&self, name: &str) -> Result<()> {
        self.d.db.instance_or_404(name)?;
        let dir = self.d.runtime_dir(name);
        blocking(move || {
            for f in [dir.join("console.log"), dir.join("console.log.1")] {
                if f.exists() {
                    std::fs::write(&f, b"").map_err(|e| DaemonError::io("clear", &f, e))?;
                }
            }
            Ok(())
        })
        .await
    }
}

impl Console {
    /// Attaches to the console, at the size the request asked for.
    pub async fn attach(&self) -> Result<ConsoleStream> {
        let dir = self.controls.runtime_dir.clone();
        let size = self.size;
        let stream = blocking(move || {
            if let Some((cols, rows)) = size {
                // The size is a courtesy: a console that cannot be resized still attaches.
                let _ = MonitorClient::connect(&dir).and_then(|mut c| c.resize_console(cols, rows));
            }
            Ok(MonitorClient::connect(&dir)?.attach_console()?)
        })
        .await?;
        stream
            .set_nonblocking(true)
            .map_err(|e| DaemonError::io("set nonblocking", "console", e))?;
        let stream = tokio::net::UnixStream::from_std(stream)
            .map_err(|e| DaemonError::io("register", "console", e))?;
        let (reader, writer) = stream.into_split();
        Ok(ConsoleStream { reader, writer })
    }

    /// A handle that resizes the console while it is attached.
    pub fn controls(&self) -> ConsoleControls {
        self.controls.clone()
    }
}

impl ConsoleControls {
    /// Resizes the console's pty.
    pub async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let dir = self.runtime_dir.clone();
        blocking(move || Ok(MonitorClient::connect(&dir)?.resize_console(cols, rows)?)).await
    }
}
