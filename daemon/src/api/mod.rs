//! The REST API: one module per resource, each handler extracting and validating, calling
//! one engine function, and wrapping the result in LXD's envelope.

mod backups;
mod certificates;
mod cluster;
pub mod console;
mod events;
pub mod exec;
mod files;
pub mod forward;
mod images;
mod instances;
mod internal;
mod logs;
mod metadata;
mod metrics;
mod names;
mod networks;
mod operations;
mod profiles;
mod resources;
mod server;
mod snapshots;
mod storage;
#[cfg(test)]
pub mod testing;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hutch_api::Response as Envelope;
use serde::Serialize;
use serde_json::Value;

use crate::daemon::AppState;
use crate::error::{DaemonError, ErrorKind};
use crate::operations::OpEntry;

/// The one place an error's kind becomes an HTTP status.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // LXD answers a full disk with 500 too.
        ErrorKind::Internal | ErrorKind::NoSpace => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for DaemonError {
    fn into_response(self) -> Response {
        let status = status_of(self.kind());
        (
            status,
            [("X-Content-Type-Options", "nosniff")],
            Json(self.envelope(status.as_u16())),
        )
            .into_response()
    }
}

/// The whole API for in-process callers (`hutchd init` without a daemon, tests): every
/// request comes from the local admin, as on the unix socket.
pub fn router(state: AppState) -> Router {
    network_router(state).layer(axum::middleware::map_request(
        |mut req: axum::extract::Request| async move {
            req.extensions_mut().insert(crate::auth::Caller::Unix);
            req
        },
    ))
}

/// The whole API for the listeners, which put each request's [`Caller`](crate::auth::Caller)
/// in its extensions; a request without one is untrusted.
pub fn network_router(state: AppState) -> Router {
    let instance_routes = instances::routes()
        .merge(exec::routes())
        .merge(files::routes())
        .merge(console::routes())
        .merge(logs::routes())
        .merge(metadata::routes())
        .merge(snapshots::routes())
        .merge(backups::routes());
    Router::new()
        .route("/", get(|| async { Json(vec!["/1.0"]) }))
        .merge(server::routes())
        .merge(certificates::routes())
        .merge(cluster::routes())
        .merge(resources::routes())
        .merge(events::routes())
        .merge(operations::routes())
        .nest("/1.0/instances", instance_routes.clone())
        .nest("/1.0/containers", instance_routes)
        .merge(images::routes())
        .merge(profiles::routes())
        .merge(networks::routes())
        .merge(storage::routes())
        .merge(storage::volume_routes())
        .merge(internal::routes())
        .merge(metrics::routes())
        .merge(crate::ui::api_routes())
        .route_layer(axum::middleware::from_fn(metrics::tag_route))
        .fallback(|| async { DaemonError::NotFound("not found".into()) })
        .method_not_allowed_fallback(|| async { DaemonError::NotImplemented })
        .layer(axum::middleware::from_fn(names::refuse_bad_segments))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            durable_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::forward,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        .layer(axum::middleware::map_response(envelope_plain_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::time_requests,
        ))
        .with_state(state)
}

/// The answer to a write request leaves once its commits are durable (see the engine's
/// `make_durable`); an accepted operation is made durable when it ends instead.
async fn durable_writes(
    axum::extract::State(e): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let write = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let resp = next.run(req).await;
    if write && resp.status() != StatusCode::ACCEPTED {
        e.make_durable().await;
    }
    resp
}

/// axum's own rejections (a body over the size limit, a malformed query string, a missing
/// content type) are plain text: they get LXD's error envelope with the same status, as
/// every other error does, so that `lxc` and pylxd can read them.
async fn envelope_plain_errors(resp: Response) -> Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "Request body too large".to_string()
    } else {
        let text = axum::body::to_bytes(resp.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        match String::from_utf8_lossy(&text).trim() {
            "" => status.canonical_reason().unwrap_or("error").to_string(),
            t => t.to_string(),
        }
    };
    (
        status,
        [("X-Content-Type-Options", "nosniff")],
        Json(Envelope::error(status.as_u16(), &message)),
    )
        .into_response()
}

/// A sync 200 response. `value` is written straight into the envelope: a listing of
/// 1,000 instances is not copied into a `Value` tree first.
pub fn sync<T: Serialize>(value: T) -> Response {
    /// [`Envelope::sync`]'s body, borrowing its metadata.
    #[derive(Serialize)]
    struct SyncBody<T> {
        #[serde(rename = "type")]
        kind: hutch_api::response::ResponseType,
        status: &'static str,
        status_code: u16,
        operation: &'static str,
        error_code: u16,
        error: &'static str,
        metadata: T,
    }
    Json(SyncBody {
        kind: hutch_api::response::ResponseType::Sync,
        status: "Success",
        status_code: 200,
        operation: "",
        error_code: 0,
        error: "",
        metadata: value,
    })
    .into_response()
}

/// A sync 200 with an ETag over `tag_source`.
pub fn sync_etag<T: Serialize, E: Serialize>(value: T, tag_source: &E) -> Response {
    let mut resp = sync(value);
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", etag(tag_source))) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// An empty sync 200.
pub fn empty() -> Response {
    sync(serde_json::json!({}))
}

/// A 201 with `Location` and null metadata.
pub fn created(location: &str) -> Response {
    let mut body = Envelope::sync(Value::Null);
    body.status_code = 200;
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A 202 for a new operation.
pub fn accepted(op: &Arc<OpEntry>) -> Response {
    let snapshot = op.snapshot();
    let url = format!("/1.0/operations/{}", snapshot.id);
    let body = Envelope::async_op(&url, serde_json::to_value(&snapshot).unwrap_or(Value::Null));
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A stable digest of a value, for ETags.
pub fn etag<T: Serialize>(value: &T) -> String {
    crate::engine::etag(value)
}

/// The client's If-Match, if any.
pub fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A sync 200 with the object and the ETag of its version.
pub fn versioned<T: Serialize>(v: crate::engine::Versioned<T>) -> Response {
    sync_etag(v.object, &v.version)
}

/// Runs the rest of an accepted action as an operation and answers 202 at once.
pub fn operation(
    d: &AppState,
    description: &str,
    resources: std::collections::BTreeMap<String, Vec<String>>,
    work: crate::engine::Work,
) -> Response {
    let op = d
        .operations()
        .create("task", description, resources, Value::Null);
    d.operations()
        .run(op.clone(), async move { work.await.map(|()| None) });
    accepted(&op)
}

/// [`operation`] whose work stops and undoes itself on `DELETE /1.0/operations/<id>`
/// (`may_cancel`).
pub fn cancellable_operation(
    d: &AppState,
    description: &str,
    resources: std::collections::BTreeMap<String, Vec<String>>,
    work: crate::engine::Work,
) -> Response {
    let op = d
        .operations()
        .create("task", description, resources, Value::Null);
    op.set_cancellable();
    d.operations()
        .run(op.clone(), async move { work.await.map(|()| None) });
    accepted(&op)
}

/// `recursion` query value (0 when missing or malformed).
pub fn recursion(q: &std::collections::HashMap<String, String>) -> u8 {
    q.get("recursion").and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A JSON body, or LXD's 400 for malformed JSON.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DaemonError> {
    serde_json::from_slice(body).map_err(|e| DaemonError::BadRequest(format!("Invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sync_body_is_lxds_envelope() {
        let metadata = serde_json::json!({"name": "c1", "devices": {}});
        let resp = sync(&metadata);
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let got: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, serde_json::to_value(Envelope::sync(metadata)).unwrap());
    }
}
