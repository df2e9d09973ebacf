//! The `profiles` table.

use std::collections::HashMap;

use hutch_api::profile::{Profile, ProfilePut};
use rusqlite::{params, OptionalExtension};

use super::{from_json, to_json, Db};
use crate::error::{DaemonError, Result};

impl Db {
    pub(in crate::engine) fn profile(&self, name: &str) -> Result<Option<ProfilePut>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT description, config, devices FROM profiles WHERE name = ?1",
                [name],
                |r| {
                    Ok(ProfilePut {
                        description: r.get(0)?,
                        config: from_json(&r.get::<_, String>(1)?),
                        devices: from_json(&r.get::<_, String>(2)?),
                    })
                },
            )
            .optional()?)
    }

    /// Every profile by name, in one query (a listing expands each instance over them).
    pub(in crate::engine) fn profiles_by_name(&self) -> Result<HashMap<String, ProfilePut>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, description, config, devices FROM profiles")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                ProfilePut {
                    description: r.get(1)?,
                    config: from_json(&r.get::<_, String>(2)?),
                    devices: from_json(&r.get::<_, String>(3)?),
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub(in crate::engine) fn profile_or_404(&self, name: &str) -> Result<ProfilePut> {
        self.profile(name)?
            .ok_or_else(|| DaemonError::NotFound("Profile not found".into()))
    }

    pub(in crate::engine) fn profile_names(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM profiles ORDER BY name")?;
        let names = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(names)
    }

    /// Creates a profile; a taken name is a conflict.
    pub(in crate::engine) fn insert_profile(&self, name: &str, put: &ProfilePut) -> Result<()> {
        let res = self.conn().execute(
            "INSERT INTO profiles (name, description, config, devices) VALUES (?1, ?2, ?3, ?4)",
            params![
                name,
                put.description,
                to_json(&put.config),
                to_json(&put.devices)
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict("The profile already exists".into()))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    pub(in crate::engine) fn update_profile(&self, name: &str, put: &ProfilePut) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE profiles SET description = ?2, config = ?3, devices = ?4 WHERE name = ?1",
            params![
                name,
                put.description,
                to_json(&put.config),
                to_json(&put.devices)
            ],
        )?;
        if n == 0 {
            return Err(DaemonError::NotFound("Profile not found".into()));
        }
        Ok(())
    }

    /// Renames a profile and, in the same transaction, every instance's and snapshot's
    /// reference to it (LXD keeps references by id, so its renames carry them along).
    pub(in crate::engine) fn rename_profile(&self, old: &str, new: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let res = tx.execute(
            "UPDATE profiles SET name = ?2 WHERE name = ?1",
            params![old, new],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(DaemonError::Conflict("The profile already exists".into()));
            }
            other => other?,
        };
        for table in ["instances", "snapshots"] {
            let rows: Vec<(i64, String)> = tx
                .prepare(&format!("SELECT rowid, profiles FROM {table}"))?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            for (rowid, json) in rows {
                let mut profiles: Vec<String> = from_json(&json);
                if !profiles.iter().any(|p| p == old) {
                    continue;
                }
                for p in profiles.iter_mut().filter(|p| *p == old) {
                    *p = new.to_string();
                }
                tx.execute(
                    &format!("UPDATE {table} SET profiles = ?2 WHERE rowid = ?1"),
                    params![rowid, to_json(&profiles)],
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(in crate::engine) fn delete_profile(&self, name: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM profiles WHERE name = ?1", [name])?;
        Ok(())
    }

    /// A profile with the instances that use it.
    pub(in crate::engine) fn full_profile(&self, name: &str) -> Result<Profile> {
        let put = self.profile_or_404(name)?;
        let used_by = self
            .instances()?
            .into_iter()
            .filter(|i| i.profiles.iter().any(|p| p == name))
            .map(|i| format!("/1.0/instances/{}", i.name))
            .collect();
        Ok(Profile {
            name: name.to_string(),
            put,
            used_by,
        })
    }
}
