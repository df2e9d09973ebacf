//! Cluster-wide objects (the state split): in a cluster, etcd holds the truth of the
//! objects every member shares (profiles and the trust store, so far), under
//! `…/objects/<kind>/<name>`; each member's database follows it, so every read stays local
//! and as fast as standalone.
//!
//! [`SharedStore`] is the one seam: a change is recorded first where the truth lives
//! (nowhere more standalone, where the database is it; etcd, in a transaction that
//! refuses a name taken or gone, in a cluster), then applied to this member's database
//! as standalone does. A watch applies the other members' changes here, in etcd's order;
//! each member remembers the revision of each object it holds, so it never applies its
//! own change twice nor an older one over a newer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hutch_api::network::NetworkPut;
use hutch_api::profile::ProfilePut;
use hutch_api::storage::{StoragePoolPut, StoragePoolsPost};
use serde::{Deserialize, Serialize};

use super::membership::Membership;
use crate::engine::{blocking, Engine};
use crate::error::{DaemonError, Result};

/// The kind of profiles in etcd.
pub const PROFILES: &str = "profiles";
/// The kind of managed networks in etcd.
pub const NETWORKS: &str = "networks";
/// The kind of storage pools in etcd: what each pool's create asked for.
pub const POOLS: &str = "storage-pools";
/// The kind of trusted certificates in etcd (by fingerprint).
pub const CERTIFICATES: &str = "certificates";
/// The kind of the server config keys that are the cluster's: one object, [`SERVER`].
pub const SERVER_CONFIG: &str = "server-config";
/// The name of the one [`SERVER_CONFIG`] object.
pub const SERVER: &str = "server";
/// Every kind a member follows.
const KINDS: [&str; 5] = [PROFILES, NETWORKS, POOLS, CERTIFICATES, SERVER_CONFIG];

/// What one object of `kind` is called in messages.
fn noun(kind: &str) -> &'static str {
    match kind {
        PROFILES => "profile",
        NETWORKS => "network",
        POOLS => "storage pool",
        SERVER_CONFIG => "server configuration",
        _ => "certificate",
    }
}

/// A named object (a profile, a network) as etcd keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SharedObject<T> {
    #[serde(flatten)]
    put: T,
    /// Set when the change was a rename: the old name (its references follow).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    renamed_from: String,
}

/// What a member keeps about the shared objects between changes.
#[derive(Debug, Default)]
pub struct SharedState {
    /// Held from a change's write in etcd to its application here, and by the watch
    /// while it applies: one change at a time, in order.
    lock: tokio::sync::Mutex<()>,
    /// The revision of each object (by key) this member holds.
    applied: Mutex<HashMap<String, i64>>,
}

impl SharedState {
    fn applied(&self, key: &str) -> i64 {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn set_applied(&self, key: &str, revision: i64) {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), revision);
    }
}

/// Where a change to a shared object is recorded first.
pub enum SharedStore {
    /// Standalone: the database alone.
    Local,
    /// A member: etcd, then the database.
    Cluster(Arc<Membership>),
}

/// A change held while it is recorded and applied; dropped, the next may go.
pub struct SharedChange<'a> {
    _guard: Option<tokio::sync::MutexGuard<'a, ()>>,
}

