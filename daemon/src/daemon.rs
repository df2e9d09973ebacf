//! The daemon's shared state: directories, database, operations, events and the
//! per-instance locks that serialise lifecycle actions on one instance.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use hutch_runtime::IdMap;
use hutch_storage::{CommandRunner, Mounter, PoolHost, StorageDriver, SystemMounter, SystemRunner};

use crate::db::pools::PoolRow;
use crate::db::Db;
use crate::error::{DaemonError, Result};
use crate::events::EventHub;
use crate::operations::Operations;

/// Shared by every request handler and background task.
#[derive(Debug)]
pub struct Daemon {
    pub(in crate::engine) dir: PathBuf,
    pub(in crate::engine) db: Db,
    pub(in crate::engine) ops: Operations,
    pub(in crate::engine) events: EventHub,
    /// The hutchd binary (rsync's transport for migration runs it as `hutchd __netcat`).
    pub(in crate::engine) hutchd: PathBuf,
    /// `hutchd-helper`, beside hutchd: monitors, exec helpers, proxies, device and NIC plugs.
    pub(in crate::engine) helper: PathBuf,
    /// The id range of unprivileged containers.
    pub(in crate::engine) idmap: IdMap,
    /// Storage pools by name, each mounted under `storage-pools/<name>`.
    pools: RwLock<BTreeMap<String, Arc<dyn StorageDriver>>>,
    /// Makes, mounts and destroys pools, through the storage runner and mounter.
    pub(in crate::engine) pool_host: PoolHost,
    /// Cgroup directory of this daemon's containers, unique per state directory.
    pub(in crate::engine) cgroup_prefix: String,
    /// Live network state: dnsmasq children, proxies, the nftables runner.
    pub(in crate::engine) net: crate::engine::net_state::NetState,
    locks: NamedLocks,
    /// One per image fingerprint: imports, unpacks into a pool and deletes of one image
    /// take turns, so no request removes what another made.
    pub(in crate::engine) image_locks: NamedLocks,
    /// The server's certificate and key (`server.crt`, `server.key`), made at first start:
    /// presented on the HTTPS listener and shown as `environment.certificate`; a member
    /// that joins a cluster takes the cluster's (see [`Daemon::set_identity`]).
    identity: RwLock<Arc<hutch_tls::Identity>>,
    /// What the HTTPS listener presents: the identity, switched with it.
    pub(in crate::engine) cert_switch: Arc<hutch_tls::CertSwitch>,
    /// The trust store's fingerprints, in memory (the HTTPS auth check reads it).
    pub(in crate::engine) trust: crate::engine::certificates::TrustCache,
    /// Watchers of running instances, the autorestart limit, host shutdown.
    pub(in crate::engine) supervision: crate::engine::supervision::Supervision,
    /// Rewrites `backup.yaml` files after the changes that made them stale.
    pub(in crate::engine) backup_files: crate::engine::backup_yaml::Writer,
    /// This server's cluster membership, when it has one.
    pub(in crate::engine) cluster: crate::engine::cluster::ClusterSlot,
}

/// What handlers and background tasks hold.
pub type AppState = crate::engine::Engine;

/// What the engine runs outside itself, injected so that unit tests can put fakes in.
pub struct Runners {
    /// Storage commands (`btrfs`, `zfs`, `mkfs.btrfs`...).
    pub storage: Arc<dyn CommandRunner>,
    /// The mounts of pools (loop files, devices, bind mounts).
    pub mounts: Arc<dyn Mounter>,
    /// nftables.
    pub nft: Box<dyn hutch_network::nft::Nft>,
    /// Links, addresses and routes.
    pub netlink: Arc<dyn hutch_network::Netlink>,
    /// dnsmasq and proxy forwarders.
    pub processes: Arc<dyn hutch_network::Processes>,
}

impl Runners {
    /// The real system.
    pub fn system() -> Self {
        Runners {
            storage: Arc::new(SystemRunner),
            mounts: Arc::new(SystemMounter),
            nft: Box::new(hutch_network::nft::SystemNft),
            netlink: Arc::new(hutch_network::SystemNetlink::new()),
            processes: Arc::new(hutch_network::SystemProcesses::new()),
        }
    }
}

impl std::fmt::Debug for Runners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runners")
    }
}

impl Daemon {
    /// Where instances are, as LXD's `location`: the member name, or `none` standalone.
    pub(in crate::engine) fn location(&self) -> String {
        self.cluster
            .get()
            .map_or_else(|| "none".to_string(), |m| m.server_name.clone())
    }

