//! Storage pools: the engine's pool actions (list, show, create, update, delete when
//! unused, resources), what uses a pool, and moving an instance's volumes to another pool.
//! What backs a pool (a loop file, a device, a directory, a zpool) is made, mounted and
//! destroyed by the storage crate's `PoolHost`; this module keeps the rows and the rules.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hutch_api::operation::StatusCode;
use hutch_api::storage::{
    ResourceUsage, StoragePool, StoragePoolPut, StoragePoolResources, StoragePoolsPost,
};
use hutch_storage::{NewPool, StorageDriver};
use serde_json::json;

use super::cluster::shared::POOLS;
use super::revert::Revert;
use super::{blocking, check_version, runtime_status, Engine, Versioned};
use crate::daemon::{image_vol, instance_vol, snapshot_vol, AppState, Daemon};
use crate::db::intents::IntentKind;
use crate::db::pools::PoolRow;
use crate::error::{DaemonError, Result};

/// Keys a pool's config takes besides `user.*`; all are fixed once the pool is made.
const POOL_KEYS: &[&str] = &["source", "size", "zfs.pool_name"];

/// Pool creates and deletes take turns: two requests for one name never make or destroy
/// one backing store together.
static POOL_CHANGES: Mutex<()> = Mutex::new(());

/// Pool names: letters, digits, `-` and `_`, as LXD allows.
pub fn validate_pool_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.starts_with('-');
    if !ok {
        return Err(DaemonError::BadRequest(format!(
            "Invalid storage pool name {name:?}"
        )));
    }
    Ok(())
}

/// Checks a new pool's config keys; returns its `size` in bytes, if given.
fn check_pool_config(config: &BTreeMap<String, String>) -> Result<Option<u64>> {
    if let Some(key) = config
        .keys()
        .find(|k| !POOL_KEYS.contains(&k.as_str()) && !k.starts_with("user."))
    {
        return Err(DaemonError::BadRequest(format!(
            "Invalid storage pool configuration key {key:?}"
        )));
    }
    config
        .get("size")
        .map(|s| {
            hutch_api::config::parse_memory(s, 0).map_err(|e| {
                DaemonError::BadRequest(format!("invalid value for config key \"size\": {e}"))
            })
        })
        .transpose()
}

/// What a new pool asks the storage crate for.
fn new_pool(name: &str, driver: &str, config: BTreeMap<String, String>) -> Result<NewPool> {
    let size = check_pool_config(&config)?;
    Ok(NewPool {
        name: name.to_string(),
        driver: driver.to_string(),
        config,
        size,
    })
}

/// What blocks deleting a pool: instances on it, custom volumes, profiles whose root disk is
/// on it. (Image volumes on it are caches and go with it.)
pub fn pool_users(d: &Daemon, name: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> =
        d.db.instances()?
            .into_iter()
            .filter(|r| r.pool == name)
            .map(|r| format!("/1.0/instances/{}", r.name))
            .collect();
    for v in d.db.volumes(name)? {
        out.push(format!(
            "/1.0/storage-pools/{name}/volumes/custom/{}",
            v.name
        ));
    }
    for p in d.db.profile_names()? {
        if let Some(put) = d.db.profile(&p)? {
            let on_pool = put.devices.values().any(|dev| {
                dev.get("type").map(String::as_str) == Some("disk")
                    && dev.get("pool").map(String::as_str) == Some(name)
            });
            if on_pool {
                out.push(format!("/1.0/profiles/{p}"));
            }
        }
    }
    Ok(out)
}

/// Refuses while anything here uses pool `name`.
fn check_pool_unused(d: &Daemon, name: &str) -> Result<()> {
    d.db.pool_or_404(name)?;
    if !pool_users(d, name)?.is_empty() {
        return Err(DaemonError::Conflict(
            "The storage pool is currently in use".into(),
        ));
    }
    Ok(())
}