impl SharedStore {
    /// Locks the shared objects for one change (nothing standalone).
    pub async fn begin<'a>(&self, state: &'a SharedState) -> SharedChange<'a> {
        match self {
            SharedStore::Local => SharedChange { _guard: None },
            SharedStore::Cluster(_) => SharedChange {
                _guard: Some(state.lock.lock().await),
            },
        }
    }

    /// Whether changes go to a cluster (and this member is one).
    pub fn is_cluster(&self) -> bool {
        matches!(self, SharedStore::Cluster(_))
    }

    /// Records object `name` of `kind` made (`Conflict` when the cluster has it).
    pub async fn create<T: Serialize>(
        &self,
        state: &SharedState,
        kind: &str,
        name: &str,
        put: &T,
    ) -> Result<()> {
        self.put(state, kind, name, put, true).await
    }

    /// Records object `name` of `kind` changed (`NotFound` when the cluster lost it
    /// meanwhile).
    pub async fn update<T: Serialize>(
        &self,
        state: &SharedState,
        kind: &str,
        name: &str,
        put: &T,
    ) -> Result<()> {
        self.put(state, kind, name, put, false).await
    }

    /// Writes object `name` of `kind`, made (absent until now) or changed (present until
    /// now).
    async fn put<T: Serialize>(
        &self,
        state: &SharedState,
        kind: &str,
        name: &str,
        put: &T,
        new: bool,
    ) -> Result<()> {
        let SharedStore::Cluster(m) = self else {
            return Ok(());
        };
        let key = m.object_key(kind, name);
        let value = encode(kind, put, "")?;
        let (absent, present) = if new {
            (vec![key.clone()], vec![])
        } else {
            (vec![], vec![key.clone()])
        };
        match m
            .write_objects(absent, present, vec![(key.clone(), Some(value))])
            .await?
        {
            Some(revision) => {
                state.set_applied(&key, revision);
                Ok(())
            }
            None if new => Err(DaemonError::Conflict(format!(
                "The {} already exists",
                noun(kind)
            ))),
            None => Err(DaemonError::NotFound(format!(
                "{}{} not found",
                noun(kind)[..1].to_uppercase(),
                &noun(kind)[1..]
            ))),
        }
    }

    /// Records object `old` of `kind` renamed `new` (holding `put`).
    pub async fn rename<T: Serialize>(
        &self,
        state: &SharedState,
        kind: &str,
        old: &str,
        new: &str,
        put: &T,
    ) -> Result<()> {
        let SharedStore::Cluster(m) = self else {
            return Ok(());
        };
        let (old_key, new_key) = (m.object_key(kind, old), m.object_key(kind, new));
        let value = encode(kind, put, old)?;
        // The new name first: a member applying the events in order renames, then finds
        // the old one gone.
        let writes = vec![(new_key.clone(), Some(value)), (old_key.clone(), None)];
        match m
            .write_objects(vec![new_key.clone()], vec![old_key.clone()], writes)
            .await?
        {
            Some(revision) => {
                state.set_applied(&new_key, revision);
                state.set_applied(&old_key, revision);
                Ok(())
            }
            None => Err(DaemonError::Conflict(format!(
                "The {} {new:?} already exists, or {old:?} is gone",
                noun(kind)
            ))),
        }
    }

    /// Records object `name` of `kind` as `value` whatever it was (its JSON as it is).
    pub async fn replace<T: Serialize>(
        &self,
        state: &SharedState,
        kind: &str,
        name: &str,
        value: &T,
    ) -> Result<()> {
        let SharedStore::Cluster(m) = self else {
            return Ok(());
        };
        let key = m.object_key(kind, name);
        let json = serde_json::to_vec(value)
            .map_err(|e| DaemonError::failed("encode", format!("the {}", noun(kind)), e))?;
        let revision = m
            .write_objects(vec![], vec![], vec![(key.clone(), Some(json))])
            .await?
            .unwrap_or_default();
        state.set_applied(&key, revision);
        Ok(())
    }

    /// Records object `name` of `kind` deleted.
    pub async fn delete(&self, state: &SharedState, kind: &str, name: &str) -> Result<()> {
        let SharedStore::Cluster(m) = self else {
            return Ok(());
        };
        let key = m.object_key(kind, name);
        if let Some(revision) = m
            .write_objects(vec![], vec![], vec![(key.clone(), None)])
            .await?
        {
            state.set_applied(&key, revision);
        }
        Ok(())
    }
}

impl SharedStore {
    /// Records certificate `c` trusted; `replacing` (another fingerprint) no longer.
    pub async fn put_certificate(
        &self,
        state: &SharedState,
        c: &hutch_api::certificate::Certificate,
        replacing: Option<&str>,
    ) -> Result<()> {
        let SharedStore::Cluster(m) = self else {
            return Ok(());
        };
        let key = m.object_key(CERTIFICATES, &c.fingerprint);
        let value = serde_json::to_vec(c)
            .map_err(|e| DaemonError::failed("encode", "the certificate", e))?;
        let mut writes = vec![(key.clone(), Some(value))];
        let old_key = replacing
            .filter(|old| *old != c.fingerprint)
            .map(|old| m.object_key(CERTIFICATES, old));
        if let Some(old) = &old_key {
            writes.push((old.clone(), None));
        }
        let revision = m
            .write_objects(vec![], vec![], writes)
            .await?
            .unwrap_or_default();
        state.set_applied(&key, revision);
        if let Some(old) = &old_key {
            state.set_applied(old, revision);
        }
        Ok(())
    }

