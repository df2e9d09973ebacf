//! `hutch exec`: a command inside an instance over the operation's websockets, with a real
//! terminal (raw mode, window size, resize) when interactive. And `hutch console --show-log`.
//!
//! A websocket that drops while the operation runs (the daemon restarted, was killed or
//! upgraded: it re-adopts the session) is connected again with the same secret, with
//! backoff for up to [`RECONNECT_FOR`]; input not yet sent is sent after.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{anyhow, Result};
use clap::Args;
use serde_json::{json, Value};
use tungstenite::Message;

use crate::http::{encode, Client, Conn};

type Ws = tungstenite::WebSocket<Conn>;

/// How long a dropped session is retried.
const RECONNECT_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// What the output sockets of a non-interactive session have seen, for the sockets that
/// carry nothing back (stdin once it ended, control): when the daemon closes those, it is
/// either the end (after the outputs' end frames) or a drop (the outputs drop too).
#[derive(Default)]
struct Outputs {
    /// (outputs still open, some output dropped)
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Outputs {
    fn open(n: usize) -> Arc<Self> {
        Arc::new(Outputs {
            state: Mutex::new((n, false)),
            changed: Condvar::new(),
        })
    }

    fn ended(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.saturating_sub(1);
        self.changed.notify_all();
    }

    fn dropped(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.changed.notify_all();
    }

    /// After a held socket closed: whether to connect it again (an output dropped while
    /// open) rather than stop (every output ended). Waits for one or the other.
    fn held_socket_dropped(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.0 > 0 && !s.1 {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.0 > 0
    }
}

/// A websocket of an operation that can be connected again.
#[derive(Clone)]
struct Endpoint {
    client: Client,
    op: String,
    path: String,
}

impl Endpoint {
    fn new(client: &Client, op: &str, secret: &str) -> Self {
        Endpoint {
            client: client.clone(),
            op: op.to_string(),
            path: format!("{op}/websocket?secret={}", encode(secret)),
        }
    }

    fn connect(&self) -> Result<Ws> {
        self.client.websocket(&self.path)
    }

    /// Connects again after a drop, with backoff; `None` once the operation is over (or
    /// the daemon stays away past [`RECONNECT_FOR`]).
    fn reconnect(&self) -> Option<Ws> {
        let deadline = std::time::Instant::now() + RECONNECT_FOR;
        let mut pause = std::time::Duration::from_millis(50);
        while std::time::Instant::now() < deadline {
            if let Ok(ws) = self.connect() {
                return Some(ws);
            }
            // A daemon that answers and has no running operation: nothing to come back to.
            if let Ok(raw) = self.client.raw("GET", &self.op, &[], b"") {
                let running = serde_json::from_slice::<Value>(&raw.body)
                    .ok()
                    .and_then(|v| v["metadata"]["status_code"].as_u64())
                    == Some(103);
                if !running {
                    return None;
                }
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
        }
        None
    }
}

/// `GET <op>/wait`, retried while the daemon is away (restarting).
fn wait_operation(client: &Client, op: &str) -> Result<Value> {
    let deadline = std::time::Instant::now() + RECONNECT_FOR;
    loop {
        match client.get(&format!("{op}/wait?timeout=-1")) {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                // Retried only while the daemon cannot be reached at all.
                if client.raw("GET", "/1.0", &[], b"").is_ok() {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
}

#[derive(Args)]
pub struct ExecArgs {
    pub name: String,
    /// Force a terminal.
    #[arg(short = 't', long = "force-interactive")]
    pub tty: bool,
    /// Never use a terminal.
    #[arg(short = 'T', long = "force-noninteractive")]
    pub no_tty: bool,
    /// Environment variables, KEY=VALUE.
    #[arg(long = "env")]
    pub env: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub user: u32,
    #[arg(long, default_value_t = 0)]
    pub group: u32,
    #[arg(long, default_value = "")]
    pub cwd: String,
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn window_size() -> (u16, u16) {
    let mut ws = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the struct we pass.
    unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    (
        if ws.ws_col > 0 { ws.ws_col } else { 80 },
        if ws.ws_row > 0 { ws.ws_row } else { 24 },
    )
}

/// Runs the command; returns its exit code.
pub fn exec(client: &Client, args: &ExecArgs) -> Result<i32> {
    let interactive = !args.no_tty
        && (args.tty || (std::io::stdin().is_terminal() && std::io::stdout().is_terminal()));
    let (cols, rows) = window_size();
    let mut env = super::pairs(&args.env)?;
    if interactive {
        env.entry("TERM").or_insert_with(|| {
            Value::String(std::env::var("TERM").unwrap_or_else(|_| "xterm".into()))
        });
    }
    let body = json!({
        "command": args.command, "environment": env, "wait-for-websocket": true, "interactive": interactive,
        "width": cols, "height": rows, "record-output": false, "user": args.user, "group": args.group, "cwd": args.cwd,
    });
    let env_resp = client.request(
        "POST",
        &format!("/1.0/instances/{}/exec", encode(&args.name)),
        Some(&body),
    )?;
    let op = env_resp.operation.clone();
    let fds = env_resp.metadata["metadata"]["fds"].clone();
    let endpoint = |fd: &str| -> Result<Endpoint> {
        let secret = fds[fd]
            .as_str()
            .ok_or_else(|| anyhow!("no websocket {fd}"))?;
        Ok(Endpoint::new(client, &op, secret))
    };
    let control = endpoint("control")?;
    let control_ws = control.connect()?;
    if interactive {
        let data = endpoint("0")?;
        let ws0 = data.connect()?;
        run_interactive(ws0, control_ws, false, Some((&data, &control)))?;
    } else {
        let (e0, e1, e2) = (endpoint("0")?, endpoint("1")?, endpoint("2")?);
        let ws0 = e0.connect()?;
        let ws1 = e1.connect()?;
        let ws2 = e2.connect()?;
        let outputs = Outputs::open(2);
        let (o_in, o_out, o_err, o_ctl) = (
            outputs.clone(),
            outputs.clone(),
            outputs.clone(),
            outputs.clone(),
        );
        std::thread::spawn(move || pump_stdin(ws0, &e0, &o_in));
        let out = std::thread::spawn(move || pump_out(ws1, &e1, std::io::stdout(), &o_out));
        let err = std::thread::spawn(move || pump_out(ws2, &e2, std::io::stderr(), &o_err));
        // The control socket is held (and reconnected) while the output runs.
        std::thread::spawn(move || hold(control_ws, &control, &o_ctl));
        let _ = out.join();
        let _ = err.join();
    }
    let result = wait_operation(client, &op)?;
    // A command that never started (a missing cwd) fails with `return` -1 and the reason.
    let failed = result["status_code"].as_u64().unwrap_or(0) >= 400;
    match result["metadata"]["return"].as_i64() {
        Some(code) if !(failed && code < 0) => Ok(code as i32),
        _ => Err(anyhow!(
            "{}",
            result["err"].as_str().unwrap_or("exec failed")
        )),
    }
}

/// Sends `msg`, connecting again (and resending) when the connection dropped; false once
/// the operation is over.
fn send_again(ws: &mut Ws, endpoint: &Endpoint, msg: Message) -> bool {
    loop {
        if ws.send(msg.clone()).is_ok() {
            return true;
        }
        match endpoint.reconnect() {
            Some(new) => *ws = new,
            None => return false,
        }
    }
}

fn pump_stdin(mut ws: Ws, endpoint: &Endpoint, outputs: &Outputs) {
    let mut buf = [0u8; 65536];
    let mut stdin = std::io::stdin();
    while let Ok(n) = stdin.read(&mut buf) {
        if n == 0 || !send_again(&mut ws, endpoint, Message::Binary(buf[..n].to_vec())) {
            break;
        }
    }
    send_again(&mut ws, endpoint, Message::Text(String::new()));
    hold(ws, endpoint, outputs);
}

/// Holds a socket the daemon sends nothing on, connecting it again when it drops (not when
/// the daemon closes it at the end of the session).
fn hold(mut ws: Ws, endpoint: &Endpoint, outputs: &Outputs) {
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => return,
            Ok(_) => {}
            Err(_) if !outputs.held_socket_dropped() => return,
            Err(_) => match endpoint.reconnect() {
                Some(new) => ws = new,
                None => return,
            },
        }
    }
}

fn pump_out(mut ws: Ws, endpoint: &Endpoint, mut out: impl Write, outputs: &Outputs) {
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => {
                let _ = out.write_all(&b);
                let _ = out.flush();
            }
            Ok(Message::Text(t)) if t.is_empty() => break,
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(_) => {
                outputs.dropped();
                match endpoint.reconnect() {
                    Some(new) => ws = new,
                    None => break,
                }
            }
        }
    }
    outputs.ended();
}

/// SIGWINCH sets this; the loop sends the new size.
static RESIZED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_winch(_: libc::c_int) {
    RESIZED.store(1, Ordering::SeqCst);
}

/// Puts the terminal in raw mode until dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> Self {
        let stdin = std::io::stdin();
        match nix::sys::termios::tcgetattr(stdin.as_fd()) {
            Ok(orig) => {
                let mut raw = orig.clone();
                nix::sys::termios::cfmakeraw(&mut raw);
                let _ = nix::sys::termios::tcsetattr(
                    stdin.as_fd(),
                    nix::sys::termios::SetArg::TCSANOW,
                    &raw,
                );
                RawMode(Some(orig))
            }
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}

/// Bridges the terminal and a websocket until the far end ends; with `detachable`,
/// ctrl+a q ends it from this side (as `lxc console` does).
/// With `endpoints` (data, control), a dropped connection is connected again.
fn run_interactive(
    mut ws: Ws,
    mut control: Ws,
    detachable: bool,
    endpoints: Option<(&Endpoint, &Endpoint)>,
) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let _raw = RawMode::enter();
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGWINCH,
            nix::sys::signal::SigHandler::Handler(on_winch),
        );
    }
    let mut sock = ws.get_ref().as_fd().try_clone_to_owned()?;
    // Messages may already sit decoded above the socket (the websocket's buffer, TLS
    // records read whole): after each wake every ready message is read, a short timeout
    // saying when there are no more.
    ws.get_ref()
        .set_read_timeout(Some(std::time::Duration::from_millis(1)))?;
    // Connects both sockets again after a drop; false once the session is over.
    let reconnect = |ws: &mut Ws, control: &mut Ws, sock: &mut std::os::fd::OwnedFd| {
        let Some((data_ep, control_ep)) = endpoints else {
            return Ok(false);
        };
        let Some(new) = data_ep.reconnect() else {
            return Ok(false);
        };
        *ws = new;
        if let Some(c) = control_ep.reconnect() {
            *control = c;
        }
        *sock = ws.get_ref().as_fd().try_clone_to_owned()?;
        ws.get_ref()
            .set_read_timeout(Some(std::time::Duration::from_millis(1)))?;
        // The terminal's size may have changed meanwhile.
        RESIZED.store(1, Ordering::SeqCst);
        Ok::<bool, anyhow::Error>(true)
    };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 16384];
    let mut stdin_open = true;
    let mut ctrl_a = false;
    loop {
        if RESIZED.swap(0, Ordering::SeqCst) == 1 {
            let (cols, rows) = window_size();
            let msg = json!({"command": "window-resize", "args": {"width": cols.to_string(), "height": rows.to_string()}, "signal": 0});
            let _ = control.send(Message::Text(msg.to_string()));
        }
        let mut fds = vec![PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        if stdin_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Err(nix::errno::Errno::EINTR) | Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let stdin_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .is_some_and(|r| !r.is_empty());
        if stdin_ready {
            let n = stdin.lock().read(&mut buf).unwrap_or(0);
            if n == 0 {
                stdin_open = false;
            } else {
                if detachable {
                    for &b in &buf[..n] {
                        if ctrl_a && b == b'q' {
                            let _ = control.close(None);
                            let _ = control.flush();
                            return Ok(());
                        }
                        ctrl_a = b == 0x01;
                    }
                }
                let msg = Message::Binary(buf[..n].to_vec());
                while ws.send(msg.clone()).is_err() {
                    if !reconnect(&mut ws, &mut control, &mut sock)? {
                        return Ok(());
                    }
                }
            }
        }
        // Also after a timeout: what is buffered above the socket does not wake poll.
        {
            let mut ended = false;
            let mut dropped = false;
            loop {
                match ws.read() {
                    Ok(Message::Binary(b)) => {
                        stdout.write_all(&b)?;
                        stdout.flush()?;
                    }
                    Ok(Message::Text(t)) if t.is_empty() => ended = true,
                    Ok(Message::Close(_)) => ended = true,
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(_) => {
                        dropped = true;
                        break;
                    }
                    Ok(_) => {}
                }
                if ended {
                    break;
                }
            }
            if ended {
                break;
            }
            if dropped && !reconnect(&mut ws, &mut control, &mut sock)? {
                break;
            }
        }
    }
    Ok(())
}

