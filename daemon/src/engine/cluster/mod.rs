//! Clustering (issue 21): a server becomes the first member of a cluster whose shared
//! state lives in etcd (`PUT /1.0/cluster` with `cluster.etcd_endpoints` set), publishes
//! itself there with its certificate and keeps a heartbeat lease (`membership.rs`); more
//! members join with a token (`join.rs`). A member places instances by name in etcd
//! (`placement.rs`), sends requests for what another member holds on to it and relays the
//! others' events (`forward.rs`), lists the whole cluster in one request (`list.rs`),
//! follows the cluster's shared objects, profiles and trust, by a watch (`shared.rs`), and
//! evacuates, restores and moves instances between members (`evacuate.rs`). The
//! membership is recorded in the local database and taken up again at each start.

pub mod copy;
pub mod evacuate;
pub mod forward;
pub mod images;
pub mod join;
pub mod list;
pub mod membership;
pub mod placement;
pub mod shared;

use std::sync::{Arc, RwLock};

use hutch_api::cluster::{Cluster, ClusterJoinInfo, ClusterJoinToken, ClusterMember, ClusterPut};
use hutch_api::server_config::server_config_value;

use super::{blocking, Engine, Work};
use crate::db::cluster::ClusterRow;
use crate::error::{DaemonError, Result};
use membership::{EtcdTls, MemberRecord, Membership};

