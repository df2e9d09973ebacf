//! `GET /1.0` (server info), `PUT/PATCH /1.0` (server config) and the projects (the
//! default one alone).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::server::{ServerPut, ServerUntrusted};
use hutch_api::server_config::server_config_value;

use super::{empty, if_match, parse_json, recursion, sync, sync_etag};
use crate::auth::Trust;
use crate::daemon::AppState;
use crate::error::Result;
use crate::https::HttpsListener;

/// The HTTPS listener, where the daemon serves over the network (in-process routers
/// have none).
type Https = Option<axum::Extension<std::sync::Arc<HttpsListener>>>;

/// The web UI's loopback listener, likewise.
type Ui = Option<axum::Extension<std::sync::Arc<crate::ui::UiListener>>>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0", get(info).put(replace).patch(merge))
        .route("/1.0/projects", get(projects))
        .route("/1.0/projects/:name", get(project))
}

/// The ETag is over the config as shown, as LXD's is. An untrusted caller learns what the
/// API is and that it is not trusted, nothing of the server.
async fn info(
    State(e): State<AppState>,
    trust: Option<axum::Extension<Trust>>,
) -> Result<Response> {
    if !trust.is_some_and(|axum::Extension(t)| t.is_trusted()) {
        return Ok(sync(ServerUntrusted::new()));
    }
    let server = e.server_info().await?;
    let tag = server.config.clone();
    Ok(sync_etag(server, &tag))
}

async fn replace(
    State(e): State<AppState>,
    https: Https,
    ui: Ui,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    update(e, (https, ui), headers, body, false).await
}

async fn merge(
    State(e): State<AppState>,
    https: Https,
    ui: Ui,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    update(e, (https, ui), headers, body, true).await
}

/// The HTTPS and web UI listeners follow `core.https_address` and `core.ui_address` before
/// the change is stored: an address one cannot bind refuses the whole change.
async fn update(
    e: AppState,
    (https, ui): (Https, Ui),
    headers: HeaderMap,
    body: Bytes,
    merge: bool,
) -> Result<Response> {
    let put: ServerPut = parse_json(&body)?;
    e.update_server_config_then(put, merge, if_match(&headers), move |config| {
        if let Some(axum::Extension(listener)) = &https {
            listener.listen(server_config_value(config, "core.https_address"))?;
        }
        if let Some(axum::Extension(listener)) = &ui {
            listener.listen(server_config_value(config, "core.ui_address"))?;
        }
        Ok(())
    })
    .await?;
    Ok(empty())
}

async fn projects(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let all = e.projects()?;
    Ok(if recursion(&q) > 0 {
        sync(all)
    } else {
        sync(
            all.iter()
                .map(|p| format!("/1.0/projects/{}", p.name))
                .collect::<Vec<_>>(),
        )
    })
}

