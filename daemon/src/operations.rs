//! Operations: the registry of background work, its websockets, and the events that
//! report every change. Finished operations stay readable for five seconds, then go.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::WebSocket;
use hutch_api::operation::{Operation, StatusCode};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::DaemonError;
use crate::events::EventHub;

tokio::task_local! {
    /// The operation whose work is running on this task.
    static CURRENT: Arc<OpEntry>;
}

/// The operation whose body is running on this task, if any: deep steps (an image
/// download) report progress into its metadata without being handed it.
pub fn current() -> Option<Arc<OpEntry>> {
    CURRENT.try_with(|e| e.clone()).ok()
}

/// How long a finished operation stays readable.
const KEEP_FINISHED: Duration = Duration::from_secs(5);

/// Where a websocket connected with a secret goes: to one waiter, once, or to a session
/// that takes connections again while it runs (a client reconnecting to an exec).
#[derive(Debug)]
pub enum SocketSink {
    Once(oneshot::Sender<WebSocket>),
    Reconnectable(mpsc::Sender<WebSocket>),
}

impl SocketSink {
    /// Hands the connected socket over; false when nobody waits any more.
    pub fn send(self, ws: WebSocket) -> bool {
        match self {
            SocketSink::Once(tx) => tx.send(ws).is_ok(),
            SocketSink::Reconnectable(tx) => tx.try_send(ws).is_ok(),
        }
    }
}

/// One operation.
#[derive(Debug)]
pub struct OpEntry {
    op: Mutex<Operation>,
    done: watch::Sender<bool>,
    /// Websockets the operation waits for, by secret.
    sockets: Mutex<HashMap<String, SocketSink>>,
    /// Set by `DELETE /1.0/operations/<id>` on an operation whose work may be cancelled.
    cancel: watch::Sender<bool>,
    /// The work watches [`OpEntry::cancelled`] (unlike a token, which a cancel ends).
    work_cancellable: std::sync::atomic::AtomicBool,
    events: EventHub,
}

impl OpEntry {
    pub fn id(&self) -> String {
        self.lock().id.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Operation> {
        self.op.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the operation as clients see it.
    pub fn snapshot(&self) -> Operation {
        self.lock().clone()
    }

    fn publish(&self, op: &Operation) {
        self.events
            .send("operation", serde_json::to_value(op).unwrap_or(Value::Null));
    }

    /// Merges keys into an object metadata.
    pub fn extend_metadata(&self, extra: serde_json::Map<String, Value>) {
        let op = {
            let mut op = self.lock();
            if !op.metadata.is_object() {
                op.metadata = Value::Object(Default::default());
            }
            if let Some(m) = op.metadata.as_object_mut() {
                m.extend(extra);
            }
            op.updated_at = crate::now();
            op.clone()
        };
        self.publish(&op);
    }

    /// Registers a websocket secret; the receiver gets the socket when a client connects.
    pub fn expect_socket(&self, secret: &str) -> oneshot::Receiver<WebSocket> {
        let (tx, rx) = oneshot::channel();
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(secret.to_string(), SocketSink::Once(tx));
        rx
    }

    /// Registers a websocket secret that may connect again while the operation runs:
    /// every connection comes out of the receiver, the latest being the live one.
    pub fn expect_sockets(&self, secret: &str) -> mpsc::Receiver<WebSocket> {
        let (tx, rx) = mpsc::channel(4);
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(secret.to_string(), SocketSink::Reconnectable(tx));
        rx
    }

    /// The waiting end for `secret`: taken once, or for a reconnectable one, shared.
    pub fn take_socket(&self, secret: &str) -> Option<SocketSink> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        match sockets.get(secret) {
            Some(SocketSink::Reconnectable(tx)) => Some(SocketSink::Reconnectable(tx.clone())),
            Some(SocketSink::Once(_)) => sockets.remove(secret),
            None => None,
        }
    }

    /// Lets clients cancel the operation's work (`may_cancel`); the work watches
    /// [`cancelled`](Self::cancelled), cleans up, and the operation ends `Cancelled`.
    pub fn set_cancellable(&self) {
        self.work_cancellable
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let op = {
            let mut op = self.lock();
            op.may_cancel = true;
            op.clone()
        };
        self.publish(&op);
    }

    /// Asks the work to stop; false when the operation has no cancellable work running.
    pub fn cancel_work(&self) -> bool {
        let running = {
            let op = self.lock();
            op.may_cancel && op.status_code == StatusCode::Running as u16
        };
        if !running
            || !self
                .work_cancellable
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return false;
        }
        self.cancel.send_replace(true);
        true
    }

    /// Whether a client cancelled the work: what blocking threads, which cannot await
    /// [`cancelled`](Self::cancelled), look at between steps.
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Resolves once the operation is cancelled.
    pub fn cancelled(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.cancel.subscribe();
        async move {
            if rx.wait_for(|c| *c).await.is_err() {
                // The operation is gone without a cancel: nothing will come.
                std::future::pending::<()>().await;
            }
        }
    }

