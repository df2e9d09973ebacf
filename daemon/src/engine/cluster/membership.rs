//! A member's presence in the cluster's etcd: its record under
//! `/hutch/clusters/<id>/members/<name>` (JSON), and a heartbeat key under
//! `…/heartbeat/<name>` bound to a lease of `cluster.offline_threshold` seconds that this
//! member keeps alive, so that a member that stops (or loses etcd) drops out by etcd's own
//! clock; `…/last_seen/<name>` keeps the time of its last beat for the Offline message.
//!
//! The heartbeat runs as a task for as long as the member is in the cluster; it reconnects
//! and takes a new lease after etcd comes back.
//!
//! Instances are placed by name: `…/instances/<name>` holds the member an instance lives
//! on, claimed before it is made (a name is the cluster's, once) and released when it goes.
//! Each member keeps what it read last of the others ([`Links`]: where they listen, the
//! certificate they present, whether they beat) for forwarding and for trusting them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use hutch_api::cluster::ClusterMember;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{DaemonError, Result};

mod placements;

/// How long a request to etcd may take before the cluster's state counts as unavailable.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// gRPC's `UNAVAILABLE` status: the endpoint did not serve the request.
const GRPC_UNAVAILABLE: i32 = 14;

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
    /// The certificate (PEM) the member presents, as a server and as a client of the
    /// others: members trust each other by it.
    #[serde(default)]
    pub certificate: String,
}

/// One member as the others reach it.
#[derive(Debug, Clone)]
pub struct Link {
    pub url: String,
    /// Its certificate (DER): the only one accepted from it.
    pub certificate: Vec<u8>,
    pub online: bool,
}

/// What a member read last of the cluster's members.
#[derive(Debug, Default)]
pub struct Links {
    pub members: BTreeMap<String, Link>,
    /// Member name by certificate fingerprint.
    pub by_fingerprint: BTreeMap<String, String>,
}

/// How a member speaks TLS to etcd (`https://` endpoints): etcd's certificate checked
/// against the CAs the system trusts (`$SSL_CERT_FILE`, else Debian's bundle), this
/// member's certificate (the cluster's) presented, so an etcd run with
/// `--client-cert-auth --trusted-ca-file=<the cluster certificate>` admits the members
/// alone.
#[derive(Clone, Default)]
pub struct EtcdTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl EtcdTls {
    /// The system's CAs and `identity`.
    pub fn of(identity: &hutch_tls::Identity) -> EtcdTls {
        let bundle = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
        EtcdTls {
            ca_pem: std::fs::read_to_string(bundle).unwrap_or_default(),
            cert_pem: identity.cert_pem.clone(),
            key_pem: identity.key_pem.clone(),
        }
    }

    fn options(&self) -> etcd_client::TlsOptions {
        let mut tls = etcd_client::TlsOptions::new().identity(etcd_client::Identity::from_pem(
            &self.cert_pem,
            &self.key_pem,
        ));
        if !self.ca_pem.is_empty() {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem));
        }
        tls
    }
}

