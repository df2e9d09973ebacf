//! The daemon's SQLite database: one file, WAL, versioned append-only migrations, and
//! typed access per table.

pub mod backups;
pub mod certificates;
pub mod cluster;
pub mod config;
pub mod copies;
pub mod durable;
pub mod health;
pub mod images;
pub mod instances;
pub mod intents;
pub mod networks;
pub mod pools;
pub mod profiles;
pub mod snapshots;
pub mod volumes;

pub use health::OpenError;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

use crate::error::Result;

/// Migrations, applied in order; never edit or reorder one, only append.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        architecture TEXT NOT NULL,
        ephemeral INTEGER NOT NULL,
        stateful INTEGER NOT NULL,
        description TEXT NOT NULL,
        created_at TEXT NOT NULL,
        last_used_at TEXT NOT NULL,
        config TEXT NOT NULL,
        devices TEXT NOT NULL,
        profiles TEXT NOT NULL,
        -- 'creating' until every step of a create is done; startup removes leftovers.
        state TEXT NOT NULL
    );
    CREATE TABLE profiles (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        config TEXT NOT NULL,
        devices TEXT NOT NULL
    );
    CREATE TABLE images (
        fingerprint TEXT PRIMARY KEY,
        filename TEXT NOT NULL,
        size INTEGER NOT NULL,
        architecture TEXT NOT NULL,
        type TEXT NOT NULL,
        public INTEGER NOT NULL,
        auto_update INTEGER NOT NULL,
        cached INTEGER NOT NULL,
        properties TEXT NOT NULL,
        profiles TEXT NOT NULL,
        created_at TEXT NOT NULL,
        uploaded_at TEXT NOT NULL,
        last_used_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE image_aliases (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL REFERENCES images(fingerprint) ON DELETE CASCADE,
        description TEXT NOT NULL,
        type TEXT NOT NULL
    );
    CREATE TABLE storage_pools (
        name TEXT PRIMARY KEY,
        driver TEXT NOT NULL,
        description TEXT NOT NULL,
        config TEXT NOT NULL
    );",
    // 2: instance snapshots.
    "CREATE TABLE snapshots (
        instance TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        architecture TEXT NOT NULL,
        config TEXT NOT NULL,
        devices TEXT NOT NULL,
        profiles TEXT NOT NULL,
        ephemeral INTEGER NOT NULL,
        PRIMARY KEY (instance, name)
    );",
    // 3: custom storage volumes.
    "CREATE TABLE volumes (
        pool TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        config TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (pool, name)
    );",
    // 4: managed networks.
    "CREATE TABLE networks (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        type TEXT NOT NULL,
        config TEXT NOT NULL
    );",
    // 5: the pool an instance's volumes live on.
    "ALTER TABLE instances ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';",
    // 6: renames in flight: recorded with the row's rename, removed when every file has
    // followed, so a restart finishes what a crash interrupted.
    "CREATE TABLE instance_renames (
        old TEXT PRIMARY KEY,
        new TEXT NOT NULL
    );",
    // 7: deletes in flight (images, volumes, pools): recorded before anything is removed,
    // cleared after the row is gone, so a restart finishes what a crash interrupted.
    "CREATE TABLE intents (
        kind TEXT NOT NULL,
        pool TEXT NOT NULL,
        name TEXT NOT NULL,
        PRIMARY KEY (kind, pool, name)
    );",
    // 8: the server's config keys (`PUT/PATCH /1.0`), those set away from their default.
    "CREATE TABLE config (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
    // 9: where an image pulled by alias is refreshed from (JSON `update_source`, '' for none).
    "ALTER TABLE images ADD COLUMN update_source TEXT NOT NULL DEFAULT '';",
    // 10: the trust store: client certificates allowed over HTTPS (`/1.0/certificates`).
    "CREATE TABLE certificates (
        fingerprint TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        restricted INTEGER NOT NULL DEFAULT 0,
        projects TEXT NOT NULL DEFAULT '[]',
        certificate TEXT NOT NULL
    );",
    // 11: stored instance backups (`/1.0/instances/<n>/backups`): what each captured, the
    // volumes of it on the instance's pool, and its state (`creating`, `ready`, `deleting`:
    // what a crash interrupted is finished or rolled back at start).
    "CREATE TABLE backups (
        instance TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        instance_only INTEGER NOT NULL,
        optimized_storage INTEGER NOT NULL,
        compression TEXT NOT NULL,
        pool TEXT NOT NULL,
        state TEXT NOT NULL,
        snapshots TEXT NOT NULL,
        config TEXT NOT NULL,
        total_bytes INTEGER NOT NULL,
        PRIMARY KEY (instance, name)
    );",
    // 12: this server's cluster membership (one row at most): its member name, the
    // cluster's id (the etcd key prefix under which the shared state lives) and the etcd
    // endpoints.
    "CREATE TABLE cluster (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        server_name TEXT NOT NULL,
        cluster_id TEXT NOT NULL,
        endpoints TEXT NOT NULL
    );",
];

/// The database handle. Calls are short; one connection behind a mutex is plenty.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
    wal_sync: Arc<durable::WalSync>,
}

