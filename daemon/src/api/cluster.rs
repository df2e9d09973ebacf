//! `/1.0/cluster` and `/1.0/cluster/members`: the cluster and its members, in LXD's shapes.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::cluster::ClusterPut;

use super::{operation, parse_json, sync};
use crate::daemon::AppState;
use crate::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/cluster", get(info).put(put))
        .route("/1.0/cluster/members", get(members).post(add_member))
        .route(
            "/1.0/cluster/members/:name",
            get(member).delete(remove_member),
        )
        .route(
            "/1.0/cluster/members/:name/state",
            axum::routing::post(change_member_state),
        )
        .route("/internal/cluster", get(join_info))
}

/// `POST /1.0/cluster/members {"server_name"}`: a join token operation.
async fn add_member(State(e): State<AppState>, body: Bytes) -> Result<Response> {
    #[derive(serde::Deserialize)]
    struct Post {
        server_name: String,
    }
    let req: Post = parse_json(&body)?;
    let op = e.cluster_join_token(&req.server_name).await?;
    Ok(super::accepted(&op))
}

/// What a joiner reads once its certificate is trusted: where the cluster's state lives.
async fn join_info(
    State(e): State<AppState>,
    trust: Option<axum::Extension<crate::auth::Trust>>,
) -> Result<Response> {
    let admin = matches!(trust, Some(axum::Extension(crate::auth::Trust::Admin)));
    Ok(sync(e.cluster_join_info(admin)?))
}

async fn info(State(e): State<AppState>) -> Response {
    sync(e.cluster_info())
}

async fn put(State(e): State<AppState>, body: Bytes) -> Result<Response> {
    let req: ClusterPut = parse_json(&body)?;
    let (description, work) = e.update_cluster(req)?;
    let resources = std::collections::BTreeMap::from([("cluster".to_string(), Vec::new())]);
    Ok(operation(&e, description, resources, work))
}

async fn members(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let members = e.cluster_members().await?;
    if super::recursion(&q) > 0 {
        return Ok(sync(members));
    }
    Ok(sync(
        members
            .iter()
            .map(|m| format!("/1.0/cluster/members/{}", m.server_name))
            .collect::<Vec<_>>(),
    ))
}

/// `POST /1.0/cluster/members/<name>/state {"action": "evacuate"|"restore"}`.
async fn change_member_state(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    #[derive(serde::Deserialize)]
    struct Post {
        action: String,
    }
    let req: Post = parse_json(&body)?;
    let (description, work) = e.change_member_state(&name, &req.action).await?;
    let resources = std::collections::BTreeMap::from([(
        "cluster".to_string(),
        vec![format!("/1.0/cluster/members/{name}")],
    )]);
    Ok(operation(&e, description, resources, work))
}

/// `DELETE /1.0/cluster/members/<name>[?force=1]`.
async fn remove_member(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let force = q.get("force").is_some_and(|v| v == "1" || v == "true");
    e.remove_cluster_member(&name, force).await?;
    Ok(super::empty())
}

async fn member(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(sync(e.cluster_member(&name).await?))
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn a_standalone_server_says_so_and_refuses_what_it_cannot_do() {
        let api = TestApi::new().await;
        let (status, body) = api.call(Method::GET, "/1.0/cluster", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["metadata"],
            json!({"server_name": "", "enabled": false, "member_config": []})
        );
        for (method, uri, body) in [
            (Method::GET, "/1.0/cluster/members", None),
            (Method::GET, "/1.0/cluster/members/n1", None),
            (Method::GET, "/internal/cluster", None),
            (
                Method::POST,
                "/1.0/cluster/members",
                Some(json!({"server_name": "n2"})),
            ),
        ] {
            let (status, body) = api.call(method, uri, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert_eq!(body["error"], "This server is not clustered");
        }
        let refused = [
            (json!({"enabled": true}), "Server name must be set"),
            (
                json!({"server_name": "@g", "enabled": true}),
                "Invalid cluster member name",
            ),
            (
                json!({"server_name": "n1", "enabled": true}),
                "not available on the network",
            ),
            (
                json!({"server_name": "n1", "enabled": false}),
                "must be empty",
            ),
            (json!({"enabled": false}), "This server is not clustered"),
            (
                json!({"server_name": "n2", "enabled": true, "cluster_address": "10.0.0.1:8443"}),
                "Joining needs a join token",
            ),
            (
                json!({"server_name": "n2", "enabled": true, "cluster_token": "bm9wZQ=="}),
                "Invalid cluster join token",
            ),
            (json!({"enabled": "yes"}), "Invalid JSON"),
        ];
        for (put, message) in refused {
            let (status, body) = api
                .call(Method::PUT, "/1.0/cluster", Some(put.clone()))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{put}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(message), "{put}: {error}");
        }
        // With the address but no etcd named.
        let (status, _) = api
            .call(
                Method::PATCH,
                "/1.0",
                Some(json!({"config": {"core.https_address": "127.0.0.1:0"}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = api
            .call(
                Method::PUT,
                "/1.0/cluster",
                Some(json!({"server_name": "n1", "enabled": true})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cluster.etcd_endpoints"));
        let (status, body) = api
            .call(
                Method::PATCH,
                "/1.0",
                Some(json!({"config": {"cluster.etcd_endpoints": "etcd:2379"}})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
}
