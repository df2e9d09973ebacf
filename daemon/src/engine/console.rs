//! An instance's console: attached through its monitor, which holds the console pty, and
//! the console log the monitor keeps (`console.log`, rotated to `console.log.1`).

use std::path::PathBuf;

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

impl Engine {
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
