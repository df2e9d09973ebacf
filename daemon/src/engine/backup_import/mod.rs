//! `POST /1.0/instances` with an `application/octet-stream` body (`lxc import`): a backup
//! tarball unpacked into the pool as it arrives, never spooled.
//!
//! Three parties: a task pumps the request body into a bounded channel (counting bytes
//! for progress); a blocking thread reads the tarball from that channel
//! ([`hutch_backup::read`]) into an [`ImportSink`](sink::ImportSink), which checks the
//! index, records the instance (`creating`) and makes its volumes; the operation
//! (`Restoring backup`) is created once the index is accepted and waits for the thread.
//! A refused index is the request's own error (nothing was made); a later failure, a
//! cancel (`DELETE /1.0/operations/<id>`) or a client that goes away ends the thread, whose
//! revert removes every row, volume and staging directory it made. The answer is sent
//! once the body is read (to its end, even after a failure), so that a client still
//! writing its upload always gets it.

mod receive;
mod sink;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use super::Engine;
use crate::error::{DaemonError, Result};
use crate::operations::{instance_resources, OpEntry};

/// An upload's request: the headers `lxc import` sends.
#[derive(Debug, Default, Clone)]
pub struct BackupUpload {
    /// `X-LXD-name`: the instance's name instead of the backup's.
    pub name: Option<String>,
    /// `X-LXD-pool`: the pool instead of the default profile's root disk pool.
    pub pool: Option<String>,
    /// `Content-Length`, when the client sent one (for progress).
    pub length: Option<u64>,
}

/// The request body, as chunks.
pub type UploadBody = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

impl Engine {
    /// Imports the backup that `body` carries; returns its operation once the body is read.
    pub async fn import_backup(&self, req: BackupUpload, body: UploadBody) -> Result<Arc<OpEntry>> {
        let received = Arc::new(AtomicU64::new(0));
        let cancelled = Arc::new(AtomicBool::new(false));
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (chunks_tx, chunks_rx) = mpsc::channel(16);
        let pump = tokio::spawn(pump(body, chunks_tx, received.clone(), cancel_rx));
        let (index_tx, index_rx) = oneshot::channel();
        let reader = ChannelReader {
            rx: chunks_rx,
            current: Bytes::new(),
            cancelled: cancelled.clone(),
        };
        let total = req.length;
        let e = self.clone();
        let flag = cancelled.clone();
        let mut thread = tokio::task::spawn_blocking(crate::auth::on_behalf_blocking(move || {
            sink::import(e, req, reader, index_tx, flag)
        }));
        let name = match index_rx.await {
            Ok(Ok(name)) => name,
            refused => {
                // The thread ended before the index was accepted: its error is the answer.
                let outcome = (&mut thread).await;
                let _ = pump.await;
                return Err(match (refused, outcome) {
                    (Ok(Err(e)), _) => e,
                    (_, Ok(Err(e))) => e,
                    (_, Err(join)) => join.into(),
                    (_, Ok(Ok(()))) => {
                        DaemonError::BadRequest(hutch_backup::read::MISSING_INDEX.to_string())
                    }
                });
            }
        };
        let op = self.ops.create(
            "task",
            "Restoring backup",
            instance_resources(&name),
            json!({}),
        );
        op.set_cancellable();
        let op2 = op.clone();
        self.ops.run(op.clone(), async move {
            let cancel = op2.cancelled();
            tokio::pin!(cancel);
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    outcome = &mut thread => {
                        report(&op2, received.load(Ordering::Relaxed), total, start);
                        return outcome?.map(|()| None);
                    }
                    () = &mut cancel => {
                        cancelled.store(true, Ordering::SeqCst);
                        let _ = cancel_tx.send(true);
                        // The thread removes what it made before the operation ends.
                        let _ = (&mut thread).await;
                        return Err(DaemonError::BadRequest("Operation cancelled".into()));
                    }
                    _ = tick.tick() => {
                        report(&op2, received.load(Ordering::Relaxed), total, start);
                    }
                }
            }
        });
        let _ = pump.await;
        Ok(op)
    }
}

/// Progress in the operation's metadata, in the shape of the export's (LXD's `progress`
/// strings: stage, bytes processed, speed, and with a known total the percent and the
/// seconds left); also as LXD-style text.
fn report(op: &OpEntry, received: u64, total: Option<u64>, start: Instant) {
    let secs = start.elapsed().as_secs_f64().max(0.001);
    let rate = (received as f64 / secs) as u64;
    let mut progress = serde_json::Map::new();
    progress.insert("stage".into(), "import".into());
    progress.insert("processed".into(), received.to_string().into());
    progress.insert("speed".into(), rate.to_string().into());
    let mut text = format!(
        "Restore: {} ({}/s)",
        super::image_pull::byte_size(received),
        super::image_pull::byte_size(rate)
    );
    if let Some(total) = total.filter(|t| *t > 0) {
        progress.insert("total".into(), total.to_string().into());
        let percent = (received.min(total) * 100 / total).min(100);
        progress.insert("percent".into(), percent.to_string().into());
        if let Some(eta) = total.saturating_sub(received).checked_div(rate) {
            progress.insert("eta".into(), eta.to_string().into());
            text = format!(
                "Restore: {percent}% ({}/s, {eta}s left)",
                super::image_pull::byte_size(rate)
            );
        }
    }
    let mut m = serde_json::Map::new();
    m.insert("progress".into(), progress.into());
    m.insert("restore_progress".into(), text.into());
    op.extend_metadata(m);
}

/// Moves the body into `tx`, counting it; a cancel or a broken upload reaches the reader
/// as an error. Once the reader is gone, the rest of the body is read and dropped.
async fn pump(
    mut body: UploadBody,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    received: Arc<AtomicU64>,
    mut cancel: watch::Receiver<bool>,
) {
    let mut tx = Some(tx);
    loop {
        let next = tokio::select! {
            next = body.next() => next,
            _ = cancel.wait_for(|c| *c), if tx.is_some() => {
                if let Some(tx) = tx.take() {
                    let _ = tx.try_send(Err(std::io::Error::other("the import was cancelled")));
                }
                continue;
            }
        };
        match next {
            None => return,
            Some(Ok(chunk)) => {
                received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if let Some(sender) = &tx {
                    if sender.send(Ok(chunk)).await.is_err() {
                        tx = None;
                    }
                }
            }
            Some(Err(e)) => {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Err(e)).await;
                }
                return;
            }
        }
    }
}

/// The body as a blocking reader (on the import's thread).
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
    cancelled: Arc<AtomicBool>,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("the import was cancelled"));
            }
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) => self.current = chunk,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}
