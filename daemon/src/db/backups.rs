//! The `backups` table: an instance's stored backups, what each captured and where.

use rusqlite::{params, Row};

use super::{from_json, to_json, Db};
use crate::error::{DaemonError, Result};

/// One stored backup.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupRow {
    pub instance: String,
    pub name: String,
    pub created_at: String,
    /// The zero time: never.
    pub expires_at: String,
    pub instance_only: bool,
    pub optimized_storage: bool,
    /// LXD's `compression_algorithm` value, as given (or defaulted) at create.
    pub compression: String,
    /// The pool holding the captured volumes (the instance's, at create).
    pub pool: String,
    /// `creating`, `ready` or `deleting`.
    pub state: String,
    /// The snapshots captured, oldest first.
    pub snapshots: Vec<String>,
    /// The instance's `backup.yaml` as captured.
    pub config: String,
    /// Bytes of file data captured: the total of an export's progress.
    pub total_bytes: u64,
}

const COLUMNS: &str = "instance, name, created_at, expires_at, instance_only, \
     optimized_storage, compression, pool, state, snapshots, config, total_bytes";

fn from_row(r: &Row<'_>) -> rusqlite::Result<BackupRow> {
    Ok(BackupRow {
        instance: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        expires_at: r.get(3)?,
        instance_only: r.get(4)?,
        optimized_storage: r.get(5)?,
        compression: r.get(6)?,
        pool: r.get(7)?,
        state: r.get(8)?,
        snapshots: from_json(&r.get::<_, String>(9)?),
        config: r.get(10)?,
        total_bytes: r.get::<_, i64>(11)? as u64,
    })
}

impl Db {
    /// Records a backup (in state `creating`); a duplicate name is a conflict.
    pub(in crate::engine) fn insert_backup(&self, b: &BackupRow) -> Result<()> {
        let res = self.conn().execute(
            &format!(
                "INSERT INTO backups ({COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                b.instance,
                b.name,
                b.created_at,
                b.expires_at,
                b.instance_only,
                b.optimized_storage,
                b.compression,
                b.pool,
                b.state,
                to_json(&b.snapshots),
                b.config,
                b.total_bytes as i64
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict(format!(
                    "Backup {:?} already exists",
                    b.name
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// Every backup of an instance, whatever its state, oldest first.
    pub(in crate::engine) fn backups(&self, instance: &str) -> Result<Vec<BackupRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM backups WHERE instance = ?1 ORDER BY created_at, name"
        ))?;
        let rows = stmt
            .query_map([instance], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Every backup of every instance (expiry, start-up reconciliation).
    pub(in crate::engine) fn all_backups(&self) -> Result<Vec<BackupRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM backups"))?;
        let rows = stmt
            .query_map([], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// One backup, whatever its state; 404 when there is none.
    pub(in crate::engine) fn backup(&self, instance: &str, name: &str) -> Result<BackupRow> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM backups WHERE instance = ?1 AND name = ?2"
        ))?;
        let mut rows = stmt.query_map([instance, name], from_row)?;
        match rows.next() {
            Some(row) => Ok(row?),
            None => Err(DaemonError::NotFound("Instance backup not found".into())),
        }
    }

    pub(in crate::engine) fn set_backup_state(
        &self,
        instance: &str,
        name: &str,
        state: &str,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE backups SET state = ?3 WHERE instance = ?1 AND name = ?2",
            params![instance, name, state],
        )?;
        Ok(())
    }

    /// The backup's volumes are in place: it is listed from now on.
    pub(in crate::engine) fn set_backup_ready(
        &self,
        instance: &str,
        name: &str,
        total_bytes: u64,
    ) -> Result<()> {
        self.conn().execute(
            "UPDATE backups SET state = 'ready', total_bytes = ?3 \
             WHERE instance = ?1 AND name = ?2",
            params![instance, name, total_bytes as i64],
        )?;
        Ok(())
    }

    pub(in crate::engine) fn rename_backup(
        &self,
        instance: &str,
        old: &str,
        new: &str,
    ) -> Result<()> {
        let res = self.conn().execute(
            "UPDATE backups SET name = ?3 WHERE instance = ?1 AND name = ?2",
            params![instance, old, new],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict(format!(
                    "Backup {new:?} already exists"
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    pub(in crate::engine) fn delete_backup(&self, instance: &str, name: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM backups WHERE instance = ?1 AND name = ?2",
            params![instance, name],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> BackupRow {
        BackupRow {
            instance: "c1".into(),
            name: name.into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: "0001-01-01T00:00:00Z".into(),
            instance_only: false,
            optimized_storage: false,
            compression: "gzip".into(),
            pool: "default".into(),
            state: "creating".into(),
            snapshots: vec!["snap0".into()],
            config: "container: {}\n".into(),
            total_bytes: 42,
        }
    }

    #[test]
    fn backups_are_stored_renamed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("local.db")).unwrap();
        db.insert_backup(&row("b0")).unwrap();
        assert!(matches!(
            db.insert_backup(&row("b0")),
            Err(DaemonError::Conflict(_))
        ));
        db.insert_backup(&row("b1")).unwrap();
        assert_eq!(db.backup("c1", "b0").unwrap(), row("b0"));
        assert!(matches!(
            db.rename_backup("c1", "b0", "b1"),
            Err(DaemonError::Conflict(_))
        ));
        db.rename_backup("c1", "b0", "b2").unwrap();
        db.set_backup_state("c1", "b2", "ready").unwrap();
        assert_eq!(db.backup("c1", "b2").unwrap().state, "ready");
        db.delete_backup("c1", "b2").unwrap();
        let names: Vec<String> = db
            .backups("c1")
            .unwrap()
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(names, ["b1"]);
        assert!(matches!(
            db.backup("c1", "b2"),
            Err(DaemonError::NotFound(_))
        ));
    }
}
