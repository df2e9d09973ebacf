//! The `instances` table.

use std::collections::BTreeMap;

use hutch_api::profile::Devices;
use rusqlite::{params, OptionalExtension, Row};

use super::{from_json, to_json, Db};
use crate::error::{DaemonError, Result};

/// One instance as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub name: String,
    pub kind: String,
    pub architecture: String,
    pub ephemeral: bool,
    pub stateful: bool,
    pub description: String,
    pub created_at: String,
    pub last_used_at: String,
    pub config: BTreeMap<String, String>,
    pub devices: Devices,
    pub profiles: Vec<String>,
    /// `creating` or `ready`.
    pub state: String,
    /// The storage pool of its volumes (its root disk's `pool`).
    pub pool: String,
}

const COLUMNS: &str = "name, type, architecture, ephemeral, stateful, description, created_at, last_used_at, config, devices, profiles, state, pool";

fn from_row(r: &Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok(InstanceRow {
        name: r.get(0)?,
        kind: r.get(1)?,
        architecture: r.get(2)?,
        ephemeral: r.get(3)?,
        stateful: r.get(4)?,
        description: r.get(5)?,
        created_at: r.get(6)?,
        last_used_at: r.get(7)?,
        config: from_json(&r.get::<_, String>(8)?),
        devices: from_json(&r.get::<_, String>(9)?),
        profiles: from_json(&r.get::<_, String>(10)?),
        state: r.get(11)?,
        pool: r.get(12)?,
    })
}

