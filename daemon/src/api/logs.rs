//! `/1.0/instances/<name>/logs`: the instance's log files — `lxc.log` (its monitor's log)
//! and the recorded output of exec (`exec_<id>.stdout|stderr`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{empty, sync};
use crate::daemon::AppState;
use crate::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/:name/logs", get(list))
        .route("/:name/logs/:file", get(read).delete(delete))
}

async fn list(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let files = e.instance_logs(&name).await?;
    Ok(sync(
        files
            .iter()
            .map(|f| format!("/1.0/instances/{name}/logs/{f}"))
            .collect::<Vec<_>>(),
    ))
}

async fn read(
    State(e): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response> {
    let data = e.instance_log(&name, &file).await?;
    Ok(([("Content-Type", "application/octet-stream")], data).into_response())
}

async fn delete(
    State(e): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response> {
    e.delete_instance_log(&name, &file).await?;
    Ok(empty())
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::files::tests::raw;
    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn logs_are_listed_read_and_deleted() {
        let api = TestApi::new().await;
        api.engine.add_stopped_instance("c1");
        let (status, body) = api.call(Method::GET, "/1.0/instances/c1/logs", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["metadata"], json!(["/1.0/instances/c1/logs/lxc.log"]));
        let (status, _, log) = raw(
            &api,
            Method::GET,
            "/1.0/instances/c1/logs/lxc.log",
            &[],
            b"",
        )
        .await;
        assert_eq!((status, log.len()), (StatusCode::OK, 0), "not written yet");

        let logs = api.dir.path().join("logs/c1");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("exec_b.stdout"), b"out").unwrap();
        std::fs::write(logs.join("exec_a.stderr"), b"err").unwrap();
        std::fs::write(logs.join("other"), b"hidden").unwrap();
        let (_, body) = api.call(Method::GET, "/1.0/containers/c1/logs", None).await;
        assert_eq!(
            body["metadata"],
            json!([
                "/1.0/instances/c1/logs/lxc.log",
                "/1.0/instances/c1/logs/exec_a.stderr",
                "/1.0/instances/c1/logs/exec_b.stdout",
            ])
        );
        let (status, headers, log) = raw(
            &api,
            Method::GET,
            "/1.0/instances/c1/logs/exec_b.stdout",
            &[],
            b"",
        )
        .await;
        assert_eq!((status, log.as_slice()), (StatusCode::OK, &b"out"[..]));
        assert_eq!(headers["Content-Type"], "application/octet-stream");
        let (status, _) = api
            .call(Method::DELETE, "/1.0/instances/c1/logs/exec_b.stdout", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!logs.join("exec_b.stdout").exists());
    }

    #[tokio::test]
    async fn log_requests_are_refused_with_lxd_messages() {
        let api = TestApi::new().await;
        api.engine.add_stopped_instance("c1");
        let cases = [
            (
                Method::GET,
                "/1.0/instances/nope/logs",
                404,
                "Instance not found",
            ),
            (
                Method::GET,
                "/1.0/instances/nope/logs/lxc.log",
                404,
                "Instance not found",
            ),
            (
                Method::DELETE,
                "/1.0/instances/nope/logs/exec_a.stdout",
                404,
                "Instance not found",
            ),
            (
                Method::GET,
                "/1.0/instances/c1/logs/exec_gone.stdout",
                404,
                "not found",
            ),
            (
                Method::GET,
                "/1.0/instances/c1/logs/monitor.log",
                404,
                "not found",
            ),
            (
                Method::DELETE,
                "/1.0/instances/c1/logs/exec_gone.stdout",
                404,
                "not found",
            ),
            (
                Method::DELETE,
                "/1.0/instances/c1/logs/lxc.log",
                400,
                "lxc.log cannot be deleted",
            ),
            (
                Method::GET,
                "/1.0/instances/c1/logs/exec_..%2F..%2Fdatabase",
                400,
                "Invalid name in the URL: \"exec_../../database\"",
            ),
        ];
        for (method, uri, code, message) in cases {
            let (status, body) = api.call(method.clone(), uri, None).await;
            assert_eq!(status.as_u16(), code, "{method} {uri}: {body}");
            assert_eq!(body["error"], message, "{method} {uri}");
        }
    }
}
