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
        .route("/1.0/storage-pools/:name", get(one))
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
