//! The export download: the tarball of a stored backup, produced while it is sent (no copy
//! on the server's disk), under an `Exporting backup` operation that shows progress (bytes
//! of volume data read of the total captured, rate, time left) and may be cancelled.
//!
//! The tar writer runs on its own thread, the compressor on as many more as there are
//! cores; chunks go to the HTTP body through a small bounded channel, so a slow client
//! slows the producer, and a client that goes away (the channel closes) or a cancel stops
//! it: the thread ends, any `btrfs send` it ran is killed, and nothing is left behind.

use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hutch_backup::compress::Compression;
use hutch_backup::config::{OptimizedHeader, OptimizedSubvolume};
use hutch_backup::write::{write_backup, Optimized, Plan};
use hutch_backup::{BackupError, Config, Index};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::{backup_container_vol, backup_resources, backup_snapshot_vol, ready_backup};
use crate::daemon::{instance_vol, snapshot_vol};
use crate::db::backups::BackupRow;
use crate::engine::Engine;
use crate::error::{DaemonError, Result};
use crate::operations::OpEntry;

/// Bytes per chunk handed to the HTTP body.
const CHUNK: usize = 256 << 10;

/// A backup's tarball being produced for one download.
#[derive(Debug)]
pub struct BackupDownload {
    pub stream: BackupStream,
    /// The name LXD gives the file (`Content-Disposition`).
    pub file_name: String,
    /// The `Exporting backup` operation's URL (progress; `DELETE` cancels).
    pub operation: String,
}

/// The tarball's bytes as they are produced; an error ends the body without its end
/// (a chunked body cut short), which every client takes as a failed download.
///
/// A cancel ends the body at once, without sending what is still queued: the client
/// learns of it while the operation is still readable.
pub struct BackupStream {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    cancelled: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for BackupStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupStream").finish_non_exhaustive()
    }
}

impl futures_util::Stream for BackupStream {
    type Item = io::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(cancelled) = self.cancelled.as_mut() {
            if cancelled.as_mut().poll(cx).is_ready() {
                self.cancelled = None;
                // Closed: a producer waiting for room stops at once.
                self.rx.close();
                return Poll::Ready(Some(Err(io::Error::other("the export was cancelled"))));
            }
        } else {
            return Poll::Ready(None);
        }
        self.rx.poll_recv(cx)
    }
}

impl Engine {
    /// `GET …/backups/<b>/export`: starts producing the tarball of a ready backup.
    pub fn export_backup(&self, name: &str, backup: &str) -> Result<BackupDownload> {
        let row = ready_backup(&self.d, name, backup)?;
        let compression = Compression::parse(&row.compression)?;
        let plan = self.plan(&row)?;
        let op = self.d.ops.create(
            "task",
            "Exporting backup",
            backup_resources(name, backup),
            json!({}),
        );
        op.set_cancellable();
        let (tx, rx) = mpsc::channel(8);
        let cancel = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = oneshot::channel();
        let producer = {
            let (op, cancel, total) = (op.clone(), cancel.clone(), row.total_bytes);
            move || {
                let result = produce(&plan, compression, tx.clone(), &op, &cancel, total);
                if let Err(e) = &result {
                    // Cut the body short: the client sees the download fail.
                    let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                }
                let _ = done_tx.send(result);
            }
        };
        // Its own thread with a roomy stack: the walk recurses once per directory level.
        std::thread::Builder::new()
            .name("backup-export".into())
            .stack_size(64 << 20)
            .spawn(producer)
            .map_err(|e| DaemonError::io("start", "the backup export thread", e))?;
        let watched = op.clone();
        self.d.ops.run(op.clone(), async move {
            let cancelled = watched.cancelled();
            tokio::pin!(done_rx);
            let result = tokio::select! {
                r = &mut done_rx => r,
                () = cancelled => {
                    cancel.store(true, Ordering::SeqCst);
                    done_rx.await
                }
            };
            match result {
                Ok(Ok(())) => Ok(None),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(DaemonError::BadRequest("The export stopped".into())),
            }
        });
        Ok(BackupDownload {
            stream: BackupStream {
                rx,
                cancelled: Some(Box::pin(op.cancelled())),
            },
            file_name: format!("{name}-{backup}{}", compression.extension()),
            operation: format!("/1.0/operations/{}", op.id()),
        })
    }