async fn project(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let p = e.project(&name)?;
    let tag = (p.description.clone(), p.config.clone());
    Ok(sync_etag(p, &tag))
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::{json, Value};

    use crate::api::testing::TestApi;

    async fn config(api: &TestApi) -> Value {
        let (status, body) = api.call(Method::GET, "/1.0", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["metadata"]["config"].clone()
    }

    #[tokio::test]
    async fn server_info_lists_what_is_implemented() {
        let api = TestApi::new().await;
        let (status, body) = api.call(Method::GET, "/1.0", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let m = &body["metadata"];
        assert_eq!(m["config"], json!({}));
        assert_eq!(m["environment"]["storage"], "dir");
        let drivers: Vec<&str> = m["environment"]["storage_supported_drivers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["Name"].as_str().unwrap())
            .collect();
        assert_eq!(drivers, ["dir", "btrfs", "zfs"]);
        let extensions = m["api_extensions"].as_array().unwrap();
        for ext in ["projects", "warnings", "resources"] {
            assert!(extensions.contains(&json!(ext)), "{ext}");
        }
        assert!(!m["environment"]["kernel_version"]
            .as_str()
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn put_replaces_and_patch_merges_the_config() {
        let api = TestApi::new().await;
        let put = json!({"config": {"core.https_address": "127.0.0.1:8443", "user.x": "y"}});
        let (status, body) = api.call(Method::PUT, "/1.0", Some(put)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            config(&api).await,
            json!({"core.https_address": "127.0.0.1:8443", "user.x": "y"})
        );
        let patch = json!({"config": {"images.auto_update_interval": "12", "user.x": null}});
        let (status, body) = api.call(Method::PATCH, "/1.0", Some(patch)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            config(&api).await,
            json!({"core.https_address": "127.0.0.1:8443", "images.auto_update_interval": "12"})
        );
        // A key given its default is not stored; keys not named return to theirs.
        let put = json!({"config": {"images.compression_algorithm": "gzip", "user.z": "1"}});
        let (status, _) = api.call(Method::PUT, "/1.0", Some(put)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(config(&api).await, json!({"user.z": "1"}));
        let (status, _) = api
            .call(Method::PATCH, "/1.0", Some(json!({"config": null})))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(config(&api).await, json!({"user.z": "1"}));
    }

    #[tokio::test]
    async fn unknown_keys_and_bad_values_are_refused_and_change_nothing() {
        let api = TestApi::new().await;
        let (status, _) = api
            .call(
                Method::PATCH,
                "/1.0",
                Some(json!({"config": {"user.keep": "1"}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        for (method, config, error) in [
            (
                Method::PATCH,
                json!({"bogus.key": "1"}),
                "cannot set 'bogus.key' to '1': unknown key",
            ),
            (
                Method::PUT,
                json!({"images.auto_update_interval": "soon"}),
                "cannot set 'images.auto_update_interval' to 'soon': invalid integer",
            ),
            (
                Method::PATCH,
                json!({"core.https_address": "no such address"}),
                "cannot set 'core.https_address' to 'no such address': Invalid address \"no such address\"",
            ),
            (
                Method::PATCH,
                json!({"images.auto_update_cached": true}),
                "cannot set 'images.auto_update_cached': invalid type bool",
            ),
        ] {
            let (status, body) = api
                .call(method, "/1.0", Some(json!({ "config": config })))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(body["error"], error);
            assert_eq!(body["error_code"], 400);
        }
        let (status, body) = api
            .call(Method::PUT, "/1.0", Some(json!({"config": "x"})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].as_str().unwrap().starts_with("Invalid JSON"));
        assert_eq!(config(&api).await, json!({"user.keep": "1"}));
    }

    #[tokio::test]
    async fn if_match_must_name_the_current_config() {
        let api = TestApi::new().await;
        let tag = crate::api::etag(&config(&api).await);
        let body = Some(json!({"config": {"user.a": "1"}}));
        let (status, resp) = api
            .call_with(
                Method::PATCH,
                "/1.0",
                body.clone(),
                &[("If-Match", "\"stale\"")],
            )
            .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{resp}");
        assert_eq!(resp["error"], format!("ETag doesn't match: {tag} vs stale"));
        let (status, _) = api
            .call_with(Method::PUT, "/1.0", body.clone(), &[("If-Match", "stale")])
            .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(config(&api).await, json!({}));
        let quoted = format!("\"{tag}\"");
        let (status, resp) = api
            .call_with(Method::PATCH, "/1.0", body, &[("If-Match", &quoted)])
            .await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        assert_eq!(config(&api).await, json!({"user.a": "1"}));
    }

    #[tokio::test]
    async fn the_trust_password_is_write_only() {
        let api = TestApi::new().await;
        let (status, _) = api
            .call(
                Method::PATCH,
                "/1.0",
                Some(json!({"config": {"core.trust_password": "s3cret"}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let shown = config(&api).await;
        assert_eq!(shown, json!({"core.trust_password": true}));
        // What `lxc config set` does: the config as shown, one key added, PUT back.
        let mut back = shown.clone();
        back["core.https_address"] = json!(":8443");
        let (status, _) = api
            .call(Method::PUT, "/1.0", Some(json!({ "config": back })))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            config(&api).await,
            json!({"core.trust_password": true, "core.https_address": ":8443"})
        );
        let (status, _) = api
            .call(
                Method::PATCH,
                "/1.0",
                Some(json!({"config": {"core.trust_password": ""}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(config(&api).await, json!({"core.https_address": ":8443"}));
    }

    #[tokio::test]
    async fn the_default_project_is_the_only_one() {
        let api = TestApi::new().await;
        let (status, body) = api.call(Method::GET, "/1.0/projects", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"], json!(["/1.0/projects/default"]));
        let (status, body) = api
            .call(Method::GET, "/1.0/projects?recursion=1", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"][0]["name"], "default");
        let (status, body) = api.call(Method::GET, "/1.0/projects/default", None).await;
        assert_eq!(status, StatusCode::OK);
        let p = &body["metadata"];
        assert_eq!(p["config"]["features.profiles"], "true");
        assert_eq!(p["used_by"], json!(["/1.0/profiles/default"]));
        let (status, body) = api.call(Method::GET, "/1.0/projects/other", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "Project not found");
        let (status, _) = api
            .call(Method::POST, "/1.0/projects", Some(json!({"name": "p2"})))
            .await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    }
}
