//! `/1.0/networks`: managed bridges, their leases and state, and the host's other
//! interfaces listed as unmanaged networks.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::network::{NetworkPatch, NetworkPost, NetworkPut, NetworksPost};

use super::{check_if_match, created, empty, parse_json, sync, sync_etag};
use crate::daemon::AppState;
use crate::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/networks", get(list).post(create))
        .route(
            "/1.0/networks/:name",
            get(one).put(put).patch(patch).post(rename).delete(delete),
        )
        .route("/1.0/networks/:name/leases", get(leases))
        .route("/1.0/networks/:name/state", get(state))
}

async fn list(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    if super::recursion(&q) > 0 {
        return Ok(sync(e.networks().await?));
    }
    let urls: Vec<String> = e
        .network_names()
        .await?
        .iter()
        .map(|n| format!("/1.0/networks/{n}"))
        .collect();
    Ok(sync(urls))
}

async fn create(State(e): State<AppState>, body: Bytes) -> Result<Response> {
    let req: NetworksPost = parse_json(&body)?;
    let url = format!("/1.0/networks/{}", req.name);
    e.create_network(req).await?;
    Ok(created(&url))
}

async fn one(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let network = e.network(&name).await?;
    // Only a managed network has a configuration to guard with an ETag.
    if network.managed {
        let tag = network.put.clone();
        return Ok(sync_etag(network, &tag));
    }
    Ok(sync(network))
}

async fn put(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let req: NetworkPut = parse_json(&body)?;
    e.update_network(&name, req, move |current| check_if_match(&headers, current))
        .await?;
    Ok(empty())
}

async fn patch(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let req: NetworkPatch = parse_json(&body)?;
    e.patch_network(&name, req, move |current| check_if_match(&headers, current))
        .await?;
    Ok(empty())
}

async fn rename(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: NetworkPost = parse_json(&body)?;
    let url = format!("/1.0/networks/{}", req.name);
    e.rename_network(&name, req).await?;
    Ok(created(&url))
}

async fn delete(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    e.delete_network(&name).await?;
    Ok(empty())
}

async fn leases(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(sync(e.network_leases(&name).await?))
}

async fn state(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(sync(e.network_state(&name).await?))
}
