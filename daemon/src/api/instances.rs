//! `/1.0/instances` (and the legacy `/1.0/containers`): list, create, get, update,
//! rename, delete and state. Each handler extracts, calls one engine method and wraps.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::instance::{InstancePost, InstancePut, InstanceStatePut, InstancesPost};
use serde_json::Value;

use super::{empty, if_match, operation, parse_json, recursion, sync, versioned};
use crate::daemon::AppState;
use crate::engine::migration::MigrateRequest;
use crate::error::Result;
use crate::operations::instance_resources;

pub fn routes() -> Router<AppState> {
    Router::new()
        // Backups (`lxc import`) are gigabytes: no limit here, JSON bodies keep theirs below.
        .route(
            "/",
            get(list)
                .post(create)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/:name",
            get(one).put(put).patch(patch).post(rename).delete(delete),
        )
        .route("/:name/state", get(state).put(change_state))
}

async fn list(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    member: Option<axum::Extension<super::forward::FromMember>>,
) -> Result<Response> {
    let filter = q.get("filter").map(String::as_str).unwrap_or("");
    // A member asking lists the whole cluster itself; anybody else gets it from here.
    if member.is_none() && e.membership().is_some() {
        return Ok(sync(e.list_cluster_instances(recursion(&q), filter).await?));
    }
    Ok(sync(e.list_instances(recursion(&q), filter).await?))
}

/// The JSON bodies' limit (axum's default), kept for them when backups have none.
const JSON_LIMIT: usize = 2 << 20;

/// `POST /1.0/instances`: a JSON create request, or (`Content-Type` exactly
/// `application/octet-stream`, as LXD) a backup tarball to import.
async fn create(State(e): State<AppState>, request: Request) -> Result<Response> {
    let headers = request.headers().clone();
    let is_backup = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/octet-stream");
    if is_backup {
        return import(e, &headers, request.into_body()).await;
    }
    let Ok(body) = axum::body::to_bytes(request.into_body(), JSON_LIMIT).await else {
        // A plain 413, put in LXD's envelope by the router like axum's own limit.
        return Ok(axum::response::IntoResponse::into_response((
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
        )));
    };
    let req: InstancesPost = parse_json(&body)?;
    if req.source.kind == "migration" {
        return Ok(super::accepted(&e.create_from_migration(req).await?));
    }
    let (name, work) = e.create_instance(req)?;
    Ok(super::cancellable_operation(
        &e,
        "Creating instance",
        instance_resources(&name),
        work,
    ))
}

/// `lxc import`: the body streams into the engine; the answer comes once it is read.
async fn import(e: AppState, headers: &HeaderMap, body: axum::body::Body) -> Result<Response> {
    use futures_util::TryStreamExt;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let upload = crate::engine::BackupUpload {
        name: header("X-LXD-name"),
        pool: header("X-LXD-pool"),
        length: header("Content-Length").and_then(|v| v.parse().ok()),
    };
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let op = e.import_backup(upload, Box::pin(stream)).await?;
    Ok(super::accepted(&op))
}

async fn one(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    Ok(versioned(e.instance(&name, recursion(&q)).await?))
}

async fn put(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let put: InstancePut = parse_json(&body)?;
    let description = if put.restore.is_empty() {
        "Updating instance"
    } else {
        "Restoring snapshot"
    };
    let work = e.replace_instance(&name, put, if_match(&headers))?;
    Ok(operation(&e, description, instance_resources(&name), work))
}

async fn patch(
    State(e): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let patch: Value = parse_json(&body)?;
    e.patch_instance(&name, patch, if_match(&headers)).await?;
    Ok(empty())
}

