//! Cancelling long work (`DELETE /1.0/operations/<id>`): the running operation's cancel
//! as async code sees it (a race against the work) and as blocking threads see it (a
//! check between steps, readers that stop, a stop test for copies), and the error such
//! work ends with. The work undoes what it made (its `Revert`) before the operation ends
//! `Cancelled`.

use std::future::Future;
use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{DaemonError, Result};
use crate::operations::OpEntry;

/// What cancelled work ends with (the word LXD's operations use).
pub const CANCELED: &str = "Operation canceled";

/// The error of work stopped by a cancel.
pub fn canceled() -> DaemonError {
    DaemonError::BadRequest(CANCELED.into())
}

/// The io error a reader or a copy fails with once cancelled.
fn canceled_io() -> std::io::Error {
    std::io::Error::other("operation canceled")
}

/// How long a reader waits on a silent network before it looks at the cancel again.
const POLL: Duration = Duration::from_millis(100);

/// The cancel of the operation some work runs for; inert outside an operation.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    op: Option<Arc<OpEntry>>,
}

impl Cancel {
    /// The cancel of the operation whose body runs on this task (inert outside one). Taken
    /// on the operation's task, then handed to blocking threads.
    pub fn current() -> Self {
        Cancel {
            op: crate::operations::current(),
        }
    }

    /// Work nobody can cancel.
    pub fn none() -> Self {
        Cancel::default()
    }

    pub fn is_cancelled(&self) -> bool {
        self.op.as_ref().is_some_and(|op| op.is_cancelled())
    }

    /// The cancel as an error, between two steps.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(canceled())
        } else {
            Ok(())
        }
    }

    /// Runs `work` unless the operation is cancelled first; `work` is then dropped, so it
    /// must be something that leaves nothing when dropped (a wait for a lock, a lookup).
    pub async fn run<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let Some(op) = &self.op else {
            return work.await;
        };
        let cancelled = op.cancelled();
        tokio::select! {
            r = work => r,
            () = cancelled => Err(canceled()),
        }
    }

    /// `inner`, failing its next read once the operation is cancelled; with `hold`, a
    /// test's hold point reached after the first MiB (see [`hold`](Self::hold)).
    pub fn reader<R: Read>(&self, inner: R, hold: Option<&'static str>) -> CancelReader<R> {
        CancelReader {
            inner,
            cancel: self.clone(),
            hold,
            read: 0,
        }
    }

    /// `inner` (a download) read on a thread of its own, so that a cancel stops the
    /// consumer at once even while the server sends nothing. The thread then ends at its
    /// next read (data, the end, or the HTTP client's read timeout), holding nothing but
    /// the connection.
    pub fn detached_reader(&self, inner: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
        if self.op.is_none() {
            return inner;
        }
        let (tx, rx) = sync_channel::<std::io::Result<Vec<u8>>>(4);
        let spawned = std::thread::Builder::new()
            .name("image-download".into())
            .spawn(move || {
                let mut inner = inner;
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let item = match inner.read(&mut buf) {
                        Ok(n) => Ok(buf[..n].to_vec()),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => Err(e),
                    };
                    let last = !matches!(&item, Ok(v) if !v.is_empty());
                    // The consumer is gone (cancelled, failed): stop reading.
                    if tx.send(item).is_err() || last {
                        return;
                    }
                }
            });
        match spawned {
            Ok(_) => Box::new(DetachedReader {
                rx,
                chunk: Vec::new(),
                at: 0,
                done: false,
                cancel: self.clone(),
            }),
            Err(e) => Box::new(FailedReader(Some(e))),
        }
    }

    /// The stop test of a copy (`hutch_storage`'s `clone_volume_until`): asked with the
    /// bytes copied so far, true once cancelled; a test's hold point `copy` is reached
    /// after the first 16 MiB.
    pub fn copy_check(&self) -> impl Fn(u64) -> bool + Sync + '_ {
        move |copied| {
            if copied >= 16 << 20 {
                self.hold("copy");
            }
            self.is_cancelled()
        }
    }

    /// For tests only, in debug builds with `HUTCH_TEST_HOLD=<point>`: at `point` the work
    /// names the point in its operation's metadata (`test_hold`) and waits there until it
    /// is cancelled, so that a test cancels it mid-way without racing it. Blocking threads
    /// only. Does nothing otherwise.
    pub fn hold(&self, point: &str) {
        #[cfg(debug_assertions)]
        {
            let Some(op) = &self.op else { return };
            if std::env::var_os("HUTCH_TEST_HOLD").is_none_or(|v| v != point) {
                return;
            }
            if op.is_cancelled() {
                return;
            }
            tracing::warn!(point, "HUTCH_TEST_HOLD: waiting here for a cancel");
            let mut m = serde_json::Map::new();
            m.insert("test_hold".into(), point.into());
            op.extend_metadata(m);
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            while !op.is_cancelled() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        #[cfg(not(debug_assertions))]
        let _ = point;
    }
}

