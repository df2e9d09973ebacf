//! The `images` and `image_aliases` tables.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};

use super::{from_json, to_json, Db};
use crate::error::{DaemonError, Result};

/// One image as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageRow {
    pub fingerprint: String,
    pub filename: String,
    pub size: i64,
    pub architecture: String,
    pub kind: String,
    pub public: bool,
    pub auto_update: bool,
    pub cached: bool,
    pub properties: BTreeMap<String, String>,
    pub profiles: Vec<String>,
    pub created_at: String,
    pub uploaded_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    /// The remote and alias an image pulled by alias is refreshed from.
    pub update_source: Option<hutch_api::image::ImageSource>,
}

const COLUMNS: &str = "fingerprint, filename, size, architecture, type, public, auto_update, cached, properties, profiles, created_at, uploaded_at, last_used_at, expires_at, update_source";

fn source_to_text(source: &Option<hutch_api::image::ImageSource>) -> String {
    source.as_ref().map(to_json).unwrap_or_default()
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        fingerprint: r.get(0)?,
        filename: r.get(1)?,
        size: r.get(2)?,
        architecture: r.get(3)?,
        kind: r.get(4)?,
        public: r.get(5)?,
        auto_update: r.get(6)?,
        cached: r.get(7)?,
        properties: from_json(&r.get::<_, String>(8)?),
        profiles: from_json(&r.get::<_, String>(9)?),
        created_at: r.get(10)?,
        uploaded_at: r.get(11)?,
        last_used_at: r.get(12)?,
        expires_at: r.get(13)?,
        update_source: Some(r.get::<_, String>(14)?)
            .filter(|t| !t.is_empty())
            .and_then(|t| serde_json::from_str(&t).ok()),
    })
}

/// An alias row: name, target fingerprint, description, type.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasRow {
    pub name: String,
    pub fingerprint: String,
    pub description: String,
    pub kind: String,
}

impl Db {
    pub(in crate::engine) fn insert_image(&self, row: &ImageRow) -> Result<()> {
        let res = self.conn().execute(
            &format!("INSERT INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"),
            params![
                row.fingerprint,
                row.filename,
                row.size,
                row.architecture,
                row.kind,
                row.public,
                row.auto_update,
                row.cached,
                to_json(&row.properties),
                to_json(&row.profiles),
                row.created_at,
                row.uploaded_at,
                row.last_used_at,
                row.expires_at,
                source_to_text(&row.update_source)
            ],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict(
                    "Image with same fingerprint already exists".into(),
                ))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// The image whose fingerprint starts with `prefix` (unique), or LXD's 404.
    pub(in crate::engine) fn image_by_prefix(&self, prefix: &str) -> Result<ImageRow> {
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(DaemonError::NotFound("Image not found".into()));
        }
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM images WHERE fingerprint LIKE ?1 || '%' LIMIT 2"
        ))?;
        let rows = stmt
            .query_map([prefix.to_ascii_lowercase()], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        match rows.len() {
            1 => Ok(rows.into_iter().next().expect("one row")),
            0 => Err(DaemonError::NotFound("Image not found".into())),
            _ => Err(DaemonError::BadRequest(
                "More than one image matches".into(),
            )),
        }
    }

    pub(in crate::engine) fn images(&self) -> Result<Vec<ImageRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM images ORDER BY fingerprint"
        ))?;
        let rows = stmt
            .query_map([], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(in crate::engine) fn update_image(&self, row: &ImageRow) -> Result<()> {
        self.conn().execute(
            "UPDATE images SET auto_update = ?2, properties = ?3, public = ?4, expires_at = ?5, profiles = ?6 WHERE fingerprint = ?1",
            params![row.fingerprint, row.auto_update, to_json(&row.properties), row.public, row.expires_at, to_json(&row.profiles)],
        )?;
        Ok(())
    }

    /// Marks an image used now (an instance was made from it).
    pub(in crate::engine) fn touch_image(&self, fingerprint: &str, now: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE images SET last_used_at = ?2 WHERE fingerprint = ?1",
            params![fingerprint, now],
        )?;
        Ok(())
    }

    /// Moves every alias of image `from` to image `to` and gives `to` the refresh
    /// settings and use record of `from`, in one transaction: a refresh is seen whole.
    pub(in crate::engine) fn replace_image(&self, from: &ImageRow, to: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE image_aliases SET fingerprint = ?2 WHERE fingerprint = ?1",
            params![from.fingerprint, to],
        )?;
        tx.execute(
            "UPDATE images SET auto_update = ?2, cached = ?3, public = ?4, profiles = ?5, last_used_at = ?6, update_source = ?7 WHERE fingerprint = ?1",
            params![
                to,
                from.auto_update,
                from.cached,
                from.public,
                to_json(&from.profiles),
                from.last_used_at,
                source_to_text(&from.update_source)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(in crate::engine) fn delete_image(&self, fingerprint: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM images WHERE fingerprint = ?1", [fingerprint])?;
        Ok(())
    }

    pub(in crate::engine) fn alias(&self, name: &str) -> Result<Option<AliasRow>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT name, fingerprint, description, type FROM image_aliases WHERE name = ?1",
                [name],
                |r| {
                    Ok(AliasRow {
                        name: r.get(0)?,
                        fingerprint: r.get(1)?,
                        description: r.get(2)?,
                        kind: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub(in crate::engine) fn aliases(&self) -> Result<Vec<AliasRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, fingerprint, description, type FROM image_aliases ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AliasRow {
                    name: r.get(0)?,
                    fingerprint: r.get(1)?,
                    description: r.get(2)?,
                    kind: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(in crate::engine) fn insert_alias(&self, alias: &AliasRow) -> Result<()> {
        let res = self.conn().execute(
            "INSERT INTO image_aliases (name, fingerprint, description, type) VALUES (?1, ?2, ?3, ?4)",
            params![alias.name, alias.fingerprint, alias.description, alias.kind],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict(format!(
                    "Alias {:?} already exists",
                    alias.name
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    pub(in crate::engine) fn update_alias(&self, alias: &AliasRow) -> Result<()> {
        self.conn().execute(
            "UPDATE image_aliases SET fingerprint = ?2, description = ?3 WHERE name = ?1",
            params![alias.name, alias.fingerprint, alias.description],
        )?;
        Ok(())
    }

    pub(in crate::engine) fn rename_alias(&self, old: &str, new: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE image_aliases SET name = ?2 WHERE name = ?1",
            params![old, new],
        )?;
        Ok(())
    }

    pub(in crate::engine) fn delete_alias(&self, name: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM image_aliases WHERE name = ?1", [name])?;
        Ok(())
    }
}
