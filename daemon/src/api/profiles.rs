//! `/1.0/profiles`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::profile::{ProfilePatch, ProfilePost, ProfilePut, ProfilesPost};

use super::{check_if_match, created, empty, parse_json, sync, sync_etag};
use crate::daemon::AppState;
use crate::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/profiles", get(list).post(create))
        .route(
            "/1.0/profiles/:name",
            get(one).put(put).patch(patch).post(rename).delete(delete),
        )
}

async fn list(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    if super::recursion(&q) > 0 {
        return Ok(sync(e.profiles().await?));
    }
    let urls: Vec<String> = e
        .profile_names()
        .await?
        .iter()
        .map(|n| format!("/1.0/profiles/{n}"))
        .collect();
    Ok(sync(urls))
}

async fn create(State(e): State<AppState>, body: Bytes) -> Result<Response> {
    let req: ProfilesPost = parse_json(&body)?;
    let url = format!("/1.0/profiles/{}", req.name);
    e.create_profile(req).await?;
    Ok(created(&url))
}

async fn one(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let profile = e.profile(&name).await?;
    let tag = profile.put.clone();
    Ok(sync_etag(profile, &tag))
}

async fn put(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let req: ProfilePut = parse_json(&body)?;
    e.update_profile(&name, req, move |current| check_if_match(&headers, current))
        .await?;
    Ok(empty())
}

async fn patch(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let req: ProfilePatch = parse_json(&body)?;
    e.patch_profile(&name, req, move |current| check_if_match(&headers, current))
        .await?;
    Ok(empty())
}

async fn rename(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: ProfilePost = parse_json(&body)?;
    let url = format!("/1.0/profiles/{}", req.name);
    e.rename_profile(&name, req).await?;
    Ok(created(&url))
}

async fn delete(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    e.delete_profile(&name).await?;
    Ok(empty())
}
