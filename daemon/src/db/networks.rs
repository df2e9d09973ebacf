//! The `networks` table: managed networks.

use hutch_api::network::NetworkPut;
use rusqlite::{params, OptionalExtension};

use super::{from_json, to_json, Db};
use crate::error::{DaemonError, Result};

/// A managed network as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkRow {
    pub name: String,
    pub kind: String,
    pub put: NetworkPut,
}

impl Db {
    pub(in crate::engine) fn network(&self, name: &str) -> Result<Option<NetworkRow>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT name, type, description, config FROM networks WHERE name = ?1",
                [name],
                row,
            )
            .optional()?)
    }

    pub(in crate::engine) fn network_or_404(&self, name: &str) -> Result<NetworkRow> {
        self.network(name)?
            .ok_or_else(|| DaemonError::NotFound("Network not found".into()))
    }

    pub(in crate::engine) fn networks(&self) -> Result<Vec<NetworkRow>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, type, description, config FROM networks ORDER BY name")?;
        let rows = stmt
            .query_map([], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Creates a network; a taken name is a conflict.
    pub(in crate::engine) fn insert_network(&self, n: &NetworkRow) -> Result<()> {
        let res = self.conn().execute(
            "INSERT INTO networks (name, type, description, config) VALUES (?1, ?2, ?3, ?4)",
            params![n.name, n.kind, n.put.description, to_json(&n.put.config)],
        );
        match res {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(DaemonError::Conflict(format!(
                    "Network {:?} already exists",
                    n.name
                )))
            }
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    pub(in crate::engine) fn update_network(&self, name: &str, put: &NetworkPut) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE networks SET description = ?2, config = ?3 WHERE name = ?1",
            params![name, put.description, to_json(&put.config)],
        )?;
        if n == 0 {
            return Err(DaemonError::NotFound("Network not found".into()));
        }
        Ok(())
    }

    pub(in crate::engine) fn delete_network(&self, name: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM networks WHERE name = ?1", [name])?;
        Ok(())
    }
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<NetworkRow> {
    Ok(NetworkRow {
        name: r.get(0)?,
        kind: r.get(1)?,
        put: NetworkPut {
            description: r.get(2)?,
            config: from_json(&r.get::<_, String>(3)?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_insert_update_delete() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db")).unwrap();
        let mut n = NetworkRow {
            name: "br0".into(),
            kind: "bridge".into(),
            put: NetworkPut::default(),
        };
        n.put
            .config
            .insert("ipv4.address".into(), "10.1.1.1/24".into());
        db.insert_network(&n).unwrap();
        assert!(matches!(
            db.insert_network(&n),
            Err(DaemonError::Conflict(_))
        ));
        assert_eq!(db.network_or_404("br0").unwrap(), n);
        n.put.description = "d".into();
        db.update_network("br0", &n.put).unwrap();
        assert_eq!(db.networks().unwrap(), vec![n]);
        db.delete_network("br0").unwrap();
        assert!(matches!(
            db.network_or_404("br0"),
            Err(DaemonError::NotFound(_))
        ));
    }
}
