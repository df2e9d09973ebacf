//! `/1.0/operations`: list, get, wait, cancel, and the operation websockets.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::sync;
use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/operations", get(list))
        .route("/1.0/operations/:id", get(one).delete(cancel))
        .route("/1.0/operations/:id/wait", get(wait))
        .route("/1.0/operations/:id/websocket", get(websocket))
}

fn not_found() -> DaemonError {
    DaemonError::NotFound("Operation not found".into())
}

async fn list(State(d): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let full = super::recursion(&q) > 0;
    let mut by_status: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for op in d.operations().all() {
        let snap = op.snapshot();
        let v = if full {
            serde_json::to_value(&snap).unwrap_or_default()
        } else {
            format!("/1.0/operations/{}", snap.id).into()
        };
        by_status
            .entry(snap.status.to_lowercase())
            .or_default()
            .push(v);
    }
    sync(by_status)
}

async fn one(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let op = d.operations().get(&id).ok_or_else(not_found)?;
    Ok(sync(op.snapshot()))
}

async fn cancel(State(d): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let op = d.operations().get(&id).ok_or_else(not_found)?;
    if op.snapshot().status_code >= 200 {
        return Err(DaemonError::BadRequest(
            "Only running operations can be cancelled".into(),
        ));
    }
    Err(DaemonError::BadRequest(
        "This operation can't be cancelled".into(),
    ))
}

async fn wait(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let op = d.operations().get(&id).ok_or_else(not_found)?;
    let timeout = q
        .get("timeout")
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(-1);
    op.wait((timeout >= 0).then(|| Duration::from_secs(timeout as u64)))
        .await;
    Ok(sync(op.snapshot()))
}

async fn websocket(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Result<Response> {
    let op = d.operations().get(&id).ok_or_else(not_found)?;
    let secret = q.get("secret").cloned().unwrap_or_default();
    let sender = op
        .take_socket(&secret)
        .ok_or_else(|| DaemonError::Forbidden("not authorized".into()))?;
    Ok(ws
        .on_upgrade(move |socket| async move {
            let _ = sender.send(socket);
        })
        .into_response())
}
