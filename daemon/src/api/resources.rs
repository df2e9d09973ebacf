//! `GET /1.0/resources` (the host's CPUs and memory) and `GET /1.0/warnings`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::{recursion, sync};
use crate::daemon::AppState;
use crate::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/resources", get(resources))
        .route("/1.0/warnings", get(warnings))
        .route("/1.0/warnings/:uuid", get(warning))
}

async fn resources(State(e): State<AppState>) -> Result<Response> {
    Ok(sync(e.resources().await?))
}

async fn warnings(State(e): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let all = e.warnings();
    if recursion(&q) > 0 {
        sync(all)
    } else {
        sync(
            all.iter()
                .map(|w| format!("/1.0/warnings/{}", w.uuid))
                .collect::<Vec<_>>(),
        )
    }
}

async fn warning(State(e): State<AppState>, Path(uuid): Path<String>) -> Result<Response> {
    Ok(sync(e.warning(&uuid)?))
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn resources_describe_the_host() {
        let api = TestApi::new().await;
        let (status, body) = api.call(Method::GET, "/1.0/resources", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let m = &body["metadata"];
        assert!(m["cpu"]["total"].as_u64().unwrap() > 0, "{m}");
        assert!(m["memory"]["total"].as_u64().unwrap() > 0, "{m}");
        assert_eq!(m["pci"], json!({"devices": [], "total": 0}));
    }

    #[tokio::test]
    async fn warnings_list_is_empty_and_one_is_not_found() {
        let api = TestApi::new().await;
        for uri in ["/1.0/warnings", "/1.0/warnings?recursion=1"] {
            let (status, body) = api.call(Method::GET, uri, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["metadata"], json!([]));
        }
        let (status, body) = api
            .call(
                Method::GET,
                "/1.0/warnings/7fa4d81e-1bfd-4d53-9b0e-12c1b1f5d8a3",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "Warning not found");
    }

    #[tokio::test]
    async fn certificates_list_is_empty() {
        let api = TestApi::new().await;
        let (status, body) = api.call(Method::GET, "/1.0/certificates", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"], json!([]));
    }
}