    fn finish(&self, result: Result<Option<Value>, String>) {
        let op = {
            let mut op = self.lock();
            let code = match &result {
                Ok(_) => StatusCode::Success,
                // Work that stopped because a client cancelled it.
                Err(_) if *self.cancel.borrow() => StatusCode::Cancelled,
                Err(_) => StatusCode::Failure,
            };
            op.status = code.text().into();
            op.status_code = code as u16;
            match result {
                Ok(Some(m)) => op.metadata = m,
                Ok(None) => {}
                Err(e) => op.err = e,
            }
            op.updated_at = crate::now();
            op.may_cancel = false;
            op.clone()
        };
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.publish(&op);
        // send_replace stores the value even when nobody is subscribed yet.
        self.done.send_replace(true);
    }

    /// Marks a running operation that may be cancelled as cancelled; false when it is
    /// final already or may not be cancelled. Checked and changed under one lock, so a
    /// single-use operation (a token) is consumed once whoever races for it.
    fn cancel(&self) -> bool {
        let op = {
            let mut op = self.lock();
            if !op.may_cancel || op.status_code != StatusCode::Running as u16 {
                return false;
            }
            op.status = StatusCode::Cancelled.text().into();
            op.status_code = StatusCode::Cancelled as u16;
            op.may_cancel = false;
            op.updated_at = crate::now();
            op.clone()
        };
        self.publish(&op);
        self.done.send_replace(true);
        true
    }

    /// Waits until the operation is final or `timeout` passes.
    pub async fn wait(&self, timeout: Option<Duration>) {
        let mut rx = self.done.subscribe();
        let fut = rx.wait_for(|d| *d);
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, fut).await;
            }
            None => {
                let _ = fut.await;
            }
        }
    }
}

/// What makes the work's writes durable (the database's commits).
pub trait Durability: Send + Sync {
    /// Whether anything written is not durable yet (cheap).
    fn owed(&self) -> bool;
    /// Makes everything written so far durable. Blocks.
    fn sync(&self);
}

/// Every operation the daemon knows.
#[derive(Clone)]
pub struct Operations {
    ops: Arc<Mutex<BTreeMap<String, Arc<OpEntry>>>>,
    events: EventHub,
    /// Run before an operation is said to be done, so that a client told "Success" finds
    /// the change after a power loss.
    durable: Arc<std::sync::OnceLock<Arc<dyn Durability>>>,
}

impl std::fmt::Debug for Operations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operations").finish_non_exhaustive()
    }
}

impl Operations {
    pub fn new(events: EventHub) -> Self {
        Operations {
            ops: Arc::default(),
            events,
            durable: Arc::default(),
        }
    }

    /// Sets what makes an operation's writes durable before it ends (once).
    pub fn set_durable(&self, durable: Arc<dyn Durability>) {
        let _ = self.durable.set(durable);
    }

    /// Registers a running operation.
    pub fn create(
        &self,
        class: &str,
        description: &str,
        resources: BTreeMap<String, Vec<String>>,
        metadata: Value,
    ) -> Arc<OpEntry> {
        let id = uuid::Uuid::new_v4().to_string();
        self.register(id, crate::now(), class, description, resources, metadata)
    }

    /// Registers again, with its id and creation time, a running operation an earlier
    /// daemon made (a kept exec session this daemon adopts).
    pub fn adopt(
        &self,
        id: &str,
        created_at: &str,
        class: &str,
        description: &str,
        resources: BTreeMap<String, Vec<String>>,
        metadata: Value,
    ) -> Arc<OpEntry> {
        self.register(
            id.to_string(),
            created_at.to_string(),
            class,
            description,
            resources,
            metadata,
        )
    }

