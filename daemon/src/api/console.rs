//! `POST /1.0/instances/<name>/console`: the console over websockets (fd "0" for the bytes,
//! "control" for window-resize), bridged to the stream the engine attaches; `GET` reads
//! the console log and `DELETE` clears it. An attached console outlives the daemon: a new
//! daemon serves its operation again ([`readopt`]) and the client reconnects.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Message;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hutch_api::instance::{ExecControl, InstanceConsolePost};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{accepted, empty, parse_json};
use crate::daemon::AppState;
use crate::engine::console::{Console, ConsoleIdentity};
use crate::error::{DaemonError, Result};
use crate::operations::instance_resources;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a re-adopted console waits for its client to reconnect.
const RECONNECT_GRACE: Duration = Duration::from_secs(60);

pub fn routes() -> Router<AppState> {
    Router::new().route("/:name/console", get(log).post(attach).delete(clear))
}

async fn attach(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceConsolePost = if body.is_empty() {
        InstanceConsolePost::default()
    } else {
        parse_json(&body)?
    };
    let console = e.console(&name, &req)?;
    let secrets: HashMap<String, String> = ["0", "control"]
        .iter()
        .map(|fd| (fd.to_string(), uuid::Uuid::new_v4().simple().to_string()))
        .collect();
    let op = e.operations().create(
        "websocket",
        "Showing console",
        instance_resources(&name),
        json!({"fds": secrets}),
    );
    let snap = op.snapshot();
    let identity = ConsoleIdentity {
        id: snap.id,
        instance: name,
        created_at: snap.created_at,
        secrets: secrets.into_iter().collect(),
        metadata: snap.metadata,
    };
    e.keep_console(&identity)?;
    serve(&e, op.clone(), identity, console, CONNECT_TIMEOUT);
    Ok(accepted(&op))
}

/// Serves again, as the same operations, the consoles earlier daemons had attached (the
/// clients reconnect). Called at start, before the API listens.
pub async fn readopt(e: &AppState) {
    let engine = e.clone();
    let found = tokio::task::spawn_blocking(move || engine.kept_consoles())
        .await
        .unwrap_or_default();
    for (identity, console) in found {
        let op = e.operations().adopt(
            &identity.id,
            &identity.created_at,
            "websocket",
            "Showing console",
            instance_resources(&identity.instance),
            identity.metadata.clone(),
        );
        tracing::info!(operation = %identity.id, instance = %identity.instance, "console re-adopted");
        serve(e, op, identity, console, RECONNECT_GRACE);
    }
}

/// Runs the console operation: waits up to `connect` for the client's websockets, then
/// bridges them to the console until the client detaches or the console ends; its identity
/// is forgotten then.
fn serve(
    e: &AppState,
    op: std::sync::Arc<crate::operations::OpEntry>,
    identity: ConsoleIdentity,
    console: Console,
    connect: Duration,
) {
    let secret = |fd: &str| identity.secrets.get(fd).cloned().unwrap_or_default();
    let data_rx = op.expect_socket(&secret("0"));
    let control_rx = op.expect_socket(&secret("control"));
    let engine = e.clone();
    e.operations().run(op, async move {
        let served = bridge(console, data_rx, control_rx, connect).await;
        engine.forget_console(&identity.instance, &identity.id);
        served
    });
}

