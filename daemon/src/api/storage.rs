//! `/1.0/storage-pools`: pools (create, list, show, delete when unused, resources) and
//! their volumes (instance, image and custom; custom ones created, snapshotted and deleted
//! here), with per-volume usage.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::storage::StoragePool;
use serde_json::{json, Value};

use super::sync;
use crate::daemon::AppState;
use crate::engine::pools;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/storage-pools", get(list).post(create))
        .route("/1.0/storage-pools/:pool", get(one).delete(delete))
}

fn pool_object(d: &AppState, name: &str) -> Result<StoragePool> {
    let row =
        d.db.pool(name)?
            .ok_or_else(|| DaemonError::NotFound("Storage pool not found".into()))?;
    let mut used_by = pools::pool_users(d, name)?;
    if let Ok(p) = d.pool(name) {
        used_by.extend(
            pools::pool_images(&*p)
                .iter()
                .map(|fp| format!("/1.0/images/{fp}")),
        );
    }
    Ok(StoragePool {
        name: row.name.clone(),
        driver: d
            .pool(name)
            .map(|p| p.info().name)
            .unwrap_or("unknown")
            .into(),
        description: String::new(),
        config: row.config,
        used_by,
        status: if d.pool(name).is_ok() {
            "Created"
        } else {
            "Unavailable"
        }
        .into(),
        locations: vec!["none".into()],
    })
}

async fn list(
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let names: Vec<String> = d.db.pools()?.into_iter().map(|p| p.name).collect();
    if super::recursion(&q) > 0 {
        Ok(sync(
            names
                .iter()
                .map(|n| pool_object(&d, n))
                .collect::<Result<Vec<_>>>()?,
        ))
    } else {
        Ok(sync(
            names
                .iter()
                .map(|n| format!("/1.0/storage-pools/{n}"))
                .collect::<Vec<_>>(),
        ))
    }
}

async fn one(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(sync(pool_object(&d, &name)?))
}

/// `POST /1.0/storage-pools {"name","driver","config","description"}` (201).
async fn create(State(d): State<AppState>, body: axum::body::Bytes) -> Result<Response> {
    let req: Value = super::parse_json(&body)?;
    let name = req["name"].as_str().unwrap_or_default().to_string();
    let driver = req["driver"].as_str().unwrap_or_default().to_string();
    let description = req["description"].as_str().unwrap_or_default().to_string();
    let config: BTreeMap<String, String> =
        serde_json::from_value(req["config"].clone()).unwrap_or_default();
    let (d2, name2) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || {
        pools::create_pool(&d2, &name2, &driver, &description, config)
    })
    .await
    .map_err(|e| DaemonError::Internal(e.to_string()))??;
    Ok(super::created(&format!("/1.0/storage-pools/{name}")))
}

async fn delete(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || pools::delete_pool(&d2, &name))
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))??;
    Ok(super::empty())
}

/// Volumes: `/1.0/storage-pools/<pool>/volumes[/<type>[/<name>[/state|/snapshots]]]`, and the
/// pool's `resources`.
pub fn volume_routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/storage-pools/:pool/resources", get(resources))
        .route("/1.0/storage-pools/:pool/volumes", get(list_volumes))
        .route(
            "/1.0/storage-pools/:pool/volumes/custom",
            get(list_custom).post(create_volume),
        )
        .route("/1.0/storage-pools/:pool/volumes/:kind", get(list_of_kind))
        .route(
            "/1.0/storage-pools/:pool/volumes/custom/:name",
            get(one_volume).delete(delete_volume),
        )
        .route(
            "/1.0/storage-pools/:pool/volumes/:kind/:name",
            get(one_of_kind),
        )
        .route(
            "/1.0/storage-pools/:pool/volumes/:kind/:name/state",
            get(volume_state),
        )
        .route(
            "/1.0/storage-pools/:pool/volumes/custom/:name/snapshots",
            get(volume_snapshots).post(snapshot_volume),
        )
        .route(
            "/1.0/storage-pools/:pool/volumes/:kind/:name/snapshots",
            get(volume_snapshots),
        )
}

/// Instances whose devices use the custom volume `name` of `pool`.
fn volume_users(d: &AppState, pool: &str, name: &str) -> Result<Vec<String>> {
    let mut users = Vec::new();
    for row in d.db.instances()? {
        let devices = crate::engine::expand(d, &row)?.devices;
        if devices.values().any(|dev| {
            dev.get("type").map(String::as_str) == Some("disk")
                && dev.get("source").map(String::as_str) == Some(name)
                && dev.get("pool").map(String::as_str).unwrap_or("default") == pool
        }) {
            users.push(format!("/1.0/instances/{}", row.name));
        }
    }
    Ok(users)
}

fn volume_object(d: &AppState, v: &crate::db::volumes::VolumeRow) -> Result<Value> {
    Ok(json!({
        "name": v.name, "type": "custom", "description": v.description, "config": v.config,
        "content_type": "filesystem", "location": "none", "created_at": v.created_at,
        "used_by": volume_users(d, &v.pool, &v.name)?,
    }))
}

