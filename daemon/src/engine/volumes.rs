//! The volumes of a pool as the API shows them (instances', images' and custom ones), and
//! custom volumes: create, copy (a clone within a pool, a copy across pools; snapshots too
//! unless `volume_only`), rename, move between pools, update, delete, state. Each change
//! undoes its steps when a later one fails; deletes record their intent first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hutch_api::profile::Devices;
use hutch_api::storage::{
    StorageVolume, StorageVolumePost, StorageVolumePut, StorageVolumeState, StorageVolumeUsage,
    StorageVolumesPost,
};
use hutch_storage::{StorageDriver, StorageError};
use serde_json::json;

use super::pools::version_of;
use super::revert::Revert;
use super::{blocking, check_version, Engine, Versioned};
use crate::daemon::{custom_vol, image_vol, instance_vol, Daemon};
use crate::db::intents::IntentKind;
use crate::db::volumes::VolumeRow;
use crate::error::{DaemonError, Result};

/// A volume's creation time where none is recorded (instances' and images' volumes).
const NO_TIME: &str = "0001-01-01T00:00:00Z";

/// The directory holding the snapshots of custom volume `name`.
pub fn snapshots_dir(name: &str) -> PathBuf {
    Path::new("custom-snapshots").join(name)
}

/// Names of the snapshots of custom volume `name` on `pool`.
pub fn snapshot_names(pool: &dyn StorageDriver, name: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(pool.path(&snapshots_dir(name)))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// A valid custom volume name: it becomes a path component on the pool, so nothing that
/// could climb out of `custom/` (`/`, `..`, a leading `.`) or confuse a shell or a log.
pub fn validate_volume_name(name: &str) -> Result<()> {
    let bad_char = |c: char| c == '/' || c == '\\' || c.is_control() || c.is_whitespace();
    if name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.starts_with('-')
        || name.contains(bad_char)
    {
        return Err(DaemonError::BadRequest(format!(
            "Invalid volume name {name:?}"
        )));
    }
    Ok(())
}

/// Checks a custom volume's config for `pool`; returns its `size` in bytes, if set.
pub fn check_volume_config(
    pool: &dyn StorageDriver,
    config: &BTreeMap<String, String>,
) -> Result<Option<u64>> {
    // `user.*` is the user's, free-form, as in LXD.
    let known = |k: &str| k == "size" || k.strip_prefix("user.").is_some_and(|r| !r.is_empty());
    if let Some(key) = config.keys().find(|k| !known(k)) {
        return Err(DaemonError::BadRequest(format!(
            "invalid value for config key {key:?}: unknown volume config key"
        )));
    }
    let size = match config.get("size").filter(|s| !s.is_empty()) {
        Some(s) => Some(hutch_api::config::parse_memory(s, 0).map_err(|e| {
            DaemonError::BadRequest(format!("invalid value for config key \"size\": {e}"))
        })?),
        None => None,
    };
    if size.is_some() && !pool.info().quotas {
        return Err(StorageError::Unsupported {
            driver: pool.info().name,
            action: "limit the size of a volume",
        }
        .into());
    }
    Ok(size)
}

/// The instances and the devices they end up with, for finding who uses a volume.
fn instance_devices(d: &Daemon) -> Result<Vec<(String, Devices)>> {
    d.db.instances()?
        .into_iter()
        .map(|row| Ok((row.name.clone(), super::expand(d, &row)?.devices)))
        .collect()
}

/// Instances among `instances` whose disks use custom volume `name` of `pool`.
fn volume_users(instances: &[(String, Devices)], pool: &str, name: &str) -> Vec<String> {
    instances
        .iter()
        .filter(|(_, devices)| {
            devices.values().any(|dev| {
                dev.get("type").map(String::as_str) == Some("disk")
                    && dev.get("source").map(String::as_str) == Some(name)
                    && dev.get("pool").map(String::as_str).unwrap_or("default") == pool
            })
        })
        .map(|(i, _)| format!("/1.0/instances/{i}"))
        .collect()
}

fn custom_object(v: VolumeRow, used_by: Vec<String>) -> StorageVolume {
    StorageVolume {
        name: v.name,
        kind: "custom".into(),
        put: StorageVolumePut {
            config: v.config,
            description: v.description,
            restore: String::new(),
        },
        content_type: "filesystem".into(),
        location: "none".into(),
        used_by,
        created_at: v.created_at,
    }
}

/// An instance's or image's volume, as LXD lists them.
fn other_object(kind: &str, name: &str, used_by: String) -> StorageVolume {
    StorageVolume {
        name: name.to_string(),
        kind: kind.to_string(),
        put: StorageVolumePut::default(),
        content_type: "filesystem".into(),
        location: "none".into(),
        used_by: vec![used_by],
        created_at: NO_TIME.into(),
    }
}

/// Every volume of `pool` of type `kind` (`container`, `image`, `custom`; none of type
/// `virtual-machine`).
fn volumes_of(d: &Daemon, pool: &str, kind: &str) -> Result<Vec<StorageVolume>> {
    let p = d.pool(pool)?;
    Ok(match kind {
        "custom" => {
            let instances = instance_devices(d)?;
            d.db.volumes(pool)?
                .into_iter()
                .map(|v| {
                    let users = volume_users(&instances, pool, &v.name);
                    custom_object(v, users)
                })
                .collect()
        }
        "container" => {
            d.db.instances()?
                .into_iter()
                .filter(|r| r.pool == pool)
                .map(|r| other_object(kind, &r.name, format!("/1.0/instances/{}", r.name)))
                .collect()
        }
        "image" => super::pools::pool_images(&*p)
            .into_iter()
            .map(|fp| other_object(kind, &fp, format!("/1.0/images/{fp}")))
            .collect(),
        "virtual-machine" => Vec::new(),
        other => {
            return Err(DaemonError::BadRequest(format!(
                "Invalid storage volume type {other:?}"
            )))
        }
    })
}

/// The custom volume `name` of `pool` with its pool, or LXD's 404s.
pub(super) fn custom_volume(
    d: &Daemon,
    pool: &str,
    name: &str,
) -> Result<(Arc<dyn StorageDriver>, VolumeRow)> {
    let p = d.pool(pool)?;
    Ok((p, d.db.volume(pool, name)?))
}

/// Refuses a change to a volume an instance uses.
pub(super) fn ensure_unused(d: &Daemon, pool: &str, name: &str) -> Result<()> {
    if volume_users(&instance_devices(d)?, pool, name).is_empty() {
        Ok(())
    } else {
        Err(DaemonError::Conflict(
            "The storage volume is still in use".into(),
        ))
    }
}

/// Renames the volume, then its snapshots' directory as one (as instance renames do: a
/// read-only btrfs snapshot cannot move to another directory by itself); a failure puts
/// the volume back.
fn rename_volume_and_snapshots(p: &Arc<dyn StorageDriver>, from: &str, to: &str) -> Result<()> {
    p.rename_volume(&custom_vol(from), &custom_vol(to))?;
    if p.path(&snapshots_dir(from)).exists() {
        if let Err(e) = p.rename_volume(&snapshots_dir(from), &snapshots_dir(to)) {
            let _ = p.rename_volume(&custom_vol(to), &custom_vol(from));
            return Err(e.into());
        }
    }
    Ok(())
}

/// Removes a custom volume and its snapshots from `p`; what is gone already is fine.
pub fn remove_volume_and_snapshots(p: &dyn StorageDriver, name: &str) -> Result<()> {
    for s in snapshot_names(p, name) {
        p.delete_volume(&snapshots_dir(name).join(s))?;
    }
    let _ = std::fs::remove_dir(p.path(&snapshots_dir(name)));
    Ok(p.delete_volume(&custom_vol(name))?)
}

/// Deletes custom volume `name` of `pool` whose intent is recorded: its snapshots and
/// volume, its row, then the intent. What an interrupted run removed is fine, so the
/// start-up reconciliation calls this for a recorded intent.
pub fn finish_volume_delete(d: &Daemon, pool: &str, name: &str) -> Result<()> {
    remove_volume_and_row(d, pool, name)?;
    d.db.clear_intent(IntentKind::Volume, pool, name)
}

/// Removes what an interrupted create of custom volume `name` made (start-up).
pub fn undo_volume_create(d: &Daemon, pool: &str, name: &str) -> Result<()> {
    remove_volume_and_row(d, pool, name)?;
    d.db.clear_intent(IntentKind::VolumeCreate, pool, name)
}

fn remove_volume_and_row(d: &Daemon, pool: &str, name: &str) -> Result<()> {
    if d.db.volume(pool, name).is_ok() {
        remove_volume_and_snapshots(&*d.pool(pool)?, name)?;
        d.db.delete_volume(pool, name)?;
    }
    Ok(())
}

/// Records the intent to delete custom volume `name` of `pool`, then deletes it.
pub(super) fn delete_volume(d: &Daemon, pool: &str, name: &str) -> Result<()> {
    d.db.record_intent(IntentKind::Volume, pool, name)?;
    finish_volume_delete(d, pool, name)
}

pub(super) fn volume_url(pool: &str, name: &str) -> String {
    format!("/1.0/storage-pools/{pool}/volumes/custom/{name}")
}

impl Engine {
    /// The volumes of `pool` of type `kind`, or of every type.
    pub fn storage_volumes(&self, pool: &str, kind: Option<&str>) -> Result<Vec<StorageVolume>> {
        match kind {
            Some(kind) => volumes_of(&self.d, pool, kind),
            None => ["container", "image", "custom"]
                .iter()
                .map(|k| volumes_of(&self.d, pool, k))
                .collect::<Result<Vec<_>>>()
                .map(|v| v.concat()),
        }
    }

    /// Volume `name` of type `kind` of `pool` and its version (its writable part), or
    /// LXD's 404.
    pub fn storage_volume(
        &self,
        pool: &str,
        kind: &str,
        name: &str,
    ) -> Result<Versioned<StorageVolume>> {
        let object = if kind == "custom" {
            let (_, row) = custom_volume(&self.d, pool, name)?;
            let users = volume_users(&instance_devices(&self.d)?, pool, name);
            custom_object(row, users)
        } else {
            volumes_of(&self.d, pool, kind)?
                .into_iter()
                .find(|v| v.name == name)
                .ok_or_else(|| DaemonError::NotFound("Storage volume not found".into()))?
        };
        let version = version_of(&object.put);
        Ok(Versioned { object, version })
    }

    /// `POST .../volumes/custom` without a source: an empty volume, limited to `size`.
    pub async fn create_storage_volume(&self, pool: &str, req: StorageVolumesPost) -> Result<()> {
        check_volume_kind(&req)?;
        validate_volume_name(&req.name)?;
        let p = self.d.pool(pool)?;
        let size = check_volume_config(&*p, &req.put.config)?;
        let row = VolumeRow {
            pool: pool.to_string(),
            name: req.name.clone(),
            description: req.put.description,
            config: req.put.config,
            created_at: crate::now(),
        };
        let d = self.d.clone();
        blocking(move || {
            d.db.insert_volume_creating(&row)?;
            let mut revert = Revert::new();
            let (d2, row2) = (d.clone(), row.clone());
            revert.add(move || {
                let undone = d2.db.delete_volume(&row2.pool, &row2.name).and_then(|()| {
                    d2.db
                        .clear_intent(IntentKind::VolumeCreate, &row2.pool, &row2.name)
                });
                if let Err(e) = undone {
                    tracing::error!(volume = row2.name, error = %e.chain(), "undo a volume create");
                }
            });
            let vol = custom_vol(&row.name);
            p.create_volume(&vol)?;
            let (p2, vol2) = (p.clone(), vol.clone());
            revert.add(move || {
                if let Err(e) = p2.delete_volume(&vol2) {
                    tracing::error!(volume = %vol2.display(), error = %e, "undo a volume create");
                }
            });
            if size.is_some() {
                p.set_quota(&vol, size)?;
            }
            d.db.clear_intent(IntentKind::VolumeCreate, &row.pool, &row.name)?;
            revert.success();
            Ok(())
        })
        .await?;
        self.d.events.lifecycle(
            "storage-volume-created",
            &volume_url(pool, &req.name),
            json!({}),
        );
        Ok(())
    }

    /// `POST .../volumes/custom/<name>` to the same pool: a rename, answered at once, as
    /// LXD 5.0's client expects.
    pub async fn rename_storage_volume(
        &self,
        pool: &str,
        name: &str,
        req: StorageVolumePost,
    ) -> Result<()> {
        let (p, row) = custom_volume(&self.d, pool, name)?;
        let new_name = if req.name.is_empty() { name } else { &req.name }.to_string();
        validate_volume_name(&new_name)?;
        ensure_unused(&self.d, pool, name)?;
        if new_name == name {
            return Ok(());
        }
        let url = volume_url(pool, &new_name);
        let (d, old, pool) = (self.d.clone(), name.to_string(), pool.to_string());
        let events = self.d.clone();
        blocking(move || {
            d.db.insert_volume(&VolumeRow {
                name: new_name.clone(),
                ..row
            })?;
            let mut revert = Revert::new();
            let (d2, pool2, new2) = (d.clone(), pool.clone(), new_name.clone());
            revert.add(move || {
                if let Err(e) = d2.db.delete_volume(&pool2, &new2) {
                    tracing::error!(volume = new2, error = %e.chain(), "undo a volume rename");
                }
            });
            rename_volume_and_snapshots(&p, &old, &new_name)?;
            d.db.delete_volume(&pool, &old)?;
            revert.success();
            Ok(())
        })
        .await?;
        events
            .events
            .lifecycle("storage-volume-renamed", &url, json!({ "old_name": name }));
        Ok(())
    }

    /// `PUT`/`PATCH .../volumes/custom/<name>`: description and config (PATCH merges; a
    /// key given empty is unset), `size` applied to the volume first, if the client's
    /// `if_match` is the volume's version.
    pub async fn update_storage_volume(
        &self,
        pool: &str,
        name: &str,
        put: StorageVolumePut,
        patch: bool,
        if_match: Option<&str>,
    ) -> Result<()> {
        let (p, row) = custom_volume(&self.d, pool, name)?;
        let current = StorageVolumePut {
            config: row.config.clone(),
            description: row.description.clone(),
            restore: String::new(),
        };
        check_version(if_match, &version_of(&current))?;
        if !put.restore.is_empty() {
            return self.restore_storage_volume(pool, name, &put.restore).await;
        }
        let (description, config) = if patch {
            let mut config = row.config.clone();
            for (k, v) in put.config {
                if v.is_empty() {
                    config.remove(&k);
                } else {
                    config.insert(k, v);
                }
            }
            let description = if put.description.is_empty() {
                row.description.clone()
            } else {
                put.description
            };
            (description, config)
        } else {
            (put.description, put.config)
        };
        let size = check_volume_config(&*p, &config)?;
        let d = self.d.clone();
        blocking(move || {
            if size.is_some() || row.config.contains_key("size") {
                p.set_quota(&custom_vol(&row.name), size)?;
            }
            d.db.update_volume(&VolumeRow {
                description,
                config,
                ..row
            })
        })
        .await?;
        self.d
            .events
            .lifecycle("storage-volume-updated", &volume_url(pool, name), json!({}));
        Ok(())
    }

    /// Replaces a custom volume's content with its snapshot `snap`'s; refused while a
    /// running instance uses the volume.
    async fn restore_storage_volume(&self, pool: &str, name: &str, snap: &str) -> Result<()> {
        let (p, snap_vol) = super::volume_snapshots::existing_snapshot(&self.d, pool, name, snap)?;
        let running = volume_users(&instance_devices(&self.d)?, pool, name)
            .into_iter()
            .any(|i| {
                super::runtime_status(&self.d, &i).0 != hutch_api::operation::StatusCode::Stopped
            });
        if running {
            return Err(DaemonError::Conflict(
                "Cannot restore a volume that a running instance uses".into(),
            ));
        }
        let vol = custom_vol(name);
        blocking(move || Ok(p.restore(&vol, &snap_vol)?)).await?;
        self.d.events.lifecycle(
            "storage-volume-restored",
            &volume_url(pool, name),
            json!({}),
        );
        Ok(())
    }

    /// `DELETE .../volumes/custom/<name>`: refused while an instance uses it.
    pub async fn delete_storage_volume(&self, pool: &str, name: &str) -> Result<()> {
        custom_volume(&self.d, pool, name)?;
        ensure_unused(&self.d, pool, name)?;
        let (d, pool2, name2) = (self.d.clone(), pool.to_string(), name.to_string());
        blocking(move || delete_volume(&d, &pool2, &name2)).await?;
        self.d
            .events
            .lifecycle("storage-volume-deleted", &volume_url(pool, name), json!({}));
        Ok(())
    }

    /// `GET .../volumes/<type>/<name>/state`: bytes used, and the volume's size limit.
    pub async fn storage_volume_state(
        &self,
        pool: &str,
        kind: &str,
        name: &str,
    ) -> Result<StorageVolumeState> {
        let p = self.d.pool(pool)?;
        let not_found = || DaemonError::NotFound("Storage volume not found".into());
        let (vol, limit) = match kind {
            "custom" => {
                let v = self.d.db.volume(pool, name)?;
                let limit = v
                    .config
                    .get("size")
                    .and_then(|s| hutch_api::config::parse_memory(s, 0).ok());
                (custom_vol(name), limit)
            }
            "container" => {
                let row = self.d.db.instance_or_404(name)?;
                if row.pool != pool {
                    return Err(not_found());
                }
                let devices = super::expand(&self.d, &row)?.devices;
                (instance_vol(name), super::spec_root_size(&devices)?)
            }
            "image" => (image_vol(name), None),
            _ => return Err(not_found()),
        };
        if !p.path(&vol).exists() {
            return Err(not_found());
        }
        let used = blocking(move || Ok(p.volume_usage(&vol)?)).await?;
        Ok(StorageVolumeState {
            usage: StorageVolumeUsage {
                used,
                total: limit.map_or(-1, |l| l as i64),
            },
        })
    }
}

/// Only custom volumes are made by hand.
pub(super) fn check_volume_kind(req: &StorageVolumesPost) -> Result<()> {
    match req.kind.as_str() {
        "" | "custom" => Ok(()),
        other => Err(DaemonError::BadRequest(format!(
            "Invalid storage volume type {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::testing::TestApi;
    use crate::db::instances::InstanceRow;

    /// An instance (a row only: nothing runs) with a disk on custom volume `vol`.
    fn instance_using(api: &TestApi, vol: &str) {
        let disk = [
            ("type", "disk"),
            ("pool", "default"),
            ("source", vol),
            ("path", "/mnt"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        api.engine
            .d
            .db
            .insert_instance(&InstanceRow {
                name: "c1".into(),
                kind: "container".into(),
                architecture: "x86_64".into(),
                ephemeral: false,
                stateful: false,
                description: String::new(),
                created_at: crate::now(),
                last_used_at: crate::now(),
                config: Default::default(),
                devices: [("data".to_string(), disk)].into_iter().collect(),
                profiles: vec!["default".into()],
                state: "ready".into(),
                pool: "default".into(),
            })
            .unwrap();
    }

    #[tokio::test]
    async fn a_volume_in_use_is_neither_deleted_renamed_nor_moved() {
        let api = TestApi::new().await;
        let vols = "/1.0/storage-pools/default/volumes/custom";
        let (status, _) = api
            .call(Method::POST, vols, Some(json!({"name": "v1"})))
            .await;
        assert_eq!(status, StatusCode::OK);
        instance_using(&api, "v1");
        let (_, v) = api.call(Method::GET, &format!("{vols}/v1"), None).await;
        assert_eq!(v["metadata"]["used_by"], json!(["/1.0/instances/c1"]));
        for (m, body) in [
            (Method::DELETE, None),
            (Method::POST, Some(json!({"name": "v2"}))),
            (Method::POST, Some(json!({"name": "v1", "pool": "default"}))),
        ] {
            let (status, env) = api.call(m, &format!("{vols}/v1"), body).await;
            assert_eq!(status, StatusCode::CONFLICT, "{env}");
            assert_eq!(env["error"], "The storage volume is still in use");
        }
        let containers = "/1.0/storage-pools/default/volumes/container";
        let (_, list) = api.call(Method::GET, containers, None).await;
        assert_eq!(list["metadata"], json!([format!("{containers}/c1")]));
    }

    #[tokio::test]
    async fn a_delete_left_half_done_is_finished_from_its_intent() {
        let api = TestApi::new().await;
        let vols = "/1.0/storage-pools/default/volumes/custom";
        api.call(Method::POST, vols, Some(json!({"name": "v1"})))
            .await;
        let d = &api.engine.d;
        // A crash after the intent was recorded and the files went, before the row did.
        d.db.record_intent(crate::db::intents::IntentKind::Volume, "default", "v1")
            .unwrap();
        std::fs::remove_dir(api.dir.path().join("storage-pools/default/custom/v1")).unwrap();
        super::finish_volume_delete(d, "default", "v1").unwrap();
        assert!(d.db.intents().unwrap().is_empty());
        let (status, _) = api.call(Method::GET, &format!("{vols}/v1"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[cfg(test)]
mod create_crash_tests {
    use crate::api::testing::TestApi;
    use crate::db::volumes::VolumeRow;

    #[tokio::test]
    async fn an_interrupted_volume_create_is_removed_at_start_and_a_finished_one_stays() {
        let api = TestApi::new().await;
        let db = &api.engine.d.db;
        let row = |name: &str| VolumeRow {
            pool: "default".into(),
            name: name.into(),
            description: String::new(),
            config: Default::default(),
            created_at: crate::now(),
        };
        // Killed after the row and its intent were recorded, before the volume was made.
        db.insert_volume_creating(&row("v1")).unwrap();
        // A create of a name taken is refused without an intent that would remove it.
        api.engine
            .create_storage_volume(
                "default",
                serde_json::from_value(serde_json::json!({"name": "v2", "type": "custom"}))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(db.insert_volume_creating(&row("v2")).is_err());
        crate::engine::testing::reconcile(&api.engine);
        assert!(db.volume("default", "v1").is_err());
        assert!(db.volume("default", "v2").is_ok());
        assert!(api
            .dir
            .path()
            .join("storage-pools/default/custom/v2")
            .is_dir());
        assert!(db.intents().unwrap().is_empty());
    }
}
