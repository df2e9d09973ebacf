//! `POST /1.0/instances/<name>/exec`: the engine checks and starts the command; its
//! pipes or pty are bridged here to the operation's websockets (or, without websockets,
//! the engine runs it to the end, its output discarded or recorded).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use hutch_api::instance::{ExecControl, InstanceExecPost};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::{accepted, parse_json};
use crate::daemon::AppState;
use crate::engine::exec::{exit_result, Exec, ExecControls};
use crate::error::{DaemonError, Result};
use crate::operations::{instance_resources, OpEntry};

/// How long LXD waits for the client's websockets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes() -> Router<AppState> {
    Router::new().route("/:name/exec", post(exec))
}

fn timed_out() -> DaemonError {
    DaemonError::BadRequest("Timed out waiting for websockets to connect".into())
}

async fn exec(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceExecPost = parse_json(&body)?;
    let run = e.exec(&name, &req)?;
    if !req.wait_for_websocket {
        let op = e.operations().create(
            "task",
            "Executing command",
            instance_resources(&name),
            Value::Null,
        );
        let op2 = op.clone();
        e.operations().run(op.clone(), async move {
            run_detached(op2, name, run, req.record_output).await
        });
        return Ok(accepted(&op));
    }
    let fds: Vec<&str> = if req.interactive {
        vec!["0", "control"]
    } else {
        vec!["0", "1", "2", "control"]
    };
    let secrets: HashMap<String, String> = fds
        .iter()
        .map(|f| (f.to_string(), crate::operations::new_secret()))
        .collect();
    let metadata = json!({"fds": secrets, "command": req.command, "environment": run.environment(), "interactive": req.interactive});
    let op = e.operations().create(
        "websocket",
        "Executing command",
        instance_resources(&name),
        metadata,
    );
    let mut sockets: HashMap<String, oneshot::Receiver<WebSocket>> = secrets
        .iter()
        .map(|(fd, s)| (fd.clone(), op.expect_socket(s)))
        .collect();
    let op2 = op.clone();
    e.operations().run(op.clone(), async move {
        let control = sockets.remove("control");
        let mut connected = HashMap::new();
        for (fd, rx) in sockets {
            let ws = tokio::time::timeout(CONNECT_TIMEOUT, rx)
                .await
                .map_err(|_| timed_out())?
                .map_err(|_| timed_out())?;
            connected.insert(fd, ws);
        }
        let ran = if req.interactive {
            run_pty(run, connected, control).await
        } else {
            run_pipes(run, connected, control).await
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
    exit_result(code).map(|()| None)
}

async fn run_detached(
    op: Arc<OpEntry>,
    name: String,
    run: Exec,
    record: bool,
) -> Result<Option<Value>> {
    let exit = run
        .run_detached(&op.id(), record)
        .await
        .inspect_err(|_| record_return(&op, -1))?;
    if let Some((stdout, stderr)) = exit.logs {
        let mut m = serde_json::Map::new();
        m.insert(
            "output".into(),
            json!({
                "1": format!("/1.0/instances/{name}/logs/{stdout}"),
                "2": format!("/1.0/instances/{name}/logs/{stderr}"),
            }),
        );
        op.extend_metadata(m);
    }
    finish(&op, exit.code)
}

/// Reads a control websocket: resize and signal messages.
async fn handle_control(ws: &mut WebSocket, controls: ExecControls) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(ctl) = serde_json::from_str::<ExecControl>(&text) else {
            continue;
        };
        match ctl.command.as_str() {
            "window-resize" => {
                let num = |k: &str| ctl.args.get(k).and_then(|v| v.parse::<u16>().ok());
                if let (Some(cols), Some(rows)) = (num("width"), num("height")) {
                    let _ = controls.resize(cols, rows);
                }
            }
            "signal" if ctl.signal > 0 => {
                let _ = controls.signal(ctl.signal);
            }
            _ => {}
        }
    }
    // The client hung up: keep the socket until the command ends, as the others.
    std::future::pending::<()>().await;
}

/// A task that holds a websocket until the command ends: [`hang_up`] ends it.
type Holder = tokio::task::JoinHandle<()>;

/// Serves the control websocket, once it connects, for the life of the command.
fn serve_control(control: Option<oneshot::Receiver<WebSocket>>, controls: ExecControls) -> Holder {
    tokio::spawn(async move {
        let Some(rx) = control else { return };
        if let Ok(Ok(mut ws)) = tokio::time::timeout(CONNECT_TIMEOUT, rx).await {
            handle_control(&mut ws, controls).await;
        }
    })
}

/// Ends the websockets once the command has ended, as LXD does: the connections are
/// dropped (TCP closed) without a websocket close frame. Each output stream has already
/// ended with its empty text frame; a client that answered a close frame would find the
/// connection gone and its reply failing with EPIPE (pylxd's ws4py logs that as
/// `Terminating websocket ... BrokenPipeError`). Anything the client sent was read, so the
/// kernel closes with a FIN and not a reset. Awaited, so that every socket is closed
/// before the operation reports the exit code.
async fn hang_up(holders: Vec<Holder>) {
    for h in &holders {
        h.abort();
    }
    for h in holders {
        let _ = h.await;
    }
}

/// Non-interactive: three pipes, each bridged to its websocket.
async fn run_pipes(
    run: Exec,
    mut ws: HashMap<String, WebSocket>,
    control: Option<oneshot::Receiver<WebSocket>>,
) -> Result<i32> {
    let piped = run.start_pipes().await?;
    let control = serve_control(control, piped.process.controls()?);
    let ws0 = ws.remove("0").expect("fd 0 connected");
    let ws1 = ws.remove("1").expect("fd 1 connected");
    let ws2 = ws.remove("2").expect("fd 2 connected");
    let stdin = tokio::spawn(ws_to_pipe(ws0, piped.stdin));
    let (out_done, out_rx) = oneshot::channel();
    let (err_done, err_rx) = oneshot::channel();
    let out = tokio::spawn(pipe_to_ws(piped.stdout, ws1, out_done));
    let err = tokio::spawn(pipe_to_ws(piped.stderr, ws2, err_done));
    // Output is flushed (to its end-of-stream frame) before the exit code is reported.
    let _ = out_rx.await;
    let _ = err_rx.await;
    let code = piped.process.wait().await;
    hang_up(vec![control, stdin, out, err]).await;
    code
}

/// Interactive: one pty, both ways over websocket 0.
async fn run_pty(
    run: Exec,
    mut ws: HashMap<String, WebSocket>,
    control: Option<oneshot::Receiver<WebSocket>>,
) -> Result<i32> {
    let pty = run.start_pty().await?;
    let control = serve_control(control, pty.controls);
    let ws0 = ws.remove("0").expect("fd 0 connected");
    let (mut tx, mut rx) = ws0.split();
    let (mut reader, mut writer) = (pty.reader, pty.writer);
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
        drain(rx).await;
    });
    let mut buf = vec![0u8; 16384];
    // The pty reports EIO once the command and its children have closed it.
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 || tx.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    let _ = tx.send(Message::Text(String::new())).await;
    let code = pty.process.wait().await;
    hang_up(vec![control, input]).await;
    drop(tx);
    code
}