/// The cluster's state in etcd, as one member reaches it.
pub struct Membership {
    pub server_name: String,
    pub cluster_id: String,
    pub endpoints: Vec<String>,
    /// Seconds without a heartbeat before a member is Offline.
    pub offline_threshold: i64,
    /// For `https://` endpoints.
    tls: EtcdTls,
    client: Mutex<Option<Client>>,
    /// Where the next connection tries first (an index into `endpoints`).
    next_endpoint: std::sync::atomic::AtomicUsize,
    /// The heartbeat and the other tasks that live as long as the membership.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    links: std::sync::RwLock<Arc<Links>>,
    /// When the links were read last (a miss reads them again, at most once a second).
    links_read: std::sync::Mutex<Option<std::time::Instant>>,
    /// Names claimed by a create or rename still under way here: the placement sync
    /// leaves them alone.
    claiming: std::sync::Mutex<BTreeSet<String>>,
    /// Placements that disagreed with this member's instances at the last sync, by name,
    /// with the revision of their key then (0: none): the sync mends only a disagreement
    /// seen twice, over an unchanged key, since one read may race a move under way (the
    /// mover sets the placement before the receiving member claims it).
    disagreeing: std::sync::Mutex<BTreeMap<String, i64>>,
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
        tls: EtcdTls,
    ) -> Arc<Membership> {
        Arc::new(Membership {
            server_name: server_name.to_string(),
            cluster_id: cluster_id.to_string(),
            endpoints: endpoints.to_vec(),
            offline_threshold,
            tls,
            client: Mutex::new(None),
            next_endpoint: Default::default(),
            tasks: std::sync::Mutex::new(Vec::new()),
            links: Default::default(),
            links_read: std::sync::Mutex::new(None),
            claiming: Default::default(),
            disagreeing: Default::default(),
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
        let mut options = ConnectOptions::new()
            .with_connect_timeout(ETCD_TIMEOUT)
            .with_timeout(ETCD_TIMEOUT);
        // One endpoint that answers, the next one after each failure: etcd's client
        // balances over all it is given, dead ones included.
        let endpoint = self.reachable_endpoint().await;
        if endpoint.starts_with("https://") {
            options = options.with_tls(self.tls.options());
        }
        let c = tokio::time::timeout(ETCD_TIMEOUT, Client::connect([&endpoint], Some(options)))
            .await
            .map_err(|_| unavailable(format!("no answer from {endpoint}")))?
            .map_err(unavailable)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// The first endpoint, from the one after the last used, that takes a TCP connection
    /// (the next in turn when none does, for its error).
    async fn reachable_endpoint(&self) -> String {
        let n = self.endpoints.len().max(1);
        let start = self
            .next_endpoint
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..n {
            let Some(endpoint) = self.endpoints.get((start + i) % n) else {
                break;
            };
            let authority = endpoint
                .split_once("://")
                .map_or(endpoint.as_str(), |(_, rest)| rest)
                .trim_end_matches('/');
            let probe = tokio::net::TcpStream::connect(authority);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                self.next_endpoint
                    .store(start + i, std::sync::atomic::Ordering::Relaxed);
                return endpoint.clone();
            }
        }
        self.endpoints.get(start % n).cloned().unwrap_or_default()
    }

    /// Forgets the client after a failure, so that the next call connects again.
    async fn forget_client(&self) {
        *self.client.lock().await = None;
    }

    /// Runs `f` with a client and (a copy of) `state`; a failure forgets the client, and
    /// one that never reached etcd (an endpoint gone) is tried once more on another.
    async fn with_client<S, T, F, Fut>(&self, state: S, f: F) -> Result<T>
    where
        S: Clone,
        F: Fn(Client, S) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut tries = 2;
        loop {
            tries -= 1;
            let c = self.client().await?;
            let failed = match tokio::time::timeout(ETCD_TIMEOUT, f(c, state.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let unreached = matches!(e, etcd_client::Error::TransportError(_))
                        || matches!(&e, etcd_client::Error::GRpcStatus(s)
                            if i32::from(s.code()) == GRPC_UNAVAILABLE);
                    (unavailable(e), unreached)
                }
                Err(_) => (unavailable("timed out"), false),
            };
            self.forget_client().await;
            if !failed.1 || tries == 0 {
                return Err(failed.0);
            }
        }
    }

    /// Publishes this member's record.
    pub async fn publish(&self, record: &MemberRecord) -> Result<()> {
        let key = self.key("members", &record.server_name);
        let value = serde_json::to_vec(record)
            .map_err(|e| DaemonError::failed("encode", "the member record", e))?;
        self.with_client((key, value), |mut c, (key, value)| async move {
            c.put(key, value, None).await.map(drop)
        })
        .await
    }

    /// Marks member `name` evacuated (or not).
    pub async fn set_evacuated(&self, name: &str, evacuated: bool) -> Result<()> {
        let key = self.key("evacuated", name);
        self.with_client(key, |mut c, key| async move {
            if evacuated {
                c.put(key, "1", None).await.map(drop)
            } else {
                c.delete(key, None).await.map(drop)
            }
        })
        .await
    }

    /// The key of cluster-wide object `name` of `kind` (`profiles`, …).
    pub fn object_key(&self, kind: &str, name: &str) -> String {
        if kind.is_empty() {
            // The prefix of every kind.
            return format!("{}objects/", self.prefix());
        }
        self.key(&format!("objects/{kind}"), name)
    }

    /// Every object of `kind` (name, JSON, revision), and the store's revision they were
    /// read at (a watch from the next one misses nothing).
    pub async fn objects(&self, kind: &str) -> Result<(Vec<(String, Vec<u8>, i64)>, i64)> {
        let prefix = self.object_key(kind, "");
        self.with_client(prefix, |mut c, prefix| async move {
            let r = c
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await?;
            let revision = r.header().map_or(0, |h| h.revision());
            let objects = r
                .kvs()
                .iter()
                .map(|kv| {
                    let key = String::from_utf8_lossy(kv.key());
                    (
                        key.strip_prefix(&prefix).unwrap_or(&key).to_string(),
                        kv.value().to_vec(),
                        kv.mod_revision(),
                    )
                })
                .collect();
            Ok((objects, revision))
        })
        .await
    }

    /// Writes the objects of one change at once: each `(key, Some(json))` put, each
    /// `(key, None)` deleted, provided every key of `absent` does not exist and every key
    /// of `present` does. Returns the change's revision, or None when a condition failed.
    pub async fn write_objects(
        &self,
        absent: Vec<String>,
        present: Vec<String>,
        writes: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<Option<i64>> {
        self.with_client(
            (absent, present, writes),
            |mut c, (absent, present, writes)| async move {
                let mut when: Vec<Compare> = absent
                    .into_iter()
                    .map(|k| Compare::create_revision(k, CompareOp::Equal, 0))
                    .collect();
                when.extend(
                    present
                        .into_iter()
                        .map(|k| Compare::create_revision(k, CompareOp::Greater, 0)),
                );
                let ops: Vec<TxnOp> = writes
                    .into_iter()
                    .map(|(k, v)| match v {
                        Some(v) => TxnOp::put(k, v, None),
                        None => TxnOp::delete(k, None),
                    })
                    .collect();
                let r = c.txn(Txn::new().when(when).and_then(ops)).await?;
                Ok(r.succeeded()
                    .then(|| r.header().map_or(0, |h| h.revision())))
            },
        )
        .await
    }

    /// A watch of the objects of `kind` from `revision` on.
    pub async fn watch_objects(
        &self,
        kind: &str,
        revision: i64,
    ) -> Result<etcd_client::WatchStream> {
        let prefix = self.object_key(kind, "");
        self.with_client(prefix, |mut c, prefix| async move {
            c.watch(
                prefix,
                Some(
                    etcd_client::WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision),
                ),
            )
            .await
        })
        .await
    }

    /// Starts the task that reads the members again whenever one joins, leaves, changes
    /// its record or its heartbeat comes or goes (etcd's watch), so that what this member
    /// knows of the others (the links: where they are, whether they are online) is never
    /// a beat behind.
    pub fn start_member_watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.spawn(async move {
            loop {
                let Some(m) = weak.upgrade() else { return };
                if let Err(e) = m.follow_members().await {
                    tracing::debug!(error = %crate::chain(&e), "member watch ended");
                }
                drop(m);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn follow_members(&self) -> Result<()> {
        let watch = |kind: &'static str| {
            let prefix = self.key(kind, "");
            self.with_client(prefix, |mut c, prefix| async move {
                c.watch(prefix, Some(etcd_client::WatchOptions::new().with_prefix()))
                    .await
            })
        };
        let mut records = watch("members").await?;
        let mut beats = watch("heartbeat").await?;
        // Read once the watches run: nothing between is missed.
        self.members(crate::unix_now()).await?;
        loop {
            let message = tokio::select! {
                m = records.message() => m,
                m = beats.message() => m,
            };
            match message {
                Ok(Some(resp)) if !resp.canceled() => {
                    self.members(crate::unix_now()).await?;
                }
                Ok(_) => return Ok(()),
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// Removes every key of member `name` (its record, heartbeat, last beat).
    pub async fn remove_member(&self, name: &str) -> Result<()> {
        let keys = [
            self.key("members", name),
            self.key("heartbeat", name),
            self.key("last_seen", name),
            self.key("evacuated", name),
        ];
        self.with_client(keys, |mut c, keys| async move {
            for k in keys {
                c.delete(k, None).await?;
            }
            Ok(())
        })
        .await
    }

    /// Removes every key of the cluster (its last member leaving).
    pub async fn remove_cluster(&self) -> Result<()> {
        let prefix = self.prefix();
        self.with_client(prefix, |mut c, prefix| async move {
            c.delete(
                prefix,
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await
            .map(drop)
        })
        .await
    }

    /// Every member, with its status from the heartbeats (`now` in Unix seconds).
    pub async fn members(&self, now: i64) -> Result<Vec<ClusterMember>> {
        let prefix = self.prefix();
        let (records, alive, seen, evacuated) = self
            .with_client(prefix, |mut c, prefix| async move {
                let get = |kind: &str| format!("{prefix}{kind}/");
                let all = Some(GetOptions::new().with_prefix());
                let records = c.get(get("members"), all.clone()).await?;
                let alive = c.get(get("heartbeat"), all.clone()).await?;
                let seen = c.get(get("last_seen"), all.clone()).await?;
                let evacuated = c.get(get("evacuated"), all).await?;
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
                let evacuated: BTreeSet<String> =
                    evacuated.kvs().iter().map(|kv| name_of(kv.key())).collect();
                Ok((records, alive, seen, evacuated))
            })
            .await?;
        let records: Vec<MemberRecord> = records
            .iter()
            .filter_map(|v| serde_json::from_slice::<MemberRecord>(v).ok())
            .collect();
        self.set_links(&records, &alive);
        let mut members: Vec<ClusterMember> = records
            .into_iter()
            .map(|r| {
                let last = seen.get(&r.server_name).copied();
                let alive = alive.contains(&r.server_name);
                let evacuated = evacuated.contains(&r.server_name);
                let mut member = member_of(r, alive, last, now);
                if alive && evacuated {
                    // LXD's words for a member under maintenance.
                    member.status = "Evacuated".into();
                    member.message = "Unavailable due to maintenance".into();
                }
                member
            })
            .collect();
        members.sort_by(|a, b| a.server_name.cmp(&b.server_name));
        Ok(members)
    }

    fn set_links(&self, records: &[MemberRecord], alive: &BTreeSet<String>) {
        let mut links = Links::default();
        for r in records {
            let Ok(der) = hutch_tls::cert_der_of_pem(&r.certificate) else {
                continue;
            };
            links
                .by_fingerprint
                .insert(hutch_tls::fingerprint(&der), r.server_name.clone());
            links.members.insert(
                r.server_name.clone(),
                Link {
                    url: r.url.clone(),
                    certificate: der,
                    online: alive.contains(&r.server_name),
                },
            );
        }
        *self.links.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(links);
        *self.links_read.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now());
    }

    /// What was read last of the members (nothing before the first read).
    pub fn links(&self) -> Arc<Links> {
        self.links.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The members read again, unless they were within the last second: a certificate
    /// or a member not known yet may have joined since.
    pub async fn refresh_links(&self) -> Arc<Links> {
        let recent = self
            .links_read
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
        if !recent {
            let _ = self.members(crate::unix_now()).await;
        }
        self.links()
    }

    /// The other members online when last read, by name.
    pub fn other_online_members(&self) -> Vec<String> {
        self.links()
            .members
            .iter()
            .filter(|(name, link)| **name != self.server_name && link.online)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The members read again now.
    pub async fn reload_links(&self) -> Arc<Links> {
        let _ = self.members(crate::unix_now()).await;
        self.links()
    }

    /// The member whose certificate has this fingerprint, if one has.
    pub fn member_by_fingerprint(&self, fingerprint: &str) -> Option<String> {
        self.links().by_fingerprint.get(fingerprint).cloned()
    }

    /// Starts the heartbeat task (once).
    pub fn start_heartbeat(self: &Arc<Self>) {
        let me = self.clone();
        self.spawn(async move { me.heartbeat_loop().await });
    }

    /// Runs `task` for as long as the membership lives.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tokio::spawn(task));
    }

    /// Stops the heartbeat and the other tasks (leaving the cluster, or the daemon
    /// stopping).
    pub fn stop_heartbeat(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
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
            .with_client((alive, seen), |mut c, (alive, seen)| async move {
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

    /// How often a member beats: three times per threshold, as LXD beats twice; one lost
    /// beat is not an absence.
    pub fn beat_interval(&self) -> Duration {
        Duration::from_millis((self.offline_threshold.max(3) as u64) * 1000 / 3)
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut lease = None;
        let every = self.beat_interval();
        loop {
            if let Err(e) = self.beat(&mut lease).await {
                tracing::warn!(error = %crate::chain(&e), "cluster heartbeat failed");
            }
            // The others, as they are now: who is online, who joined.
            let _ = self.members(crate::unix_now()).await;
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
