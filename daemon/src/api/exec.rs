//! `POST /1.0/instances/<name>/exec`: the engine checks and starts the command; its
//! pipes or pty are bridged here to the operation's websockets (or, without websockets,
//! the engine runs it to the end, its output discarded or recorded).
//!
//! The session outlives this daemon (the exec helper keeps it): at start a new daemon
//! re-registers each kept session's operation under its id and secrets ([`readopt`]) and
//! serves it again. A websocket may reconnect while the command runs (right secret, one
//! live connection per fd: the latest); output nobody reads waits in the pipe or pty.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use hutch_api::instance::{ExecControl, InstanceExecPost};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{accepted, parse_json};
use crate::daemon::AppState;
use crate::engine::exec::{
    exit_result, AdoptedExec, ExecControls, ExecProcess, PipedExec, PtyExec, SessionIdentity,
};
use crate::error::{DaemonError, Result};
use crate::operations::{instance_resources, OpEntry};

/// How long LXD waits for the client's websockets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a running command's output waits for a client to (re)connect before the
/// command is hung up on (SIGHUP, then SIGKILL after [`HANGUP_GRACE`]).
const RECONNECT_GRACE: Duration = Duration::from_secs(60);
const HANGUP_GRACE: Duration = Duration::from_secs(5);

pub fn routes() -> Router<AppState> {
    Router::new().route("/:name/exec", post(exec))
}

fn timed_out() -> DaemonError {
    DaemonError::BadRequest("Timed out waiting for websockets to connect".into())
}

fn cancelled() -> DaemonError {
    DaemonError::BadRequest("Operation cancelled".into())
}

/// One websocket of a session: the live connection, and where later ones come from.
struct Conn {
    live: Option<WebSocket>,
    more: mpsc::Receiver<WebSocket>,
    more_open: bool,
}

impl Conn {
    fn new(more: mpsc::Receiver<WebSocket>) -> Self {
        Conn {
            live: None,
            more,
            more_open: true,
        }
    }