impl Db {
    /// Opens (creating) the database at `path` and brings its schema up to date. Refused,
    /// with nothing written: a schema newer than this binary's, a damaged file. An existing
    /// database is copied aside before a migration changes it.
    pub(in crate::engine) fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        // Other openers (`hutchd init`, `hutchd recover`) wait for a writer, not fail.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Read-only checks first: a refused database must be left as it was found. A WAL
        // left by a kill -9 is replayed by SQLite here.
        let version = health::schema_version(&conn, path)?;
        health::check_version(version, MIGRATIONS.len())?;
        health::quick_check(&conn, path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // NORMAL: commits are made durable at the end of each change by `wal_sync` (see
        // durable.rs), once for all its commits, rather than one fsync per commit under
        // the connection's lock (measured: 0.35 ms each, ten per launch).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let wal_sync = Arc::new(durable::WalSync::new(path));
        let counter = wal_sync.clone();
        conn.commit_hook(Some(move || {
            counter.note_commit();
            false
        }));
        if version > 0 && (version as usize) < MIGRATIONS.len() {
            let dest = copies::path_for(path, version);
            copies::copy(&conn, &dest).map_err(|source| OpenError::Copy {
                path: dest.display().to_string(),
                source,
            })?;
            copies::prune(path, copies::KEEP);
            tracing::info!(from = version, to = MIGRATIONS.len(), copy = %dest.display(), "migrating the database");
        }
        migrate(&mut conn, version as usize)?;
        Ok(Db {
            conn: Mutex::new(conn),
            wal_sync,
        })
    }

    /// What makes the commits made so far durable (at the end of a change).
    pub(in crate::engine) fn wal_sync(&self) -> Arc<durable::WalSync> {
        self.wal_sync.clone()
    }

    /// The connection, for one short call or transaction.
    pub(in crate::engine) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn migrate(conn: &mut Connection, version: usize) -> Result<()> {
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// JSON text of a value, for the JSON columns.
pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("db values serialize")
}

/// A JSON column back into a value (an empty default when unreadable).
pub fn from_json<T: serde::de::DeserializeOwned + Default>(s: &str) -> T {
    serde_json::from_str(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_reopen_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.db");
        Db::open(&path).unwrap();
        let db = Db::open(&path).unwrap();
        let v: i64 = db
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        // A new database is not copied: there is nothing to go back to.
        assert!(copies::list(&path).is_empty());
    }

    fn set_version(path: &Path, v: i64) {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "user_version", v).unwrap();
    }

    #[test]
    fn a_newer_database_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.db");
        drop(Db::open(&path).unwrap());
        set_version(&path, MIGRATIONS.len() as i64 + 1);
        let before = std::fs::read(&path).unwrap();
        let e = Db::open(&path).unwrap_err();
        assert!(
            e.chain().contains("is newer than this hutchd supports"),
            "{}",
            e.chain()
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn an_older_database_is_copied_before_it_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.db");
        let old = MIGRATIONS.len() as i64 - 1;
        drop(Db::open(&path).unwrap());
        {
            // What the previous binary left: one migration fewer, a row of its own.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("DROP TABLE cluster; INSERT INTO config VALUES ('k', 'v');")
                .unwrap();
            conn.pragma_update(None, "user_version", old).unwrap();
        }
        let db = Db::open(&path).unwrap();
        let v: i64 = db
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        let copy = Connection::open(copies::path_for(&path, old)).unwrap();
        let cv: i64 = copy
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(cv, old);
        let k: String = copy
            .query_row("SELECT value FROM config WHERE key = 'k'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(k, "v");
    }

    /// The cost of `synchronous=FULL` against `NORMAL` for 1,000 one-row commits (as `config
    /// set` makes), and of `quick_check` on 1,000 instances: printed, not asserted. Run with
    /// `--nocapture`; `HUTCH_DB_BENCH_DIR` puts the files on the disk to measure.
    #[test]
    fn durability_and_check_costs() {
        let base = std::env::var_os("HUTCH_DB_BENCH_DIR").map(std::path::PathBuf::from);
        let dir = match &base {
            Some(b) => tempfile::tempdir_in(b).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        for mode in ["NORMAL", "FULL"] {
            let path = dir.path().join(format!("{mode}.db"));
            let db = Db::open(&path).unwrap();
            let conn = db.conn();
            conn.pragma_update(None, "synchronous", mode).unwrap();
            let start = std::time::Instant::now();
            for i in 0..1000 {
                conn.execute(
                    "INSERT OR REPLACE INTO config (key, value) VALUES ('k', ?1)",
                    [i.to_string()],
                )
                .unwrap();
            }
            eprintln!("synchronous={mode}: 1000 commits in {:?}", start.elapsed());
        }
        let path = dir.path().join("big.db");
        let db = Db::open(&path).unwrap();
        {
            let mut conn = db.conn();
            let tx = conn.transaction().unwrap();
            for i in 0..1000 {
                tx.execute(
                    "INSERT INTO instances VALUES (?1, 'container', 'x86_64', 0, 0, '', '', '', \
                     '{\"limits.memory\":\"1GiB\",\"boot.autostart\":\"true\"}', \
                     '{\"root\":{\"type\":\"disk\",\"path\":\"/\",\"pool\":\"default\"}}', \
                     '[\"default\"]', 'created', 'default')",
                    [format!("c{i}")],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        drop(db);
        let start = std::time::Instant::now();
        drop(Db::open(&path).unwrap());
        let open = start.elapsed();
        let conn = Connection::open(&path).unwrap();
        let start = std::time::Instant::now();
        health::quick_check(&conn, &path).unwrap();
        let quick = start.elapsed();
        let start = std::time::Instant::now();
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        eprintln!(
            "1000 instances: open {open:?}, quick_check {quick:?}, integrity_check {:?}",
            start.elapsed()
        );
    }
}