/// A reader that stops once its operation is cancelled.
pub struct CancelReader<R> {
    inner: R,
    cancel: Cancel,
    hold: Option<&'static str>,
    read: u64,
}

impl<R: Read> Read for CancelReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(point) = self.hold.filter(|_| self.read >= 1 << 20) {
            self.hold = None;
            self.cancel.hold(point);
        }
        if self.cancel.is_cancelled() {
            return Err(canceled_io());
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// The consuming end of [`Cancel::detached_reader`].
struct DetachedReader {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    done: bool,
    cancel: Cancel,
}

impl Read for DetachedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.done {
                return Ok(0);
            }
            if self.cancel.is_cancelled() {
                return Err(canceled_io());
            }
            match self.rx.recv_timeout(POLL) {
                Ok(Ok(chunk)) if chunk.is_empty() => self.done = true,
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(std::io::Error::other("the download thread ended"))
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A reader whose thread could not start: its one read says why.
struct FailedReader(Option<std::io::Error>);

impl Read for FailedReader {
    fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| std::io::Error::other("the download thread did not start")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventHub;
    use crate::operations::Operations;

    #[tokio::test]
    async fn readers_and_checks_stop_once_the_operation_is_cancelled() {
        let ops = Operations::new(EventHub::new());
        let op = ops.create(
            "task",
            "Testing",
            Default::default(),
            serde_json::Value::Null,
        );
        op.set_cancellable();
        let cancel = Cancel {
            op: Some(op.clone()),
        };
        assert!(cancel.check().is_ok());
        let mut plain = cancel.reader(&b"abc"[..], None);
        let mut buf = [0u8; 2];
        assert_eq!(plain.read(&mut buf).unwrap(), 2);
        // A silent network: the detached reader still answers the cancel.
        let (_tx, silent) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut detached = cancel.detached_reader(Box::new(silent));
        let check = cancel.copy_check();
        assert!(!check(0));
        assert!(op.cancel_work());
        assert!(cancel.is_cancelled() && check(0));
        assert_eq!(cancel.check().unwrap_err().to_string(), CANCELED);
        assert!(plain.read(&mut buf).is_err());
        let err = detached.read(&mut buf).unwrap_err();
        assert_eq!(err.to_string(), "operation canceled");
        let raced = cancel.run(std::future::pending::<Result<()>>()).await;
        assert_eq!(raced.unwrap_err().to_string(), CANCELED);
        // Outside an operation nothing is ever cancelled.
        let none = Cancel::none();
        assert!(!none.is_cancelled());
        assert_eq!(none.run(async { Ok(1) }).await.unwrap(), 1);
    }

    #[test]
    fn a_detached_reader_passes_the_data_through() {
        let ops = Operations::new(EventHub::new());
        let op = ops.create(
            "task",
            "Testing",
            Default::default(),
            serde_json::Value::Null,
        );
        let cancel = Cancel { op: Some(op) };
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let mut r = cancel.detached_reader(Box::new(std::io::Cursor::new(data.clone())));
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
    }
}
