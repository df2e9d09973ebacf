//! Deletes in flight. A delete records its intent, removes what is on disk, removes the
//! row, then clears the intent; the start-up reconciliation finishes any intent left.

#![allow(dead_code)] // TEMPORARY: the foundation lands before its users

use rusqlite::params;

use super::Db;
use crate::error::Result;

/// What a delete in flight removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentKind {
    /// An image: its files, its volumes on every pool, its row.
    Image,
    /// A custom volume of a pool, with its snapshots.
    Volume,
    /// A custom volume being created: its row is recorded with this intent, its volume
    /// made, then the intent cleared; a restart finds one left and removes both.
    VolumeCreate,
    /// A storage pool and what backs it.
    Pool,
    /// An instance snapshot, named `<instance>/<snapshot>`.
    Snapshot,
    /// A managed network: its bridge, rules, dnsmasq and files.
    Network,
}

impl IntentKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            IntentKind::Image => "delete-image",
            IntentKind::Volume => "delete-volume",
            IntentKind::VolumeCreate => "create-volume",
            IntentKind::Pool => "delete-pool",
            IntentKind::Snapshot => "delete-snapshot",
            IntentKind::Network => "delete-network",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            IntentKind::Image,
            IntentKind::Volume,
            IntentKind::VolumeCreate,
            IntentKind::Pool,
            IntentKind::Snapshot,
            IntentKind::Network,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One recorded intent. `pool` is empty where the object has none (images).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub kind: IntentKind,
    pub pool: String,
    pub name: String,
}

impl Db {
    pub(in crate::engine) fn record_intent(
        &self,
        kind: IntentKind,
        pool: &str,
        name: &str,
    ) -> Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO intents (kind, pool, name) VALUES (?1, ?2, ?3)",
            params![kind.as_str(), pool, name],
        )?;
        Ok(())
    }

    pub(in crate::engine) fn clear_intent(
        &self,
        kind: IntentKind,
        pool: &str,
        name: &str,
    ) -> Result<()> {
        self.conn().execute(
            "DELETE FROM intents WHERE kind = ?1 AND pool = ?2 AND name = ?3",
            params![kind.as_str(), pool, name],
        )?;
        Ok(())
    }

    /// Every intent left, oldest first.
    pub(in crate::engine) fn intents(&self) -> Result<Vec<Intent>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT kind, pool, name FROM intents ORDER BY rowid")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, pool, name) = row?;
            // An intent of a kind this daemon does not know (a newer daemon's) is left.
            if let Some(kind) = IntentKind::parse(&kind) {
                out.push(Intent { kind, pool, name });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_are_recorded_once_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("local.db")).unwrap();
        db.record_intent(IntentKind::Volume, "p1", "v1").unwrap();
        db.record_intent(IntentKind::Volume, "p1", "v1").unwrap();
        db.record_intent(IntentKind::Image, "", "abc").unwrap();
        let all = db.intents().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kind, IntentKind::Volume);
        db.clear_intent(IntentKind::Volume, "p1", "v1").unwrap();
        assert_eq!(db.intents().unwrap()[0].name, "abc");
    }
}
