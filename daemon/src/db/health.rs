//! The checks a database passes before the daemon writes to it: a schema this binary
//! knows, and pages SQLite can read. What fails names the way back.

use std::path::Path;

use rusqlite::{Connection, ErrorCode};

/// Why the database was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Written by a newer hutchd: migrating it down is impossible, writing to it unsafe.
    #[error(
        "database schema version {found} is newer than this hutchd supports ({supported}): \
         run a newer hutchd, or restore database/local.db.bak.{supported}"
    )]
    TooNew { found: i64, supported: usize },
    /// Not SQLite, truncated, or failing its check.
    #[error(
        "database {path} is damaged ({detail}); hutchd will not start on it. To recover, \
         move database/local.db (with local.db-wal and local.db-shm) aside, then either \
         copy a backup in its place ({backups}), or run `hutchd recover`, which rebuilds \
         the rows from the pools' backup.yaml files, and start hutchd again"
    )]
    Damaged {
        path: String,
        detail: String,
        backups: String,
    },
    /// The copy taken before a migration could not be made; nothing was migrated.
    #[error("failed to copy the database to {path} before migrating it")]
    Copy {
        path: String,
        #[source]
        source: CopyError,
    },
}

/// What failed while copying the database aside.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The schema version, read without writing; a file SQLite cannot read is `Damaged`.
pub fn schema_version(conn: &Connection, path: &Path) -> Result<i64, crate::error::DaemonError> {
    conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
        .map_err(|e| damaged_or(e, path))
}

/// Refuses a schema newer than `supported` migrations.
pub fn check_version(found: i64, supported: usize) -> Result<(), OpenError> {
    if found > supported as i64 {
        return Err(OpenError::TooNew { found, supported });
    }
    Ok(())
}

/// `PRAGMA quick_check`: every page and index entry readable and well-formed (O(pages),
/// without the cross-checks of `integrity_check` that make that one slow).
pub fn quick_check(conn: &Connection, path: &Path) -> Result<(), crate::error::DaemonError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| damaged_or(e, path))?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| damaged_or(e, path))?;
    if lines == ["ok"] {
        return Ok(());
    }
    Err(damaged(path, &lines.join("; ")).into())
}

/// SQLite's "not a database" and "malformed" as `Damaged`; other failures (permissions, a
/// full disk) as they are.
fn damaged_or(e: rusqlite::Error, path: &Path) -> crate::error::DaemonError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            damaged(path, &e.to_string()).into()
        }
        _ => e.into(),
    }
}

fn damaged(path: &Path, detail: &str) -> OpenError {
    let copies = super::copies::list(path);
    let backups = if copies.is_empty() {
        "there is none".to_string()
    } else {
        copies
            .iter()
            .map(|(_, p)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    OpenError::Damaged {
        path: path.display().to_string(),
        detail: detail.to_string(),
        backups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused_with_the_way_back() {
        assert!(check_version(3, 11).is_ok());
        assert!(check_version(11, 11).is_ok());
        let e = check_version(12, 11).unwrap_err();
        assert_eq!(
            e.to_string(),
            "database schema version 12 is newer than this hutchd supports (11): run a newer \
             hutchd, or restore database/local.db.bak.11"
        );
    }

    #[test]
    fn garbage_is_damaged_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        std::fs::write(dir.path().join("local.db.bak.4"), b"x").unwrap();
        let conn = Connection::open(&path).unwrap();
        let e = schema_version(&conn, &path).unwrap_err();
        let text = crate::error::chain(&e);
        assert!(text.contains("is damaged"), "{text}");
        assert!(text.contains("local.db.bak.4"), "{text}");
        assert!(text.contains("hutchd recover"), "{text}");
    }
}
