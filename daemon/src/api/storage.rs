//! `/1.0/storage-pools`: pools (list, show, create, update, delete when unused, resources)
//! and their volumes (instance, image and custom; custom ones created, copied, renamed,
//! moved, updated, snapshotted and deleted), with per-volume usage. Each handler reads the
//! request, calls one engine method and wraps its answer.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::storage::{
    StoragePoolPut, StoragePoolsPost, StorageVolume, StorageVolumePost, StorageVolumePut,
    StorageVolumeSnapshotPost, StorageVolumeSnapshotsPost, StorageVolumesPost,
};

use super::{if_match, operation, parse_json, recursion, sync, versioned};
use crate::daemon::AppState;
use crate::error::Result;

type Q = Query<HashMap<String, String>>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/storage-pools", get(list).post(create))
        .route(
            "/1.0/storage-pools/:pool",
            get(one).put(update).patch(update).delete(delete),
        )
        .route("/1.0/storage-pools/:pool/resources", get(resources))
}

async fn list(State(e): State<AppState>, Query(q): Q) -> Result<Response> {
    if recursion(&q) > 0 {
        return Ok(sync(e.storage_pools()?));
    }
    let urls: Vec<String> = e
        .storage_pool_names()?
        .iter()
        .map(|n| format!("/1.0/storage-pools/{n}"))
        .collect();
    Ok(sync(urls))
}

async fn one(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(versioned(e.storage_pool(&name)?))
}

/// `POST /1.0/storage-pools {"name","driver","config","description"}` (201).
async fn create(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let req: StoragePoolsPost = parse_json(&body)?;
    let url = format!("/1.0/storage-pools/{}", req.name);
    if q.get("target").is_some_and(|t| !t.is_empty()) {
        e.define_storage_pool_on_member(&req)?;
        return Ok(super::created(&url));
    }
    e.create_storage_pool(req).await?;
    Ok(super::created(&url))
}

/// `PUT`/`PATCH /1.0/storage-pools/<name>`, under the client's `If-Match`.
async fn update(
    State(e): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let put: StoragePoolPut = parse_json(&body)?;
    let patch = method == Method::PATCH;
    e.update_storage_pool(&name, put, patch, if_match(&headers).as_deref())
        .await?;
    Ok(super::empty())
}

async fn delete(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    e.delete_storage_pool(&name).await?;
    Ok(super::empty())
}

async fn resources(State(e): State<AppState>, Path(pool): Path<String>) -> Result<Response> {
    Ok(sync(e.storage_pool_resources(&pool).await?))
}

/// Volumes: `/1.0/storage-pools/<pool>/volumes[/<type>[/<name>[/state|/snapshots]]]`.
pub fn volume_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/1.0/storage-pools/:pool/volumes",
            get(list_volumes).post(create_volume),
        )
        .route(
            "/1.0/storage-pools/:pool/volumes/custom",
            get(list_custom).post(create_volume),
        )
        .route("/1.0/storage-pools/:pool/volumes/:kind", get(list_of_kind))
        .route(
            "/1.0/storage-pools/:pool/volumes/custom/:name",
            get(one_custom)
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
            get(custom_snapshots).post(snapshot_volume),
        )
        .route(
            "/1.0/storage-pools/:pool/volumes/:kind/:name/snapshots",
            get(volume_snapshots),
        )
        .route(
            "/1.0/storage-pools/:pool/volumes/custom/:name/snapshots/:snap",
            get(one_volume_snapshot)
                .post(rename_volume_snapshot)
                .delete(delete_volume_snapshot),
        )
}

/// Volumes as objects, or as their URLs.
fn volume_listing(pool: &str, vols: Vec<StorageVolume>, q: &HashMap<String, String>) -> Response {
    if recursion(q) > 0 {
        return sync(vols);
    }
    let urls: Vec<String> = vols
        .iter()
        .map(|v| format!("/1.0/storage-pools/{pool}/volumes/{}/{}", v.kind, v.name))
        .collect();
    sync(urls)
}

async fn list_volumes(
    State(e): State<AppState>,
    Path(pool): Path<String>,
    Query(q): Q,
) -> Result<Response> {
    Ok(volume_listing(&pool, e.storage_volumes(&pool, None)?, &q))
}

async fn list_custom(
    State(e): State<AppState>,
    Path(pool): Path<String>,
    Query(q): Q,
) -> Result<Response> {
    let vols = e.storage_volumes(&pool, Some("custom"))?;
    Ok(volume_listing(&pool, vols, &q))
}

async fn list_of_kind(
    State(e): State<AppState>,
    Path((pool, kind)): Path<(String, String)>,
    Query(q): Q,
) -> Result<Response> {
    let vols = e.storage_volumes(&pool, Some(&kind))?;
    Ok(volume_listing(&pool, vols, &q))
}

