//! `/1.0/instances` (and the legacy `/1.0/containers`): list, create, get, update,
//! rename, delete and state. Each handler extracts, calls one engine method and wraps.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::instance::{InstancePost, InstancePut, InstanceStatePut, InstancesPost};
use serde_json::Value;

use super::{empty, if_match, operation, parse_json, recursion, sync, versioned};
use crate::daemon::AppState;
use crate::error::Result;
use crate::operations::instance_resources;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list).post(create))
        .route(
            "/:name",
            get(one).put(put).patch(patch).post(rename).delete(delete),
        )
        .route("/:name/state", get(state).put(change_state))
}

async fn list(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let filter = q.get("filter").map(String::as_str).unwrap_or("");
    Ok(sync(e.list_instances(recursion(&q), filter).await?))
}

async fn create(State(e): State<AppState>, body: Bytes) -> Result<Response> {
    let req: InstancesPost = parse_json(&body)?;
    let (name, work) = e.create_instance(req)?;
    Ok(operation(
        &e,
        "Creating instance",
        instance_resources(&name),
        work,
    ))
}

async fn one(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    Ok(versioned(e.instance(&name, recursion(&q)).await?))
}

async fn put(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let put: InstancePut = parse_json(&body)?;
    let description = if put.restore.is_empty() {
        "Updating instance"
    } else {
        "Restoring snapshot"
    };
    let work = e.replace_instance(&name, put, if_match(&headers))?;
    Ok(operation(&e, description, instance_resources(&name), work))
}

async fn patch(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let patch: Value = parse_json(&body)?;
    e.patch_instance(&name, patch, if_match(&headers)).await?;
    Ok(empty())
}

async fn rename(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstancePost = parse_json(&body)?;
    let (description, work) = e.rename_instance(&name, req)?;
    Ok(operation(&e, description, instance_resources(&name), work))
}

async fn delete(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let work = e.delete_instance(&name)?;
    Ok(operation(
        &e,
        "Deleting instance",
        instance_resources(&name),
        work,
    ))
}

async fn state(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(sync(e.instance_state(&name).await?))
}

async fn change_state(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceStatePut = parse_json(&body)?;
    let (action, work) = e.change_state(&name, req)?;
    Ok(operation(
        &e,
        action.description(),
        instance_resources(&name),
        work,
    ))
}
