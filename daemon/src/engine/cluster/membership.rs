//! A member's presence in the cluster's etcd: its record under
//! `/hutch/clusters/<id>/members/<name>` (JSON), and a heartbeat key under
//! `…/heartbeat/<name>` bound to a lease of `cluster.offline_threshold` seconds that this
//! member keeps alive, so that a member that stops (or loses etcd) drops out by etcd's own
//! clock; `…/last_seen/<name>` keeps the time of its last beat for the Offline message.
//!
//! The heartbeat runs as a task for as long as the member is in the cluster; it reconnects
//! and takes a new lease after etcd comes back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions};
use hutch_api::cluster::ClusterMember;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{DaemonError, Result};

/// How long a request to etcd may take before the cluster's state counts as unavailable.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// What a member publishes about itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberRecord {
    pub server_name: String,
    pub url: String,
    pub architecture: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub failure_domain: String,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The cluster's state in etcd, as one member reaches it.
pub struct Membership {
    pub server_name: String,
    pub cluster_id: String,
    pub endpoints: Vec<String>,
    /// Seconds without a heartbeat before a member is Offline.
    pub offline_threshold: i64,
    client: Mutex<Option<Client>>,
    heartbeat: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("server_name", &self.server_name)
            .field("cluster_id", &self.cluster_id)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Unavailable(format!("The cluster's state (etcd) is unavailable: {e}"))
}

impl Membership {
    pub fn new(
        server_name: &str,
        cluster_id: &str,
        endpoints: &[String],
        offline_threshold: i64,
    ) -> Arc<Membership> {
        Arc::new(Membership {
            server_name: server_name.to_string(),
            cluster_id: cluster_id.to_string(),
            endpoints: endpoints.to_vec(),
            offline_threshold,
            client: Mutex::new(None),
            heartbeat: std::sync::Mutex::new(None),
        })
    }

