//! `/1.0/instances/<name>/snapshots`: list, create, get, rename, delete. Restore is a
//! `PUT /1.0/instances/<name>` with `restore`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::instance::{InstanceSnapshotPost, InstanceSnapshotPut, InstanceSnapshotsPost};

use super::{if_match, operation, parse_json, recursion, sync, versioned};
use crate::daemon::AppState;
use crate::error::Result;
use crate::operations::instance_resources;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/:name/snapshots", get(list).post(create))
        .route(
            "/:name/snapshots/:snap",
            get(one)
                .post(rename)
                .put(update)
                .patch(update)
                .delete(delete),
        )
}

async fn list(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    Ok(sync(e.list_snapshots(&name, recursion(&q))?))
}

async fn create(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceSnapshotsPost = if body.is_empty() {
        InstanceSnapshotsPost::default()
    } else {
        parse_json(&body)?
    };
    let work = e.create_snapshot(&name, req)?;
    Ok(operation(
        &e,
        "Snapshotting instance",
        instance_resources(&name),
        work,
    ))
}

async fn one(
    State(e): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    Ok(versioned(e.snapshot(&name, &snap)?))
}

async fn rename(
    State(e): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceSnapshotPost = parse_json(&body)?;
    if req.migration {
        if req.name.is_empty() {
            return Err(crate::error::DaemonError::BadRequest(
                "A snapshot migration needs a name".into(),
            ));
        }
        let migrate = crate::engine::migration::MigrateRequest {
            live: req.live,
            instance_only: true,
            target: req.target,
        };
        return Ok(super::accepted(
            &e.migrate_instance(&name, Some(&snap), migrate).await?,
        ));
    }
    let work = e.rename_snapshot(&name, &snap, req)?;
    Ok(operation(
        &e,
        "Renaming snapshot",
        instance_resources(&name),
        work,
    ))
}

/// `PUT` and `PATCH` alike: the expiry is the one field.
async fn update(
    State(e): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let put: InstanceSnapshotPut = parse_json(&body)?;
    let work = e.update_snapshot(&name, &snap, put, if_match(&headers))?;
    Ok(operation(
        &e,
        "Updating snapshot",
        instance_resources(&name),
        work,
    ))
}

async fn delete(
    State(e): State<AppState>,
    Path((name, snap)): Path<(String, String)>,
) -> Result<Response> {
    let work = e.delete_snapshot(&name, &snap)?;
    Ok(operation(
        &e,
        "Deleting snapshot",
        instance_resources(&name),
        work,
    ))
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn snapshots_refuse_duplicates_bad_names_and_missing_ones() {
        let api = TestApi::new().await;
        let (status, resp) = api
            .call(Method::GET, "/1.0/instances/none/snapshots", None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{resp}");
        let fp = api.tiny_image().await;
        api.tiny_instance("c1", &fp).await;
        let base = "/1.0/instances/c1/snapshots";
        let (status, op) = api
            .call(Method::POST, base, Some(json!({"name": "s1"})))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(api.wait(&op).await["status"], "Success");
        let (status, resp) = api
            .call(Method::POST, base, Some(json!({"name": "s1"})))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(resp["error"], "Snapshot \"s1\" already exists");
        for bad in [
            json!({"name": "a/b"}),
            json!({"name": "s2", "stateful": true}),
            json!({"name": "s2", "expires_at": "tomorrow"}),
        ] {
            let (status, resp) = api.call(Method::POST, base, Some(bad.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {resp}");
        }
        let (status, list) = api.call(Method::GET, base, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["metadata"], json!(["/1.0/instances/c1/snapshots/s1"]));
        let (status, one) = api.call(Method::GET, &format!("{base}/s1"), None).await;
        assert_eq!(
            (status, one["metadata"]["name"].clone()),
            (StatusCode::OK, json!("s1"))
        );
        let (status, _) = api.call(Method::GET, &format!("{base}/s9"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = api
            .call(
                Method::POST,
                &format!("{base}/s1"),
                Some(json!({"name": ""})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, op) = api.call(Method::DELETE, &format!("{base}/s1"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(api.wait(&op).await["status"], "Success");
        let (_, list) = api.call(Method::GET, base, None).await;
        assert_eq!(list["metadata"], json!([]));
    }

    #[tokio::test]
    async fn a_snapshots_expiry_is_changed_with_its_etag_checked() {
        let api = TestApi::new().await;
        let fp = api.tiny_image().await;
        api.tiny_instance("c1", &fp).await;
        let (_, op) = api
            .call(
                Method::POST,
                "/1.0/instances/c1/snapshots",
                Some(json!({"name": "s0"})),
            )
            .await;
        assert_eq!(api.wait(&op).await["status"], "Success");
        let url = "/1.0/instances/c1/snapshots/s0";
        let (_, etag, _) = api.call_raw(Method::GET, url, Vec::new(), &[]).await;
        let etag = etag
            .get("etag")
            .expect("an ETag")
            .to_str()
            .unwrap()
            .to_string();
        let later = json!({"expires_at": "2030-01-02T03:04:05Z"});
        let (status, op) = api
            .call_with(Method::PUT, url, Some(later), &[("If-Match", &etag)])
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        assert_eq!(api.wait(&op).await["status"], "Success");
        let (_, one) = api.call(Method::GET, url, None).await;
        assert_eq!(one["metadata"]["expires_at"], "2030-01-02T03:04:05Z");
        // The old ETag is stale now; a bad time and a missing snapshot are refused.
        let (status, _) = api
            .call_with(Method::PATCH, url, Some(json!({})), &[("If-Match", &etag)])
            .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        let bad = json!({"expires_at": "soon"});
        let (status, _) = api.call(Method::PUT, url, Some(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = api
            .call(
                Method::PUT,
                "/1.0/instances/c1/snapshots/s9",
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Empty means never, written as LXD's zero time.
        let (_, op) = api.call(Method::PATCH, url, Some(json!({}))).await;
        assert_eq!(api.wait(&op).await["status"], "Success");
        let (_, one) = api.call(Method::GET, url, None).await;
        assert_eq!(one["metadata"]["expires_at"], "0001-01-01T00:00:00Z");
    }
}
