//! `/1.0/profiles`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::profile::{ProfilePost, ProfilePut, ProfilesPost};
use serde_json::json;

use super::{check_if_match, created, empty, parse_json, sync, sync_etag};
use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/profiles", get(list).post(create))
        .route(
            "/1.0/profiles/:name",
            get(one).put(put).patch(patch).post(rename).delete(delete),
        )
}

fn validate(d: &AppState, put: &ProfilePut) -> Result<()> {
    crate::engine::devices::validate_devices(d, &put.devices)?;
    hutch_api::config::validate_instance_config(&put.config)?;
    for (name, dev) in &put.devices {
        if !dev.contains_key("type") {
            return Err(DaemonError::BadRequest(format!(
                "Device {name:?} has no type"
            )));
        }
    }
    Ok(())
}

async fn list(
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let names = d.db.profile_names()?;
    if super::recursion(&q) > 0 {
        let all = names
            .iter()
            .map(|n| d.db.full_profile(n))
            .collect::<Result<Vec<_>>>()?;
        Ok(sync(all))
    } else {
        Ok(sync(
            names
                .iter()
                .map(|n| format!("/1.0/profiles/{n}"))
                .collect::<Vec<_>>(),
        ))
    }
}

async fn create(State(d): State<AppState>, body: Bytes) -> Result<Response> {
    let req: ProfilesPost = parse_json(&body)?;
    if req.name.is_empty() || req.name.contains('/') {
        return Err(DaemonError::BadRequest("Invalid profile name".into()));
    }
    validate(&d, &req.put)?;
    d.db.insert_profile(&req.name, &req.put)?;
    d.events.lifecycle(
        "profile-created",
        &format!("/1.0/profiles/{}", req.name),
        json!({}),
    );
    Ok(created(&format!("/1.0/profiles/{}", req.name)))
}

async fn one(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let p = d.db.full_profile(&name)?;
    let tag = p.put.clone();
    Ok(sync_etag(p, &tag))
}

async fn put(
    State(d): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let current = d.db.profile_or_404(&name)?;
    check_if_match(&headers, &current)?;
    let req: ProfilePut = parse_json(&body)?;
    validate(&d, &req)?;
    d.db.update_profile(&name, &req)?;
    d.events.lifecycle(
        "profile-updated",
        &format!("/1.0/profiles/{name}"),
        json!({}),
    );
    Ok(empty())
}

async fn patch(
    State(d): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let mut current = d.db.profile_or_404(&name)?;
    check_if_match(&headers, &current)?;
    let req: serde_json::Value = parse_json(&body)?;
    if let Some(c) = req.get("config") {
        let c: std::collections::BTreeMap<String, String> = serde_json::from_value(c.clone())
            .map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        current.config.extend(c);
    }
    if let Some(dv) = req.get("devices") {
        let dv: hutch_api::profile::Devices = serde_json::from_value(dv.clone())
            .map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        current.devices.extend(dv);
    }
    if let Some(desc) = req.get("description").and_then(|v| v.as_str()) {
        current.description = desc.to_string();
    }
    validate(&d, &current)?;
    d.db.update_profile(&name, &current)?;
    Ok(empty())
}

async fn rename(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: ProfilePost = parse_json(&body)?;
    d.db.profile_or_404(&name)?;
    if name == "default" {
        return Err(DaemonError::Forbidden(
            "The \"default\" profile cannot be renamed".into(),
        ));
    }
    if req.name.is_empty() || req.name.contains('/') {
        return Err(DaemonError::BadRequest("Invalid profile name".into()));
    }
    d.db.rename_profile(&name, &req.name)?;
    Ok(created(&format!("/1.0/profiles/{}", req.name)))
}

async fn delete(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let p = d.db.full_profile(&name)?;
    if name == "default" {
        return Err(DaemonError::Forbidden(
            "The \"default\" profile cannot be deleted".into(),
        ));
    }
    if !p.used_by.is_empty() {
        return Err(DaemonError::BadRequest(
            "Profile is currently in use".into(),
        ));
    }
    d.db.delete_profile(&name)?;
    Ok(empty())
}
