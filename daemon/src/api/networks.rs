//! `/1.0/networks`: managed bridges, their leases and state, and the host's other
//! interfaces listed as unmanaged networks.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::network::{NetworkPost, NetworkPut, NetworksPost};

use super::{blocking, check_if_match, created, empty, parse_json, sync, sync_etag};
use crate::daemon::AppState;
use crate::engine::network as net;
use crate::error::{DaemonError, Result};

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
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let recursion = super::recursion(&q);
    blocking(&d, move |d| {
        let rows = d.db.networks()?;
        // Host interfaces are listed too, as unmanaged networks, as LXD does.
        let links = net::host_links()?;
        let unmanaged = links
            .iter()
            .filter(|l| !rows.iter().any(|r| r.name == l.name))
            .filter(|l| (l.kind.is_empty() || l.kind == "bridge") && l.link_type != "loopback");
        if recursion > 0 {
            let mut all = rows
                .iter()
                .map(|r| net::network_object(d, r))
                .collect::<Result<Vec<_>>>()?;
            all.extend(unmanaged.map(net::unmanaged_object));
            Ok(sync(all))
        } else {
            let mut names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
            names.extend(unmanaged.map(|l| l.name.clone()));
            Ok(sync(
                names
                    .iter()
                    .map(|n| format!("/1.0/networks/{n}"))
                    .collect::<Vec<_>>(),
            ))
        }
    })
    .await
}

async fn create(State(d): State<AppState>, body: Bytes) -> Result<Response> {
    let req: NetworksPost = parse_json(&body)?;
    let name = req.name.clone();
    blocking(&d, move |d| net::create_network(d, req)).await?;
    Ok(created(&format!("/1.0/networks/{name}")))
}

async fn one(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    blocking(&d, move |d| match d.db.network(&name)? {
        Some(row) => {
            let obj = net::network_object(d, &row)?;
            Ok(sync_etag(obj, &row.put))
        }
        None => {
            let link = net::host_links()?
                .into_iter()
                .find(|l| l.name == name)
                .ok_or_else(|| DaemonError::NotFound("Network not found".into()))?;
            Ok(sync(net::unmanaged_object(&link)))
        }
    })
    .await
}

async fn put(
    State(d): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let current = d.db.network_or_404(&name)?;
    check_if_match(&headers, &current.put)?;
    let req: NetworkPut = parse_json(&body)?;
    blocking(&d, move |d| net::update_network(d, &name, req)).await?;
    Ok(empty())
}

async fn patch(
    State(d): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let mut current = d.db.network_or_404(&name)?.put;
    check_if_match(&headers, &current)?;
    let req: serde_json::Value = parse_json(&body)?;
    if let Some(c) = req.get("config") {
        let c: std::collections::BTreeMap<String, String> = serde_json::from_value(c.clone())
            .map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        current.config.extend(c);
    }
    if let Some(desc) = req.get("description").and_then(|v| v.as_str()) {
        current.description = desc.to_string();
    }
    blocking(&d, move |d| net::update_network(d, &name, current)).await?;
    Ok(empty())
}

async fn rename(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: NetworkPost = parse_json(&body)?;
    let new = req.name.clone();
    blocking(&d, move |d| net::rename_network(d, &name, &req.name)).await?;
    Ok(created(&format!("/1.0/networks/{new}")))
}

async fn delete(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    blocking(&d, move |d| net::delete_network(d, &name)).await?;
    Ok(empty())
}

async fn leases(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(sync(net::leases(&d, &name)?))
}

async fn state(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let st = blocking(&d, move |_| net::network_state(&name)).await?;
    Ok(sync(st))
}
