//! The undo guard every multi-step change uses (Incus's `revert` shape): each step that
//! made something adds how to unmake it; unless the change reaches `success()`, dropping
//! the guard runs the undo steps, newest first.

#![allow(dead_code)] // TEMPORARY: the foundation lands before its users

/// Undo steps of a change in progress.
#[must_use = "a Revert undoes everything when dropped without success()"]
#[derive(Default)]
pub struct Revert {
    steps: Vec<Box<dyn FnOnce() + Send>>,
}

impl Revert {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds how to undo the step just done.
    pub fn add(&mut self, undo: impl FnOnce() + Send + 'static) {
        self.steps.push(Box::new(undo));
    }

    /// The change is complete: nothing is undone.
    pub fn success(mut self) {
        self.steps.clear();
    }
}

impl Drop for Revert {
    fn drop(&mut self) {
        while let Some(undo) = self.steps.pop() {
            undo();
        }
    }
}

impl std::fmt::Debug for Revert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Revert({} steps)", self.steps.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn undo_runs_newest_first_unless_the_change_succeeds() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut r = Revert::new();
            for step in 1..=3 {
                let log = log.clone();
                r.add(move || log.lock().unwrap().push(step));
            }
        }
        assert_eq!(*log.lock().unwrap(), vec![3, 2, 1]);
        let mut r = Revert::new();
        let l = log.clone();
        r.add(move || l.lock().unwrap().push(9));
        r.success();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}
