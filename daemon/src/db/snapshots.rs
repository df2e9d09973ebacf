//! The `snapshots` table: instance snapshots and the config they captured.

use std::collections::{BTreeMap, HashMap};

use hutch_api::profile::Devices;
use rusqlite::{params, OptionalExtension, Row};

use super::{from_json, to_json, Db};
use crate::error::{DaemonError, Result};

/// One snapshot as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub instance: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: String,
    pub architecture: String,
    pub config: BTreeMap<String, String>,
    pub devices: Devices,
    pub profiles: Vec<String>,
    pub ephemeral: bool,
}

const COLUMNS: &str =
    "instance, name, created_at, expires_at, architecture, config, devices, profiles, ephemeral";

fn from_row(r: &Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok(SnapshotRow {
        instance: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        expires_at: r.get(3)?,
        architecture: r.get(4)?,
        config: from_json(&r.get::<_, String>(5)?),
        devices: from_json(&r.get::<_, String>(6)?),
        profiles: from_json(&r.get::<_, String>(7)?),
        ephemeral: r.get(8)?,
    })
}

impl Db {
    pub(in crate::engine) fn insert_snapshot(&self, s: &SnapshotRow) -> Result<()> {
        let res = self.conn().execute(
            &format!(
                "INSERT INTO snapshots ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                s.instance,
                s.name,
                s.created_at,
                s.expires_at,
                s.architecture,
                to_json(&s.config),
                to_json(&s.devices),
                to_json(&s.profiles),
                s.ephemeral
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict(format!(
                    "Snapshot {:?} already exists",
                    s.name
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    pub(in crate::engine) fn snapshots(&self, instance: &str) -> Result<Vec<SnapshotRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM snapshots WHERE instance = ?1 ORDER BY created_at, name"
        ))?;
        let rows = stmt
            .query_map([instance], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Every instance's snapshots in one query (a listing), in the order
    /// [`Db::snapshots`] gives.
    pub(in crate::engine) fn snapshots_by_instance(
        &self,
    ) -> Result<HashMap<String, Vec<SnapshotRow>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM snapshots ORDER BY instance, created_at, name"
        ))?;
        let mut out: HashMap<String, Vec<SnapshotRow>> = HashMap::new();
        for row in stmt.query_map([], from_row)? {
            let row = row?;
            out.entry(row.instance.clone()).or_default().push(row);
        }
        Ok(out)
    }

    pub(in crate::engine) fn snapshot(&self, instance: &str, name: &str) -> Result<SnapshotRow> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {COLUMNS} FROM snapshots WHERE instance = ?1 AND name = ?2"),
            [instance, name],
            from_row,
        )
        .optional()?
        .ok_or_else(|| DaemonError::NotFound("Snapshot not found".into()))
    }

    pub(in crate::engine) fn rename_snapshot(
        &self,
        instance: &str,
        old: &str,
        new: &str,
    ) -> Result<()> {
        let res = self.conn().execute(
            "UPDATE snapshots SET name = ?3 WHERE instance = ?1 AND name = ?2",
            params![instance, old, new],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict(format!(
                    "Snapshot {new:?} already exists"
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    pub(in crate::engine) fn set_snapshot_expiry(
        &self,
        instance: &str,
        name: &str,
        expires_at: &str,
    ) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE snapshots SET expires_at = ?3 WHERE instance = ?1 AND name = ?2",
            params![instance, name, expires_at],
        )?;
        if n == 0 {
            return Err(DaemonError::NotFound("Snapshot not found".into()));
        }
        Ok(())
    }

    pub(in crate::engine) fn delete_snapshot(&self, instance: &str, name: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM snapshots WHERE instance = ?1 AND name = ?2",
            [instance, name],
        )?;
        Ok(())
    }

    /// Moves an instance's snapshots to its new name.
    pub(in crate::engine) fn delete_instance_snapshots(&self, instance: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM snapshots WHERE instance = ?1", [instance])?;
        Ok(())
    }
}