    /// Records certificate `fingerprint` no longer trusted.
    pub async fn delete_certificate(&self, state: &SharedState, fingerprint: &str) -> Result<()> {
        self.delete(state, CERTIFICATES, fingerprint).await
    }
}

fn encode<T: Serialize>(kind: &str, put: &T, renamed_from: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(&SharedObject {
        put,
        renamed_from: renamed_from.to_string(),
    })
    .map_err(|e| DaemonError::failed("encode", format!("the {}", noun(kind)), e))
}

impl Engine {
    /// Where this server's shared objects are recorded first.
    pub(in crate::engine) fn shared_store(&self) -> SharedStore {
        match self.membership() {
            Some(m) => SharedStore::Cluster(m),
            None => SharedStore::Local,
        }
    }

    pub(in crate::engine) fn shared_state(&self) -> &SharedState {
        &self.d.cluster.shared
    }

    /// Refuses to delete (or rename) object `name` of `kind` (`profiles`, `networks`)
    /// while an instance on another member uses it (each member knows its own instances;
    /// one that cannot be asked may use it, so it refuses too).
    pub(in crate::engine) async fn check_unused_elsewhere(
        &self,
        kind: &str,
        name: &str,
    ) -> Result<()> {
        let Some(m) = self.membership() else {
            return Ok(());
        };
        for member in m.members(crate::unix_now()).await? {
            if member.server_name == m.server_name {
                continue;
            }
            if member.status == "Offline" {
                return Err(DaemonError::Unavailable(format!(
                    "Cluster member {:?} is offline: it may use {} {name:?}",
                    member.server_name,
                    noun(kind)
                )));
            }
            let object = self
                .get_from_member(&member.server_name, &format!("/1.0/{kind}/{name}"))
                .await?;
            // An image's volume on a pool is a cache that goes with it.
            let used = object["used_by"].as_array().is_some_and(|users| {
                users
                    .iter()
                    .any(|u| !u.as_str().unwrap_or_default().starts_with("/1.0/images/"))
            });
            if used {
                return Err(DaemonError::BadRequest(format!(
                    "The {} is currently in use on cluster member {:?}",
                    noun(kind),
                    member.server_name
                )));
            }
        }
        Ok(())
    }

    /// Puts this member's shared objects (profiles, trusted certificates) into a cluster
    /// it made (before the watch starts, which would otherwise take them for deleted).
    pub(super) async fn publish_shared(&self, m: &Membership) -> Result<()> {
        let d = self.d.clone();
        let (profiles, networks, pools, certificates) = blocking(move || {
            Ok((
                d.db.profiles_by_name()?,
                d.db.networks()?,
                d.db.pools()?,
                d.db.certificates()?,
            ))
        })
        .await?;
        let mut writes = Vec::new();
        for (name, put) in profiles {
            writes.push((
                m.object_key(PROFILES, &name),
                Some(encode(PROFILES, &put, "")?),
            ));
        }
        for row in networks {
            writes.push((
                m.object_key(NETWORKS, &row.name),
                Some(encode(NETWORKS, &row.put, "")?),
            ));
        }
        for row in pools {
            // Where its backing store is (a path or a zpool of this host) is each
            // member's own: the others make theirs where they keep pools.
            let mut config = row.config;
            config.retain(|k, _| k != "source" && k != "zfs.pool_name");
            let asked = StoragePoolsPost {
                name: row.name.clone(),
                driver: row.driver,
                put: StoragePoolPut {
                    config,
                    description: row.description,
                },
            };
            writes.push((
                m.object_key(POOLS, &row.name),
                Some(encode(POOLS, &asked, "")?),
            ));
        }
        // Always there, so a joiner takes the cluster's keys (none set is a value too).
        let config = serde_json::to_vec(&self.cluster_server_config()?)
            .map_err(|e| DaemonError::failed("encode", "the server configuration", e))?;
        writes.push((m.object_key(SERVER_CONFIG, SERVER), Some(config)));
        for c in certificates {
            let value = serde_json::to_vec(&c)
                .map_err(|e| DaemonError::failed("encode", "a certificate", e))?;
            writes.push((m.object_key(CERTIFICATES, &c.fingerprint), Some(value)));
        }
        for write in writes {
            m.write_objects(vec![], vec![], vec![write]).await?;
        }
        Ok(())
    }

