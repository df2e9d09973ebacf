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

use super::{blocking, sync};
use crate::daemon::AppState;
use crate::engine::{pools, volumes};
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
    .await??;
    Ok(super::created(&format!("/1.0/storage-pools/{name}")))
}

async fn delete(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || pools::delete_pool(&d2, &name)).await??;
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
            get(one_volume)
                .delete(delete_volume)
                .post(move_volume)
                .put(update_volume)
                .patch(update_volume),
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
        .route(
            "/1.0/storage-pools/:pool/volumes/custom/:name/snapshots/:snap",
            get(one_volume_snapshot).delete(delete_volume_snapshot),
        )
}

/// The path of snapshot `snap` of custom volume `name` on `pool`, which must exist.
fn volume_snapshot_path(
    d: &AppState,
    pool: &str,
    name: &str,
    snap: &str,
) -> Result<(
    std::sync::Arc<dyn hutch_storage::StorageDriver>,
    std::path::PathBuf,
)> {
    let p = d.pool(pool)?;
    d.db.volume(pool, name)?;
    let vol = volumes::snapshots_dir(name).join(snap);
    if snap.starts_with('.') || snap.contains('/') || !p.path(&vol).exists() {
        return Err(DaemonError::NotFound(
            "Storage volume snapshot not found".into(),
        ));
    }
    Ok((p, vol))
}

async fn one_volume_snapshot(
    State(d): State<AppState>,
    Path((pool, name, snap)): Path<(String, String, String)>,
) -> Result<Response> {
    volume_snapshot_path(&d, &pool, &name, &snap)?;
    Ok(sync(json!({
        "name": snap, "description": "", "config": {}, "content_type": "filesystem",
        "expires_at": "0001-01-01T00:00:00Z",
    })))
}

async fn delete_volume_snapshot(
    State(d): State<AppState>,
    Path((pool, name, snap)): Path<(String, String, String)>,
) -> Result<Response> {
    let (p, vol) = volume_snapshot_path(&d, &pool, &name, &snap)?;
    let work = async move { crate::engine::blocking(move || Ok(p.delete_volume(&vol)?)).await };
    Ok(super::run_task(
        &d,
        "Deleting storage volume snapshot",
        Default::default(),
        work,
    ))
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
            volumes::snapshot_names(&*p, name)
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
    let used = tokio::task::spawn_blocking(move || pools::tree_usage(&path)).await?;
    Ok(sync(json!({
        "usage": {"used": used, "total": limit.map(|l| l as i64).unwrap_or(-1)},
    })))
}

async fn resources(State(d): State<AppState>, Path(pool): Path<String>) -> Result<Response> {
    let p = d.pool(&pool)?;
    let st = nix::sys::statvfs::statvfs(p.root())
        .map_err(|e| DaemonError::failed("statvfs", p.root().display(), std::io::Error::from(e)))?;
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
    volumes::validate_volume_name(&name)?;
    let config: std::collections::BTreeMap<String, String> =
        serde_json::from_value(req["config"].clone()).unwrap_or_default();
    let description = req["description"].as_str().unwrap_or_default().to_string();
    let source = &req["source"];
    if source["type"] == "copy" {
        // `lxc storage volume copy`: the source pool defaults to this one.
        let src_pool = source["pool"]
            .as_str()
            .filter(|p| !p.is_empty())
            .unwrap_or(&pool)
            .to_string();
        let src = source["name"].as_str().unwrap_or_default().to_string();
        let volume_only = source["volume_only"].as_bool().unwrap_or(false);
        let d2 = d.clone();
        let work = async move {
            let copy = volumes::VolumeCopy {
                src_pool,
                src,
                dst_pool: pool.clone(),
                dst: name.clone(),
                description,
                config,
                volume_only,
            };
            blocking(&d2, move |d| volumes::copy_custom_volume(d, &copy)).await?;
            d2.events.lifecycle(
                "storage-volume-created",
                &format!("/1.0/storage-pools/{pool}/volumes/custom/{name}"),
                serde_json::json!({}),
            );
            Ok(())
        };
        return Ok(super::run_task(
            &d,
            "Copying storage volume",
            Default::default(),
            work,
        ));
    }
    let size = volumes::check_volume_config(&*p, &config)?;
    let row = crate::db::volumes::VolumeRow {
        pool: pool.clone(),
        name: name.clone(),
        description,
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

/// `POST .../volumes/custom/<name>`: a rename, or a move to another pool
/// (`lxc storage volume rename|move`), of a volume no instance uses.
async fn move_volume(
    State(d): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    d.pool(&pool)?;
    d.db.volume(&pool, &name)?;
    let req: serde_json::Value = super::parse_json(&body)?;
    let new_name = req["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(&name)
        .to_string();
    let new_pool = req["pool"]
        .as_str()
        .filter(|p| !p.is_empty())
        .unwrap_or(&pool)
        .to_string();
    volumes::validate_volume_name(&new_name)?;
    d.pool(&new_pool)?;
    if !volume_users(&d, &pool, &name)?.is_empty() {
        return Err(DaemonError::BadRequest(
            "The storage volume is still in use".into(),
        ));
    }
    // A rename is answered at once, as LXD 5.0's client expects; a move between pools
    // copies, so it is an operation.
    if new_pool == pool {
        blocking(&d, move |d| {
            volumes::move_custom_volume(d, &pool, &name, &pool, &new_name)
        })
        .await?;
        return Ok(super::empty());
    }
    let d2 = d.clone();
    let work = async move {
        blocking(&d2, move |d| {
            volumes::move_custom_volume(d, &pool, &name, &new_pool, &new_name)
        })
        .await
    };
    Ok(super::run_task(
        &d,
        "Moving storage volume",
        Default::default(),
        work,
    ))
}

/// `PUT`/`PATCH .../volumes/custom/<name>`: description and config (PATCH merges).
async fn update_volume(
    State(d): State<AppState>,
    method: axum::http::Method,
    Path((pool, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    d.pool(&pool)?;
    let row = d.db.volume(&pool, &name)?;
    let req: serde_json::Value = super::parse_json(&body)?;
    let given: std::collections::BTreeMap<String, String> =
        serde_json::from_value(req["config"].clone()).unwrap_or_default();
    let (description, config) = if method == axum::http::Method::PATCH {
        // A key given empty is unset.
        let mut config = row.config.clone();
        for (k, v) in given {
            if v.is_empty() {
                config.remove(&k);
            } else {
                config.insert(k, v);
            }
        }
        let description = req["description"]
            .as_str()
            .map_or(row.description.clone(), str::to_string);
        (description, config)
    } else {
        let description = req["description"].as_str().unwrap_or_default().to_string();
        (description, given)
    };
    blocking(&d, move |d| {
        volumes::update_custom_volume(d, &pool, &name, description, config)
    })
    .await?;
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
    volumes::remove_volume_and_snapshots(&*p, &name)?;
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
    let snaps = volumes::snapshots_dir(&name);
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
        .await??;
        Ok(None)
    });
    Ok(super::accepted(&op))
}
