//! `POST /1.0/instances/<name>/console`: the console over websockets (fd "0" for the bytes,
//! "control" for window-resize), bridged to the monitor's console; and `DELETE .../console`
//! clears the log.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::Message;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hutch_api::instance::ExecControl;
use hutch_api::operation::StatusCode;
use hutch_runtime::MonitorClient;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{accepted, parse_json};
use crate::daemon::AppState;
use crate::engine;
use crate::error::{DaemonError, Result};
use crate::operations::instance_resources;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes() -> Router<AppState> {
    Router::new().route("/:name/console", get(log).post(attach).delete(clear))
}

async fn attach(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(&body)?
    };
    d.db.instance_or_404(&name)?;
    if engine::runtime_status(&d, &name).0 == StatusCode::Stopped {
        return Err(DaemonError::BadRequest("Instance is not running".into()));
    }
    if req["type"]
        .as_str()
        .is_some_and(|t| !t.is_empty() && t != "console")
    {
        return Err(DaemonError::BadRequest(
            "Only the text console is supported".into(),
        ));
    }
    let secrets: HashMap<String, String> = ["0", "control"]
        .iter()
        .map(|fd| (fd.to_string(), uuid::Uuid::new_v4().simple().to_string()))
        .collect();
    let op = d.ops.create(
        "websocket",
        "Showing console",
        instance_resources(&name),
        json!({"fds": secrets}),
    );
    let data_rx = op.expect_socket(&secrets["0"]);
    let control_rx = op.expect_socket(&secrets["control"]);
    let rd = d.runtime_dir(&name);
    let size = (
        req["width"].as_u64().unwrap_or(0) as u16,
        req["height"].as_u64().unwrap_or(0) as u16,
    );
    d.ops.run(op.clone(), async move {
        let timeout =
            || DaemonError::BadRequest("Timed out waiting for websockets to connect".into());
        let control = tokio::time::timeout(CONNECT_TIMEOUT, control_rx)
            .await
            .map_err(|_| timeout())?
            .map_err(|_| timeout())?;
        let data = tokio::time::timeout(CONNECT_TIMEOUT, data_rx)
            .await
            .map_err(|_| timeout())?
            .map_err(|_| timeout())?;
        let rd2 = rd.clone();
        let stream =
            tokio::task::spawn_blocking(move || -> Result<std::os::unix::net::UnixStream> {
                if size.0 > 0 && size.1 > 0 {
                    let _ = MonitorClient::connect(&rd2)
                        .and_then(|mut c| c.resize_console(size.0, size.1));
                }
                Ok(MonitorClient::connect(&rd2)?.attach_console()?)
            })
            .await??;
        stream
            .set_nonblocking(true)
            .map_err(|e| DaemonError::io("set nonblocking", "console", e))?;
        let stream = tokio::net::UnixStream::from_std(stream)
            .map_err(|e| DaemonError::io("register", "console", e))?;
        let (mut cons_r, mut cons_w) = stream.into_split();
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
        let rd3 = rd.clone();
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
                        let rd = rd3.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            MonitorClient::connect(&rd)
                                .and_then(|mut c| c.resize_console(cols, rows))
                        })
                        .await;
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
    });
    Ok(accepted(&op))
}

/// The console log: what the container wrote to its console so far.
async fn log(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    let log = hutch_runtime::container::console_log(&d.runtime_dir(&name))?;
    Ok(([("Content-Type", "application/octet-stream")], log).into_response())
}

async fn clear(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    let rd = d.runtime_dir(&name);
    for f in [rd.join("console.log"), rd.join("console.log.1")] {
        if f.exists() {
            std::fs::write(&f, b"").map_err(|e| DaemonError::io("clear", &f, e))?;
        }
    }
    Ok(super::empty())
}