/// An instance's or image's volume, as LXD lists them.
fn other_volume(kind: &str, name: &str, used_by: Vec<String>) -> Value {
    json!({
        "name": name, "type": kind, "description": "", "config": {},
        "content_type": "filesystem", "location": "none", "used_by": used_by,
    })
}

/// Every volume of `pool` of type `kind` (`container`, `image` or `custom`).
fn volumes_of(d: &AppState, pool: &str, kind: &str) -> Result<Vec<(String, Value)>> {
    let p = d.pool(pool)?;
    Ok(match kind {
        "custom" => {
            d.db.volumes(pool)?
                .iter()
                .map(|v| Ok((v.name.clone(), volume_object(d, v)?)))
                .collect::<Result<Vec<_>>>()?
        }
        "container" => {
            d.db.instances()?
                .into_iter()
                .filter(|r| r.pool == pool)
                .map(|r| {
                    let used = vec![format!("/1.0/instances/{}", r.name)];
                    (r.name.clone(), other_volume("container", &r.name, used))
                })
                .collect()
        }
        "image" => pools::pool_images(&*p)
            .into_iter()
            .map(|fp| {
                let used = vec![format!("/1.0/images/{fp}")];
                let v = other_volume("image", &fp, used);
                (fp, v)
            })
            .collect(),
        "virtual-machine" => Vec::new(),
        other => {
            return Err(DaemonError::BadRequest(format!(
                "Invalid storage volume type {other:?}"
            )))
        }
    })
}

fn volume_listing(pool: &str, kind: &str, vols: Vec<(String, Value)>, recursion: u8) -> Vec<Value> {
    vols.into_iter()
        .map(|(name, v)| {
            if recursion > 0 {
                v
            } else {
                Value::String(format!("/1.0/storage-pools/{pool}/volumes/{kind}/{name}"))
            }
        })
        .collect()
}

async fn list_volumes(
    State(d): State<AppState>,
    Path(pool): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let r = super::recursion(&q);
    let mut out = Vec::new();
    for kind in ["container", "image", "custom"] {
        out.extend(volume_listing(&pool, kind, volumes_of(&d, &pool, kind)?, r));
    }
    Ok(sync(out))
}

async fn list_custom(
    State(d): State<AppState>,
    Path(pool): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let vols = volumes_of(&d, &pool, "custom")?;
    Ok(sync(volume_listing(
        &pool,
        "custom",
        vols,
        super::recursion(&q),
    )))
}

async fn list_of_kind(
    State(d): State<AppState>,
    Path((pool, kind)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let vols = volumes_of(&d, &pool, &kind)?;
    Ok(sync(volume_listing(
        &pool,
        &kind,
        vols,
        super::recursion(&q),
    )))
}

/// Snapshots of a volume: a custom volume's own, or an instance's snapshots.
async fn volume_snapshots(
    State(d): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let (pool, name) = (&params["pool"], &params["name"]);
    let kind = params.get("kind").map(String::as_str).unwrap_or("custom");
    let p = d.pool(pool)?;
    let names: Vec<String> = match kind {
        "custom" => {
            d.db.volume(pool, name)?;
            let dir = p.path(&std::path::Path::new("custom-snapshots").join(name));
            let mut n: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect();
            n.sort();
            n
        }
        "container" => d.db.snapshots(name)?.into_iter().map(|s| s.name).collect(),
        _ => Vec::new(),
    };
    let url = |s: &str| format!("/1.0/storage-pools/{pool}/volumes/{kind}/{name}/snapshots/{s}");
    if super::recursion(&q) > 0 {
        Ok(sync(
            names
                .iter()
                .map(|s| json!({"name": s, "description": "", "config": {}, "content_type": "filesystem"}))
                .collect::<Vec<_>>(),
        ))
    } else {
        Ok(sync(names.iter().map(|s| url(s)).collect::<Vec<_>>()))
    }
}

async fn one_of_kind(
    State(d): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> Result<Response> {
    volumes_of(&d, &pool, &kind)?
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| sync(v))
        .ok_or_else(|| DaemonError::NotFound("Storage volume not found".into()))
}

/// `GET .../volumes/<type>/<name>/state`: `{"usage":{"used":N,"total":T}}`, where `total` is
/// the volume's size limit or -1.
async fn volume_state(
    State(d): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> Result<Response> {
    let p = d.pool(&pool)?;
    let (vol, limit) = match kind.as_str() {
        "custom" => {
            let v = d.db.volume(&pool, &name)?;
            let limit = v
                .config
                .get("size")
                .and_then(|s| hutch_api::config::parse_memory(s, 0).ok());
            (crate::daemon::custom_vol(&name), limit)
        }
        "container" => {
            let row = d.db.instance_or_404(&name)?;
            if row.pool != pool {
                return Err(DaemonError::NotFound("Storage volume not found".into()));
            }
            let limit = crate::engine::spec_root_size(&crate::engine::expand(&d, &row)?.devices)?;
            (crate::daemon::instance_vol(&name), limit)
        }
        "image" => (crate::daemon::image_vol(&name), None),
        _ => return Err(DaemonError::NotFound("Storage volume not found".into())),
    };
    let path = p.path(&vol);
    if !path.exists() {
        return Err(DaemonError::NotFound("Storage volume not found".into()));
    }
    let used = tokio::task::spawn_blocking(move || pools::tree_usage(&path))
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))?;
    Ok(sync(json!({
        "usage": {"used": used, "total": limit.map(|l| l as i64).unwrap_or(-1)},
    })))
}