    fn prefix(&self) -> String {
        format!("/hutch/clusters/{}/", self.cluster_id)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.prefix())
    }

    /// A connected client (made on first use, and again after a failure forgot it).
    async fn client(&self) -> Result<Client> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(ETCD_TIMEOUT)
            .with_timeout(ETCD_TIMEOUT);
        let c = tokio::time::timeout(
            ETCD_TIMEOUT,
            Client::connect(&self.endpoints, Some(options)),
        )
        .await
        .map_err(|_| unavailable(format!("no answer from {}", self.endpoints.join(", "))))?
        .map_err(unavailable)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets the client after a failure, so that the next call connects again.
    async fn forget_client(&self) {
        *self.client.lock().await = None;
    }

    /// Runs `f` with a client; a failure forgets it.
    async fn with_client<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let c = self.client().await?;
        match tokio::time::timeout(ETCD_TIMEOUT, f(c)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.forget_client().await;
                Err(unavailable(e))
            }
            Err(_) => {
                self.forget_client().await;
                Err(unavailable("timed out"))
            }
        }
    }

    /// Publishes this member's record.
    pub async fn publish(&self, record: &MemberRecord) -> Result<()> {
        let key = self.key("members", &record.server_name);
        let value = serde_json::to_vec(record)
            .map_err(|e| DaemonError::failed("encode", "the member record", e))?;
        self.with_client(|mut c| async move { c.put(key, value, None).await.map(drop) })
            .await
    }

    /// Removes every key of member `name` (its record, heartbeat, last beat).
    pub async fn remove_member(&self, name: &str) -> Result<()> {
        let keys = [
            self.key("members", name),
            self.key("heartbeat", name),
            self.key("last_seen", name),
        ];
        self.with_client(|mut c| async move {
            for k in keys {
                c.delete(k, None).await?;
            }
            Ok(())
        })
        .await
    }

    /// Every member, with its status from the heartbeats (`now` in Unix seconds).
    pub async fn members(&self, now: i64) -> Result<Vec<ClusterMember>> {
        let prefix = self.prefix();
        let (records, alive, seen) = self
            .with_client(|mut c| async move {
                let get = |kind: &str| format!("{prefix}{kind}/");
                let all = Some(GetOptions::new().with_prefix());
                let records = c.get(get("members"), all.clone()).await?;
                let alive = c.get(get("heartbeat"), all.clone()).await?;
                let seen = c.get(get("last_seen"), all).await?;
                let name_of = |k: &[u8]| {
                    String::from_utf8_lossy(k)
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                };
                let records: Vec<Vec<u8>> =
                    records.kvs().iter().map(|kv| kv.value().to_vec()).collect();
                let alive: BTreeSet<String> =
                    alive.kvs().iter().map(|kv| name_of(kv.key())).collect();
                let seen: BTreeMap<String, i64> = seen
                    .kvs()
                    .iter()
                    .map(|kv| {
                        let t = String::from_utf8_lossy(kv.value()).parse().unwrap_or(0);
                        (name_of(kv.key()), t)
                    })
                    .collect();
                Ok((records, alive, seen))
            })
            .await?;
        let mut members: Vec<ClusterMember> = records
            .iter()
            .filter_map(|v| serde_json::from_slice::<MemberRecord>(v).ok())
            .map(|r| {
                let last = seen.get(&r.server_name).copied();
                member_of(r.clone(), alive.contains(&r.server_name), last, now)
            })
            .collect();
        members.sort_by(|a, b| a.server_name.cmp(&b.server_name));
        Ok(members)
    }

    /// Starts the heartbeat task (once).
    pub fn start_heartbeat(self: &Arc<Self>) {
        let mut slot = self.heartbeat.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return;
        }
        let me = self.clone();
        *slot = Some(tokio::spawn(async move { me.heartbeat_loop().await }));
    }

    /// Stops the heartbeat task (leaving the cluster, or the daemon stopping).
    pub fn stop_heartbeat(&self) {
        if let Some(t) = self
            .heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
    }

    /// One beat: a lease (kept or new) holding the heartbeat key, and the time of the beat.
    async fn beat(&self, lease: &mut Option<i64>) -> Result<()> {
        let ttl = self.offline_threshold;
        let (alive, seen) = (
            self.key("heartbeat", &self.server_name),
            self.key("last_seen", &self.server_name),
        );
        let now = crate::unix_now();
        let kept = *lease;
        let id = self
            .with_client(|mut c| async move {
                let id = match kept {
                    Some(id) => {
                        let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                        keeper.keep_alive().await?;
                        match stream.message().await? {
                            Some(r) if r.ttl() > 0 => Some(id),
                            // Expired while etcd (or this member) was away.
                            _ => None,
                        }
                    }
                    None => None,
                };
                let id = match id {
                    Some(id) => id,
                    None => {
                        let id = c.lease_grant(ttl, None).await?.id();
                        c.put(
                            alive,
                            now.to_string(),
                            Some(PutOptions::new().with_lease(id)),
                        )
                        .await?;
                        id
                    }
                };
                c.put(seen, now.to_string(), None).await?;
                Ok(id)
            })
            .await;
        match id {
            Ok(id) => {
                *lease = Some(id);
                Ok(())
            }
            Err(e) => {
                *lease = None;
                Err(e)
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut lease = None;
        // Three beats per threshold, as LXD beats twice: one lost beat is not an absence.
        let every = Duration::from_millis((self.offline_threshold.max(3) as u64) * 1000 / 3);
        loop {
            if let Err(e) = self.beat(&mut lease).await {
                tracing::warn!(error = %crate::chain(&e), "cluster heartbeat failed");
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// A member as the API shows it: Online while its heartbeat key lives, else Offline with
/// how long since its last beat (LXD's message).
pub fn member_of(r: MemberRecord, alive: bool, last_seen: Option<i64>, now: i64) -> ClusterMember {
    let (status, message) = if alive {
        ("Online".to_string(), "Fully operational".to_string())
    } else {
        let message = match last_seen {
            Some(t) if t > 0 => format!(
                "No heartbeat for {}s ({})",
                (now - t).max(0),
                crate::rfc3339_of(t)
            ),
            _ => "No heartbeat".to_string(),
        };
        ("Offline".to_string(), message)
    };
    ClusterMember {
        server_name: r.server_name,
        url: r.url,
        database: true,
        status,
        message,
        architecture: r.architecture,
        roles: vec!["database".into()],
        failure_domain: if r.failure_domain.is_empty() {
            "default".into()
        } else {
            r.failure_domain
        },
        description: r.description,
        config: r.config,
        groups: if r.groups.is_empty() {
            vec!["default".into()]
        } else {
            r.groups
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_online_while_their_heartbeat_lives() {
        let r = MemberRecord {
            server_name: "n1".into(),
            url: "https://127.0.0.1:8443".into(),
            architecture: "x86_64".into(),
            ..Default::default()
        };
        let m = member_of(r.clone(), true, Some(100), 105);
        assert_eq!(
            (m.status.as_str(), m.message.as_str()),
            ("Online", "Fully operational")
        );
        assert_eq!(m.failure_domain, "default");
        assert_eq!(m.groups, ["default"]);
        let m = member_of(r.clone(), false, Some(100), 130);
        assert_eq!(m.status, "Offline");
        assert!(
            m.message.starts_with("No heartbeat for 30s ("),
            "{}",
            m.message
        );
        assert_eq!(member_of(r, false, None, 130).message, "No heartbeat");
    }
}