async fn bridge(
    console: Console,
    data_rx: tokio::sync::oneshot::Receiver<axum::extract::ws::WebSocket>,
    control_rx: tokio::sync::oneshot::Receiver<axum::extract::ws::WebSocket>,
    connect: Duration,
) -> Result<Option<serde_json::Value>> {
    let timeout = || DaemonError::BadRequest("Timed out waiting for websockets to connect".into());
    let control = tokio::time::timeout(connect, control_rx)
        .await
        .map_err(|_| timeout())?
        .map_err(|_| timeout())?;
    let data = tokio::time::timeout(connect, data_rx)
        .await
        .map_err(|_| timeout())?
        .map_err(|_| timeout())?;
    let stream = console.attach().await?;
    let (mut cons_r, mut cons_w) = (stream.reader, stream.writer);
    let (ws_tx, mut ws_rx) = data.split();
    let ws_tx = std::sync::Arc::new(tokio::sync::Mutex::new(ws_tx));
    let to_console = async {
        while let Some(Ok(msg)) = ws_rx.next().await {
            let bytes = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => t.into_bytes(),
                Message::Close(_) => break,
                _ => continue,
            };
            if cons_w.write_all(&bytes).await.is_err() {
                break;
            }
        }
    };
    let tx = ws_tx.clone();
    let from_console = async move {
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = cons_r.read(&mut buf).await {
            if n == 0
                || tx
                    .lock()
                    .await
                    .send(Message::Binary(buf[..n].to_vec()))
                    .await
                    .is_err()
            {
                break;
            }
        }
    };
    let controls = console.controls();
    let controller = async move {
        let mut control = control;
        while let Some(Ok(msg)) = control.next().await {
            let Message::Text(text) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let Ok(ctl) = serde_json::from_str::<ExecControl>(&text) else {
                continue;
            };
            if ctl.command == "window-resize" {
                let num = |k: &str| ctl.args.get(k).and_then(|v| v.parse::<u16>().ok());
                if let (Some(cols), Some(rows)) = (num("width"), num("height")) {
                    let _ = controls.resize(cols, rows).await;
                }
            }
        }
    };
    // Detaching closes control; a stopped container ends the console stream.
    tokio::select! {
        _ = to_console => {}
        _ = from_console => {}
        _ = controller => {}
    }
    let mut tx = ws_tx.lock().await;
    let _ = tx.send(Message::Close(None)).await;
    let _ = tx.close().await;
    Ok(None)
}

/// The console log: what the container wrote to its console so far.
async fn log(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let log = e.console_log(&name).await?;
    Ok(([("Content-Type", "application/octet-stream")], log).into_response())
}

async fn clear(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    e.clear_console_log(&name).await?;
    Ok(empty())
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::files::tests::raw;
    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn the_console_of_a_stopped_instance_has_only_its_log() {
        let api = TestApi::new().await;
        api.engine.add_stopped_instance("c1");
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let (status, body) = api
                .call(method.clone(), "/1.0/instances/nope/console", None)
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method}");
            assert_eq!(body["error"], "Instance not found");
        }
        for body in [
            None,
            Some(json!({"width": 80, "height": 24, "type": "console"})),
        ] {
            let (status, body) = api
                .call(Method::POST, "/1.0/instances/c1/console", body)
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(body["error"], "Instance is not running");
        }
        let (status, body) = api
            .call(
                Method::POST,
                "/1.0/containers/c1/console",
                Some(json!({"width": "wide"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON: invalid type: string \"wide\""));
        let (_, ops) = api.call(Method::GET, "/1.0/operations", None).await;
        assert_eq!(ops["metadata"], json!({}), "no operation was made");

        // The log outlives the container: the rotated part first, then the current one.
        let (status, _, log) = raw(&api, Method::GET, "/1.0/instances/c1/console", &[], b"").await;
        assert_eq!((status, log.len()), (StatusCode::OK, 0));
        let rd = api.dir.path().join("containers/c1");
        std::fs::create_dir_all(&rd).unwrap();
        std::fs::write(rd.join("console.log.1"), b"boot\n").unwrap();
        std::fs::write(rd.join("console.log"), b"login: ").unwrap();
        let (status, headers, log) =
            raw(&api, Method::GET, "/1.0/instances/c1/console", &[], b"").await;
        assert_eq!(
            (status, log.as_slice()),
            (StatusCode::OK, &b"boot\nlogin: "[..])
        );
        assert_eq!(headers["Content-Type"], "application/octet-stream");
        let (status, _) = api
            .call(Method::DELETE, "/1.0/instances/c1/console", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, _, log) = raw(&api, Method::GET, "/1.0/containers/c1/console", &[], b"").await;
        assert!(log.is_empty());
    }
}