impl Db {
    /// Records a new instance in state `creating`; a taken name is a conflict.
    pub(in crate::engine) fn insert_instance(&self, row: &InstanceRow) -> Result<()> {
        let conn = self.conn();
        let res = conn.execute(
            &format!("INSERT INTO instances ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
            params![
                row.name,
                row.kind,
                row.architecture,
                row.ephemeral,
                row.stateful,
                row.description,
                row.created_at,
                row.last_used_at,
                to_json(&row.config),
                to_json(&row.devices),
                to_json(&row.profiles),
                row.state,
                row.pool
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict(format!(
                    "Instance {:?} already exists",
                    row.name
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    pub(in crate::engine) fn instance(&self, name: &str) -> Result<Option<InstanceRow>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM instances WHERE name = ?1"),
                [name],
                from_row,
            )
            .optional()?)
    }

    /// The instance, or LXD's 404.
    pub(in crate::engine) fn instance_or_404(&self, name: &str) -> Result<InstanceRow> {
        match self.instance(name)? {
            Some(row) if row.state == "ready" => Ok(row),
            _ => Err(DaemonError::NotFound("Instance not found".into())),
        }
    }

    /// Every instance that finished creating, by name.
    pub(in crate::engine) fn instances(&self) -> Result<Vec<InstanceRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM instances WHERE state = 'ready' ORDER BY name"
        ))?;
        let rows = stmt
            .query_map([], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The names of the instances, in order: what `recursion=0` lists (at 1,000 instances,
    /// reading and decoding every row for it costs milliseconds a request).
    pub(in crate::engine) fn instance_names(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT name FROM instances WHERE state = 'ready' ORDER BY name")?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    }

    /// The names of every instance this server has, whatever its state (being made,
    /// received, renamed or deleted included).
    pub(in crate::engine) fn all_instance_names(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT name FROM instances ORDER BY name")?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    }

    /// Instances a crash left half-created.
    pub(in crate::engine) fn creating_instances(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM instances WHERE state = 'creating'")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    /// Moves the instance's record to pool `pool` (its volumes have moved).
    pub(in crate::engine) fn set_instance_pool(&self, name: &str, pool: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE instances SET pool = ?2 WHERE name = ?1",
            params![name, pool],
        )?;
        Ok(())
    }

    pub(in crate::engine) fn set_instance_state(&self, name: &str, state: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE instances SET state = ?2 WHERE name = ?1",
            params![name, state],
        )?;
        Ok(())
    }

    /// Replaces the writable fields.
    pub(in crate::engine) fn update_instance(&self, row: &InstanceRow) -> Result<()> {
        self.conn().execute(
            "UPDATE instances SET architecture = ?2, ephemeral = ?3, description = ?4, config = ?5, devices = ?6, profiles = ?7, last_used_at = ?8 WHERE name = ?1",
            params![row.name, row.architecture, row.ephemeral, row.description, to_json(&row.config), to_json(&row.devices), to_json(&row.profiles), row.last_used_at],
        )?;
        Ok(())
    }

    /// Sets (or with `None` removes) one config key, in one transaction.
    pub(in crate::engine) fn set_instance_config_key(
        &self,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let config: String = tx.query_row(
            "SELECT config FROM instances WHERE name = ?1",
            [name],
            |r| r.get(0),
        )?;
        let mut config: BTreeMap<String, String> = from_json(&config);
        match value {
            Some(v) => config.insert(key.to_string(), v.to_string()),
            None => config.remove(key),
        };
        tx.execute(
            "UPDATE instances SET config = ?2 WHERE name = ?1",
            params![name, to_json(&config)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Renames the row and its snapshots' rows, and records the rename as in flight, in one
    /// transaction: the files follow, then [`Db::end_instance_rename`].
    pub(in crate::engine) fn begin_instance_rename(&self, old: &str, new: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let res = tx.execute(
            "UPDATE instances SET name = ?2 WHERE name = ?1",
            params![old, new],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(DaemonError::Conflict(format!(
                    "Name {new:?} already in use"
                )))
            }
            Ok(0) => return Err(DaemonError::NotFound("Instance not found".into())),
            other => other.map(|_| ())?,
        }
        tx.execute(
            "UPDATE snapshots SET instance = ?2 WHERE instance = ?1",
            params![old, new],
        )?;
        tx.execute(
            "UPDATE backups SET instance = ?2 WHERE instance = ?1",
            params![old, new],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO instance_renames (old, new) VALUES (?1, ?2)",
            params![old, new],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Undoes [`Db::begin_instance_rename`] (its files could not follow).
    pub(in crate::engine) fn undo_instance_rename(&self, old: &str, new: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE instances SET name = ?1 WHERE name = ?2",
            params![old, new],
        )?;
        tx.execute(
            "UPDATE snapshots SET instance = ?1 WHERE instance = ?2",
            params![old, new],
        )?;
        tx.execute(
            "UPDATE backups SET instance = ?1 WHERE instance = ?2",
            params![old, new],
        )?;
        tx.execute("DELETE FROM instance_renames WHERE old = ?1", [old])?;
        tx.commit()?;
        Ok(())
    }

    /// The rename of `old` is complete.
    pub(in crate::engine) fn end_instance_rename(&self, old: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM instance_renames WHERE old = ?1", [old])?;
        Ok(())
    }

    /// Renames in flight, as (old, new).
    pub(in crate::engine) fn instance_renames(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT old, new FROM instance_renames")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Names of instances whose delete began (their row stays until their files are gone).
    pub(in crate::engine) fn deleting_instances(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM instances WHERE state = 'deleting'")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub(in crate::engine) fn delete_instance(&self, name: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM instances WHERE name = ?1", [name])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(in crate::engine) fn row(name: &str) -> InstanceRow {
        InstanceRow {
            name: name.into(),
            kind: "container".into(),
            architecture: "x86_64".into(),
            ephemeral: false,
            stateful: false,
            description: String::new(),
            created_at: "now".into(),
            last_used_at: "now".into(),
            config: BTreeMap::from([("limits.memory".into(), "1GiB".into())]),
            devices: Devices::new(),
            profiles: vec!["default".into()],
            state: "creating".into(),
            pool: "default".into(),
        }
    }

    #[test]
    fn instances_are_hidden_until_created_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        db.insert_instance(&row("c1")).unwrap();
        assert!(matches!(
            db.insert_instance(&row("c1")),
            Err(DaemonError::Conflict(_))
        ));
        assert!(db.instances().unwrap().is_empty());
        assert!(matches!(
            db.instance_or_404("c1"),
            Err(DaemonError::NotFound(_))
        ));
        assert_eq!(db.creating_instances().unwrap(), vec!["c1"]);
        db.set_instance_state("c1", "ready").unwrap();
        assert_eq!(
            db.instance_or_404("c1").unwrap().config["limits.memory"],
            "1GiB"
        );
        db.set_instance_config_key("c1", "volatile.x", Some("y"))
            .unwrap();
        assert_eq!(
            db.instance("c1").unwrap().unwrap().config["volatile.x"],
            "y"
        );
        db.insert_instance(&row("c2")).unwrap();
        assert!(matches!(
            db.begin_instance_rename("c1", "c2"),
            Err(DaemonError::Conflict(_))
        ));
        assert!(db.instance_renames().unwrap().is_empty());
        db.begin_instance_rename("c1", "c3").unwrap();
        assert_eq!(
            db.instance_renames().unwrap(),
            vec![("c1".to_string(), "c3".to_string())]
        );
        db.undo_instance_rename("c1", "c3").unwrap();
        assert!(db.instance("c1").unwrap().is_some());
        db.begin_instance_rename("c1", "c3").unwrap();
        db.end_instance_rename("c1").unwrap();
        assert!(db.instance_renames().unwrap().is_empty());
        db.set_instance_state("c3", "deleting").unwrap();
        assert_eq!(db.deleting_instances().unwrap(), vec!["c3"]);
        db.delete_instance("c3").unwrap();
        assert!(db.instance("c3").unwrap().is_none());
    }
}