/// `hutch console NAME`: attach to the console (ctrl+a q detaches).
/// `hutch console NAME [--show-log]`.
#[derive(Args)]
pub struct ConsoleArgs {
    pub name: String,
    /// Print the console log instead of attaching.
    #[arg(long)]
    pub show_log: bool,
}

/// Attaches to the console, or prints its log.
pub fn console(client: &Client, args: &ConsoleArgs) -> Result<()> {
    if args.show_log {
        console_log(client, &args.name)
    } else {
        console_attach(client, &args.name)
    }
}

pub fn console_attach(client: &Client, name: &str) -> Result<()> {
    let (cols, rows) = window_size();
    let env = client.request(
        "POST",
        &format!("/1.0/instances/{}/console", encode(name)),
        Some(&json!({"width": cols, "height": rows, "type": "console"})),
    )?;
    let op = env.operation.clone();
    let fds = env.metadata["metadata"]["fds"].clone();
    let endpoint = |fd: &str| Endpoint::new(client, &op, fds[fd].as_str().unwrap_or_default());
    let (control_ep, data_ep) = (endpoint("control"), endpoint("0"));
    let control = control_ep.connect()?;
    let data = data_ep.connect()?;
    eprintln!("To detach from the console, press: <ctrl>+a q\r");
    run_interactive(data, control, true, Some((&data_ep, &control_ep)))
}

/// `hutch console NAME --show-log`.
pub fn console_log(client: &Client, name: &str) -> Result<()> {
    let raw = client.raw(
        "GET",
        &format!("/1.0/instances/{}/console", encode(name)),
        &[],
        b"",
    )?;
    if raw.status != 200 {
        crate::http::parse_envelope(&raw)?;
    }
    std::io::stdout().write_all(&raw.body)?;
    Ok(())
}