/// Reads and drops whatever else the client sends (pings, a close frame), until it hangs
/// up; then holds the socket until the command ends.
async fn drain<S>(mut rx: S)
where
    S: futures_util::Stream<Item = std::result::Result<Message, axum::Error>> + Unpin,
{
    while let Some(Ok(_)) = rx.next().await {}
    std::future::pending::<()>().await;
}

/// Websocket frames into a pipe; an empty text frame or a close ends the input (the pipe
/// is closed: the command reads its end).
async fn ws_to_pipe(ws: WebSocket, mut pipe: pipe::Sender) {
    let (_tx, mut rx) = ws.split();
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
    drop(pipe);
    drain(rx).await;
}

/// A pipe into binary frames, then an empty text frame (LXD's end of stream), reported on
/// `done`; the socket stays open, and what the client sends is drained, until the command
/// ends (both halves live in this task: aborting it closes the connection).
async fn pipe_to_ws(mut pipe: pipe::Receiver, ws: WebSocket, done: oneshot::Sender<()>) {
    let (mut tx, rx) = ws.split();
    let send = async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 || tx.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        let _ = tx.send(Message::Text(String::new())).await;
        let _ = done.send(());
        let _keep = tx;
        std::future::pending::<()>().await;
    };
    tokio::join!(send, drain(rx));
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn exec_is_refused_before_any_operation() {
        let api = TestApi::new().await;
        api.engine.add_stopped_instance("c1");
        let cmd = json!({"command": ["true"], "wait-for-websocket": true});
        let cases = [
            (
                "/1.0/instances/nope/exec",
                Some(cmd.clone()),
                404,
                "Instance not found",
            ),
            (
                "/1.0/instances/c1/exec",
                Some(cmd.clone()),
                400,
                "Instance is not running",
            ),
            (
                "/1.0/containers/c1/exec",
                Some(cmd),
                400,
                "Instance is not running",
            ),
            (
                "/1.0/instances/c1/exec",
                Some(json!({"command": "true"})),
                400,
                "Invalid JSON: invalid type: string \"true\", expected a sequence",
            ),
            (
                "/1.0/instances/c1/exec",
                Some(json!({"interactive": true})),
                400,
                "Invalid JSON: missing field `command`",
            ),
        ];
        for (uri, body, code, message) in cases {
            let (status, body) = api.call(Method::POST, uri, body).await;
            assert_eq!(status.as_u16(), code, "{uri}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.starts_with(message), "{uri}: {error}");
        }
        let (status, body) = api.call(Method::POST, "/1.0/instances/c1/exec", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].as_str().unwrap().starts_with("Invalid JSON"));
        let (_, ops) = api.call(Method::GET, "/1.0/operations", None).await;
        assert_eq!(ops["metadata"], json!({}), "no operation was made");
    }
}
