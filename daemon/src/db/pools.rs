//! The `storage_pools` table.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};

use super::{from_json, to_json, Db};
use crate::error::Result;

/// A pool as stored: its driver and config (`source`: the loop file or directory).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRow {
    pub name: String,
    pub driver: String,
    pub config: BTreeMap<String, String>,
}

impl Db {
    pub fn pool(&self, name: &str) -> Result<Option<PoolRow>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT name, driver, config FROM storage_pools WHERE name = ?1",
                [name],
                |r| {
                    Ok(PoolRow {
                        name: r.get(0)?,
                        driver: r.get(1)?,
                        config: from_json(&r.get::<_, String>(2)?),
                    })
                },
            )
            .optional()?)
    }

    pub fn pools(&self) -> Result<Vec<PoolRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, driver, config FROM storage_pools ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PoolRow {
                    name: r.get(0)?,
                    driver: r.get(1)?,
                    config: from_json(&r.get::<_, String>(2)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn delete_pool(&self, name: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM storage_pools WHERE name = ?1", [name])?;
        Ok(())
    }

    pub fn insert_pool(&self, pool: &PoolRow) -> Result<()> {
        self.conn().execute(
            "INSERT INTO storage_pools (name, driver, description, config) VALUES (?1, ?2, '', ?3)",
            params![pool.name, pool.driver, to_json(&pool.config)],
        )?;
        Ok(())
    }
}
