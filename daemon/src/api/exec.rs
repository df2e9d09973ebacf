//! `POST /1.0/instances/<name>/exec`: the command runs through the runtime's exec helper;
//! its stdio is bridged to the operation's websockets (or discarded / recorded without).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hutch_api::instance::{ExecControl, InstanceExecPost};
use hutch_runtime::{ExecStdio, WindowSize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::{accepted, parse_json};
use crate::daemon::AppState;
use crate::engine;
use crate::error::{DaemonError, Result};
use crate::operations::{instance_resources, OpEntry};

/// How long LXD waits for the client's websockets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes() -> Router<AppState> {
    Router::new().route("/:name/exec", post(exec))
}

fn secret() -> String {
    uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string()
}

async fn exec(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceExecPost = parse_json(&body)?;
    let run = engine::exec_request(&d, &name, &req)?;
    if !req.wait_for_websocket {
        let op = d.ops.create(
            "task",
            "Executing command",
            instance_resources(&name),
            Value::Null,
        );
        let d2 = d.clone();
        let op2 = op.clone();
        d.ops.run(op.clone(), async move {
            run_detached(d2, op2, name, run, req.record_output).await
        });
        return Ok(accepted(&op));
    }
    let fds: Vec<&str> = if req.interactive {
        vec!["0", "control"]
    } else {
        vec!["0", "1", "2", "control"]
    };
    let secrets: HashMap<String, String> = fds.iter().map(|f| (f.to_string(), secret())).collect();
    let metadata = json!({"fds": secrets, "command": req.command, "environment": run.env, "interactive": req.interactive});
    let op = d.ops.create(
        "websocket",
        "Executing command",
        instance_resources(&name),
        metadata,
    );
    let mut sockets: HashMap<String, oneshot::Receiver<WebSocket>> = secrets
        .iter()
        .map(|(fd, s)| (fd.clone(), op.expect_socket(s)))
        .collect();
    let d2 = d.clone();
    let op2 = op.clone();
    d.ops.run(op.clone(), async move {
        let control = sockets.remove("control");
        let mut connected = HashMap::new();
        for (fd, rx) in sockets {
            let ws = tokio::time::timeout(CONNECT_TIMEOUT, rx)
                .await
                .map_err(|_| {
                    DaemonError::BadRequest("Timed out waiting for websockets to connect".into())
                })?
                .map_err(|_| {
                    DaemonError::BadRequest("Timed out waiting for websockets to connect".into())
                })?;
            connected.insert(fd, ws);
        }
        let ran = if req.interactive {
            run_pty(&d2, &name, run, connected, control).await
        } else {
            run_pipes(&d2, &name, run, connected, control).await
        };
        finish(&op2, ran.inspect_err(|_| record_return(&op2, -1))?)
    });
    Ok(accepted(&op))
}

/// Sets `return` in the operation's metadata.
fn record_return(op: &OpEntry, code: i32) {
    let mut m = serde_json::Map::new();
    m.insert("return".into(), code.into());
    op.extend_metadata(m);
}

/// Records the exit code; 126/127 also fail the operation, as LXD does. A command that
/// could not be started (a missing `cwd`) fails it with `return` -1 and the reason, as
/// LXD's start failures do, rather than passing for a missing command.
fn finish(op: &OpEntry, code: i32) -> Result<Option<Value>> {
    record_return(op, code);
    match code {
        127 => Err(DaemonError::BadRequest("Command not found".into())),
        126 => Err(DaemonError::BadRequest("Command not executable".into())),
        _ => Ok(None),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| DaemonError::failed("make", "pipe", std::io::Error::from(e)))
}

async fn start(
    d: &AppState,
    name: &str,
    run: hutch_runtime::ExecRequest,
    stdio: ExecStdio,
) -> Result<hutch_runtime::ExecSession> {
    let (d, name) = (d.clone(), name.to_string());
    tokio::task::spawn_blocking(move || engine::exec_instance(&d, &name, &run, stdio)).await?
}

async fn wait(session: hutch_runtime::ExecSession) -> Result<i32> {
    let exit = tokio::task::spawn_blocking(move || session.wait()).await??;
    Ok(exit.code())
}

async fn run_detached(
    d: AppState,
    op: std::sync::Arc<OpEntry>,
    name: String,
    run: hutch_runtime::ExecRequest,
    record: bool,
) -> Result<Option<Value>> {
    let null = || -> Result<OwnedFd> {
        std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(Into::into)
            .map_err(|e| DaemonError::io("open", "/dev/null", e))
    };
    let (stdout, stderr, output) = if record {
        let logs = d.dir.join("logs").join(&name);
        std::fs::create_dir_all(&logs).map_err(|e| DaemonError::io("create", &logs, e))?;
        let id = op.id();
        let out = logs.join(format!("exec_{id}.stdout"));
        let err = logs.join(format!("exec_{id}.stderr"));
        let open = |p: &std::path::Path| {
            std::fs::File::create(p)
                .map(OwnedFd::from)
                .map_err(|e| DaemonError::io("create", p, e))
        };
        (
            open(&out)?,
            open(&err)?,
            Some(
                json!({"1": format!("/1.0/instances/{name}/logs/exec_{id}.stdout"), "2": format!("/1.0/instances/{name}/logs/exec_{id}.stderr")}),
            ),
        )
    } else {
        (null()?, null()?, None)
    };
    let session = start(
        &d,
        &name,
        run,
        ExecStdio::Pipes {
            stdin: null()?,
            stdout,
            stderr,
        },
    )
    .await
    .inspect_err(|_| record_return(&op, -1))?;
    let code = wait(session)
        .await
        .inspect_err(|_| record_return(&op, -1))?;
    if let Some(output) = output {
        let mut m = serde_json::Map::new();
        m.insert("output".into(), output);
        op.extend_metadata(m);
    }
    finish(&op, code)
}

