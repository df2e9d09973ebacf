//! `/1.0/instances/<name>/snapshots`: list, create, get, rename, delete. Restore is a
//! `PUT /1.0/instances/<name>` with `restore`.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::{accepted, parse_json, sync, sync_etag};
use crate::daemon::AppState;
use crate::db::snapshots::SnapshotRow;
use crate::engine;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/:name/snapshots", get(list).post(create))
        .route(
            "/:name/snapshots/:snap",
            get(one).post(rename).delete(delete),
        )
}

/// A snapshot as LXD shows it.
pub fn snapshot_object(s: &SnapshotRow) -> Value {
    json!({
        "name": s.name,
        "architecture": s.architecture,
        "config": s.config,
        "devices": s.devices,
        "ephemeral": s.ephemeral,
        "profiles": s.profiles,
        "stateful": false,
        "created_at": s.created_at,
        "last_used_at": "0001-01-01T00:00:00Z",
        "expires_at": s.expires_at,
        "expanded_config": s.config,
        "expanded_devices": s.devices,
        "size": -1,
    })
}

fn resources(name: &str) -> BTreeMap<String, Vec<String>> {
    crate::operations::instance_resources(name)
}

async fn list(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    let snaps = d.db.snapshots(&name)?;
    if super::recursion(&q) > 0 {
        Ok(sync(snaps.iter().map(snapshot_object).collect::<Vec<_>>()))
    } else {
        Ok(sync(
            snaps
                .iter()
                .map(|s| format!("/1.0/instances/{name}/snapshots/{}", s.name))
                .collect::<Vec<_>>(),
        ))
    }
}

async fn create(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(&body)?
    };
    d.db.instance_or_404(&name)?;
    if req["stateful"].as_bool() == Some(true) {
        return Err(DaemonError::BadRequest(
            "Stateful snapshots are not supported".into(),
        ));
    }
    let snap = req["name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(s) = &snap {
        engine::validate_snapshot_name(s)?;
        if d.db.snapshot(&name, s).is_ok() {
            return Err(DaemonError::Conflict(format!(
                "Snapshot {s:?} already exists"
            )));
        }
    }
    // A null expiry means `snapshots.expiry` applies.
    let expires_at = req["expires_at"]
        .as_str()
        .filter(|e| !e.is_empty())
        .map(str::to_string);
    if let Some(e) = &expires_at {
        time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
            .map_err(|_| DaemonError::BadRequest(format!("Invalid expires_at {e:?}")))?;
    }
    let (d2, res) = (d.clone(), resources(&name));
    let work = async move {
        engine::create_snapshot(d2, name, snap, expires_at)
            .await
            .map(|_| ())
    };
    Ok(super::run_task(&d, "Snapshotting instance", res, work))
}

async fn one(
    State(d): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    let s = d.db.snapshot(&name, &snap)?;
    let obj = snapshot_object(&s);
    Ok(sync_etag(obj, &json!([s.expires_at])))
}

async fn rename(
    State(d): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let req: Value = parse_json(&body)?;
    d.db.instance_or_404(&name)?;
    d.db.snapshot(&name, &snap)?;
    let new = req["name"].as_str().unwrap_or_default().to_string();
    engine::validate_snapshot_name(&new)?;
    let op = d
        .ops
        .create("task", "Renaming snapshot", resources(&name), Value::Null);
    let d2 = d.clone();
    d.ops.run(op.clone(), async move {
        engine::rename_snapshot(d2, name, snap, new)
            .await
            .map(|_| None)
    });
    Ok(accepted(&op))
}

async fn delete(
    State(d): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    d.db.snapshot(&name, &snap)?;
    let op = d
        .ops
        .create("task", "Deleting snapshot", resources(&name), Value::Null);
    let d2 = d.clone();
    d.ops.run(op.clone(), async move {
        engine::delete_snapshot(d2, name, snap).await.map(|_| None)
    });
    Ok(accepted(&op))
}