    /// Starts the task that keeps this member's shared objects those of the cluster: the
    /// whole set first, then each change as etcd orders them; again from the whole set
    /// after the watch breaks (etcd away, compacted).
    pub(super) fn start_shared_watch(&self, m: &Arc<Membership>) {
        let (e, weak) = (self.clone(), Arc::downgrade(m));
        m.spawn(async move {
            loop {
                let Some(m) = weak.upgrade() else { return };
                if let Err(err) = e.follow_shared(&m).await {
                    tracing::debug!(error = %crate::chain(&err), "shared object watch ended");
                }
                drop(m);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    async fn follow_shared(&self, m: &Membership) -> Result<()> {
        let state = self.shared_state();
        let (mut objects, mut revision) = m.objects("").await?;
        if objects.is_empty() {
            // A cluster made before its objects were shared (the default profile is never
            // deleted, so none at all means none yet): this member's go in, rather than
            // being taken for deleted.
            self.publish_shared(m).await?;
            (objects, revision) = m.objects("").await?;
        }
        {
            let _g = state.lock.lock().await;
            for kind in KINDS {
                let prefix = format!("{kind}/");
                let mut names = Vec::new();
                for (key, value, rev) in &objects {
                    if let Some(name) = key.strip_prefix(&prefix) {
                        names.push(name.to_string());
                        self.apply_shared_event(m, kind, name, Some(value), *rev)
                            .await;
                    }
                }
                for name in self.local_names(kind).await? {
                    if !names.contains(&name) {
                        self.apply_shared_event(m, kind, &name, None, revision)
                            .await;
                    }
                }
            }
        }
        let mut stream = m.watch_objects("", revision + 1).await?;
        let prefix = m.object_key("", "");
        while let Some(resp) = stream
            .message()
            .await
            .map_err(|e| DaemonError::Unavailable(format!("The shared object watch broke: {e}")))?
        {
            if resp.canceled() {
                break;
            }
            let _g = state.lock.lock().await;
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key());
                let Some((kind, name)) = key
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split_once('/'))
                else {
                    continue;
                };
                let Some(kind) = KINDS.into_iter().find(|k| *k == kind) else {
                    continue;
                };
                let value = match event.event_type() {
                    etcd_client::EventType::Put => Some(kv.value()),
                    etcd_client::EventType::Delete => None,
                };
                self.apply_shared_event(m, kind, name, value, kv.mod_revision())
                    .await;
            }
        }
        Ok(())
    }

    /// The names this member holds of `kind`.
    async fn local_names(&self, kind: &'static str) -> Result<Vec<String>> {
        let d = self.d.clone();
        blocking(move || match kind {
            PROFILES => d.db.profile_names(),
            NETWORKS => Ok(d.db.networks()?.into_iter().map(|n| n.name).collect()),
            POOLS => Ok(d.db.pools()?.into_iter().map(|p| p.name).collect()),
            // One object, never deleted: nothing here is taken for gone.
            SERVER_CONFIG => Ok(Vec::new()),
            _ => Ok(d
                .db
                .certificates()?
                .into_iter()
                .map(|c| c.fingerprint)
                .collect()),
        })
        .await
    }

    /// Applies one change of object `name` of `kind` (its JSON, or None when deleted)
    /// made at `revision`, unless this member holds it at that revision or later. What
    /// cannot be applied here is logged: the object is the cluster's.
    async fn apply_shared_event(
        &self,
        m: &Membership,
        kind: &'static str,
        name: &str,
        value: Option<&[u8]>,
        revision: i64,
    ) {
        let state = self.shared_state();
        let key = m.object_key(kind, name);
        if state.applied(&key) >= revision {
            return;
        }
        let applied = match (kind, value) {
            (PROFILES, Some(v)) => match serde_json::from_slice::<SharedObject<ProfilePut>>(v) {
                Ok(p) => self.take_profile(name, p).await,
                Err(e) => Err(DaemonError::failed("read", "a profile from etcd", e)),
            },
            (PROFILES, None) => self.drop_profile(name).await,
            (NETWORKS, Some(v)) => match serde_json::from_slice::<SharedObject<NetworkPut>>(v) {
                Ok(n) => self.take_network(name, n.put, &n.renamed_from).await,
                Err(e) => Err(DaemonError::failed("read", "a network from etcd", e)),
            },
            (NETWORKS, None) => self.drop_network(name).await,
            (POOLS, Some(v)) => match serde_json::from_slice::<SharedObject<StoragePoolsPost>>(v) {
                Ok(p) => self.take_storage_pool(name, p.put).await,
                Err(e) => Err(DaemonError::failed("read", "a storage pool from etcd", e)),
            },
            (POOLS, None) => self.drop_storage_pool(name).await,
            (SERVER_CONFIG, Some(v)) => match serde_json::from_slice(v) {
                Ok(config) => self.take_server_config(config).await,
                Err(e) => Err(DaemonError::failed(
                    "read",
                    "the server configuration from etcd",
                    e,
                )),
            },
            (SERVER_CONFIG, None) => Ok(()),
            (_, Some(v)) => match serde_json::from_slice(v) {
                Ok(c) => self.take_certificate(c).await,
                Err(e) => Err(DaemonError::failed("read", "a certificate from etcd", e)),
            },
            (_, None) => self.drop_certificate(name).await,
        };
        if let Err(e) = applied {
            tracing::warn!(kind, name, error = %crate::chain(&e), "cluster change not applied here");
        }
        state.set_applied(&key, revision);
    }

    /// Certificate `c` trusted here as the cluster trusts it.
    async fn take_certificate(&self, c: hutch_api::certificate::Certificate) -> Result<()> {
        let d = self.d.clone();
        blocking(move || {
            match d.db.certificate_by_prefix(&c.fingerprint) {
                Ok(old) if old.fingerprint == c.fingerprint => {
                    d.db.replace_certificate(&c.fingerprint, &c)?
                }
                _ => d.db.insert_certificate(&c)?,
            }
            d.trust.refresh(&d.db)
        })
        .await
    }

    /// Certificate `fingerprint` no longer trusted here.
    async fn drop_certificate(&self, fingerprint: &str) -> Result<()> {
        let (d, fp) = (self.d.clone(), fingerprint.to_string());
        blocking(move || {
            d.db.delete_certificate(&fp)?;
            d.trust.refresh(&d.db)
        })
        .await
    }

    /// Profile `name` as the cluster has it, here: renamed, made or changed.
    async fn take_profile(&self, name: &str, p: SharedObject<ProfilePut>) -> Result<()> {
        let (d, n, from) = (self.d.clone(), name.to_string(), p.renamed_from.clone());
        let exists = blocking(move || {
            if !from.is_empty() && d.db.profile(&from)?.is_some() && d.db.profile(&n)?.is_none() {
                d.db.rename_profile(&from, &n)?;
            }
            Ok(d.db.profile(&n)?.is_some())
        })
        .await?;
        if !exists {
            let (d, n, put) = (self.d.clone(), name.to_string(), p.put);
            return blocking(move || d.db.insert_profile(&n, &put)).await;
        }
        self.replace_profile_here(name, p.put).await
    }

    /// Profile `name` gone from the cluster: gone here too, unless instances here use it.
    async fn drop_profile(&self, name: &str) -> Result<()> {
        let (d, n) = (self.d.clone(), name.to_string());
        blocking(move || {
            let Some(_) = d.db.profile(&n)? else {
                return Ok(());
            };
            let used = d.db.instances()?.iter().any(|i| i.profiles.contains(&n));
            if used {
                return Err(DaemonError::BadRequest(format!(
                    "Profile {n:?} was deleted in the cluster but instances here use it"
                )));
            }
            d.db.delete_profile(&n)
        })
        .await
    }
}
