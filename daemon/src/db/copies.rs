//! Consistent copies of the database taken before a migration changes it
//! (`local.db.bak.<version it had>`), the last few kept.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::health::CopyError;

/// How many copies are kept; older ones are removed after a new one is made.
pub const KEEP: usize = 3;

/// `local.db.bak.<version>` next to `db`.
pub fn path_for(db: &Path, version: i64) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".bak.{version}"));
    db.with_file_name(name)
}

/// The copies next to `db`, oldest version first.
pub fn list(db: &Path) -> Vec<(i64, PathBuf)> {
    let Some(dir) = db.parent() else {
        return Vec::new();
    };
    let prefix = format!(
        "{}.bak.",
        db.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut out: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix(&prefix)?.parse::<i64>().ok()?;
            Some((version, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Copies the database `conn` has open (its WAL folded in) to `dest`, durably: written
/// to a temporary name, synced, then renamed, so a crash never leaves half a copy there.
pub fn copy(conn: &Connection, dest: &Path) -> Result<(), CopyError> {
    let tmp = dest.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    // `VACUUM INTO` reads through the connection, so committed frames still in the WAL
    // are in the copy.
    let target = tmp.to_string_lossy().into_owned();
    if let Err(e) = conn.execute("VACUUM INTO ?1", [&target]) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dest)?;
    if let Some(dir) = dest.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Removes all but the newest `keep` copies next to `db`.
pub fn prune(db: &Path, keep: usize) {
    let copies = list(db);
    let excess = copies.len().saturating_sub(keep);
    for (_, path) in copies.into_iter().take(excess) {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "remove an old database copy");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_holds_committed_rows_still_in_the_wal_and_old_copies_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("local.db");
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT); INSERT INTO t VALUES ('kept');")
            .unwrap();
        for v in 1..=5 {
            copy(&conn, &path_for(&db, v)).unwrap();
        }
        prune(&db, KEEP);
        let left: Vec<i64> = list(&db).into_iter().map(|(v, _)| v).collect();
        assert_eq!(left, vec![3, 4, 5]);
        let copy = Connection::open(path_for(&db, 5)).unwrap();
        let v: String = copy.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "kept");
        assert!(!dir.path().join("local.db.bak.tmp").exists());
    }
}
