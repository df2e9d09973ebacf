//! The `volumes` table: custom storage volumes.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::intents::IntentKind;
use super::{from_json, to_json, Db};
use crate::error::{DaemonError, Result};

/// A custom volume as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRow {
    pub pool: String,
    pub name: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
    pub created_at: String,
}

impl Db {
    pub(in crate::engine) fn insert_volume(&self, v: &VolumeRow) -> Result<()> {
        insert(&self.conn(), v)
    }

    /// Inserts the row of a volume about to be made, with the intent that a restart
    /// removes both if the create does not finish (one transaction: an intent without
    /// its own row would let a restart remove someone else's volume).
    pub(in crate::engine) fn insert_volume_creating(&self, v: &VolumeRow) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        insert(&tx, v)?;
        tx.execute(
            "INSERT OR IGNORE INTO intents (kind, pool, name) VALUES (?1, ?2, ?3)",
            params![IntentKind::VolumeCreate.as_str(), v.pool, v.name],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(in crate::engine) fn volume(&self, pool: &str, name: &str) -> Result<VolumeRow> {
        let conn = self.conn();
        conn.query_row("SELECT pool, name, description, config, created_at FROM volumes WHERE pool = ?1 AND name = ?2", [pool, name], |r| {
            Ok(VolumeRow { pool: r.get(0)?, name: r.get(1)?, description: r.get(2)?, config: from_json(&r.get::<_, String>(3)?), created_at: r.get(4)? })
        })
        .optional()?
        .ok_or_else(|| DaemonError::NotFound("Storage volume not found".into()))
    }

    pub(in crate::engine) fn volumes(&self, pool: &str) -> Result<Vec<VolumeRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT pool, name, description, config, created_at FROM volumes WHERE pool = ?1 ORDER BY name")?;
        let rows = stmt
            .query_map([pool], |r| {
                Ok(VolumeRow {
                    pool: r.get(0)?,
                    name: r.get(1)?,
                    description: r.get(2)?,
                    config: from_json(&r.get::<_, String>(3)?),
                    created_at: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Description and config of volume `name` of `pool`.
    pub(in crate::engine) fn update_volume(&self, v: &VolumeRow) -> Result<()> {
        self.conn().execute(
            "UPDATE volumes SET description = ?3, config = ?4 WHERE pool = ?1 AND name = ?2",
            params![v.pool, v.name, v.description, to_json(&v.config)],
        )?;
        Ok(())
    }

    pub(in crate::engine) fn delete_volume(&self, pool: &str, name: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM volumes WHERE pool = ?1 AND name = ?2",
            [pool, name],
        )?;
        Ok(())
    }
}

fn insert(conn: &rusqlite::Connection, v: &VolumeRow) -> Result<()> {
    let res = conn.execute(
        "INSERT INTO volumes (pool, name, description, config, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![v.pool, v.name, v.description, to_json(&v.config), v.created_at],
    );
    match res {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(DaemonError::Conflict(format!(
                "Volume by that name already exists: {}",
                v.name
            )))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}
