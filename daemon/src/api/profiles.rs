//! `/1.0/profiles`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::profile::{ProfilePatch, ProfilePost, ProfilePut, ProfilesPost};

use super::{created, empty, if_match, parse_json, sync, sync_etag};
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
    e.update_profile(&name, req, if_match(&headers)).await?;
    Ok(empty())
}

async fn patch(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let req: ProfilePatch = parse_json(&body)?;
    e.patch_profile(&name, req, if_match(&headers)).await?;
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

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::{json, Value};

    use crate::api::testing::TestApi;

    fn error(body: &Value) -> &str {
        body["error"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn list_get_create_update_rename_delete() {
        let api = TestApi::new().await;
        let (status, body) = api.call(Method::GET, "/1.0/profiles", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"], json!(["/1.0/profiles/default"]));

        let p1 = json!({"name": "p1", "config": {"limits.memory": "1GiB"}, "description": "one"});
        let (status, body) = api.call(Method::POST, "/1.0/profiles", Some(p1)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (_, body) = api
            .call(Method::GET, "/1.0/profiles?recursion=1", None)
            .await;
        assert_eq!(body["metadata"][1]["name"], "p1");
        assert_eq!(body["metadata"][1]["used_by"], json!([]));
        let (status, body) = api.call(Method::GET, "/1.0/profiles/p1", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"]["config"]["limits.memory"], "1GiB");

        let put = json!({"config": {"limits.cpu": "1"}, "devices": {}});
        let (status, _) = api.call(Method::PUT, "/1.0/profiles/p1", Some(put)).await;
        assert_eq!(status, StatusCode::OK);
        let patch = json!({
            "config": {"limits.memory": "2GiB"},
            "devices": {"data": {"type": "disk", "path": "/mnt", "source": "/srv"}}
        });
        let (status, _) = api
            .call(Method::PATCH, "/1.0/profiles/p1", Some(patch))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = api.call(Method::GET, "/1.0/profiles/p1", None).await;
        assert_eq!(
            body["metadata"]["config"],
            json!({"limits.cpu": "1", "limits.memory": "2GiB"})
        );
        assert_eq!(body["metadata"]["devices"]["data"]["path"], "/mnt");
        assert_eq!(body["metadata"]["description"], "");

        let (status, _) = api
            .call(
                Method::POST,
                "/1.0/profiles/p1",
                Some(json!({"name": "p2"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = api.call(Method::GET, "/1.0/profiles/p1", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = api.call(Method::DELETE, "/1.0/profiles/p2", None).await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = api.call(Method::GET, "/1.0/profiles", None).await;
        assert_eq!(body["metadata"], json!(["/1.0/profiles/default"]));
    }

    #[tokio::test]
    async fn a_rename_carries_the_instances_that_use_the_profile() {
        let api = TestApi::new().await;
        let p1 = json!({"name": "p1", "config": {"limits.memory": "1GiB"}});
        let (status, _) = api.call(Method::POST, "/1.0/profiles", Some(p1)).await;
        assert_eq!(status, StatusCode::CREATED);
        let fingerprint = api.tiny_image().await;
        let (status, body) = api
            .call(
                Method::POST,
                "/1.0/instances",
                Some(json!({
                    "name": "c1",
                    "profiles": ["default", "p1"],
                    "source": {"type": "image", "fingerprint": fingerprint},
                })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(api.wait(&body).await["status"], "Success");
        let snap = json!({"name": "s0"});
        let (_, body) = api
            .call(Method::POST, "/1.0/instances/c1/snapshots", Some(snap))
            .await;
        assert_eq!(api.wait(&body).await["status"], "Success");

        let rename = json!({"name": "p2"});
        let (status, _) = api
            .call(Method::POST, "/1.0/profiles/p1", Some(rename))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, body) = api.call(Method::GET, "/1.0/instances/c1", None).await;
        assert_eq!(body["metadata"]["profiles"], json!(["default", "p2"]));
        assert_eq!(body["metadata"]["expanded_config"]["limits.memory"], "1GiB");
        let (_, body) = api
            .call(Method::GET, "/1.0/instances/c1/snapshots/s0", None)
            .await;
        assert_eq!(body["metadata"]["profiles"], json!(["default", "p2"]));
        let (_, body) = api.call(Method::GET, "/1.0/profiles/p2", None).await;
        assert_eq!(body["metadata"]["used_by"], json!(["/1.0/instances/c1"]));
        // Taken names are refused and change nothing.
        let (status, _) = api
            .call(
                Method::POST,
                "/1.0/profiles/p2",
                Some(json!({"name": "default"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        let (_, body) = api.call(Method::GET, "/1.0/instances/c1", None).await;
        assert_eq!(body["metadata"]["profiles"], json!(["default", "p2"]));
    }

    #[tokio::test]
    async fn empty_values_mean_unset_as_in_lxd() {
        let api = TestApi::new().await;
        let p = json!({"name": "p", "config": {"user.a": "1", "user.b": ""},
                       "devices": {"d": {"type": "disk", "path": "/mnt", "source": "/srv", "readonly": ""}}});
        let (status, _) = api.call(Method::POST, "/1.0/profiles", Some(p)).await;
        assert_eq!(status, StatusCode::CREATED);
        let (_, body) = api.call(Method::GET, "/1.0/profiles/p", None).await;
        assert_eq!(body["metadata"]["config"], json!({"user.a": "1"}));
        assert_eq!(body["metadata"]["devices"]["d"].get("readonly"), None);
        let fingerprint = api.tiny_image().await;
        api.tiny_instance("c1", &fingerprint).await;
        let patch = json!({"config": {"user.k": "v"}});
        api.call(Method::PATCH, "/1.0/instances/c1", Some(patch))
            .await;
        let patch = json!({"config": {"user.k": ""}});
        let (status, _) = api
            .call(Method::PATCH, "/1.0/instances/c1", Some(patch))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = api.call(Method::GET, "/1.0/instances/c1", None).await;
        assert_eq!(body["metadata"]["config"].get("user.k"), None, "{body}");
    }

    #[tokio::test]
    async fn refusals_carry_lxds_status_and_message() {
        let api = TestApi::new().await;
        let create = |body: Value| api.call(Method::POST, "/1.0/profiles", Some(body));
        let (status, body) = create(json!({"name": "default"})).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error(&body), "The profile already exists");
        for name in ["", "a/b"] {
            let (status, body) = create(json!({ "name": name })).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(error(&body), "Invalid profile name");
        }
        let (status, body) = create(json!({"name": "p", "devices": {"u": {"type": "usb"}}})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error(&body).contains("not supported"), "{body}");
        let (status, body) =
            create(json!({"name": "p", "devices": {"n": {"type": "nic", "network": "none0"}}}))
                .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error(&body),
            "Invalid device \"n\": network \"none0\" not found"
        );
        let root = json!({"name": "p", "devices": {"root": {"type": "disk", "path": "/", "pool": "nowhere"}}});
        let (status, body) = create(root).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            error(&body),
            "Invalid device \"root\": storage pool \"nowhere\" not found"
        );
        let (status, _) = create(json!({"name": "p", "config": {"bogus.key": "1"}})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = api
            .call(Method::POST, "/1.0/profiles", Some(json!([1, 2])))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        for (method, body) in [
            (Method::GET, None),
            (Method::PUT, Some(json!({}))),
            (Method::PATCH, Some(json!({}))),
            (Method::POST, Some(json!({"name": "x"}))),
            (Method::DELETE, None),
        ] {
            let (status, body) = api.call(method, "/1.0/profiles/nothere", body).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(error(&body), "Profile not found");
        }

        let (status, body) = api
            .call_with(
                Method::PUT,
                "/1.0/profiles/default",
                Some(json!({})),
                &[("If-Match", "\"stale\"")],
            )
            .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        assert!(error(&body).starts_with("ETag doesn't match"), "{body}");
        let (status, _) = api
            .call(
                Method::PATCH,
                "/1.0/profiles/default",
                Some(json!({"devices": {"x": {"type": "floppy"}}})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, body) = api
            .call(
                Method::POST,
                "/1.0/profiles/default",
                Some(json!({"name": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error(&body), "The \"default\" profile cannot be renamed");
        let (status, body) = api
            .call(Method::DELETE, "/1.0/profiles/default", None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error(&body), "The \"default\" profile cannot be deleted");
        create(json!({"name": "p1"})).await;
        create(json!({"name": "p2"})).await;
        let (status, body) = api
            .call(
                Method::POST,
                "/1.0/profiles/p1",
                Some(json!({"name": "p2"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error(&body), "The profile already exists");
    }
}