/// Image fingerprints with a volume on `pool`.
pub fn pool_images(pool: &dyn StorageDriver) -> Vec<String> {
    std::fs::read_dir(pool.root().join("images"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The API object of a pool: `Unavailable` where it could not be opened.
fn pool_object(d: &Daemon, row: PoolRow) -> Result<StoragePool> {
    let mut used_by = pool_users(d, &row.name)?;
    let open = d.pool(&row.name).ok();
    if let Some(p) = &open {
        used_by.extend(
            pool_images(&**p)
                .iter()
                .map(|fp| format!("/1.0/images/{fp}")),
        );
    }
    let driver = d
        .pool_host
        .driver_info(&row.driver)
        .map_or("unknown", |i| i.name);
    Ok(StoragePool {
        name: row.name,
        driver: driver.into(),
        put: StoragePoolPut {
            config: row.config,
            description: row.description,
        },
        used_by,
        status: if open.is_some() {
            "Created"
        } else {
            "Unavailable"
        }
        .into(),
        locations: vec!["none".into()],
    })
}

/// What a pool's or volume's ETag covers: its writable part.
pub(super) fn version_of<T: serde::Serialize>(put: &T) -> serde_json::Value {
    serde_json::to_value(put).unwrap_or_default()
}

/// The new config of a pool: `user.*` keys change, the others stay as they were made
/// (given unchanged, or left out).
fn updated_config(
    current: &BTreeMap<String, String>,
    given: BTreeMap<String, String>,
    patch: bool,
) -> Result<BTreeMap<String, String>> {
    check_pool_config(&given)?;
    let fixed = |k: &str| POOL_KEYS.contains(&k);
    for (k, v) in given.iter().filter(|(k, _)| fixed(k)) {
        if current.get(k) != Some(v) {
            return Err(DaemonError::BadRequest(format!(
                "Storage pool config key {k:?} cannot be changed"
            )));
        }
    }
    let mut config: BTreeMap<String, String> = if patch {
        current.clone()
    } else {
        current
            .iter()
            .filter(|(k, _)| fixed(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    for (k, v) in given {
        if v.is_empty() {
            config.remove(&k);
        } else {
            config.insert(k, v);
        }
    }
    Ok(config)
}

impl Engine {
    /// The names of the pools.
    pub fn storage_pool_names(&self) -> Result<Vec<String>> {
        Ok(self.d.db.pools()?.into_iter().map(|p| p.name).collect())
    }

    /// Every pool.
    pub fn storage_pools(&self) -> Result<Vec<StoragePool>> {
        self.d
            .db
            .pools()?
            .into_iter()
            .map(|row| pool_object(&self.d, row))
            .collect()
    }

    /// Pool `name` and its version (its writable part), or LXD's 404.
    pub fn storage_pool(&self, name: &str) -> Result<Versioned<StoragePool>> {
        let object = pool_object(&self.d, self.d.db.pool_or_404(name)?)?;
        let version = version_of(&object.put);
        Ok(Versioned { object, version })
    }

    /// `POST /1.0/storage-pools`: the backing store, the mount, then the row; a failure
    /// undoes what was made. In a cluster, on every member: made here, then recorded in
    /// etcd as asked (each member makes its own backing store from it), undone here when
    /// etcd refuses it.
    pub async fn create_storage_pool(&self, req: StoragePoolsPost) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let (asked, name) = (req.clone(), req.name.clone());
        self.create_storage_pool_here(req).await?;
        if let Err(err) = store
            .create(self.shared_state(), POOLS, &name, &asked)
            .await
        {
            if let Err(undo) = self.delete_storage_pool_here(&name).await {
                tracing::warn!(pool = %name, error = %crate::chain(&undo), "undo here of a pool the cluster refused");
            }
            return Err(err);
        }
        Ok(())
    }

    /// `POST /1.0/storage-pools?target=<member>` in a cluster: LXD's first step, defining a
    /// pool on one member before the cluster-wide create. hutch defines a pool for the
    /// whole cluster at once (each member makes its own backing store), so the step only
    /// checks what it is given.
    pub fn define_storage_pool_on_member(&self, req: &StoragePoolsPost) -> Result<()> {
        if self.membership().is_none() {
            return Err(DaemonError::BadRequest(
                "This server is not clustered".into(),
            ));
        }
        validate_pool_name(&req.name)?;
        match req.put.config.keys().next() {
            Some(key) => Err(DaemonError::BadRequest(format!(
                "Config key {key:?} may not be used as member-specific key: a storage pool is \
                 defined for the whole cluster at once (create it without --target)"
            ))),
            None => Ok(()),
        }
    }

    /// Pool `req` made on this member alone.
    async fn create_storage_pool_here(&self, req: StoragePoolsPost) -> Result<()> {
        validate_pool_name(&req.name)?;
        let new = new_pool(&req.name, &req.driver, req.put.config)?;
        let (d, description) = (self.d.clone(), req.put.description);
        blocking(move || {
            let _turn = POOL_CHANGES.lock().unwrap_or_else(|e| e.into_inner());
            if d.db.pool(&new.name)?.is_some() {
                return Err(DaemonError::Conflict(format!(
                    "Storage pool {:?} already exists",
                    new.name
                )));
            }
            let rec = d.pool_host.create(&new)?;
            let mut revert = Revert::new();
            let (host, made) = (d.pool_host.clone(), rec.clone());
            revert.add(move || {
                if let Err(e) = host.destroy(&made) {
                    tracing::error!(pool = made.name, error = %e, "undo a pool create");
                }
            });
            let row = PoolRow::from_record(rec, description);
            d.add_pool(&row)?;
            let (d2, name) = (d.clone(), row.name.clone());
            revert.add(move || {
                d2.remove_pool(&name);
            });
            d.db.insert_pool(&row)?;
            revert.success();
            Ok(())
        })
        .await?;
        self.d.events.lifecycle(
            "storage-pool-created",
            &format!("/1.0/storage-pools/{}", req.name),
            json!({}),
        );
        Ok(())
    }

    /// `PUT`/`PATCH /1.0/storage-pools/<name>`: the description and `user.*` keys (PATCH
    /// merges; a key given empty is unset), if the client's `if_match` is the pool's
    /// version; in a cluster, on every member.
    pub async fn update_storage_pool(
        &self,
        name: &str,
        put: StoragePoolPut,
        patch: bool,
        if_match: Option<&str>,
    ) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let old = self.d.db.pool_or_404(name)?;
        let mut row = old.clone();
        let current = StoragePoolPut {
            config: row.config.clone(),
            description: row.description.clone(),
        };
        check_version(if_match, &version_of(&current))?;
        row.config = updated_config(&row.config, put.config, patch)?;
        if !patch || !put.description.is_empty() {
            row.description = put.description;
        }
        self.d.db.update_pool(&row)?;
        if let Some(m) = self.membership() {
            if let Err(err) = self.record_pool_update(&store, &m, &row).await {
                self.d.db.update_pool(&old)?;
                return Err(err);
            }
        }
        self.d.events.lifecycle(
            "storage-pool-updated",
            &format!("/1.0/storage-pools/{name}"),
            json!({}),
        );
        Ok(())
    }

    /// Pool `row`'s description and `user.*` keys recorded in the cluster, with what its
    /// create asked for.
    async fn record_pool_update(
        &self,
        store: &super::cluster::shared::SharedStore,
        m: &super::cluster::membership::Membership,
        row: &PoolRow,
    ) -> Result<()> {
        let (objects, _) = m.objects(POOLS).await?;
        let mut asked = objects
            .iter()
            .find(|(name, _, _)| *name == row.name)
            .and_then(|(_, json, _)| serde_json::from_slice::<StoragePoolsPost>(json).ok())
            .ok_or_else(|| DaemonError::NotFound("Storage pool not found".into()))?;
        asked.put.config.retain(|k, _| !k.starts_with("user."));
        asked.put.config.extend(
            row.config
                .iter()
                .filter(|(k, _)| k.starts_with("user."))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        asked.put.description = row.description.clone();
        store
            .update(self.shared_state(), POOLS, &row.name, &asked)
            .await
    }

    /// `DELETE /1.0/storage-pools/<name>`: refused while anything uses it (on any member);
    /// the intent is recorded first, so a crash midway is finished at the next start.
    pub async fn delete_storage_pool(&self, name: &str) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let (d, n) = (self.d.clone(), name.to_string());
        blocking(move || check_pool_unused(&d, &n)).await?;
        self.check_unused_elsewhere(POOLS, name).await?;
        // The cluster's first: its other members follow, this one at once.
        store.delete(self.shared_state(), POOLS, name).await?;
        self.delete_storage_pool_here(name).await
    }

    /// Pool `name` deleted on this member alone, unless something here uses it.
    async fn delete_storage_pool_here(&self, name: &str) -> Result<()> {
        let d = self.d.clone();
        let name2 = name.to_string();
        blocking(move || {
            let _turn = POOL_CHANGES.lock().unwrap_or_else(|e| e.into_inner());
            check_pool_unused(&d, &name2)?;
            d.db.record_intent(IntentKind::Pool, "", &name2)?;
            finish_pool_delete(&d, &name2)
        })
        .await?;
        self.d.events.lifecycle(
            "storage-pool-deleted",
            &format!("/1.0/storage-pools/{name}"),
            json!({}),
        );
        Ok(())
    }

    /// Pool `name` as the cluster has it (another member's change), here: made from what
    /// its create asked for, or its description and `user.*` keys taken.
    pub(super) async fn take_storage_pool(
        &self,
        name: &str,
        asked: StoragePoolsPost,
    ) -> Result<()> {
        let Some(mut row) = self.d.db.pool(name)? else {
            return self.create_storage_pool_here(asked).await;
        };
        let mut config: BTreeMap<String, String> = row
            .config
            .iter()
            .filter(|(k, _)| !k.starts_with("user."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        config.extend(
            asked
                .put
                .config
                .into_iter()
                .filter(|(k, _)| k.starts_with("user.")),
        );
        if row.config == config && row.description == asked.put.description {
            return Ok(());
        }
        row.config = config;
        row.description = asked.put.description;
        self.d.db.update_pool(&row)
    }

    /// Pool `name` gone from the cluster: gone here too, unless something here uses it.
    pub(super) async fn drop_storage_pool(&self, name: &str) -> Result<()> {
        if self.d.db.pool(name)?.is_none() {
            return Ok(());
        }
        self.delete_storage_pool_here(name).await
    }

    /// `GET /1.0/storage-pools/<name>/resources`: space and inodes.
    pub async fn storage_pool_resources(&self, name: &str) -> Result<StoragePoolResources> {
        let pool = self.d.pool(name)?;
        let u = blocking(move || Ok(pool.pool_usage()?)).await?;
        Ok(StoragePoolResources {
            space: ResourceUsage {
                used: u.space_used,
                total: u.space_total,
            },
            inodes: ResourceUsage {
                used: u.inodes_used,
                total: u.inodes_total,
            },
        })
    }
}

/// Deletes pool `name` whose intent is recorded: its image volumes, its backing store and
/// mount point, its row, then the intent. Each step finds what an earlier, interrupted run
/// removed already, so the start-up reconciliation calls this for a recorded intent.
pub fn finish_pool_delete(d: &Daemon, name: &str) -> Result<()> {
    if let Some(row) = d.db.pool(name)? {
        if let Ok(pool) = d.pool(name) {
            for fp in pool_images(&*pool) {
                pool.delete_volume(&image_vol(&fp))?;
            }
        }
        d.remove_pool(name);
        d.pool_host.destroy(&row.record())?;
        d.db.delete_pool(name)?;
    }
    d.db.clear_intent(IntentKind::Pool, "", name)
}

/// Moves a stopped instance's volumes (and its snapshots') to pool `to`: copies made on the
/// new pool first, then the record switched, then the old volumes removed, so a failure
/// leaves the instance whole where it was.
pub async fn move_instance_pool(d: AppState, name: String, to: String) -> Result<()> {
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    let mut row = d.db.instance_or_404(&name)?;
    if row.pool == to {
        return Ok(());
    }
    if runtime_status(&d, &name).0 != StatusCode::Stopped {
        return Err(DaemonError::BadRequest(
            "Instance must be stopped to be moved to another storage pool".into(),
        ));
    }
    let (src, dst) = (d.pool(&row.pool)?, d.pool(&to)?);
    let snaps: Vec<String> = d.db.snapshots(&name)?.into_iter().map(|s| s.name).collect();
    let mut revert = Revert::new();
    {
        let (dst, name, snaps) = (dst.clone(), name.clone(), snaps.clone());
        revert.add(move || remove_instance_volumes(&dst, &name, &snaps));
    }
    let (name2, src2, snaps2) = (name.clone(), src.clone(), snaps.clone());
    blocking(move || {
        let vol = instance_vol(&name2);
        super::create::copy_volume(&src2, &vol, &dst, &vol, false)?;
        for s in &snaps2 {
            let snap = snapshot_vol(&name2, s);
            super::create::copy_volume(&src2, &snap, &dst, &snap, true)?;
        }
        Ok(())
    })
    .await?;
    // The root disk names the new pool: the instance's own root device, or an override of
    // the profile's.
    let expanded = super::expand(&d, &row)?;
    let root = expanded.devices.iter().find(|(_, dev)| {
        dev.get("type").map(String::as_str) == Some("disk")
            && dev.get("path").map(String::as_str) == Some("/")
    });
    let (dev_name, mut dev) = match root {
        Some((k, v)) => (k.clone(), v.clone()),
        None => (
            "root".to_string(),
            [("type", "disk"), ("path", "/")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
    };
    dev.insert("pool".into(), to.clone());
    let before = row.clone();
    row.devices.insert(dev_name, dev);
    d.db.update_instance(&row)?;
    {
        let d = d.clone();
        revert.add(move || {
            if let Err(e) = d.db.update_instance(&before) {
                tracing::error!(instance = before.name, error = %e.chain(), "undo a pool move");
            }
        });
    }
    d.db.set_instance_pool(&name, &to)?;
    revert.success();
    // The copy carried the old pool's backup.yaml.
    if let Err(e) = super::backup_yaml::write_instance(&d, &name) {
        tracing::warn!(instance = %name, error = %e.chain(), "cannot write its backup.yaml");
    }
    blocking(move || {
        remove_instance_volumes(&src, &name, &snaps);
        Ok(())
    })
    .await
}

/// Removes an instance's volumes and its snapshots' from `pool`; what is gone is fine.
fn remove_instance_volumes(pool: &Arc<dyn StorageDriver>, name: &str, snaps: &[String]) {
    for s in snaps {
        if let Err(e) = pool.delete_volume(&snapshot_vol(name, s)) {
            tracing::warn!(instance = name, snapshot = s, error = %e, "remove a snapshot volume");
        }
    }
    let _ = std::fs::remove_dir(pool.path(&Path::new("containers-snapshots").join(name)));
    if let Err(e) = pool.delete_volume(&instance_vol(name)) {
        tracing::warn!(instance = name, error = %e, "remove an instance volume");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn pool_names_follow_lxd() {
        for ok in ["default", "fast-1", "big_pool"] {
            validate_pool_name(ok).unwrap();
        }
        for bad in ["", "-x", "a/b", "a b", &"p".repeat(65)] {
            assert!(validate_pool_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dir_pools_and_bad_config_are_made_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = hutch_storage::PoolHost::system(dir.path(), "hutch-test");
        let make = |name: &str, driver: &str, cfg: BTreeMap<String, String>| {
            new_pool(name, driver, cfg).and_then(|new| Ok(host.create(&new)?))
        };
        let rec = make("p", "dir", BTreeMap::new()).unwrap();
        assert_eq!(rec.driver, "dir");
        assert_eq!(
            rec.config["source"],
            dir.path().join("storage-pools/p").display().to_string()
        );
        let refused = |driver: &str, k: &str, v: &str| {
            let cfg = BTreeMap::from([(k.to_string(), v.to_string())]);
            make("q", driver, cfg).unwrap_err().kind()
        };
        assert_eq!(
            refused("dir", "source", "/no/such/dir"),
            ErrorKind::InvalidInput
        );
        assert_eq!(refused("dir", "bogus", "1"), ErrorKind::InvalidInput);
        assert_eq!(refused("btrfs", "size", "lots"), ErrorKind::InvalidInput);
        assert_eq!(
            refused("btrfs", "source", "/dev/sdz"),
            ErrorKind::InvalidInput
        );
        assert_eq!(refused("nosuch", "user.x", "1"), ErrorKind::InvalidInput);
    }

    #[test]
    fn only_user_keys_and_the_description_change() {
        let cur = BTreeMap::from([
            ("source".to_string(), "/p".to_string()),
            ("user.a".to_string(), "1".to_string()),
        ]);
        let cfg = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        // PUT replaces the user keys and keeps the fixed ones.
        let put = updated_config(&cur, cfg(&[("user.b", "2")]), false).unwrap();
        assert_eq!(put, cfg(&[("source", "/p"), ("user.b", "2")]));
        // PATCH merges; an empty value unsets.
        let patch = updated_config(&cur, cfg(&[("user.a", ""), ("user.c", "3")]), true).unwrap();
        assert_eq!(patch, cfg(&[("source", "/p"), ("user.c", "3")]));
        assert!(updated_config(&cur, cfg(&[("source", "/q")]), false).is_err());
        assert!(updated_config(&cur, cfg(&[("source", "/p")]), false).is_ok());
        assert!(updated_config(&cur, cfg(&[("bogus", "1")]), true).is_err());
    }
}

#[cfg(test)]
mod engine_tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::testing::TestApi;
    use crate::db::intents::IntentKind;

    #[tokio::test]
    async fn a_pool_delete_left_half_done_is_finished_from_its_intent() {
        let api = TestApi::new().await;
        let (status, _) = api
            .call(
                Method::POST,
                "/1.0/storage-pools",
                Some(json!({"name": "p1", "driver": "dir"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let d = &api.engine.d;
        let root = api.dir.path().join("storage-pools/p1");
        // A crash after the intent was recorded and the mount point went.
        d.db.record_intent(IntentKind::Pool, "", "p1").unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        super::finish_pool_delete(d, "p1").unwrap();
        assert!(d.db.intents().unwrap().is_empty());
        assert!(d.pool("p1").is_err());
        let (status, _) = api.call(Method::GET, "/1.0/storage-pools/p1", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_pool_whose_mount_fails_is_not_recorded() {
        let api = TestApi::new().await;
        // A source that is a directory but cannot be bind-mounted by an unprivileged test
        // would need root; a btrfs source that is not on btrfs is refused before anything.
        let src = api.dir.path().display().to_string();
        let body = json!({"name": "p2", "driver": "btrfs", "config": {"source": src}});
        let (status, env) = api
            .call(Method::POST, "/1.0/storage-pools", Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{env}");
        assert!(api.engine.d.db.pool("p2").unwrap().is_none());
        assert!(!api.dir.path().join("storage-pools/p2").exists());
    }
}
