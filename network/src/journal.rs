//! A log that fakes share, so a test sees the order of calls across runners (dnsmasq
//! stopped before the bridge goes, rules removed before the link...).

use std::sync::{Arc, Mutex};

/// Entries such as `netlink DeleteLink("br0")`, `nft delete t`, `process Stop([..])`.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&self, entry: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }

    /// Every entry so far, oldest first.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
