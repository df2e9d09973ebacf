//! This server's cluster membership (`PUT /1.0/cluster`): one row, or none when
//! standalone. The cluster's shared state is in etcd; this row says where.

use rusqlite::{params, OptionalExtension};

use super::Db;
use crate::error::Result;

/// A member's record of the cluster it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRow {
    pub server_name: String,
    /// The etcd key prefix of the cluster's state is `/hutch/clusters/<cluster_id>/`.
    pub cluster_id: String,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
}

impl Db {
    pub(in crate::engine) fn cluster_membership(&self) -> Result<Option<ClusterRow>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT server_name, cluster_id, endpoints FROM cluster WHERE id = 0",
                [],
                |r| {
                    let endpoints: String = r.get(2)?;
                    Ok(ClusterRow {
                        server_name: r.get(0)?,
                        cluster_id: r.get(1)?,
                        endpoints: endpoints.split(',').map(str::to_string).collect(),
                    })
                },
            )
            .optional()?;
        Ok(row)
    }

    /// Records the membership, or (`None`) that the server is standalone again.
    pub(in crate::engine) fn set_cluster_membership(&self, row: Option<&ClusterRow>) -> Result<()> {
        let conn = self.conn();
        match row {
            Some(r) => conn.execute(
                "INSERT OR REPLACE INTO cluster (id, server_name, cluster_id, endpoints)
                 VALUES (0, ?1, ?2, ?3)",
                params![r.server_name, r.cluster_id, r.endpoints.join(",")],
            )?,
            None => conn.execute("DELETE FROM cluster", [])?,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_membership_is_one_row_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("local.db")).unwrap();
        assert_eq!(db.cluster_membership().unwrap(), None);
        let row = ClusterRow {
            server_name: "n1".into(),
            cluster_id: "abc".into(),
            endpoints: vec![
                "http://127.0.0.1:2379".into(),
                "http://127.0.0.1:2479".into(),
            ],
        };
        db.set_cluster_membership(Some(&row)).unwrap();
        db.set_cluster_membership(Some(&row)).unwrap();
        assert_eq!(db.cluster_membership().unwrap(), Some(row));
        db.set_cluster_membership(None).unwrap();
        assert_eq!(db.cluster_membership().unwrap(), None);
    }
}