    fn register(
        &self,
        id: String,
        created_at: String,
        class: &str,
        description: &str,
        resources: BTreeMap<String, Vec<String>>,
        metadata: Value,
    ) -> Arc<OpEntry> {
        let now = crate::now();
        let op = Operation {
            id: id.clone(),
            class: class.into(),
            description: description.into(),
            created_at,
            updated_at: now,
            status: StatusCode::Running.text().into(),
            status_code: StatusCode::Running as u16,
            resources,
            metadata,
            may_cancel: false,
            err: String::new(),
            // The member that runs it (`none` standalone), as LXD says.
            location: self.events.location(),
        };
        let entry = Arc::new(OpEntry {
            op: Mutex::new(op),
            done: watch::channel(false).0,
            sockets: Mutex::default(),
            cancel: watch::channel(false).0,
            work_cancellable: Default::default(),
            events: self.events.clone(),
        });
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, entry.clone());
        entry.publish(&entry.snapshot());
        entry
    }

    /// Registers a token: an operation with no body that stays running until it is used
    /// or revoked (both cancel it), holding `metadata` for whoever presents its secret.
    pub fn create_token(&self, description: &str, metadata: Value) -> Arc<OpEntry> {
        self.create_token_on(description, BTreeMap::new(), metadata)
    }

    /// [`create_token`](Self::create_token) naming the objects it opens (an image secret
    /// names its image).
    pub fn create_token_on(
        &self,
        description: &str,
        resources: BTreeMap<String, Vec<String>>,
        metadata: Value,
    ) -> Arc<OpEntry> {
        let entry = self.create("token", description, resources, metadata);
        entry.lock().may_cancel = true;
        entry
    }

    /// Cancels `entry` if it is running and may be cancelled (a token), and forgets it a
    /// little after; false otherwise.
    pub fn cancel(&self, entry: &Arc<OpEntry>) -> bool {
        if !entry.cancel() {
            return false;
        }
        let ops = self.clone();
        let id = entry.id();
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_FINISHED).await;
            ops.ops
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
        true
    }

    /// Runs `work` as the body of `entry`, records how it ended, and forgets the
    /// operation a little after.
    pub fn run<F>(&self, entry: Arc<OpEntry>, work: F)
    where
        F: Future<Output = Result<Option<Value>, DaemonError>> + Send + 'static,
    {
        let ops = self.clone();
        // Events the work sends name who asked for it.
        let work = crate::auth::on_behalf(work);
        tokio::spawn(async move {
            let result = CURRENT
                .scope(entry.clone(), work)
                .await
                .map_err(|e| e.chain());
            if let Err(e) = &result {
                tracing::info!(operation = %entry.id(), error = %e, "operation failed");
            }
            // Failed work may have written too (what it undid).
            if let Some(durable) = ops.durable.get().filter(|d| d.owed()).cloned() {
                let _ = tokio::task::spawn_blocking(move || durable.sync()).await;
            }
            entry.finish(result);
            tokio::time::sleep(KEEP_FINISHED).await;
            ops.ops
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&entry.id());
        });
    }

    pub fn get(&self, id: &str) -> Option<Arc<OpEntry>> {
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<OpEntry>> {
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// A fresh operation secret (websockets, image secrets): 64 hex characters, as LXD's.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    // Two v4 UUIDs: 244 random bits from the OS generator.
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    bytes[..16].copy_from_slice(a.as_bytes());
    bytes[16..].copy_from_slice(b.as_bytes());
    hex::encode(bytes)
}

/// The resources map of an operation on one instance.
pub fn instance_resources(name: &str) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([
        (
            "instances".to_string(),
            vec![format!("/1.0/instances/{name}")],
        ),
        (
            "containers".to_string(),
            vec![format!("/1.0/containers/{name}")],
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operations_run_finish_and_report_events() {
        let events = EventHub::new();
        let mut sub = events.subscribe();
        let ops = Operations::new(events);
        let entry = ops.create("task", "Testing", instance_resources("c1"), Value::Null);
        assert_eq!(entry.snapshot().status_code, 103);
        ops.run(entry.clone(), async {
            Ok(Some(serde_json::json!({"x": 1})))
        });
        entry.wait(Some(Duration::from_secs(5))).await;
        let op = entry.snapshot();
        assert_eq!((op.status_code, op.status.as_str()), (200, "Success"));
        assert_eq!(op.metadata["x"], 1);
        let first = sub.recv().await.unwrap();
        assert!(first.json.contains("\"status_code\":103"));
        let last = sub.recv().await.unwrap();
        assert!(last.json.contains("\"status_code\":200"));
        assert!(ops.get(&op.id).is_some());
    }

    #[tokio::test]
    async fn tokens_run_until_cancelled_once() {
        let ops = Operations::new(EventHub::new());
        let task = ops.create("task", "Testing", BTreeMap::new(), Value::Null);
        assert!(!ops.cancel(&task), "a task may not be cancelled");
        let token = ops.create_token("Executing operation", serde_json::json!({"secret": "s"}));
        assert_eq!(token.snapshot().class, "token");
        assert!(token.snapshot().may_cancel);
        assert!(ops.cancel(&token));
        assert!(!ops.cancel(&token), "a token is consumed once");
        let op = token.snapshot();
        assert_eq!((op.status_code, op.status.as_str()), (401, "Cancelled"));
        token.wait(None).await;
    }

    #[tokio::test]
    async fn failures_carry_the_error() {
        let ops = Operations::new(EventHub::new());
        let entry = ops.create("task", "Testing", BTreeMap::new(), Value::Null);
        ops.run(entry.clone(), async {
            Err(DaemonError::BadRequest("nope".into()))
        });
        entry.wait(None).await;
        let op = entry.snapshot();
        assert_eq!((op.status_code, op.err.as_str()), (400, "nope"));
    }
}
