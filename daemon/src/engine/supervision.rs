//! What the daemon keeps to supervise running instances: which watcher is current for each
//! one, the autorestart rate limit, and whether a host shutdown is under way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::restart_limit::RestartLimit;

/// Held by the daemon; see `watch.rs` and `host_shutdown.rs`.
#[derive(Debug)]
pub struct Supervision {
    /// The token of the current watcher of each instance: a watcher whose instance was
    /// started again meanwhile finds another token here and does nothing.
    watchers: Mutex<HashMap<String, u64>>,
    next_token: AtomicU64,
    pub(in crate::engine) restarts: RestartLimit,
    /// Set when a host shutdown begins: nothing is started or restarted after it.
    shutting_down: AtomicBool,
    /// Told once the host shutdown stopped every instance: the daemon exits.
    exit: tokio::sync::Notify,
}

impl Supervision {
    pub fn new() -> Self {
        Supervision {
            watchers: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            restarts: RestartLimit::from_env(),
            shutting_down: AtomicBool::new(false),
            exit: tokio::sync::Notify::new(),
        }
    }

    /// Makes a new watcher of `name` the current one; returns its token.
    pub fn register(&self, name: &str) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), token);
        token
    }

    /// Whether the watcher with `token` is still the current one of `name`; if it is, it
    /// stops being current (its instance stopped and it handles that, once).
    pub fn take(&self, name: &str, token: u64) -> bool {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if watchers.get(name) == Some(&token) {
            watchers.remove(name);
            true
        } else {
            false
        }
    }

    /// Forgets an instance that is gone (deleted, renamed).
    pub fn forget(&self, name: &str) {
        self.watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.restarts.forget(name);
    }

    /// Marks a host shutdown begun; `false` when one already was.
    pub fn begin_shutdown(&self) -> bool {
        !self.shutting_down.swap(true, Ordering::SeqCst)
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Says that the host shutdown is done and the daemon should exit.
    pub fn request_exit(&self) {
        self.exit.notify_one();
    }

    /// Returns once a host shutdown asked the daemon to exit.
    pub async fn exit_requested(&self) {
        self.exit.notified().await
    }
}

impl Default for Supervision {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_watcher_of_an_instance_acts_and_only_once() {
        let s = Supervision::new();
        let first = s.register("c1");
        let second = s.register("c1");
        assert!(!s.take("c1", first), "superseded by a newer start");
        assert!(s.take("c1", second));
        assert!(!s.take("c1", second), "handled once");
        let third = s.register("c1");
        s.forget("c1");
        assert!(!s.take("c1", third));
    }
}