    /// Opens the state directory (creating its layout and database) and mounts the pool,
    /// with the real system behind it.
    pub fn open(dir: &Path, hutchd: PathBuf, events: EventHub) -> Result<Self> {
        Self::open_with(dir, hutchd, events, Runners::system())
    }

    /// As [`open`](Self::open), with the given runners.
    pub fn open_with(
        dir: &Path,
        hutchd: PathBuf,
        events: EventHub,
        runners: Runners,
    ) -> Result<Self> {
        for sub in [
            "database",
            "images",
            "containers",
            "storage-pools/default",
            "logs",
            "disks",
            "networks",
        ] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p)
                .map_err(|e| crate::error::DaemonError::io("create", &p, e))?;
        }
        // Made 0600 before SQLite opens it: its journal files take the database's mode.
        let db_path = dir.join("database/local.db");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&db_path)
            .map_err(|e| DaemonError::io("create", &db_path, e))?;
        crate::layout::secure_state_dir(dir);
        let db = Db::open(&db_path)?;
        let mut pools = BTreeMap::new();
        let mut rows = db.pools()?;
        if rows.is_empty() {
            // Before `init`: a `dir` pool, so the daemon still works.
            rows.push(PoolRow {
                name: "default".into(),
                driver: "dir".into(),
                description: String::new(),
                config: BTreeMap::new(),
            });
        }
        let pool_host = PoolHost::new(dir, runners.storage, runners.mounts, &cgroup_prefix(dir));
        for row in rows {
            match open_pool(&pool_host, &row) {
                Ok(pool) => {
                    pools.insert(row.name.clone(), pool);
                }
                Err(e) => tracing::error!(pool = row.name, error = %e.chain(), "open storage pool"),
            }
        }
        let idmap = IdMap::for_root(Path::new("/etc"))?;
        let identity = hutch_tls::Identity::load_or_create(
            &dir.join("server.crt"),
            &dir.join("server.key"),
            hutch_tls::Kind::Server,
        )
        .map_err(|e| DaemonError::Failed {
            action: "load",
            object: "the server certificate".into(),
            source: Box::new(e),
        })?;
        let cert_switch = hutch_tls::CertSwitch::new(&identity)
            .map_err(|e| DaemonError::failed("load", "the server certificate", e))?;
        let trust = crate::engine::certificates::TrustCache::load(&db)?;
        let ops = Operations::new(events.clone());
        ops.set_durable(db.wal_sync());
        Ok(Daemon {
            identity: RwLock::new(Arc::new(identity)),
            cert_switch,
            trust,
            dir: dir.to_path_buf(),
            db,
            pools: RwLock::new(pools),
            pool_host,
            ops,
            events,
            helper: crate::layout::helper_beside(&hutchd),
            hutchd,
            idmap,
            cgroup_prefix: cgroup_prefix(dir),
            net: crate::engine::net_state::NetState::new(
                runners.nft,
                runners.netlink,
                runners.processes,
                &cgroup_prefix(dir),
            ),
            locks: NamedLocks::default(),
            image_locks: NamedLocks::default(),
            supervision: crate::engine::supervision::Supervision::new(),
            backup_files: Default::default(),
            cluster: Default::default(),
        })
    }

    /// The server's certificate and key.
    pub(in crate::engine) fn identity(&self) -> Arc<hutch_tls::Identity> {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `identity` the server's: written to `server.crt` and `server.key`, presented
    /// from the next TLS handshake on. Returns the one it replaced.
    pub(in crate::engine) fn set_identity(
        &self,
        identity: hutch_tls::Identity,
    ) -> Result<Arc<hutch_tls::Identity>> {
        identity
            .save(&self.dir.join("server.crt"), &self.dir.join("server.key"))
            .map_err(|e| DaemonError::failed("write", "the server certificate", e))?;
        self.cert_switch
            .set(&identity)
            .map_err(|e| DaemonError::failed("load", "the server certificate", e))?;
        let new = Arc::new(identity);
        Ok(std::mem::replace(
            &mut *self.identity.write().unwrap_or_else(|e| e.into_inner()),
            new,
        ))
    }

    /// The lock that serialises lifecycle actions and config writes on instance `name`.
    pub(in crate::engine) fn instance_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.get(name)
    }

    /// Called when an instance is gone (deleted, renamed): drops the locks nobody holds.
    pub(in crate::engine) fn prune_instance_locks(&self) {
        self.locks.prune();
    }

    /// Runtime directory (monitor socket, console log) of an instance.
    pub(in crate::engine) fn runtime_dir(&self, name: &str) -> PathBuf {
        self.dir.join("containers").join(name)
    }

    /// Pool `name`, or LXD's 404.
    pub(in crate::engine) fn pool(&self, name: &str) -> Result<Arc<dyn StorageDriver>> {
        self.pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| DaemonError::NotFound("Storage pool not found".into()))
    }

    /// The names of the open pools.
    pub(in crate::engine) fn pool_names(&self) -> Vec<String> {
        self.pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The `default` pool, where images are unpacked first.
    pub(in crate::engine) fn default_pool(&self) -> Result<Arc<dyn StorageDriver>> {
        self.pool("default")
    }

    /// The pool holding instance `name`'s volumes.
    pub(in crate::engine) fn instance_pool(&self, name: &str) -> Result<Arc<dyn StorageDriver>> {
        let row = self
            .db
            .instance(name)?
            .ok_or_else(|| DaemonError::NotFound("Instance not found".into()))?;
        self.pool(&row.pool)
    }

    /// Volume of an instance (its root filesystem is `rootfs` in it).
    pub(in crate::engine) fn instance_volume(&self, name: &str) -> Result<PathBuf> {
        Ok(self.instance_pool(name)?.path(&instance_vol(name)))
    }

    /// Opens (mounting) a pool just recorded, and makes it available.
    pub(in crate::engine) fn add_pool(&self, row: &PoolRow) -> Result<()> {
        let pool = open_pool(&self.pool_host, row)?;
        self.pools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(row.name.clone(), pool);
        Ok(())
    }

    /// Forgets a pool (its volumes are gone; the caller unmounts and removes it).
    pub(in crate::engine) fn remove_pool(&self, name: &str) -> Option<Arc<dyn StorageDriver>> {
        self.pools
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
    }

    /// The uploaded image file.
    pub(in crate::engine) fn image_file(&self, fingerprint: &str) -> PathBuf {
        self.dir.join("images").join(fingerprint)
    }

    /// The cgroup path of an instance.
    pub(in crate::engine) fn cgroup_path(&self, name: &str) -> String {
        format!("{}/{name}", self.cgroup_prefix)
    }
}

