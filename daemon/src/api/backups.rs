//! `/1.0/instances/<name>/backups`: list, create, get, rename, delete, and the export
//! download (the tarball streamed as it is produced).

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hutch_api::backup::{InstanceBackupPost, InstanceBackupsPost};

use super::{operation, parse_json, recursion, sync};
use crate::daemon::AppState;
use crate::engine::backups_resources;
use crate::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/:name/backups", get(list).post(create))
        .route(
            "/:name/backups/:backup",
            get(one).post(rename).delete(delete),
        )
        .route("/:name/backups/:backup/export", get(export))
}

async fn list(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    Ok(sync(e.list_backups(&name, recursion(&q))?))
}

async fn create(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceBackupsPost = if body.is_empty() {
        InstanceBackupsPost::default()
    } else {
        parse_json(&body)?
    };
    let (backup, work) = e.create_backup(&name, req)?;
    Ok(operation(
        &e,
        "Backing up instance",
        backups_resources(&name, &backup),
        work,
    ))
}

async fn one(
    State(e): State<AppState>,
    Path((name, backup)): Path<(String, String)>,
) -> Result<Response> {
    Ok(sync(e.backup(&name, &backup)?))
}

async fn rename(
    State(e): State<AppState>,
    Path((name, backup)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceBackupPost = parse_json(&body)?;
    let work = e.rename_backup(&name, &backup, req)?;
    Ok(operation(
        &e,
        "Renaming instance backup",
        backups_resources(&name, &backup),
        work,
    ))
}

async fn delete(
    State(e): State<AppState>,
    Path((name, backup)): Path<(String, String)>,
) -> Result<Response> {
    let work = e.delete_backup(&name, &backup)?;
    Ok(operation(
        &e,
        "Deleting instance backup",
        backups_resources(&name, &backup),
        work,
    ))
}

/// The tarball, chunked as it is produced (no Content-Length: its size is known only at
/// the end); `X-Hutch-Operation` names the operation that shows progress and cancels.
async fn export(
    State(e): State<AppState>,
    Path((name, backup)): Path<(String, String)>,
) -> Result<Response> {
    let download = e.export_backup(&name, &backup)?;
    let mut resp = (
        [
            ("Content-Type", "application/octet-stream".to_string()),
            (
                "Content-Disposition",
                format!("inline;filename={}", download.file_name),
            ),
        ],
        Body::from_stream(download.stream),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&download.operation) {
        resp.headers_mut().insert("X-Hutch-Operation", v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn backups_are_created_listed_renamed_exported_and_deleted() {
        let api = TestApi::new().await;
        let fp = api.tiny_image().await;
        api.tiny_instance("c1", &fp).await;
        let base = "/1.0/instances/c1/backups";
        let (status, op) = api.call(Method::POST, base, Some(json!({}))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        assert_eq!(
            op["metadata"]["resources"]["backups"][0],
            "/1.0/backups/backup0"
        );
        assert_eq!(api.wait(&op).await["status"], "Success");
        let (status, resp) = api
            .call(Method::POST, base, Some(json!({"name": "a/b"})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
        let (status, resp) = api
            .call(
                Method::POST,
                base,
                Some(json!({"name": "x", "compression_algorithm": "rar"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
        let (_, list) = api.call(Method::GET, base, None).await;
        assert_eq!(
            list["metadata"],
            json!(["/1.0/instances/c1/backups/backup0"])
        );
        let (_, list) = api
            .call(Method::GET, &format!("{base}?recursion=1"), None)
            .await;
        assert_eq!(list["metadata"][0]["expires_at"], "0001-01-01T00:00:00Z");
        let (status, op) = api
            .call(
                Method::POST,
                &format!("{base}/backup0"),
                Some(json!({"name": "kept"})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        assert_eq!(api.wait(&op).await["status"], "Success");
        let (status, one) = api.call(Method::GET, &format!("{base}/kept"), None).await;
        assert_eq!(status, StatusCode::OK, "{one}");
        assert_eq!(one["metadata"]["name"], "kept");
        let (status, _) = api
            .call(Method::GET, &format!("{base}/backup0"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, op) = api
            .call(Method::DELETE, &format!("{base}/kept"), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        assert_eq!(api.wait(&op).await["status"], "Success");
        let (_, list) = api.call(Method::GET, base, None).await;
        assert_eq!(list["metadata"], json!([]));
    }
}
