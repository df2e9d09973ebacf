//! The API request-duration histogram: one series per (method, route template), in a
//! fixed table of slots claimed once each, so recording a request is a hash, a few atomic
//! loads and three atomic adds, and never takes a lock. The number of series is bounded by
//! the table; requests past it are counted under route `other`.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Upper bounds of the buckets, in seconds.
pub const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Series kept apart; more share the overflow series.
const SLOTS: usize = 512;

/// The route of requests no route matched, and of series past the table.
pub const OTHER_ROUTE: &str = "other";

/// One series: per-bucket (not cumulative) counts, the sum in nanoseconds and the count.
struct Series {
    key: OnceLock<(String, String)>,
    buckets: [AtomicU64; BUCKETS.len()],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Series {
    fn new() -> Self {
        Series {
            key: OnceLock::new(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A series as read for a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSnapshot {
    pub method: String,
    pub route: String,
    /// (upper bound, cumulative count).
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

/// The histogram of every API request's duration.
pub struct RequestDurations {
    slots: Box<[Series]>,
    overflow: Series,
}

impl std::fmt::Debug for RequestDurations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestDurations").finish_non_exhaustive()
    }
}

impl Default for RequestDurations {
    fn default() -> Self {
        RequestDurations {
            slots: (0..SLOTS).map(|_| Series::new()).collect(),
            overflow: Series::new(),
        }
    }
}

impl RequestDurations {
    /// Counts one request of `method` on `route` (a template such as
    /// `/1.0/instances/{name}`, never a raw path) that took `took`.
    pub fn observe(&self, method: &str, route: &str, took: Duration) {
        self.series(method, route).observe(took);
    }

    fn series(&self, method: &str, route: &str) -> &Series {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (method, route).hash(&mut h);
        let start = h.finish() as usize % SLOTS;
        for i in 0..SLOTS {
            let slot = &self.slots[(start + i) % SLOTS];
            let key = match slot.key.get() {
                Some(k) => k,
                // Claim it; another thread may have claimed it first for another key.
                None => slot
                    .key
                    .get_or_init(|| (method.to_string(), route.to_string())),
            };
            if key.0 == method && key.1 == route {
                return slot;
            }
        }
        &self.overflow
    }

    /// Every series with a request, in table order.
    pub fn snapshot(&self) -> Vec<SeriesSnapshot> {
        let overflow = self
            .overflow
            .key
            .get_or_init(|| (OTHER_ROUTE.to_string(), OTHER_ROUTE.to_string()));
        self.slots
            .iter()
            .filter_map(|s| s.key.get().map(|k| (s, k)))
            .chain(std::iter::once((&self.overflow, overflow)))
            .filter(|(s, _)| s.count.load(Ordering::Relaxed) > 0)
            .map(|(s, (method, route))| {
                let mut cumulative = 0;
                let buckets = BUCKETS
                    .iter()
                    .zip(&s.buckets)
                    .map(|(le, n)| {
                        cumulative += n.load(Ordering::Relaxed);
                        (*le, cumulative)
                    })
                    .collect();
                SeriesSnapshot {
                    method: method.clone(),
                    route: route.clone(),
                    buckets,
                    sum_seconds: s.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
                    // At least the buckets' total, should a scrape land between the adds.
                    count: s.count.load(Ordering::Relaxed).max(cumulative),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_method_and_route() {
        let h = RequestDurations::default();
        h.observe("GET", "/1.0", Duration::from_micros(300));
        h.observe("GET", "/1.0", Duration::from_millis(7));
        h.observe("GET", "/1.0", Duration::from_secs(30));
        h.observe("POST", "/1.0/instances", Duration::from_millis(40));
        let snap = h.snapshot();
        assert_eq!(snap.len(), 2);
        let get = snap.iter().find(|s| s.method == "GET").unwrap();
        assert_eq!(get.route, "/1.0");
        assert_eq!(get.count, 3);
        // 0.3 ms in the first bucket, 7 ms from 0.01 on, 30 s only in +Inf.
        assert_eq!(get.buckets[0], (0.001, 1));
        assert_eq!(get.buckets[2], (0.005, 1));
        assert_eq!(get.buckets[3], (0.01, 2));
        assert_eq!(get.buckets.last(), Some(&(10.0, 2)));
        assert!((get.sum_seconds - 30.0073).abs() < 1e-9);
        let post = snap.iter().find(|s| s.method == "POST").unwrap();
        assert_eq!(post.buckets[5], (0.05, 1));
    }

    #[test]
    fn series_past_the_table_share_one() {
        let h = RequestDurations::default();
        for i in 0..SLOTS + 10 {
            h.observe("GET", &format!("/r{i}"), Duration::from_millis(1));
        }
        let snap = h.snapshot();
        assert_eq!(snap.len(), SLOTS + 1);
        let other = snap.iter().find(|s| s.route == OTHER_ROUTE).unwrap();
        assert_eq!(other.count, 10);
    }

    #[test]
    fn concurrent_requests_are_all_counted() {
        let h = RequestDurations::default();
        std::thread::scope(|s| {
            for t in 0..4 {
                let h = &h;
                s.spawn(move || {
                    for i in 0..1000 {
                        h.observe("GET", &format!("/r{}", (i + t) % 7), Duration::ZERO);
                    }
                });
            }
        });
        let total: u64 = h.snapshot().iter().map(|s| s.count).sum();
        assert_eq!(total, 4000);
        assert_eq!(h.snapshot().len(), 7);
    }
}