/// One async lock per name. A name has at most one lock at a time: a lock leaves the map
/// only when nobody holds it or waits for it, so two requests never get different locks for
/// one name.
#[derive(Debug, Default)]
pub struct NamedLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl NamedLocks {
    pub fn get(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Drops the locks only the map refers to (cloning happens under the map's mutex, so
    /// a count of one cannot rise while this runs).
    pub fn prune(&self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, lock| Arc::strong_count(lock) > 1);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// The pool-relative name of an instance's volume.
pub fn instance_vol(name: &str) -> PathBuf {
    Path::new("containers").join(name)
}

/// The pool-relative name of an image's volume.
pub fn image_vol(fingerprint: &str) -> PathBuf {
    Path::new("images").join(fingerprint)
}

/// The pool-relative name of a custom volume.
pub fn custom_vol(name: &str) -> PathBuf {
    Path::new("custom").join(name)
}

/// The pool-relative name of an instance snapshot's volume.
pub fn snapshot_vol(instance: &str, snapshot: &str) -> PathBuf {
    Path::new("containers-snapshots")
        .join(instance)
        .join(snapshot)
}

/// A pool as the database describes it, mounted at `storage-pools/<name>`, with the
/// daemon's layout of volume directories in it.
fn open_pool(host: &PoolHost, row: &PoolRow) -> Result<Arc<dyn StorageDriver>> {
    let pool = host.open(&row.record())?;
    for (sub, _) in crate::layout::POOL_DIRS {
        let p = pool.root().join(sub);
        std::fs::create_dir_all(&p).map_err(|e| DaemonError::io("create", &p, e))?;
    }
    crate::layout::secure_pool(pool.root());
    Ok(pool)
}

/// `hutch-<hash of the state directory>`, so daemons side by side never share cgroups.
pub fn cgroup_prefix(dir: &Path) -> String {
    let mut hash: u32 = 2166136261;
    for b in dir.as_os_str().as_encoded_bytes() {
        hash = (hash ^ *b as u32).wrapping_mul(16777619);
    }
    format!("hutch-{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_never_has_two_locks_at_once() {
        let locks = NamedLocks::default();
        let held = locks.get("c1");
        let guard = held.try_lock().unwrap();
        // The instance is deleted while a request holds its lock: it stays.
        locks.prune();
        let waiter = locks.get("c1");
        assert!(Arc::ptr_eq(&held, &waiter));
        assert!(waiter.try_lock().is_err());
        drop(guard);
        drop((held, waiter));
        locks.get("c2");
        locks.prune();
        assert_eq!(locks.len(), 0);
    }
}
