//! Durability at the end of each change, not at each commit.
//!
//! The database runs in WAL mode with `synchronous=NORMAL`: a commit writes its frames to
//! the WAL and returns, without `fsync`. A change the API answers for (an operation that
//! ends, a write request that returns) then calls [`WalSync::sync`], which makes every
//! commit made so far durable with one `fdatasync` of the WAL, outside the connection's
//! lock. So what a client was told is done survives a power loss, as with
//! `synchronous=FULL`, but a launch pays one sync instead of one per commit (ten), and
//! concurrent changes share theirs instead of queueing behind each other's under the
//! lock. A power loss in the middle of a change can lose that change's commits since the
//! last sync, the kind of half-done change a crash part-way leaves (the start-up
//! reconciliation finishes recorded deletes; `hutchd recover` brings back rows whose
//! volumes remain). WAL frames carry checksums, so SQLite replays exactly the commits
//! whose frames reached the disk; a checkpoint syncs by itself.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Counts the commits of a connection and makes them durable on demand.
#[derive(Debug)]
pub struct WalSync {
    wal: PathBuf,
    /// Commits made (the connection's commit hook counts them).
    committed: AtomicU64,
    /// Commits known durable: a change with nothing owed costs two loads.
    durable: AtomicU64,
    /// The WAL, opened for syncing; its lock makes one syncer at a time, and a caller that
    /// waited finds its commits synced by the one before it.
    file: Mutex<Option<File>>,
}

impl WalSync {
    /// For the database at `db` (its WAL is `<db>-wal`).
    pub fn new(db: &std::path::Path) -> WalSync {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: wal.into(),
            committed: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            file: Mutex::new(None),
        }
    }

    /// Called by the connection's commit hook, under the connection's lock.
    pub fn note_commit(&self) {
        self.committed.fetch_add(1, Ordering::SeqCst);
    }
}

impl crate::operations::Durability for WalSync {
    fn owed(&self) -> bool {
        self.committed.load(Ordering::SeqCst) > self.durable.load(Ordering::SeqCst)
    }

    /// Makes every commit noted so far durable; returns at once when they are. Blocks
    /// (an `fdatasync`): call it off the async workers.
    fn sync(&self) {
        let want = self.committed.load(Ordering::SeqCst);
        if self.durable.load(Ordering::SeqCst) >= want {
            return;
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if self.durable.load(Ordering::SeqCst) >= want {
            return;
        }
        // Everything committed by now is covered by this sync, not only `want`.
        let covered = self.committed.load(Ordering::SeqCst);
        if file.is_none() {
            // The WAL exists once a commit was made; it is kept (reset, not removed) while
            // the daemon's connection is open, so the file stays the same.
            *file = File::open(&self.wal).ok();
        }
        let done = match &*file {
            Some(wal) => wal.sync_data(),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        match done {
            Ok(()) => {
                self.durable.fetch_max(covered, Ordering::SeqCst);
            }
            Err(e) => {
                // Reopened next time; the commits stay owed.
                *file = None;
                tracing::warn!(wal = %self.wal.display(), error = %e, "sync the database's WAL");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::Durability;

    /// Commits not yet known durable.
    fn owed(sync: &WalSync) -> u64 {
        sync.committed.load(Ordering::SeqCst) - sync.durable.load(Ordering::SeqCst)
    }

    #[test]
    fn commits_are_counted_and_one_sync_covers_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::Db::open(&dir.path().join("local.db")).unwrap();
        let sync = db.wal_sync();
        sync.sync();
        assert_eq!(owed(&sync), 0);
        for i in 0..5 {
            db.conn()
                .execute(
                    "INSERT OR REPLACE INTO config (key, value) VALUES ('k', ?1)",
                    [i.to_string()],
                )
                .unwrap();
        }
        assert_eq!(owed(&sync), 5);
        sync.sync();
        assert_eq!(owed(&sync), 0);
        // Nothing owed: no sync at all.
        sync.sync();
        assert_eq!(owed(&sync), 0);
    }

    #[test]
    fn a_transaction_is_one_commit_and_a_rollback_none() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::Db::open(&dir.path().join("local.db")).unwrap();
        let sync = db.wal_sync();
        sync.sync();
        {
            let mut conn = db.conn();
            let tx = conn.transaction().unwrap();
            for i in 0..3 {
                tx.execute(
                    "INSERT OR REPLACE INTO config (key, value) VALUES (?1, 'v')",
                    [format!("k{i}")],
                )
                .unwrap();
            }
            tx.commit().unwrap();
            let tx = conn.transaction().unwrap();
            tx.execute("DELETE FROM config", []).unwrap();
            tx.rollback().unwrap();
        }
        assert_eq!(owed(&sync), 1);
    }

    /// Through the router: a write request answers, and an operation ends, with nothing
    /// owed.
    #[tokio::test]
    async fn write_requests_and_operations_end_durable() {
        use axum::http::{Method, StatusCode};
        let api = crate::api::testing::TestApi::new().await;
        let sync = api.engine.d.db.wal_sync();
        let (status, body) = api
            .call(
                Method::PATCH,
                "/1.0/profiles/default",
                Some(serde_json::json!({"description": "durable"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(owed(&sync), 0);
        let fingerprint = api.tiny_image().await;
        api.tiny_instance("durable", &fingerprint).await;
        assert_eq!(owed(&sync), 0);
    }

    #[test]
    fn a_missing_wal_leaves_the_commits_owed() {
        let sync = WalSync::new(std::path::Path::new("/nonexistent/hutch/local.db"));
        sync.note_commit();
        sync.sync();
        assert_eq!(owed(&sync), 1);
    }
}
