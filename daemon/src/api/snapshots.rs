//! `/1.0/instances/<name>/snapshots`: list, create, get, rename, delete. Restore is a
//! `PUT /1.0/instances/<name>` with `restore`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::instance::{InstanceSnapshotPost, InstanceSnapshotsPost};

use super::{operation, parse_json, recursion, sync, versioned};
use crate::daemon::AppState;
use crate::error::Result;
use crate::operations::instance_resources;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/:name/snapshots", get(list).post(create))
        .route(
            "/:name/snapshots/:snap",
            get(one).post(rename).delete(delete),
        )
}

async fn list(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    Ok(sync(e.list_snapshots(&name, recursion(&q))?))
}

async fn create(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceSnapshotsPost = if body.is_empty() {
        InstanceSnapshotsPost::default()
    } else {
        parse_json(&body)?
    };
    let work = e.create_snapshot(&name, req)?;
    Ok(operation(
        &e,
        "Snapshotting instance",
        instance_resources(&name),
        work,
    ))
}

async fn one(
    State(e): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    Ok(versioned(e.snapshot(&name, &snap)?))
}

async fn rename(
    State(e): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceSnapshotPost = parse_json(&body)?;
    let work = e.rename_snapshot(&name, &snap, req)?;
    Ok(operation(
        &e,
        "Renaming snapshot",
        instance_resources(&name),
        work,
    ))
}

async fn delete(
    State(e): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    let work = e.delete_snapshot(&name, &snap)?;
    Ok(operation(
        &e,
        "Deleting snapshot",
        instance_resources(&name),
        work,
    ))
}
