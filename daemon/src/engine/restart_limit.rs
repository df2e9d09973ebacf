//! The `boot.autorestart` rate limit, as Incus has it: at most 10 restarts of one instance
//! within a minute; an exit past that leaves the instance stopped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Restarts allowed within one window.
pub const MAX_RESTARTS: usize = 10;
/// The window, unless `HUTCH_AUTORESTART_WINDOW` (seconds) says otherwise: tests widen it
/// so that eleven quick kills never straddle two windows on a slow machine.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The recent autorestarts of each instance, in memory (as Incus keeps them).
#[derive(Debug)]
pub struct RestartLimit {
    max: usize,
    window: Duration,
    history: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RestartLimit {
    pub fn new(max: usize, window: Duration) -> Self {
        RestartLimit {
            max,
            window,
            history: Mutex::new(HashMap::new()),
        }
    }

    /// Incus's limit, with the window from the environment when it names one.
    pub fn from_env() -> Self {
        let window = std::env::var("HUTCH_AUTORESTART_WINDOW")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(WINDOW);
        Self::new(MAX_RESTARTS, window)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records a restart of `name` at `now` when the limit allows one; `false` when `max`
    /// restarts already happened within the window before `now`.
    pub fn allow(&self, name: &str, now: Instant) -> bool {
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        let times = history.entry(name.to_string()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= self.max {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Forgets an instance's restarts (it was deleted or renamed).
    pub fn forget(&self, name: &str) {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_restarts_a_window_then_none_until_the_oldest_ages_out() {
        let limit = RestartLimit::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(
                limit.allow("c1", t0 + Duration::from_secs(i)),
                "restart {i}"
            );
        }
        assert!(!limit.allow("c1", t0 + Duration::from_secs(30)));
        assert!(!limit.allow("c1", t0 + Duration::from_secs(59)));
        // Another instance has its own count.
        assert!(limit.allow("c2", t0 + Duration::from_secs(30)));
        // The first restart leaves the window: one more is allowed, and only one.
        assert!(limit.allow("c1", t0 + Duration::from_secs(60)));
        assert!(!limit.allow("c1", t0 + Duration::from_secs(60)));
        // A refused exit is not counted: once every restart aged out, ten more.
        let later = t0 + Duration::from_secs(200);
        for i in 0..10 {
            assert!(limit.allow("c1", later + Duration::from_millis(i)));
        }
        assert!(!limit.allow("c1", later + Duration::from_secs(1)));
    }

    #[test]
    fn forgetting_an_instance_starts_it_afresh() {
        let limit = RestartLimit::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(limit.allow("c1", t0));
        assert!(!limit.allow("c1", t0));
        limit.forget("c1");
        assert!(limit.allow("c1", t0));
    }
}
