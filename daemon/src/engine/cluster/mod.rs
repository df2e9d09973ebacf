//! Clustering (issue 21), first part: a server becomes the first member of a cluster
//! whose shared state lives in etcd (`PUT /1.0/cluster` with `cluster.etcd_endpoints` set),
//! publishes itself there and keeps a heartbeat lease; `/1.0/cluster/members` reads every
//! member from etcd, Online while its heartbeat lives; more members join with a token
//! (`join.rs`). The membership is recorded in the local database and taken up again at
//! each start. Placement and forwarding come next.

pub mod join;
pub mod membership;

use std::sync::{Arc, RwLock};

use hutch_api::cluster::{Cluster, ClusterJoinInfo, ClusterJoinToken, ClusterMember, ClusterPut};
use hutch_api::server_config::server_config_value;

use super::{blocking, Engine, Work};
use crate::db::cluster::ClusterRow;
use crate::error::{DaemonError, Result};
use membership::{MemberRecord, Membership};

/// This server's membership, when it is in a cluster.
#[derive(Debug, Default)]
pub struct ClusterSlot {
    current: RwLock<Option<Arc<Membership>>>,
    /// Held by an enable or a leave from its check to its end: two at once cannot both
    /// pass the check.
    changing: tokio::sync::Mutex<()>,
}

impl ClusterSlot {
    pub fn get(&self) -> Option<Arc<Membership>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, m: Option<Arc<Membership>>) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let old = std::mem::replace(&mut *current, m);
        if let Some(old) = old {
            old.stop_heartbeat();
        }
    }
}

fn not_clustered() -> DaemonError {
    DaemonError::BadRequest("This server is not clustered".into())
}

impl Engine {
    /// `GET /1.0/cluster`.
    pub fn cluster_info(&self) -> Cluster {
        match self.d.cluster.get() {
            Some(m) => Cluster {
                server_name: m.server_name.clone(),
                enabled: true,
                member_config: Vec::new(),
            },
            None => Cluster::default(),
        }
    }

    /// Takes the recorded membership up again (at daemon start): the heartbeat starts and
    /// keeps trying while etcd is away.
    pub fn resume_cluster(&self) -> Result<()> {
        let Some(row) = self.d.db.cluster_membership()? else {
            return Ok(());
        };
        let m = Membership::new(
            &row.server_name,
            &row.cluster_id,
            &row.endpoints,
            self.offline_threshold()?,
        );
        m.start_heartbeat();
        self.d.cluster.set(Some(m));
        Ok(())
    }

    fn offline_threshold(&self) -> Result<i64> {
        let config = self.d.db.server_config()?;
        Ok(server_config_value(&config, "cluster.offline_threshold")
            .parse()
            .unwrap_or(20))
    }