async fn rename(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response> {
    let req: InstancePost = parse_json(&body)?;
    // `lxc move c1 --target n2`: to another member of this cluster.
    if let Some(member) = q.get("target").filter(|t| !t.is_empty()) {
        if req.migration && req.target.is_none() {
            let (description, work) = e.move_to_member(&name, member, &req.name).await?;
            return Ok(operation(&e, description, instance_resources(&name), work));
        }
    }
    if req.migration && req.pool.is_empty() {
        let migrate = MigrateRequest {
            live: req.live,
            instance_only: req.instance_only || req.container_only,
            target: req.target,
        };
        return Ok(super::accepted(
            &e.migrate_instance(&name, None, migrate).await?,
        ));
    }
    let (description, work) = e.rename_instance(&name, req)?;
    Ok(operation(&e, description, instance_resources(&name), work))
}

async fn delete(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let work = e.delete_instance(&name)?;
    Ok(operation(
        &e,
        "Deleting instance",
        instance_resources(&name),
        work,
    ))
}

async fn state(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(sync(e.instance_state(&name).await?))
}

async fn change_state(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceStatePut = parse_json(&body)?;
    let (action, work) = e.change_state(&name, req)?;
    Ok(operation(
        &e,
        action.description(),
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
    async fn missing_instances_are_404_on_every_route() {
        let api = TestApi::new().await;
        let (status, body) = api.call(Method::GET, "/1.0/instances", None).await;
        assert_eq!(
            (status, body["metadata"].clone()),
            (StatusCode::OK, json!([]))
        );
        for (method, uri, body) in [
            (Method::GET, "/1.0/instances/none", None),
            (Method::GET, "/1.0/containers/none", None),
            (Method::GET, "/1.0/instances/none/state", None),
            (Method::PUT, "/1.0/instances/none", Some(json!({}))),
            (Method::PATCH, "/1.0/instances/none", Some(json!({}))),
            (
                Method::POST,
                "/1.0/instances/none",
                Some(json!({"name": "n2"})),
            ),
            (Method::DELETE, "/1.0/instances/none", None),
            (
                Method::PUT,
                "/1.0/instances/none/state",
                Some(json!({"action": "start"})),
            ),
        ] {
            let (status, resp) = api.call(method.clone(), uri, body).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {resp}");
            assert_eq!(resp["error"], "Instance not found");
        }
    }

    #[tokio::test]
    async fn bad_create_requests_are_400_and_make_nothing() {
        let api = TestApi::new().await;
        let (status, _, body) = api
            .call_raw(Method::POST, "/1.0/instances", b"{not json".to_vec(), &[])
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().starts_with("Invalid JSON"));
        for req in [
            json!({"name": "-bad", "source": {"type": "image", "alias": "x"}}),
            json!({"name": "c1", "source": {"type": "none"}}),
            json!({"name": "c1", "source": {"type": "teleport"}}),
            json!({"name": "c1", "type": "virtual-machine", "source": {"type": "image", "alias": "x"}}),
            json!({"name": "c1", "config": {"no.such.key": "1"}, "source": {"type": "image", "alias": "x"}}),
        ] {
            let (status, resp) = api
                .call(Method::POST, "/1.0/instances", Some(req.clone()))
                .await;
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::NOT_FOUND,
                "{req}: {status} {resp}"
            );
        }
        let (status, resp) = api
            .call(
                Method::POST,
                "/1.0/instances",
                Some(json!({"name": "c1", "source": {"type": "image", "alias": "nowhere"}})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{resp}");
        let (_, list) = api.call(Method::GET, "/1.0/instances", None).await;
        assert_eq!(list["metadata"], json!([]));
        assert!(!api
            .dir
            .path()
            .join("storage-pools/default/containers/c1")
            .exists());
    }

    #[tokio::test]
    async fn a_backup_upload_is_told_by_its_content_type_and_needs_its_index() {
        let api = TestApi::new().await;
        let octet = [("Content-Type", "application/octet-stream")];
        let (status, _, body) = api
            .call_raw(
                Method::POST,
                "/1.0/instances",
                b"not a tarball".to_vec(),
                &octet,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "Backup is missing index.yaml");
        // Another content type is JSON, whatever the body.
        let (status, _, body) = api
            .call_raw(
                Method::POST,
                "/1.0/instances",
                b"not json".to_vec(),
                &[("Content-Type", "application/octet-stream; x=y")],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"].as_str().unwrap().starts_with("Invalid JSON"));
    }

    /// A backup of `name` with snapshot s0, owned by whoever runs the test.
    fn tiny_backup(name: &str) -> Vec<u8> {
        let index = format!(
            "name: {name}\nbackend: dir\npool: default\nsnapshots: [s0]\ntype: container\n\
             config:\n  container:\n    name: {name}\n    architecture: x86_64\n    \
             config: {{user.k: v}}\n    profiles: [default]\n  snapshots:\n  - name: s0\n"
        );
        let mut b = tar::Builder::new(Vec::new());
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        for (path, data) in [
            ("backup/index.yaml", index.as_bytes()),
            ("backup/snapshots/s0/rootfs/etc/marker", b"s0".as_slice()),
            ("backup/container/rootfs/etc/marker", b"main".as_slice()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(uid.as_raw().into());
            h.set_gid(gid.as_raw().into());
            h.set_mtime(1);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[tokio::test]
    async fn a_backup_upload_makes_the_instance_and_its_snapshots_once() {
        let api = TestApi::new().await;
        let octet = [("Content-Type", "application/octet-stream")];
        let (status, _, op) = api
            .call_raw(Method::POST, "/1.0/instances", tiny_backup("c1"), &octet)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        assert_eq!(op["metadata"]["description"], "Restoring backup");
        assert_eq!(api.wait(&op).await["status"], "Success");
        let (_, c1) = api.call(Method::GET, "/1.0/instances/c1", None).await;
        assert_eq!(c1["metadata"]["config"]["user.k"], "v", "{c1}");
        let (_, snaps) = api
            .call(Method::GET, "/1.0/instances/c1/snapshots", None)
            .await;
        assert_eq!(snaps["metadata"], json!(["/1.0/instances/c1/snapshots/s0"]));
        let pool = api.dir.path().join("storage-pools/default");
        assert_eq!(
            std::fs::read(pool.join("containers/c1/rootfs/etc/marker")).unwrap(),
            b"main"
        );
        assert_eq!(
            std::fs::read(pool.join("containers-snapshots/c1/s0/rootfs/etc/marker")).unwrap(),
            b"s0"
        );
        // The same name again is a conflict, answered before anything is made; another
        // name (X-LXD-name) is a second instance.
        let (status, _, body) = api
            .call_raw(Method::POST, "/1.0/instances", tiny_backup("c1"), &octet)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, _, op) = api
            .call_raw(
                Method::POST,
                "/1.0/instances",
                tiny_backup("c1"),
                &[octet[0], ("X-LXD-name", "c2")],
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        assert_eq!(api.wait(&op).await["status"], "Success");
        // An unknown pool (X-LXD-pool): refused, nothing made.
        let (status, _, body) = api
            .call_raw(
                Method::POST,
                "/1.0/instances",
                tiny_backup("c3"),
                &[octet[0], ("X-LXD-pool", "nowhere")],
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(!pool.join("containers/c3").exists());
    }

    #[tokio::test]
    async fn updates_are_checked_against_etags_names_and_keys() {
        let api = TestApi::new().await;
        let fp = api.tiny_image().await;
        api.tiny_instance("c1", &fp).await;
        api.tiny_instance("c2", &fp).await;
        let (status, headers, body) = api
            .call_raw(Method::GET, "/1.0/instances/c1", Vec::new(), &[])
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"]["status"], "Stopped");
        let etag = headers["etag"].to_str().unwrap().to_string();
        // A stale ETag: 412, nothing changes.
        let (status, _) = api
            .call_with(
                Method::PATCH,
                "/1.0/instances/c1",
                Some(json!({"description": "x"})),
                &[("If-Match", "\"0000\"")],
            )
            .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        let (status, _) = api
            .call_with(
                Method::PATCH,
                "/1.0/instances/c1",
                Some(json!({"config": {"user.k": "v"}})),
                &[("If-Match", etag.as_str())],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        // Unknown keys, unknown profiles, typeless devices: 400.
        for patch in [
            json!({"config": {"limits.bogus": "1"}}),
            json!({"profiles": ["nope"]}),
            json!({"devices": {"d": {"path": "/x"}}}),
        ] {
            let (status, resp) = api
                .call(Method::PATCH, "/1.0/instances/c1", Some(patch.clone()))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{patch}: {resp}");
        }
        let (_, got) = api.call(Method::GET, "/1.0/instances/c1", None).await;
        assert_eq!(got["metadata"]["config"]["user.k"], "v");
        // A rename onto a taken name: 409; a bad name: 400; an unknown action: 400.
        let (status, resp) = api
            .call(
                Method::POST,
                "/1.0/instances/c1",
                Some(json!({"name": "c2"})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{resp}");
        assert_eq!(resp["error"], "Name \"c2\" already in use");
        let (status, _) = api
            .call(
                Method::POST,
                "/1.0/instances/c1",
                Some(json!({"name": "a/b"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, resp) = api
            .call(
                Method::PUT,
                "/1.0/instances/c1/state",
                Some(json!({"action": "dance"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(resp["error"], "Unknown action: 'dance'");
        // A delete removes the row and the volume.
        let (status, op) = api.call(Method::DELETE, "/1.0/instances/c2", None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(api.wait(&op).await["status"], "Success");
        let (status, _) = api.call(Method::GET, "/1.0/instances/c2", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!api
            .dir
            .path()
            .join("storage-pools/default/containers/c2")
            .exists());
    }
}
