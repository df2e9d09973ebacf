//! The `storage_pools` table.

use std::collections::BTreeMap;

use hutch_storage::PoolRecord;
use rusqlite::{params, OptionalExtension};

use super::{from_json, to_json, Db};
use crate::error::{DaemonError, Result};

/// A pool as stored: its driver (`dir`, `btrfs`, `zfs:<dataset>`), description and config
/// (`source`: the loop file, device, directory or dataset).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRow {
    pub name: String,
    pub driver: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
}

impl PoolRow {
    /// What the storage crate needs of the pool.
    pub(in crate::engine) fn record(&self) -> PoolRecord {
        PoolRecord {
            name: self.name.clone(),
            driver: self.driver.clone(),
            config: self.config.clone(),
        }
    }

    /// The row of a pool the storage crate made.
    pub(in crate::engine) fn from_record(rec: PoolRecord, description: String) -> Self {
        PoolRow {
            name: rec.name,
            driver: rec.driver,
            description,
            config: rec.config,
        }
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PoolRow> {
    Ok(PoolRow {
        name: r.get(0)?,
        driver: r.get(1)?,
        description: r.get(2)?,
        config: from_json(&r.get::<_, String>(3)?),
    })
}

impl Db {
    pub(in crate::engine) fn pool(&self, name: &str) -> Result<Option<PoolRow>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT name, driver, description, config FROM storage_pools WHERE name = ?1",
                [name],
                row,
            )
            .optional()?)
    }

    /// Pool `name`, or LXD's 404.
    pub(in crate::engine) fn pool_or_404(&self, name: &str) -> Result<PoolRow> {
        self.pool(name)?
            .ok_or_else(|| DaemonError::NotFound("Storage pool not found".into()))
    }

    pub(in crate::engine) fn pools(&self) -> Result<Vec<PoolRow>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, driver, description, config FROM storage_pools ORDER BY name")?;
        let rows = stmt
            .query_map([], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(in crate::engine) fn delete_pool(&self, name: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM storage_pools WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Records a new pool; a name taken is LXD's 409.
    pub(in crate::engine) fn insert_pool(&self, pool: &PoolRow) -> Result<()> {
        let res = self.conn().execute(
            "INSERT INTO storage_pools (name, driver, description, config) VALUES (?1, ?2, ?3, ?4)",
            params![
                pool.name,
                pool.driver,
                pool.description,
                to_json(&pool.config)
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict(format!(
                    "Storage pool {:?} already exists",
                    pool.name
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// Description and config of pool `name`.
    pub(in crate::engine) fn update_pool(&self, pool: &PoolRow) -> Result<()> {
        self.conn().execute(
            "UPDATE storage_pools SET description = ?2, config = ?3 WHERE name = ?1",
            params![pool.name, pool.description, to_json(&pool.config)],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_recorded_once_updated_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("local.db")).unwrap();
        let mut p = PoolRow {
            name: "p1".into(),
            driver: "zfs:tank/p1".into(),
            description: "fast".into(),
            config: BTreeMap::from([("source".into(), "tank/p1".into())]),
        };
        db.insert_pool(&p).unwrap();
        assert!(matches!(db.insert_pool(&p), Err(DaemonError::Conflict(_))));
        assert_eq!(db.pool_or_404("p1").unwrap(), p);
        p.description = "slow".into();
        db.update_pool(&p).unwrap();
        assert_eq!(db.pools().unwrap(), vec![p.clone()]);
        assert_eq!(db.pool_or_404("p1").unwrap().record().driver, "zfs:tank/p1");
        db.delete_pool("p1").unwrap();
        assert!(matches!(
            db.pool_or_404("p1"),
            Err(DaemonError::NotFound(_))
        ));
    }
}