/// This server's membership, when it is in a cluster.
#[derive(Debug, Default)]
pub struct ClusterSlot {
    current: RwLock<Option<Arc<Membership>>>,
    /// Held by an enable or a leave from its check to its end: two at once cannot both
    /// pass the check.
    changing: tokio::sync::Mutex<()>,
    /// What requests sent on to other members keep.
    forwarding: forward::Forwarding,
    /// What this member keeps about the cluster's shared objects.
    shared: shared::SharedState,
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
        let same = matches!((&*current, &m), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
        let old = std::mem::replace(&mut *current, m);
        if let (Some(old), false) = (old, same) {
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

    /// Makes `m` this server's membership (or none), with the tasks a member runs: the
    /// heartbeat, the placement sync and the relay of the others' events.
    fn set_membership(&self, m: Option<Arc<Membership>>) {
        match &m {
            Some(m) => {
                self.d.events.set_location(&m.server_name);
                m.start_heartbeat();
                m.start_member_watch();
                self.start_placement_sync(m);
                self.start_event_relay(m);
                self.start_shared_watch(m);
            }
            None => self.d.events.set_location("none"),
        }
        self.d.cluster.set(m);
    }

    /// This server's membership, when it is in a cluster.
    pub fn membership(&self) -> Option<Arc<Membership>> {
        self.d.cluster.get()
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
            EtcdTls::of(&self.d.identity()),
        );
        self.set_membership(Some(m));
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
        // Its instances' names could be the cluster's already (LXD asks for an empty
        // joiner too).
        if !self.d.db.instance_names()?.is_empty() {
            return Err(DaemonError::BadRequest(
                "A server with instances cannot join a cluster: move or delete them first".into(),
            ));
        }
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
        let identity = self.d.identity();
        let n = name.clone();
        let info = blocking(move || join::request(&token, &n, &identity)).await?;
        // The cluster's certificate becomes this member's, so that a client (or a member)
        // that trusts one member trusts them all; its own comes back if the join fails.
        let own = match info.key.as_str() {
            "" => None,
            key => {
                let cluster = hutch_tls::Identity::from_pem(&info.certificate, key)
                    .map_err(|e| DaemonError::failed("read", "the cluster certificate", e))?;
                Some(self.d.set_identity(cluster)?)
            }
        };
        let joined = self.join_with(name, url, info).await;
        if joined.is_err() {
            if let Some(own) = own {
                if let Err(e) = self.d.set_identity((*own).clone()) {
                    tracing::warn!(error = %crate::chain(&e), "own certificate not restored");
                }
            }
        }
        joined
    }

    /// The rest of a join, once this member presents the cluster's certificate.
    async fn join_with(&self, name: String, url: String, info: ClusterJoinInfo) -> Result<()> {
        let m = Membership::new(
            &name,
            &info.cluster_id,
            &info.etcd_endpoints,
            info.offline_threshold,
            EtcdTls::of(&self.d.identity()),
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
            certificate: self.d.identity().cert_pem.clone(),
            ..Default::default()
        };
        m.publish(&record).await?;
        let row = ClusterRow {
            server_name: name.clone(),
            cluster_id: info.cluster_id.clone(),
            endpoints: info.etcd_endpoints.clone(),
        };
        let e = self.clone();
        let stored = blocking(move || e.d.db.set_cluster_membership(Some(&row))).await;
        if let Err(err) = stored {
            let _ = m.remove_member(&name).await;
            return Err(err);
        }
        self.set_membership(Some(m));
        // The member joined is trusted as a server, cluster-wide (as LXD lists members'
        // certificates); members trust each other by their published certificates anyway.
        if let Err(err) = self
            .trust_member(&info.server_name, &info.certificate)
            .await
        {
            tracing::warn!(error = %crate::chain(&err), "cluster member's certificate not recorded");
        }
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

    /// `GET /internal/cluster` (trusted callers: a joiner just trusted with its token);
    /// the cluster certificate's key too for an `admin` caller.
    pub fn cluster_join_info(&self, admin: bool) -> Result<ClusterJoinInfo> {
        let m = self.d.cluster.get().ok_or_else(not_clustered)?;
        let identity = self.d.identity();
        Ok(ClusterJoinInfo {
            server_name: m.server_name.clone(),
            cluster_id: m.cluster_id.clone(),
            etcd_endpoints: m.endpoints.clone(),
            offline_threshold: m.offline_threshold,
            certificate: identity.cert_pem.clone(),
            key: if admin {
                identity.key_pem.clone()
            } else {
                String::new()
            },
        })
    }

    /// Publishes this server as the first member, then records the membership; a failure
    /// to record it takes the publication back.
    async fn bootstrap(&self, row: ClusterRow, url: String, threshold: i64) -> Result<()> {
        let _changing = self.d.cluster.changing.lock().await;
        self.check_standalone()?;
        let m = Membership::new(
            &row.server_name,
            &row.cluster_id,
            &row.endpoints,
            threshold,
            EtcdTls::of(&self.d.identity()),
        );
        let record = MemberRecord {
            server_name: row.server_name.clone(),
            url,
            architecture: std::env::consts::ARCH.to_string(),
            certificate: self.d.identity().cert_pem.clone(),
            ..Default::default()
        };
        m.publish(&record).await?;
        let d = self.d.clone();
        let stored = row.clone();
        let recorded = async {
            // The cluster's shared objects start as this server's.
            self.publish_shared(&m).await?;
            blocking(move || d.db.set_cluster_membership(Some(&stored))).await
        };
        if let Err(e) = recorded.await {
            let _ = m.remove_cluster().await;
            return Err(e);
        }
        self.set_membership(Some(m));
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
        if let Err(e) = m.remove_cluster().await {
            // Still a member: its tasks go on.
            self.set_membership(Some(m));
            return Err(e);
        }
        let d = self.d.clone();
        blocking(move || d.db.set_cluster_membership(None)).await?;
        self.set_membership(None);
        Ok(())
    }

    /// `DELETE /1.0/cluster/members/<name>` (`lxc cluster remove`), answered by the member
    /// removed when it is online (the forwarding layer sends it there) and by any member
    /// for one that is offline, with `force` only. A member with instances is removed with
    /// `force` only; their placements go with it (the instances stay on its disk).
    pub async fn remove_cluster_member(&self, name: &str, force: bool) -> Result<()> {
        let m = self.d.cluster.get().ok_or_else(not_clustered)?;
        let _changing = self.d.cluster.changing.lock().await;
        let member = self.cluster_member(name).await?;
        let on_it = m.instances_on(name).await?;
        if !on_it.is_empty() && !force {
            return Err(DaemonError::BadRequest(format!(
                "Cluster member {name:?} still has instances: {} (move or delete them, or \
                 remove it with --force)",
                on_it.join(", ")
            )));
        }
        if name != m.server_name {
            if member.status == "Online" {
                return Err(DaemonError::BadRequest(format!(
                    "Cluster member {name:?} is online: it removes itself"
                )));
            }
            if !force {
                return Err(DaemonError::BadRequest(format!(
                    "Cluster member {name:?} is offline: remove it with --force"
                )));
            }
            m.remove_placements_of(name).await?;
            m.remove_member(name).await?;
            self.d.events.lifecycle(
                "cluster-member-removed",
                &format!("/1.0/cluster/members/{name}"),
                serde_json::json!({}),
            );
            return Ok(());
        }
        // This member leaves: its keys go, it is standalone again.
        m.stop_heartbeat();
        let removed = async {
            m.remove_placements_of(name).await?;
            m.remove_member(name).await
        };
        if let Err(e) = removed.await {
            self.set_membership(Some(m));
            return Err(e);
        }
        let d = self.d.clone();
        blocking(move || d.db.set_cluster_membership(None)).await?;
        self.set_membership(None);
        self.d.events.lifecycle(
            "cluster-member-removed",
            &format!("/1.0/cluster/members/{name}"),
            serde_json::json!({}),
        );
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
