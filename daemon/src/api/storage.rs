//! `/1.0/storage-pools`: the default `dir` pool.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::storage::StoragePool;

use super::sync;
use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/storage-pools", get(list))
        .route("/1.0/storage-pools/:pool", get(one))
}

fn default_pool(d: &AppState) -> Result<StoragePool> {
    let used_by =
        d.db.instances()?
            .into_iter()
            .map(|i| format!("/1.0/instances/{}", i.name))
            .collect();
    Ok(StoragePool {
        name: "default".into(),
        driver: d.pool.info().name.into(),
        description: String::new(),
        config: d.db.pool("default")?.map(|p| p.config).unwrap_or_default(),
        used_by,
        status: "Created".into(),
        locations: vec!["none".into()],
    })
}

async fn list(
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    if super::recursion(&q) > 0 {
        Ok(sync(vec![default_pool(&d)?]))
    } else {
        Ok(sync(vec!["/1.0/storage-pools/default"]))
    }
}

async fn one(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    if name != "default" {
        return Err(DaemonError::NotFound("Storage pool not found".into()));
    }
    Ok(sync(default_pool(&d)?))
}

/// Custom volumes: `/1.0/storage-pools/<pool>/volumes[/custom[/<name>[/snapshots]]]` and the
/// pool's `resources`.
pub fn volume_routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/storage-pools/:pool/resources", get(resources))
        .route("/1.0/storage-pools/:pool/volumes", get(list_volumes))
        .route(
            "/1.0/storage-pools/:pool/volumes/custom",
            get(list_volumes).post(create_volume),
        )
        .route(
            "/1.0/storage-pools/:pool/volumes/custom/:name",
            get(one_volume).delete(delete_volume),
        )
        .route(
            "/1.0/storage-pools/:pool/volumes/custom/:name/snapshots",
            axum::routing::post(snapshot_volume),
        )
}

fn check_pool(pool: &str) -> Result<()> {
    if pool != "default" {
        return Err(DaemonError::NotFound("Storage pool not found".into()));
    }
    Ok(())
}

/// Instances whose devices use the custom volume `name`.
fn volume_users(d: &AppState, name: &str) -> Result<Vec<String>> {
    let mut users = Vec::new();
    for row in d.db.instances()? {
        let devices = crate::engine::expand(d, &row)?.devices;
        if devices.values().any(|dev| {
            dev.get("type").map(String::as_str) == Some("disk")
                && dev.get("source").map(String::as_str) == Some(name)
        }) {
            users.push(format!("/1.0/instances/{}", row.name));
        }
    }
    Ok(users)
}

fn volume_object(d: &AppState, v: &crate::db::volumes::VolumeRow) -> Result<serde_json::Value> {
    Ok(serde_json::json!({
        "name": v.name, "type": "custom", "description": v.description, "config": v.config,
        "content_type": "filesystem", "location": "none", "created_at": v.created_at,
        "used_by": volume_users(d, &v.name)?,
    }))
}

async fn resources(State(d): State<AppState>, Path(pool): Path<String>) -> Result<Response> {
    check_pool(&pool)?;
    let st = nix::sys::statvfs::statvfs(d.pool.root())
        .map_err(|e| DaemonError::Internal(format!("statvfs: {e}")))?;
    let total = st.blocks() * st.fragment_size();
    let used = total - st.blocks_free() * st.fragment_size();
    Ok(sync(serde_json::json!({
        "space": {"used": used, "total": total},
        "inodes": {"used": st.files() - st.files_free(), "total": st.files()},
    })))
}

async fn list_volumes(
    State(d): State<AppState>,
    Path(pool): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    check_pool(&pool)?;
    let vols = d.db.volumes(&pool)?;
    if super::recursion(&q) > 0 {
        Ok(sync(
            vols.iter()
                .map(|v| volume_object(&d, v))
                .collect::<Result<Vec<_>>>()?,
        ))
    } else {
        Ok(sync(
            vols.iter()
                .map(|v| format!("/1.0/storage-pools/{pool}/volumes/custom/{}", v.name))
                .collect::<Vec<_>>(),
        ))
    }
}

async fn create_volume(
    State(d): State<AppState>,
    Path(pool): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    check_pool(&pool)?;
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
    if size.is_some() && !d.pool.info().quotas {
        return Err(DaemonError::BadRequest(format!(
            "{} pools cannot limit the size of a volume",
            d.pool.info().name
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
    let made = d.pool.create_volume(&vol).and_then(|()| match size {
        Some(_) => d.pool.set_quota(&vol, size),
        None => Ok(()),
    });
    if let Err(e) = made {
        let _ = d.pool.delete_volume(&vol);
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
    check_pool(&pool)?;
    let v = d.db.volume(&pool, &name)?;
    Ok(sync(volume_object(&d, &v)?))
}

async fn delete_volume(
    State(d): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
) -> Result<Response> {
    check_pool(&pool)?;
    d.db.volume(&pool, &name)?;
    if !volume_users(&d, &name)?.is_empty() {
        return Err(DaemonError::BadRequest(
            "The storage volume is still in use".into(),
        ));
    }
    d.db.delete_volume(&pool, &name)?;
    let snaps = std::path::Path::new("custom-snapshots").join(&name);
    if let Ok(entries) = std::fs::read_dir(d.pool.path(&snaps)) {
        for e in entries.flatten() {
            d.pool.delete_volume(&snaps.join(e.file_name()))?;
        }
    }
    let _ = std::fs::remove_dir(d.pool.path(&snaps));
    d.pool.delete_volume(&crate::daemon::custom_vol(&name))?;
    Ok(super::empty())
}

async fn snapshot_volume(
    State(d): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    check_pool(&pool)?;
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
            .find(|c| !d.pool.path(&snaps.join(c)).exists())
            .expect("a free name"),
    };
    crate::engine::validate_snapshot_name(&snap)?;
    if d.pool.path(&snaps.join(&snap)).exists() {
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
    let d2 = d.clone();
    d.ops.run(op.clone(), async move {
        tokio::task::spawn_blocking(move || {
            d2.pool
                .clone_volume(&crate::daemon::custom_vol(&name), &snaps.join(&snap), true)
        })
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))??;
        Ok(None)
    });
    Ok(super::accepted(&op))
}
