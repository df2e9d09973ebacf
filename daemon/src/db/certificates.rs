//! The `certificates` table: the trust store.

use hutch_api::certificate::{Certificate, CertificatePut};
use rusqlite::{params, Row};

use super::{from_json, to_json, Db};
use crate::error::{DaemonError, Result};

fn row_to_certificate(r: &Row<'_>) -> rusqlite::Result<Certificate> {
    Ok(Certificate {
        fingerprint: r.get(0)?,
        put: CertificatePut {
            name: r.get(1)?,
            kind: r.get(2)?,
            restricted: r.get(3)?,
            projects: from_json(&r.get::<_, String>(4)?),
            certificate: r.get(5)?,
        },
    })
}

const COLUMNS: &str = "fingerprint, name, type, restricted, projects, certificate";

impl Db {
    /// Every trusted certificate, by fingerprint.
    pub(in crate::engine) fn certificates(&self) -> Result<Vec<Certificate>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM certificates ORDER BY fingerprint"
        ))?;
        let rows = stmt
            .query_map([], row_to_certificate)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The certificate whose fingerprint starts with `prefix`: LXD's 404 when none, a 400
    /// when the prefix names more than one.
    pub(in crate::engine) fn certificate_by_prefix(&self, prefix: &str) -> Result<Certificate> {
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DaemonError::NotFound("Certificate not found".into()));
        }
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM certificates WHERE fingerprint LIKE ?1 || '%' LIMIT 2"
        ))?;
        let mut rows = stmt
            .query_map([prefix.to_ascii_lowercase()], row_to_certificate)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        match rows.len() {
            0 => Err(DaemonError::NotFound("Certificate not found".into())),
            1 => Ok(rows.remove(0)),
            _ => Err(DaemonError::BadRequest(
                "More than one certificate matches".into(),
            )),
        }
    }

    /// Adds a certificate; one already there is LXD's 409.
    pub(in crate::engine) fn insert_certificate(&self, c: &Certificate) -> Result<()> {
        insert_row(&self.conn(), c)
    }

    /// Replaces the certificate `old` (its fingerprint changes with its certificate) in
    /// one transaction.
    pub(in crate::engine) fn replace_certificate(&self, old: &str, c: &Certificate) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM certificates WHERE fingerprint = ?1", [old])?;
        insert_row(&tx, c)?;
        tx.commit()?;
        Ok(())
    }

    pub(in crate::engine) fn delete_certificate(&self, fingerprint: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM certificates WHERE fingerprint = ?1",
            [fingerprint],
        )?;
        Ok(())
    }
}

/// One certificate row; a fingerprint already there is LXD's 409.
fn insert_row(conn: &rusqlite::Connection, c: &Certificate) -> Result<()> {
    let res = conn.execute(
        &format!("INSERT INTO certificates ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            c.fingerprint,
            c.put.name,
            c.put.kind,
            c.put.restricted,
            to_json(&c.put.projects),
            c.put.certificate
        ],
    );
    match res {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(DaemonError::Conflict(
                "Certificate already in trust store".into(),
            ))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}