    /// The next connection, waiting at most `limit` (forever with `None`).
    async fn next(&mut self, limit: Option<Duration>) -> Option<WebSocket> {
        if !self.more_open {
            return None;
        }
        let got = match limit {
            Some(l) => tokio::time::timeout(l, self.more.recv()).await.ok()?,
            None => self.more.recv().await,
        };
        if got.is_none() {
            self.more_open = false;
        }
        got
    }
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
        op.set_cancellable();
        let identity = identity(&op, &name, &req, Default::default());
        let op2 = op.clone();
        e.operations().run(op.clone(), async move {
            let (process, logs) = run
                .start_detached(identity)
                .await
                .inspect_err(|_| record_return(&op2, -1))?;
            let code = wait_or_cancel(&op2, process, &None).await;
            if let (Ok(_), Some((stdout, stderr))) = (&code, logs) {
                record_logs(&op2, &name, &stdout, &stderr);
            }
            finish(&op2, code.inspect_err(|_| record_return(&op2, -1))?)
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
    op.set_cancellable();
    let identity = identity(&op, &name, &req, secrets.clone().into_iter().collect());
    let mut conns = expect_conns(&op, &secrets);
    let op2 = op.clone();
    e.operations().run(op.clone(), async move {
        // The command starts once the client's data sockets are there, as LXD's.
        for (fd, conn) in conns.iter_mut() {
            if fd != "control" {
                conn.live = Some(
                    conn.next(Some(CONNECT_TIMEOUT))
                        .await
                        .ok_or_else(timed_out)?,
                );
            }
        }
        let ran = if req.interactive {
            match run.start_pty(identity).await {
                Ok(pty) => serve_pty(&op2, pty, conns).await,
                Err(e) => Err(e),
            }
        } else {
            match run.start_pipes(identity).await {
                Ok(piped) => serve_pipes(&op2, piped, conns).await,
                Err(e) => Err(e),
            }
        };
        finish(&op2, ran.inspect_err(|_| record_return(&op2, -1))?)
    });
    Ok(accepted(&op))
}

/// The identity a new daemon serves the session again under.
fn identity(
    op: &OpEntry,
    name: &str,
    req: &InstanceExecPost,
    secrets: std::collections::BTreeMap<String, String>,
) -> SessionIdentity {
    let snap = op.snapshot();
    SessionIdentity {
        id: snap.id,
        instance: name.to_string(),
        created_at: snap.created_at,
        secrets,
        interactive: req.interactive,
        record_output: req.record_output,
        metadata: snap.metadata,
    }
}

fn expect_conns(op: &OpEntry, secrets: &HashMap<String, String>) -> HashMap<String, Conn> {
    secrets
        .iter()
        .map(|(fd, s)| (fd.clone(), Conn::new(op.expect_sockets(s))))
        .collect()
}

/// Serves again, as the same operations, the sessions earlier daemons left running.
/// Called at start, before the API listens.
pub async fn readopt(e: &AppState) {
    let engine = e.clone();
    let found = tokio::task::spawn_blocking(move || engine.kept_exec_sessions())
        .await
        .unwrap_or_default();
    for (identity, adopted) in found {
        let class = if identity.secrets.is_empty() {
            "task"
        } else {
            "websocket"
        };
        let op = e.operations().adopt(
            &identity.id,
            &identity.created_at,
            class,
            "Executing command",
            instance_resources(&identity.instance),
            identity.metadata.clone(),
        );
        op.set_cancellable();
        tracing::info!(operation = %identity.id, instance = %identity.instance, "exec session re-adopted");
        let secrets: HashMap<String, String> = identity.secrets.clone().into_iter().collect();
        let conns = expect_conns(&op, &secrets);
        let op2 = op.clone();
        e.operations().run(op.clone(), async move {
            let ran = match adopted {
                AdoptedExec::Pipes(piped) => serve_pipes(&op2, piped, conns).await,
                AdoptedExec::Pty(pty) => serve_pty(&op2, pty, conns).await,
                AdoptedExec::Detached(process) => {
                    let code = wait_or_cancel(&op2, process, &None).await;
                    if code.is_ok() && identity.record_output {
                        let (o, e) = (
                            format!("exec_{}.stdout", identity.id),
                            format!("exec_{}.stderr", identity.id),
                        );
                        record_logs(&op2, &identity.instance, &o, &e);
                    }
                    code
                }
            };
            finish(&op2, ran.inspect_err(|_| record_return(&op2, -1))?)
        });
    }
}

/// Sets `return` in the operation's metadata.
fn record_return(op: &OpEntry, code: i32) {
    let mut m = serde_json::Map::new();
    m.insert("return".into(), code.into());
    op.extend_metadata(m);
}

fn record_logs(op: &OpEntry, name: &str, stdout: &str, stderr: &str) {
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

/// Records the exit code; 126/127 also fail the operation, as LXD does. A command that
/// could not be started (a missing `cwd`) fails it with `return` -1 and the reason, as
/// LXD's start failures do, rather than passing for a missing command.
fn finish(op: &OpEntry, code: i32) -> Result<Option<Value>> {
    record_return(op, code);
    exit_result(code).map(|()| None)
}

/// Waits for the command to end; a cancel of the operation kills it (and its process
/// group) first, and the operation then ends cancelled.
async fn wait_or_cancel(
    op: &OpEntry,
    process: ExecProcess,
    controls: &Option<Arc<ExecControls>>,
) -> Result<i32> {
    let kill = match controls {
        Some(c) => c.clone(),
        None => Arc::new(process.controls()?),
    };
    let waited = process.wait();
    tokio::pin!(waited);
    tokio::select! {
        code = &mut waited => return code,
        () = op.cancelled() => {}
    }
    let _ = kill.kill();
    let _ = waited.await;
    Err(cancelled())
}

/// Reads control websockets (each new connection replaces the last): resize and signal
/// messages. Sockets the client hung up on are held until the command ends.
async fn serve_control(mut conn: Conn, controls: Arc<ExecControls>) {
    let mut held = Vec::new();
    while let Some(mut ws) = conn.next(None).await {
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
        held.push(ws);
    }
    std::future::pending::<()>().await;
}

/// A task that holds a websocket until the command ends: [`hang_up`] ends it.
type Holder = tokio::task::JoinHandle<()>;

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

/// What a bridge does with what the client sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// A pipe: an empty text frame or a close ends it (the command reads its end).
    Pipe,
    /// A pty: a close ends it.
    Pty,
}

enum Step {
    Output(std::io::Result<usize>),
    Connected(Option<Box<WebSocket>>),
    Client(Option<std::result::Result<Message, axum::Error>>),
}

/// Bridges one fd of the command and its websocket, across reconnections: `output` into
/// binary frames then an empty text frame (LXD's end of stream, reported on `done`), what
/// the client sends into `input`. A frame a dropped connection did not take is sent again
/// on the next. Output with no client for [`RECONNECT_GRACE`] hangs the command up.
/// Runs until aborted (the socket is held until the command ends).
async fn bridge<R, W>(
    mut conn: Conn,
    mut output: Option<R>,
    mut input: Option<W>,
    kind: Input,
    controls: Arc<ExecControls>,
    done: Option<oneshot::Sender<()>>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut done = done;
    let mut buf = vec![0u8; 65536];
    let mut pending: Option<Message> = None;
    let mut eof = output.is_none();
    let mut abandoned = false;
    loop {
        let delivering = !eof || pending.is_some();
        if conn.live.is_none() && !abandoned {
            match conn.next(delivering.then_some(RECONNECT_GRACE)).await {
                Some(ws) => conn.live = Some(ws),
                None if delivering => {
                    // Nobody came back: hang up, then discard what is left.
                    abandoned = true;
                    hang_up_command(&controls);
                }
                None => std::future::pending::<()>().await,
            }
        }
        if abandoned && conn.live.is_none() {
            pending = None;
            match &mut output {
                Some(out) if !eof => {
                    if matches!(out.read(&mut buf).await, Ok(0) | Err(_)) {
                        eof = true;
                    }
                }
                _ => {
                    if let Some(d) = done.take() {
                        let _ = d.send(());
                    }
                    std::future::pending::<()>().await
                }
            }
            continue;
        }
        let Some(ws) = conn.live.as_mut() else {
            continue;
        };
        if let Some(msg) = pending.take() {
            if ws.send(msg.clone()).await.is_err() {
                conn.live = None;
                pending = Some(msg);
            } else if eof {
                if let Some(d) = done.take() {
                    let _ = d.send(());
                }
            }
            continue;
        }
        let step = {
            let Conn {
                live,
                more,
                more_open,
            } = &mut conn;
            let Some(ws) = live.as_mut() else { continue };
            tokio::select! {
                n = async {
                    match output.as_mut() {
                        Some(out) => out.read(&mut buf).await,
                        None => std::future::pending().await,
                    }
                }, if !eof => Step::Output(n),
                next = more.recv(), if *more_open => Step::Connected(next.map(Box::new)),
                msg = ws.next() => Step::Client(msg),
            }
        };
        match step {
            Step::Output(Ok(0)) | Step::Output(Err(_)) => {
                eof = true;
                pending = Some(Message::Text(String::new()));
            }
            Step::Output(Ok(n)) => pending = Some(Message::Binary(buf[..n].to_vec())),
            // One live connection per fd: the newest.
            Step::Connected(Some(ws)) => conn.live = Some(*ws),
            Step::Connected(None) => conn.more_open = false,
            Step::Client(None) | Step::Client(Some(Err(_))) => conn.live = None,
            Step::Client(Some(Ok(msg))) => {
                let data = match msg {
                    Message::Binary(b) => b,
                    Message::Text(t) if t.is_empty() && kind == Input::Pipe => {
                        end_input(&mut input, kind, &controls);
                        continue;
                    }
                    Message::Text(t) => t.into_bytes(),
                    Message::Close(_) => {
                        end_input(&mut input, kind, &controls);
                        continue;
                    }
                    _ => continue,
                };
                if let Some(w) = input.as_mut() {
                    if w.write_all(&data).await.is_err() {
                        input = None;
                    }
                }
            }
        }
    }
}

/// The client's input ended: a pipe is closed (the helper closes its copy too).
fn end_input<W>(input: &mut Option<W>, kind: Input, controls: &ExecControls) {
    if input.take().is_some() && kind == Input::Pipe {
        let _ = controls.close_stdin();
    }
}

/// A command nobody reads any more gets SIGHUP, then SIGKILL.
fn hang_up_command(controls: &Arc<ExecControls>) {
    let _ = controls.signal(libc::SIGHUP);
    let controls = controls.clone();
    tokio::spawn(async move {
        tokio::time::sleep(HANGUP_GRACE).await;
        let _ = controls.kill();
    });
}

fn take_conn(conns: &mut HashMap<String, Conn>, fd: &str) -> Result<Conn> {
    conns
        .remove(fd)
        .ok_or_else(|| DaemonError::failed("serve", "the exec session", format!("no fd {fd}")))
}

/// Non-interactive: three pipes, each bridged to its websocket.
async fn serve_pipes(
    op: &OpEntry,
    piped: PipedExec,
    mut conns: HashMap<String, Conn>,
) -> Result<i32> {
    let controls = Arc::new(piped.process.controls()?);
    let control = tokio::spawn(serve_control(
        take_conn(&mut conns, "control")?,
        controls.clone(),
    ));
    let none_out: Option<tokio::net::unix::pipe::Receiver> = None;
    let none_in: Option<tokio::net::unix::pipe::Sender> = None;
    let stdin = tokio::spawn(bridge(
        take_conn(&mut conns, "0")?,
        none_out,
        piped.stdin,
        Input::Pipe,
        controls.clone(),
        None,
    ));
    let (out_done, out_rx) = oneshot::channel();
    let (err_done, err_rx) = oneshot::channel();
    let out = tokio::spawn(bridge(
        take_conn(&mut conns, "1")?,
        Some(piped.stdout),
        none_in,
        Input::Pipe,
        controls.clone(),
        Some(out_done),
    ));
    let err = tokio::spawn(bridge(
        take_conn(&mut conns, "2")?,
        Some(piped.stderr),
        None::<tokio::net::unix::pipe::Sender>,
        Input::Pipe,
        controls.clone(),
        Some(err_done),
    ));
    // Output is delivered (to its end-of-stream frame) before the end is acknowledged
    // and the exit code reported.
    let delivered = async {
        let _ = out_rx.await;
        let _ = err_rx.await;
    };
    tokio::select! {
        () = delivered => {}
        () = op.cancelled() => {}
    }
    let code = wait_or_cancel(op, piped.process, &Some(controls)).await;
    hang_up(vec![control, stdin, out, err]).await;
    code
}

/// Interactive: one pty, both ways over websocket 0.
async fn serve_pty(op: &OpEntry, pty: PtyExec, mut conns: HashMap<String, Conn>) -> Result<i32> {
    let controls = Arc::new(pty.controls);
    let control = tokio::spawn(serve_control(
        take_conn(&mut conns, "control")?,
        controls.clone(),
    ));
    let (done, done_rx) = oneshot::channel();
    // The pty reports EIO once the command and its children have closed it.
    let data = tokio::spawn(bridge(
        take_conn(&mut conns, "0")?,
        Some(pty.reader),
        Some(pty.writer),
        Input::Pty,
        controls.clone(),
        Some(done),
    ));
    tokio::select! {
        _ = done_rx => {}
        () = op.cancelled() => {}
    }
    let code = wait_or_cancel(op, pty.process, &Some(controls)).await;
    hang_up(vec![control, data]).await;
    code
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
