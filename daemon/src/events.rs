//! The event hub: lifecycle, operation and logging events fanned out to `/1.0/events`
//! subscribers over a bounded broadcast channel (slow subscribers lose events, the
//! daemon never grows).

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// How many events a slow subscriber may lag behind.
const CAPACITY: usize = 1024;

/// One serialized event and its type, shared by every subscriber.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub json: Arc<String>,
    /// Sent by another cluster member and relayed here: not passed on to members.
    pub relayed: bool,
}

/// Called, in the sender's thread, with the action and source of every lifecycle event: the
/// engine keeps each instance's and volume's `backup.yaml` current through it.
pub type LifecycleObserver = dyn Fn(&str, &str) + Send + Sync;

#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Event>,
    observer: Arc<std::sync::OnceLock<Box<LifecycleObserver>>>,
    /// The member name events carry as `location` (`none` standalone).
    location: Arc<std::sync::RwLock<Arc<str>>>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub").finish_non_exhaustive()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> Self {
        EventHub {
            tx: broadcast::channel(CAPACITY).0,
            observer: Arc::default(),
            location: Arc::new(std::sync::RwLock::new(Arc::from("none"))),
        }
    }

    /// The member name events carry from now on.
    pub fn set_location(&self, location: &str) {
        *self.location.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(location);
    }

    /// The member name events carry now.
    pub fn location(&self) -> String {
        self.location
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_string()
    }

    /// Passes on an event another member sent (its JSON, as it came): subscribers here
    /// see the whole cluster's events, as LXD's do.
    pub fn relay(&self, text: &str) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let kind = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["type"].as_str().map(str::to_string));
        let kind = match kind.as_deref() {
            Some("operation") => "operation",
            Some("lifecycle") => "lifecycle",
            Some("logging") => "logging",
            _ => return,
        };
        let _ = self.tx.send(Event {
            kind,
            json: Arc::new(text.to_string()),
            relayed: true,
        });
    }

    /// Sets the one lifecycle observer (a second is ignored).
    pub fn observe_lifecycle(&self, observer: Box<LifecycleObserver>) {
        let _ = self.observer.set(observer);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Sends an event of `kind` (`operation`, `lifecycle`, `logging`).
    pub fn send(&self, kind: &'static str, metadata: Value) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let location = self
            .location
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let event = json!({
            "type": kind,
            "timestamp": crate::now(),
            "location": &*location,
            "project": "default",
            "metadata": metadata,
        });
        let _ = self.tx.send(Event {
            kind,
            json: Arc::new(event.to_string()),
            relayed: false,
        });
    }

    /// A lifecycle event such as `instance-started` about `source` (an API path).
    pub fn lifecycle(&self, action: &str, source: &str, context: Value) {
        tracing::info!(action, source, "lifecycle");
        if let Some(observe) = self.observer.get() {
            observe(action, source);
        }
        self.send(
            "lifecycle",
            json!({
                "action": action,
                "source": source,
                "context": context,
                "requestor": crate::auth::requestor(),
            }),
        );
    }
}
