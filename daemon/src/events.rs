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
}

/// Called, in the sender's thread, with the action and source of every lifecycle event: the
/// engine keeps each instance's and volume's `backup.yaml` current through it.
pub type LifecycleObserver = dyn Fn(&str, &str) + Send + Sync;

#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Event>,
    observer: Arc<std::sync::OnceLock<Box<LifecycleObserver>>>,
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
        }
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
        let event = json!({
            "type": kind,
            "timestamp": crate::now(),
            "location": "none",
            "project": "default",
            "metadata": metadata,
        });
        let _ = self.tx.send(Event {
            kind,
            json: Arc::new(event.to_string()),
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
