//! The server's config keys (`GET/PUT/PATCH /1.0`): one row per key set away from its
//! default. What the keys mean is the api crate's table; this file only stores them.

use std::collections::BTreeMap;

use rusqlite::params;

use super::Db;
use crate::error::Result;

impl Db {
    /// The stored server config (keys at their default are not stored).
    pub(in crate::engine) fn server_config(&self) -> Result<BTreeMap<String, String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT key, value FROM config")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Runs `change` on the stored config and stores the config it returns, in one
    /// transaction, the connection held throughout: concurrent updates take turns, and
    /// a check inside `change` (an ETag) sees exactly what it replaces.
    pub(in crate::engine) fn update_server_config<T>(
        &self,
        change: impl FnOnce(&BTreeMap<String, String>) -> Result<(BTreeMap<String, String>, T)>,
    ) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let current: BTreeMap<String, String> = {
            let mut stmt = tx.prepare("SELECT key, value FROM config")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let (new, out) = change(&current)?;
        tx.execute("DELETE FROM config", [])?;
        for (key, value) in &new {
            tx.execute(
                "INSERT INTO config (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
        }
        tx.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DaemonError;

    #[test]
    fn updates_replace_the_stored_config_and_a_refusal_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("local.db")).unwrap();
        assert!(db.server_config().unwrap().is_empty());
        let set: BTreeMap<String, String> = [("core.https_address", ":8443"), ("user.a", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let seen = db
            .update_server_config(|cur| Ok((set.clone(), cur.len())))
            .unwrap();
        assert_eq!(seen, 0);
        assert_eq!(db.server_config().unwrap(), set);
        let refused = db.update_server_config(|_| -> Result<(_, ())> {
            Err(DaemonError::BadRequest("no".into()))
        });
        assert!(refused.is_err());
        assert_eq!(db.server_config().unwrap(), set);
        db.update_server_config(|_| Ok((BTreeMap::new(), ())))
            .unwrap();
        assert!(db.server_config().unwrap().is_empty());
    }
}