async fn one_custom(
    State(e): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
) -> Result<Response> {
    Ok(versioned(e.storage_volume(&pool, "custom", &name)?))
}

async fn one_of_kind(
    State(e): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> Result<Response> {
    Ok(sync(e.storage_volume(&pool, &kind, &name)?.object))
}

/// `POST .../volumes[/custom]`: an empty volume (200), or a copy (an operation).
async fn create_volume(
    State(e): State<AppState>,
    Path(pool): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let req: StorageVolumesPost = parse_json(&body)?;
    if req.source.kind.is_empty() {
        e.create_storage_volume(&pool, req).await?;
        return Ok(super::empty());
    }
    let work = e.copy_storage_volume(&pool, req)?;
    Ok(super::cancellable_operation(
        &e,
        "Copying storage volume",
        Default::default(),
        work,
    ))
}

/// `POST .../volumes/custom/<name>`: a rename (200), or a move to another pool (an
/// operation), of a volume no instance uses.
async fn move_volume(
    State(e): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let req: StorageVolumePost = parse_json(&body)?;
    if req.pool.is_empty() || req.pool == pool {
        e.rename_storage_volume(&pool, &name, req).await?;
        return Ok(super::empty());
    }
    let work = e.move_storage_volume(&pool, &name, req)?;
    Ok(operation(
        &e,
        "Moving storage volume",
        Default::default(),
        work,
    ))
}

/// `PUT`/`PATCH .../volumes/custom/<name>`, under the client's `If-Match`.
async fn update_volume(
    State(e): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path((pool, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let put: StorageVolumePut = parse_json(&body)?;
    let patch = method == Method::PATCH;
    e.update_storage_volume(&pool, &name, put, patch, if_match(&headers).as_deref())
        .await?;
    Ok(super::empty())
}

async fn delete_volume(
    State(e): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
) -> Result<Response> {
    e.delete_storage_volume(&pool, &name).await?;
    Ok(super::empty())
}

/// `GET .../volumes/<type>/<name>/state`: `{"usage":{"used":N,"total":T}}`, where `total`
/// is the volume's size limit or -1.
async fn volume_state(
    State(e): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
) -> Result<Response> {
    Ok(sync(e.storage_volume_state(&pool, &kind, &name).await?))
}

/// Snapshots as objects, or as their URLs.
async fn snapshot_listing(
    e: AppState,
    pool: String,
    kind: &str,
    name: String,
    q: HashMap<String, String>,
) -> Result<Response> {
    let snaps = e.storage_volume_snapshots(&pool, kind, &name)?;
    if recursion(&q) > 0 {
        return Ok(sync(snaps));
    }
    let urls: Vec<String> = snaps
        .iter()
        .map(|s| {
            format!(
                "/1.0/storage-pools/{pool}/volumes/{kind}/{name}/snapshots/{}",
                s.name
            )
        })
        .collect();
    Ok(sync(urls))
}

async fn custom_snapshots(
    State(e): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
    Query(q): Q,
) -> Result<Response> {
    snapshot_listing(e, pool, "custom", name, q).await
}

async fn volume_snapshots(
    State(e): State<AppState>,
    Path((pool, kind, name)): Path<(String, String, String)>,
    Query(q): Q,
) -> Result<Response> {
    snapshot_listing(e, pool, &kind, name, q).await
}

async fn one_volume_snapshot(
    State(e): State<AppState>,
    Path((pool, name, snap)): Path<(String, String, String)>,
) -> Result<Response> {
    Ok(sync(e.storage_volume_snapshot(&pool, &name, &snap)?))
}

async fn snapshot_volume(
    State(e): State<AppState>,
    Path((pool, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let req: StorageVolumeSnapshotsPost = if body.is_empty() {
        StorageVolumeSnapshotsPost::default()
    } else {
        parse_json(&body)?
    };
    let work = e.snapshot_storage_volume(&pool, &name, req)?;
    Ok(operation(
        &e,
        "Snapshotting storage volume",
        Default::default(),
        work,
    ))
}

async fn rename_volume_snapshot(
    State(e): State<AppState>,
    Path((pool, name, snap)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let req: StorageVolumeSnapshotPost = parse_json(&body)?;
    let work = e.rename_storage_volume_snapshot(&pool, &name, &snap, req)?;
    Ok(operation(
        &e,
        "Renaming storage volume snapshot",
        Default::default(),
        work,
    ))
}

async fn delete_volume_snapshot(
    State(e): State<AppState>,
    Path((pool, name, snap)): Path<(String, String, String)>,
) -> Result<Response> {
    let work = e.delete_storage_volume_snapshot(&pool, &name, &snap)?;
    Ok(operation(
        &e,
        "Deleting storage volume snapshot",
        Default::default(),
        work,
    ))
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