async fn resources(State(d): State<AppState>, Path(pool): Path<String>) -> Result<Response> {
    let p = d.pool(&pool)?;
    let st = nix::sys::statvfs::statvfs(p.root())
        .map_err(|e| DaemonError::Internal(format!("statvfs: {e}")))?;
    let total = st.blocks() * st.fragment_size();
    let used = total - st.blocks_free() * st.fragment_size();
    Ok(sync(json!({
        "space": {"used": used, "total": total},
        "inodes": {"used": st.files() - st.files_free(), "total": st.files()},
    })))
}

async fn create_volume(
    State(d): State<AppState>,
    Path(pool): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let p = d.pool(&pool)?;
    let req: serde_json::Value = super::parse_json(&body)?;
    let name = req["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(DaemonError::BadRequest(format!(
            "Invalid volume name {name:?}"
        )));
    }
    let config: std::collections::BTreeMap<String, String> =
        serde_json::from_value(req["config"].clone()).unwrap_or_default();
    for key in config.keys() {
        if key != "size" {
            return Err(DaemonError::BadRequest(format!(
                "invalid value for config key {key:?}: unknown volume config key"
            )));
        }
    }
    let size = match config.get("size") {
        Some(s) => Some(hutch_api::config::parse_memory(s, 0).map_err(|e| {
            DaemonError::BadRequest(format!("invalid value for config key \"size\": {e}"))
        })?),
        None => None,
    };
    if size.is_some() && !p.info().quotas {
        return Err(DaemonError::BadRequest(format!(
            "{} pools cannot limit the size of a volume",
            p.info().name
        )));
    }
    let row = crate::db::volumes::VolumeRow {
        pool: pool.clone(),
        name: name.clone(),
        description: req["description"].as_str().unwrap_or_default().to_string(),
        config,
        created_at: crate::now(),
    };
    d.db.insert_volume(&row)?;
    let vol = crate::daemon::custom_vol(&name);
    let made = p.create_volume(&vol).and_then(|()| match size {
        Some(_) => p.set_quota(&vol, size),
        None => Ok(()),
    });
    if let Err(e) = made {
        let _ = p.delete_volume(&vol);
        let _ = d.db.delete_volume(&pool, &name);
        return Err(e.into());
    }
    d.events.lifecycle(
        "storage-volume-created",
        &format!("/1.0/storage-pools/{pool}/volumes/custom/{name}"),
        serde_json::json!({}),
    );
    Ok(super::empty())
}

async fn one_volume(
    State(d): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
) -> Result<Response> {
    d.pool(&pool)?;
    let v = d.db.volume(&pool, &name)?;
    Ok(sync(volume_object(&d, &v)?))
}

async fn delete_volume(
    State(d): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
) -> Result<Response> {
    let p = d.pool(&pool)?;
    d.db.volume(&pool, &name)?;
    if !volume_users(&d, &pool, &name)?.is_empty() {
        return Err(DaemonError::BadRequest(
            "The storage volume is still in use".into(),
        ));
    }
    d.db.delete_volume(&pool, &name)?;
    let snaps = std::path::Path::new("custom-snapshots").join(&name);
    if let Ok(entries) = std::fs::read_dir(p.path(&snaps)) {
        for e in entries.flatten() {
            p.delete_volume(&snaps.join(e.file_name()))?;
        }
    }
    let _ = std::fs::remove_dir(p.path(&snaps));
    p.delete_volume(&crate::daemon::custom_vol(&name))?;
    Ok(super::empty())
}

async fn snapshot_volume(
    State(d): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let p = d.pool(&pool)?;
    d.db.volume(&pool, &name)?;
    let req: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        super::parse_json(&body)?
    };
    let snaps = std::path::Path::new("custom-snapshots").join(&name);
    let snap = match req["name"].as_str().filter(|s| !s.is_empty()) {
        Some(s) => s.to_string(),
        None => (0..)
            .map(|n| format!("snap{n}"))
            .find(|c| !p.path(&snaps.join(c)).exists())
            .expect("a free name"),
    };
    crate::engine::validate_snapshot_name(&snap)?;
    if p.path(&snaps.join(&snap)).exists() {
        return Err(DaemonError::Conflict(format!(
            "Snapshot {snap:?} already exists"
        )));
    }
    let op = d.ops.create(
        "task",
        "Snapshotting storage volume",
        std::collections::BTreeMap::new(),
        serde_json::Value::Null,
    );
    d.ops.run(op.clone(), async move {
        tokio::task::spawn_blocking(move || {
            p.clone_volume(&crate::daemon::custom_vol(&name), &snaps.join(&snap), true)
        })
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))??;
        Ok(None)
    });
    Ok(super::accepted(&op))
}