    /// What the tarball of `row` holds, from its captured volumes and config.
    fn plan(&self, row: &BackupRow) -> Result<Plan> {
        let pool = self.d.pool(&row.pool)?;
        let (name, backup) = (row.instance.as_str(), row.name.as_str());
        let mut config = Config::from_yaml(&row.config)?;
        // The captured config names the instance as it was; it may have been renamed.
        if let Some(c) = config.container.as_mut() {
            c.name = name.to_string();
        }
        if let Some(v) = config.volume.as_mut() {
            v.name = name.to_string();
        }
        let index = Index {
            name: name.to_string(),
            backend: pool.info().name.to_string(),
            pool: row.pool.clone(),
            snapshots: row.snapshots.clone(),
            optimized: Some(row.optimized_storage),
            optimized_header: Some(row.optimized_storage),
            kind: "container".into(),
            config: Some(config.clone()),
        };
        // The captured copies, or on dir the instance's own volumes (never optimized).
        let captured = super::captures_volumes(&*pool);
        let snapshot_path = |s: &str| {
            if captured {
                pool.path(&backup_snapshot_vol(name, backup, s))
            } else {
                pool.path(&snapshot_vol(name, s))
            }
        };
        let mut snapshots = Vec::new();
        for s in &row.snapshots {
            let path = snapshot_path(s);
            if !path.is_dir() {
                return Err(DaemonError::NotFound(format!(
                    "Snapshot {s:?} of backup {backup:?} no longer exists"
                )));
            }
            snapshots.push((s.clone(), path));
        }
        let container = if captured {
            pool.path(&backup_container_vol(name, backup))
        } else {
            pool.path(&instance_vol(name))
        };
        let optimized = if row.optimized_storage {
            let mut streams = Vec::new();
            let mut subvolumes = Vec::new();
            let mut parent: Option<std::path::PathBuf> = None;
            let unsupported = || DaemonError::BadRequest("The pool has no send stream".into());
            for s in &row.snapshots {
                let vol = backup_snapshot_vol(name, backup, s);
                let argv = pool
                    .send_argv(&vol, parent.as_deref())
                    .ok_or_else(unsupported)?;
                streams.push((format!("backup/snapshots/{s}.bin"), argv));
                subvolumes.push(OptimizedSubvolume {
                    path: "/".into(),
                    snapshot: s.clone(),
                    readonly: true,
                    uuid: String::new(),
                });
                parent = Some(vol);
            }
            let vol = backup_container_vol(name, backup);
            let argv = pool
                .send_argv(&vol, parent.as_deref())
                .ok_or_else(unsupported)?;
            streams.push(("backup/container.bin".into(), argv));
            subvolumes.push(OptimizedSubvolume {
                path: "/".into(),
                snapshot: String::new(),
                readonly: false,
                uuid: String::new(),
            });
            let header = OptimizedHeader { subvolumes };
            Some(Optimized {
                header_yaml: serde_yaml::to_string(&header).unwrap_or_default(),
                streams,
            })
        } else {
            None
        };
        Ok(Plan {
            index,
            backup_yaml: config.to_yaml(),
            snapshots,
            container,
            optimized,
        })
    }
}

/// Writes the tarball into the channel, reporting progress into `op`.
fn produce(
    plan: &Plan,
    compression: Compression,
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    op: &OpEntry,
    cancel: &AtomicBool,
    total: u64,
) -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sink = ChannelWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    let mut progress = ProgressReport::new(total);
    let mut tick = |read: u64| -> io::Result<()> {
        if cancel.load(Ordering::SeqCst) {
            return Err(io::Error::other("the export was cancelled"));
        }
        if let Some(meta) = progress.update(read) {
            op.extend_metadata(meta);
        }
        Ok(())
    };
    let compressor = compression.writer(sink, threads);
    let compressor = write_backup(compressor, plan, &mut tick)?;
    let mut sink = compressor
        .finish()
        .map_err(|e| BackupError::io("compress", "the backup stream", e))?;
    sink.flush()
        .map_err(|e| BackupError::io("send", "the backup stream", e))?;
    if let Some(meta) = progress.finish() {
        op.extend_metadata(meta);
    }
    Ok(())
}

/// Hands the stream to the HTTP body in chunks; a closed body (the client went away)
/// is a broken pipe, which stops the producer.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Progress as LXD words it (`45% (12.34MB/s)`) with bytes and time left, at most a few
/// times a second.
struct ProgressReport {
    total: u64,
    start: Instant,
    last: Option<Instant>,
}

impl ProgressReport {
    fn new(total: u64) -> Self {
        ProgressReport {
            total,
            start: Instant::now(),
            last: None,
        }
    }

    fn update(&mut self, read: u64) -> Option<serde_json::Map<String, Value>> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_millis(500))
        {
            return None;
        }
        self.last = Some(now);
        Some(progress_metadata(
            read,
            self.total,
            now.duration_since(self.start),
        ))
    }

    fn finish(&mut self) -> Option<serde_json::Map<String, Value>> {
        Some(progress_metadata(
            self.total,
            self.total,
            self.start.elapsed(),
        ))
    }
}

/// The operation metadata for `read` of `total` bytes after `elapsed`.
pub fn progress_metadata(
    read: u64,
    total: u64,
    elapsed: Duration,
) -> serde_json::Map<String, Value> {
    let read = read.min(total.max(read));
    let percent = (read * 100).checked_div(total).unwrap_or(100).min(100);
    let secs = elapsed.as_secs_f64().max(0.001);
    let speed = (read as f64 / secs) as u64;
    let eta = total
        .saturating_sub(read)
        .checked_div(speed.max(1))
        .unwrap_or(0);
    let text = format!("{percent}% ({}/s)", human(speed));
    let mut m = serde_json::Map::new();
    m.insert("export_progress".into(), Value::String(text.clone()));
    m.insert(
        "progress".into(),
        json!({
            "stage": "export",
            "percent": percent.to_string(),
            "speed": speed.to_string(),
            "processed": read.to_string(),
            "total": total.to_string(),
            "eta": eta.to_string(),
        }),
    );
    m
}

/// Bytes as LXD's `units.GetByteSizeString` writes them with two decimals (`12.34MB`).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_lxds_with_bytes_and_time_left() {
        let m = progress_metadata(50_000_000, 100_000_000, Duration::from_secs(4));
        assert_eq!(m["export_progress"], "50% (12.50MB/s)");
        assert_eq!(m["progress"]["eta"], "4");
        assert_eq!(m["progress"]["processed"], "50000000");
        let empty = progress_metadata(0, 0, Duration::from_secs(1));
        assert_eq!(empty["export_progress"], "100% (0B/s)");
    }
}
