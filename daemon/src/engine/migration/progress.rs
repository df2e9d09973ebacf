//! `fs_progress` in the operation's metadata while a volume travels:
//! `"<vol>: 12.34MB (1.23MB/s)"`, as LXD's progress tracker words it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::operations::OpEntry;

/// Counts the bytes of one volume's transfer and reports them at most once a second.
pub struct Progress {
    volume: String,
    op: Option<Arc<OpEntry>>,
    bytes: AtomicU64,
    start: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    pub fn new(volume: &str, op: Option<Arc<OpEntry>>) -> Progress {
        let now = Instant::now();
        Progress {
            volume: volume.to_string(),
            op,
            bytes: AtomicU64::new(0),
            start: now,
            last: Mutex::new(now),
        }
    }

    pub fn add(&self, n: u64) {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        let Some(op) = &self.op else { return };
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < Duration::from_secs(1) {
                return;
            }
            *last = Instant::now();
        }
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let text = format!(
            "{}: {} ({}/s)",
            self.volume,
            byte_size(total),
            byte_size((total as f64 / secs) as u64)
        );
        let mut m = serde_json::Map::new();
        m.insert("fs_progress".into(), text.into());
        op.extend_metadata(m);
    }
}

/// LXD's `units.GetByteSizeString(n, 2)`, shared with the image pulls' progress.
pub use crate::engine::image_pull::byte_size;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_lxds() {
        assert_eq!(byte_size(999), "999B");
        assert_eq!(byte_size(12_340_000), "12.34MB");
        assert_eq!(byte_size(1_230_000), "1.23MB");
    }
}
