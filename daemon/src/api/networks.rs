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

use super::{created, empty, if_match, parse_json, sync, sync_etag};
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

async fn create(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response> {
    let req: NetworksPost = parse_json(&body)?;
    let url = format!("/1.0/networks/{}", req.name);
    if q.get("target").is_some_and(|t| !t.is_empty()) {
        e.define_network_on_member(&req).await?;
        return Ok(created(&url));
    }
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
    e.update_network(&name, req, if_match(&headers)).await?;
    Ok(empty())
}

async fn patch(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let req: NetworkPatch = parse_json(&body)?;
    e.patch_network(&name, req, if_match(&headers)).await?;
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

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::{json, Value};

    use crate::api::testing::TestApi;
    use crate::engine::net_state::fakes::NetFakes;

    async fn api() -> (TestApi, NetFakes) {
        let f = NetFakes::new();
        (TestApi::with_pool("dir", f.runners()), f)
    }

    async fn create(api: &TestApi, name: &str, addr: &str) -> (StatusCode, Value) {
        let body = json!({"name": name, "type": "bridge", "config": {"ipv4.address": addr}});
        api.call(Method::POST, "/1.0/networks", Some(body)).await
    }

    fn error(body: &Value) -> &str {
        body["error"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn list_get_create_update_delete() {
        let (api, f) = api().await;
        f.netlink.add_host_link("eth9", "");
        let (status, body) = api.call(Method::GET, "/1.0/networks", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["metadata"],
            json!(["/1.0/networks/eth9", "/1.0/networks/lo"])
        );

        let (status, body) = create(&api, "hbr0", "10.81.0.1/24").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (_, body) = api.call(Method::GET, "/1.0/networks", None).await;
        assert_eq!(
            body["metadata"],
            json!([
                "/1.0/networks/hbr0",
                "/1.0/networks/eth9",
                "/1.0/networks/lo"
            ])
        );
        let (_, body) = api
            .call(Method::GET, "/1.0/networks?recursion=1", None)
            .await;
        assert_eq!(body["metadata"][0]["managed"], true);
        assert_eq!(body["metadata"][1]["type"], "physical");
        assert_eq!(body["metadata"][1]["managed"], false);
        assert_eq!(body["metadata"][2]["type"], "loopback");

        let (status, body) = api.call(Method::GET, "/1.0/networks/hbr0", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"]["config"]["ipv4.address"], "10.81.0.1/24");
        assert_eq!(body["metadata"]["status"], "Created");
        let (status, body) = api.call(Method::GET, "/1.0/networks/eth9", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"]["managed"], false);

        let put = json!({"config": {"ipv4.address": "10.82.0.1/24"}, "description": "d"});
        let (status, _) = api.call(Method::PUT, "/1.0/networks/hbr0", Some(put)).await;
        assert_eq!(status, StatusCode::OK);
        let patch = json!({"config": {"ipv4.nat": "true"}});
        let (status, _) = api
            .call(Method::PATCH, "/1.0/networks/hbr0", Some(patch))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = api.call(Method::GET, "/1.0/networks/hbr0", None).await;
        assert_eq!(body["metadata"]["description"], "d");
        assert_eq!(body["metadata"]["config"]["ipv4.address"], "10.82.0.1/24");
        assert_eq!(body["metadata"]["config"]["ipv4.nat"], "true");

        let (status, body) = api
            .call(Method::GET, "/1.0/networks/hbr0/leases", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"], json!([]));
        let (status, body) = api
            .call(Method::GET, "/1.0/networks/hbr0/state", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"]["state"], "up");
        assert_eq!(body["metadata"]["addresses"][0]["address"], "10.82.0.1");

        let (status, _) = api.call(Method::DELETE, "/1.0/networks/hbr0", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(f.netlink.host_links(), ["eth9", "lo"]);
        assert!(f.nft.table_names().is_empty());
        assert!(f.processes.live().is_empty());
    }

    #[tokio::test]
    async fn rename_moves_the_network() {
        let (api, f) = api().await;
        create(&api, "hbr0", "10.81.0.1/24").await;
        create(&api, "hbr1", "10.83.0.1/24").await;
        let to = |n: &str| Some(json!({ "name": n }));
        let (status, body) = api
            .call(Method::POST, "/1.0/networks/hbr0", to("hbr1"))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error(&body), "Network \"hbr1\" already exists");
        let (status, body) = api
            .call(Method::POST, "/1.0/networks/hbr0", to("0bad"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error(&body).starts_with("Invalid network name"), "{body}");
        let (status, body) = api
            .call(Method::POST, "/1.0/networks/hbr0", to("hbr2"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _) = api.call(Method::GET, "/1.0/networks/hbr0", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(f.netlink.host_links().contains(&"hbr2".to_string()));
        assert!(!f.netlink.host_links().contains(&"hbr0".to_string()));
        let (status, _) = api
            .call(Method::POST, "/1.0/networks/nothere", to("hbr3"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn refusals_carry_lxds_status_and_message() {
        let (api, f) = api().await;
        create(&api, "hbr0", "10.81.0.1/24").await;
        let (status, body) = create(&api, "hbr0", "10.84.0.1/24").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error(&body), "The network already exists");
        let (status, body) = create(&api, "hbr1", "10.81.0.9/24").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            error(&body).contains("overlaps with network \"hbr0\""),
            "{body}"
        );
        let (status, _) = create(&api, "hbr1", "10.84.0.0/24").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = api
            .call(
                Method::POST,
                "/1.0/networks",
                Some(json!({"name": "hbr1", "type": "macvlan"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error(&body).contains("not supported"), "{body}");
        let (status, body) = api
            .call(
                Method::POST,
                "/1.0/networks",
                Some(json!({"name": "hbr1", "config": {"bogus.key": "1"}})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error(&body),
            "Invalid network configuration key: \"bogus.key\""
        );
        f.netlink.add_host_link("eth9", "");
        let (status, body) = create(&api, "eth9", "10.85.0.1/24").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error(&body).contains("exists on the host"), "{body}");
        let (status, _) = api
            .call(Method::POST, "/1.0/networks", Some(json!("not an object")))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        for (method, uri) in [
            (Method::GET, "/1.0/networks/nothere"),
            (Method::DELETE, "/1.0/networks/nothere"),
            (Method::GET, "/1.0/networks/nothere/leases"),
            (Method::GET, "/1.0/networks/nothere/state"),
        ] {
            let (status, body) = api.call(method, uri, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(error(&body), "Network not found");
        }
        let (status, _) = api
            .call(Method::PUT, "/1.0/networks/nothere", Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, body) = api
            .call_with(
                Method::PUT,
                "/1.0/networks/hbr0",
                Some(json!({"config": {}})),
                &[("If-Match", "\"stale\"")],
            )
            .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        assert!(error(&body).starts_with("ETag doesn't match"), "{body}");
        let (status, _) = api
            .call_with(
                Method::PATCH,
                "/1.0/networks/hbr0",
                Some(json!({"description": "x"})),
                &[("If-Match", "\"stale\"")],
            )
            .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);

        let profile =
            json!({"name": "p1", "devices": {"eth0": {"type": "nic", "network": "hbr0"}}});
        let (status, _) = api.call(Method::POST, "/1.0/profiles", Some(profile)).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, body) = api.call(Method::GET, "/1.0/networks/hbr0", None).await;
        assert_eq!(body["metadata"]["used_by"], json!(["/1.0/profiles/p1"]));
        let (status, body) = api.call(Method::DELETE, "/1.0/networks/hbr0", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error(&body), "The network is currently in use");
    }
}