/// Reads a control websocket: resize and signal messages.
async fn handle_control(mut ws: WebSocket, session_control: hutch_runtime::ExecController) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(ctl) = serde_json::from_str::<ExecControl>(&text) else {
            continue;
        };
        match ctl.command.as_str() {
            "window-resize" => {
                let num = |k: &str| ctl.args.get(k).and_then(|v| v.parse::<u16>().ok());
                if let (Some(cols), Some(rows)) = (num("width"), num("height")) {
                    let _ = session_control.resize(WindowSize { cols, rows });
                }
            }
            "signal" if ctl.signal > 0 => {
                let _ = session_control.signal(ctl.signal);
            }
            _ => {}
        }
    }
}

/// Non-interactive: three pipes, each bridged to its websocket.
async fn run_pipes(
    d: &AppState,
    name: &str,
    run: hutch_runtime::ExecRequest,
    mut ws: HashMap<String, WebSocket>,
    control: Option<oneshot::Receiver<WebSocket>>,
) -> Result<i32> {
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let session = start(
        d,
        name,
        run,
        ExecStdio::Pipes {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        },
    )
    .await?;
    if let Some(rx) = control {
        let s = session.controller()?;
        tokio::spawn(async move {
            if let Ok(Ok(ws)) = tokio::time::timeout(CONNECT_TIMEOUT, rx).await {
                handle_control(ws, s).await;
            }
        });
    }
    let ws0 = ws.remove("0").expect("fd 0 connected");
    let ws1 = ws.remove("1").expect("fd 1 connected");
    let ws2 = ws.remove("2").expect("fd 2 connected");
    let stdin = tokio::spawn(ws_to_fd(ws0, in_w));
    let out = tokio::spawn(fd_to_ws(out_r, ws1));
    let err = tokio::spawn(fd_to_ws(err_r, ws2));
    // Output is flushed before the exit code is reported.
    let _ = out.await;
    let _ = err.await;
    stdin.abort();
    wait(session).await
}

/// Interactive: one pty, both ways over websocket 0.
async fn run_pty(
    d: &AppState,
    name: &str,
    run: hutch_runtime::ExecRequest,
    mut ws: HashMap<String, WebSocket>,
    control: Option<oneshot::Receiver<WebSocket>>,
) -> Result<i32> {
    let mut session = start(d, name, run, ExecStdio::Pty).await?;
    // The controller shares the pty, for window-resize; take it before the pty goes.
    let controller = session.controller()?;
    let master = session
        .take_pty()
        .ok_or_else(|| DaemonError::failed("take", "the pty", "the exec session has none"))?;
    let master2 = master
        .try_clone()
        .map_err(|e| DaemonError::io("dup", "pty", e))?;
    if let Some(rx) = control {
        tokio::spawn(async move {
            if let Ok(Ok(ws)) = tokio::time::timeout(CONNECT_TIMEOUT, rx).await {
                handle_control(ws, controller).await;
            }
        });
    }
    let ws0 = ws.remove("0").expect("fd 0 connected");
    let (mut tx, mut rx) = ws0.split();
    let mut reader = tokio::fs::File::from_std(master);
    let mut writer = tokio::fs::File::from_std(master2);
    let input = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => t.into_bytes(),
                Message::Close(_) => break,
                _ => continue,
            };
            if writer.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 16384];
    // The pty reports EIO once the command and its children have closed it.
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 || tx.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    let _ = tx.send(Message::Text(String::new())).await;
    let _ = tx.close().await;
    input.abort();
    wait(session).await
}

/// Websocket frames into a pipe; an empty text frame or a close ends the input.
async fn ws_to_fd(ws: WebSocket, fd: OwnedFd) {
    let (_tx, mut rx) = ws.split();
    let Ok(mut pipe) = tokio::net::unix::pipe::Sender::from_owned_fd(fd) else {
        return;
    };
    while let Some(Ok(msg)) = rx.next().await {
        let data = match msg {
            Message::Binary(b) => b,
            Message::Text(t) if t.is_empty() => break,
            Message::Text(t) => t.into_bytes(),
            Message::Close(_) => break,
            _ => continue,
        };
        if pipe.write_all(&data).await.is_err() {
            break;
        }
    }
}

/// A pipe into binary frames, then an empty text frame and a close.
async fn fd_to_ws(fd: OwnedFd, mut ws: WebSocket) {
    if let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 || ws.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    }
    let _ = ws.send(Message::Text(String::new())).await;
    let _ = ws.close().await;
}