    /// `PUT /1.0/cluster`: checked now, done by the returned work (LXD's task `Creating
    /// bootstrap node`, or leaving).
    pub fn update_cluster(&self, put: ClusterPut) -> Result<(&'static str, Work)> {
        // A join: the token names the member to join (LXD's preseed puts it in
        // cluster_token; older clients in cluster_password).
        let token_text = if put.cluster_token.is_empty() {
            put.cluster_password.clone()
        } else {
            put.cluster_token.clone()
        };
        if put.enabled && (!token_text.is_empty() || !put.cluster_address.is_empty()) {
            if token_text.is_empty() {
                return Err(DaemonError::BadRequest(
                    "Joining needs a join token (cluster_token): hutch cluster add NAME on a \
                     member prints one"
                        .into(),
                ));
            }
            return self.join_work(put, &token_text);
        }
        if !put.enabled {
            if !put.server_name.is_empty() {
                return Err(DaemonError::BadRequest(
                    "Server name must be empty when disabling clustering".into(),
                ));
            }
            let m = self.d.cluster.get().ok_or_else(not_clustered)?;
            let e = self.clone();
            return Ok(("Leaving cluster", Box::pin(async move { e.leave(m).await })));
        }
        if put.server_name.is_empty() {
            return Err(DaemonError::BadRequest(
                "Server name must be set when enabling clustering".into(),
            ));
        }
        check_member_name(&put.server_name)?;
        self.check_standalone()?;
        let url = self.member_url()?;
        let config = self.d.db.server_config()?;
        let endpoints: Vec<String> = server_config_value(&config, "cluster.etcd_endpoints")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(DaemonError::BadRequest(
                "No etcd to keep the cluster's state in: set cluster.etcd_endpoints first \
                 (hutch config set cluster.etcd_endpoints http://HOST:2379)"
                    .into(),
            ));
        }
        let row = ClusterRow {
            server_name: put.server_name.clone(),
            cluster_id: uuid::Uuid::new_v4().simple().to_string(),
            endpoints,
        };
        let threshold = self.offline_threshold()?;
        let e = self.clone();
        Ok((
            "Creating bootstrap node",
            Box::pin(async move { e.bootstrap(row, url, threshold).await }),
        ))
    }

    fn check_standalone(&self) -> Result<()> {
        match self.d.cluster.get() {
            Some(_) => Err(DaemonError::BadRequest(
                "This server is already clustered".into(),
            )),
            None => Ok(()),
        }
    }

    /// Where other members and clients reach this one (`https://` and the first address
    /// `core.https_address` gives); a server not on the network cannot be a member.
    fn member_url(&self) -> Result<String> {
        let config = self.d.db.server_config()?;
        let https = server_config_value(&config, "core.https_address");
        if https.is_empty() {
            return Err(DaemonError::BadRequest(
                "This LXD server is not available on the network".into(),
            ));
        }
        Ok(super::server::listen_addresses(https)
            .first()
            .map(|a| format!("https://{a}"))
            .unwrap_or_default())
    }

    /// The checks of a join, and the work that joins.
    fn join_work(&self, put: ClusterPut, token_text: &str) -> Result<(&'static str, Work)> {
        let token = join::decode_token(token_text)?;
        let name = if put.server_name.is_empty() {
            token.server_name.clone()
        } else {
            put.server_name.clone()
        };
        if name != token.server_name {
            return Err(DaemonError::BadRequest(format!(
                "The join token is for member {:?}, not {name:?}",
                token.server_name
            )));
        }
        check_member_name(&name)?;
        self.check_standalone()?;
        let url = self.member_url()?;
        let e = self.clone();
        Ok((
            "Joining cluster",
            Box::pin(async move { e.join(token, name, url).await }),
        ))
    }

    /// Joins the cluster of the member `token` names: trusted by it, told where the state
    /// lives, published there with a heartbeat; that member's certificate is trusted here
    /// in turn. A failure after the publication takes it back.
    async fn join(&self, token: ClusterJoinToken, name: String, url: String) -> Result<()> {
        let _changing = self.d.cluster.changing.lock().await;
        self.check_standalone()?;
        let identity = self.d.identity.clone();
        let (t, n) = (token.clone(), name.clone());
        let info = blocking(move || join::request(&t, &n, &identity)).await?;
        let m = Membership::new(
            &name,
            &info.cluster_id,
            &info.etcd_endpoints,
            info.offline_threshold,
        );
        if m.members(crate::unix_now())
            .await?
            .iter()
            .any(|x| x.server_name == name)
        {
            return Err(DaemonError::Conflict(format!(
                "The cluster already has a member with name: {name}"
            )));
        }
        let record = MemberRecord {
            server_name: name.clone(),
            url,
            architecture: std::env::consts::ARCH.to_string(),
            ..Default::default()
        };
        m.publish(&record).await?;
        let row = ClusterRow {
            server_name: name.clone(),
            cluster_id: info.cluster_id.clone(),
            endpoints: info.etcd_endpoints.clone(),
        };
        let (e, member, pem) = (
            self.clone(),
            info.server_name.clone(),
            info.certificate.clone(),
        );
        let stored = blocking(move || {
            e.trust_member(&member, &pem)?;
            e.d.db.set_cluster_membership(Some(&row))
        })
        .await;
        if let Err(err) = stored {
            let _ = m.remove_member(&name).await;
            return Err(err);
        }
        m.start_heartbeat();
        self.d.cluster.set(Some(m));
        self.d.events.lifecycle(
            "cluster-member-added",
            &format!("/1.0/cluster/members/{name}"),
            serde_json::json!({}),
        );
        Ok(())
    }

    /// `POST /1.0/cluster/members`: a join token for member `name`.
    pub async fn cluster_join_token(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<crate::operations::OpEntry>> {
        let m = self.d.cluster.get().ok_or_else(not_clustered)?;
        check_member_name(name)?;
        if m.members(crate::unix_now())
            .await?
            .iter()
            .any(|x| x.server_name == name)
        {
            return Err(DaemonError::BadRequest(format!(
                "The cluster already has a member with name: {name}"
            )));
        }
        self.issue_join_token(name)
    }

    /// `GET /internal/cluster` (trusted callers: a joiner just trusted with its token).
    pub fn cluster_join_info(&self) -> Result<ClusterJoinInfo> {
        let m = self.d.cluster.get().ok_or_else(not_clustered)?;
        Ok(ClusterJoinInfo {
            server_name: m.server_name.clone(),
            cluster_id: m.cluster_id.clone(),
            etcd_endpoints: m.endpoints.clone(),
            offline_threshold: m.offline_threshold,
            certificate: self.d.identity.cert_pem.clone(),
        })
    }

    /// Publishes this server as the first member, then records the membership; a failure
    /// to record it takes the publication back.
    async fn bootstrap(&self, row: ClusterRow, url: String, threshold: i64) -> Result<()> {
        let _changing = self.d.cluster.changing.lock().await;
        self.check_standalone()?;
        let m = Membership::new(&row.server_name, &row.cluster_id, &row.endpoints, threshold);
        let record = MemberRecord {
            server_name: row.server_name.clone(),
            url,
            architecture: std::env::consts::ARCH.to_string(),
            ..Default::default()
        };
        m.publish(&record).await?;
        let d = self.d.clone();
        let stored = row.clone();
        if let Err(e) = blocking(move || d.db.set_cluster_membership(Some(&stored))).await {
            let _ = m.remove_member(&row.server_name).await;
            return Err(e);
        }
        m.start_heartbeat();
        self.d.cluster.set(Some(m));
        self.d.events.lifecycle(
            "cluster-enabled",
            &format!("/1.0/cluster/members/{}", row.server_name),
            serde_json::json!({}),
        );
        Ok(())
    }

    /// Leaves the cluster: allowed to its last member only (the others must remove it).
    async fn leave(&self, m: Arc<Membership>) -> Result<()> {
        let _changing = self.d.cluster.changing.lock().await;
        if !self
            .d
            .cluster
            .get()
            .is_some_and(|now| Arc::ptr_eq(&now, &m))
        {
            return Err(not_clustered());
        }
        let others: Vec<String> = m
            .members(crate::unix_now())
            .await?
            .into_iter()
            .map(|x| x.server_name)
            .filter(|n| *n != m.server_name)
            .collect();
        if !others.is_empty() {
            return Err(DaemonError::BadRequest(format!(
                "This member cannot leave while the cluster has others ({})",
                others.join(", ")
            )));
        }
        m.stop_heartbeat();
        m.remove_member(&m.server_name).await?;
        let d = self.d.clone();
        blocking(move || d.db.set_cluster_membership(None)).await?;
        self.d.cluster.set(None);
        Ok(())
    }

    /// `GET /1.0/cluster/members`.
    pub async fn cluster_members(&self) -> Result<Vec<ClusterMember>> {
        let m = self.d.cluster.get().ok_or_else(not_clustered)?;
        m.members(crate::unix_now()).await
    }

    /// `GET /1.0/cluster/members/<name>`.
    pub async fn cluster_member(&self, name: &str) -> Result<ClusterMember> {
        self.cluster_members()
            .await?
            .into_iter()
            .find(|m| m.server_name == name)
            .ok_or_else(|| DaemonError::NotFound("Cluster member not found".into()))
    }
}

/// A member name: what a host name may be, and not `@…` (LXD's groups) or `none`.
fn check_member_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('@')
        && name != "none"
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DaemonError::BadRequest(format!(
            "Invalid cluster member name {name:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_checked() {
        assert!(check_member_name("n1").is_ok());
        assert!(check_member_name("host-2.lan").is_ok());
        for bad in ["@group", "none", "a/b", "a b", ""] {
            assert!(check_member_name(bad).is_err(), "{bad}");
        }
    }
}
