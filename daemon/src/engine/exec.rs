//! Exec: a command run in a running instance by the runtime's exec helper. The engine
//! checks the request, turns it into what the runtime runs (environment, user, cwd), makes
//! the pipes, pty or record logs and starts the helper; the API bridges what it hands
//! back (pipe ends, the pty, a control handle) to websockets.
//!
//! Sessions outlive the daemon: the helper keeps them (`<rundir>/exec/<id>.sock`), the
//! operation's identity lies beside them (`<id>.json`), and a new daemon finds, attaches
//! to and serves them again under the same operation ([`Engine::kept_exec_sessions`]).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use hutch_api::instance::InstanceExecPost;
use hutch_api::operation::StatusCode;
use hutch_runtime::{ExecController, ExecRequest, ExecSession, ExecStdio, WindowSize};
use serde::{Deserialize, Serialize};
use tokio::net::unix::pipe;

use super::revert::Revert;
use super::{blocking, expand, runtime_status, Engine};
use crate::error::{DaemonError, Result};

/// An exec the engine accepted (the instance runs, the command is well formed), ready to
/// start in one of three ways.
#[derive(Debug)]
pub struct Exec {
    engine: Engine,
    name: String,
    request: ExecRequest,
}

impl Engine {
    /// Writes a session's identity beside its socket (before the session starts).
    fn write_session_identity(&self, identity: &SessionIdentity) -> Result<PathBuf> {
        let rundir = self.d.runtime_dir(&identity.instance);
        let (socket, path) = hutch_runtime::exec_session_paths(&rundir, &identity.id);
        let json = serde_json::to_vec(identity)
            .map_err(|e| DaemonError::failed("write", "the session identity", e))?;
        // It holds the websocket secrets: root alone reads it (and lists its directory).
        crate::layout::write_private(&path, &json)
            .map_err(|e| DaemonError::io("write", &path, e))?;
        Ok(socket)
    }

    /// The kept exec sessions of the running instances, each attached to (blocking: call
    /// at start, from a blocking task). Leftovers of sessions that are gone (a socket
    /// nobody listens on, an identity without a socket) are removed.
    pub fn kept_exec_sessions(&self) -> Vec<(SessionIdentity, AdoptedExec)> {
        let mut found = Vec::new();
        let Ok(instances) = std::fs::read_dir(self.d.dir.join("containers")) else {
            return found;
        };
        for instance in instances.flatten() {
            let dir = hutch_runtime::exec_sessions_dir(&instance.path());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "sock") {
                    // A socket whose identity is gone cannot be served: its session ends.
                    if !path.with_extension("json").exists() {
                        if let Ok((session, _)) = hutch_runtime::exec_attach(&path) {
                            let _ = session.controller().map(|c| c.kill());
                            let _ = session.wait();
                        }
                        let _ = std::fs::remove_file(&path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                match self.adopt_session(&path) {
                    Ok(adopted) => found.push(adopted),
                    Err(e) => {
                        tracing::info!(session = %path.display(), error = %e.chain(), "exec session gone");
                        let _ = std::fs::remove_file(&path);
                        let _ = std::fs::remove_file(path.with_extension("sock"));
                    }
                }
            }
        }
        found
    }

    fn adopt_session(&self, identity: &Path) -> Result<(SessionIdentity, AdoptedExec)> {
        let raw = std::fs::read(identity).map_err(|e| DaemonError::io("read", identity, e))?;
        let id: SessionIdentity = serde_json::from_slice(&raw)
            .map_err(|e| DaemonError::failed("read", identity.display(), e))?;
        let (mut session, pipes) = hutch_runtime::exec_attach(&identity.with_extension("sock"))?;
        let adopted = if id.secrets.is_empty() {
            AdoptedExec::Detached(ExecProcess { session })
        } else if id.interactive {
            let controls = ExecControls(session.controller()?);
            let master = session
                .take_pty()
                .ok_or_else(|| DaemonError::failed("attach to", "the session", "it has no pty"))?;
            AdoptedExec::Pty(pty_exec(master, controls, session)?)
        } else {
            let pipes = pipes.ok_or_else(|| {
                DaemonError::failed("attach to", "the session", "it has no pipes")
            })?;
            let registered = |e| DaemonError::io("register", "exec pipe", e);
            AdoptedExec::Pipes(PipedExec {
                stdin: pipes
                    .stdin
                    .map(pipe::Sender::from_owned_fd)
                    .transpose()
                    .map_err(registered)?,
                stdout: pipe::Receiver::from_owned_fd(pipes.stdout).map_err(registered)?,
                stderr: pipe::Receiver::from_owned_fd(pipes.stderr).map_err(registered)?,
                process: ExecProcess { session },
            })
        };
        Ok((id, adopted))
    }
}

/// A pty session's halves for the API.
fn pty_exec(
    master: std::fs::File,
    controls: ExecControls,
    session: ExecSession,
) -> Result<PtyExec> {
    let writer = master
        .try_clone()
        .map_err(|e| DaemonError::io("dup", "pty", e))?;
    Ok(PtyExec {
        reader: tokio::fs::File::from_std(master),
        writer: tokio::fs::File::from_std(writer),
        controls,
        process: ExecProcess { session },
    })
}

/// What a new daemon needs to serve a kept session again as the same operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionIdentity {
    /// The operation's id.
    pub id: String,
    pub instance: String,
    pub created_at: String,
    /// Websocket secrets by fd (`0`, `1`, `2`, `control`); none for an exec without
    /// websockets.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    pub interactive: bool,
    #[serde(default)]
    pub record_output: bool,
    /// The operation's metadata as clients saw it.
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// A kept session found at start and attached to, in the shape it was started in.
#[derive(Debug)]
pub enum AdoptedExec {
    Pipes(PipedExec),
    Pty(PtyExec),
    /// An exec without websockets (its output discarded or recorded).
    Detached(ExecProcess),
}

/// A command started with three pipes: the API writes `stdin` and reads the others.
#[derive(Debug)]
pub struct PipedExec {
    /// `None` when the input had ended before this daemon attached.
    pub stdin: Option<pipe::Sender>,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub process: ExecProcess,
}

/// A command started on a pty: its master, for reading and for writing, and the
/// controls that resize it.
#[derive(Debug)]
pub struct PtyExec {
    pub reader: tokio::fs::File,
    pub writer: tokio::fs::File,
    pub controls: ExecControls,
    pub process: ExecProcess,
}

/// A running command: controlled while it runs, waited for once.
#[derive(Debug)]
pub struct ExecProcess {
    session: ExecSession,
}

/// Resizes and signals a running command while another task waits for it.
#[derive(Debug)]
pub struct ExecControls(ExecController);

impl Engine {
    /// Checks `POST .../exec` (the instance exists, runs and is not frozen; a command is
    /// given) and prepares the command with LXD's environment rules: `environment.*` keys
    /// fill what the request leaves unset, PATH has a default, root gets HOME and USER,
    /// LANG is set.
    pub fn exec(&self, name: &str, req: &InstanceExecPost) -> Result<Exec> {
        let row = self.d.db.instance_or_404(name)?;
        match runtime_status(&self.d, name).0 {
            StatusCode::Running => {}
            StatusCode::Frozen => return Err(DaemonError::BadRequest("Instance is frozen".into())),
            _ => return Err(DaemonError::BadRequest("Instance is not running".into())),
        }
        if req.command.is_empty() {
            return Err(DaemonError::BadRequest("No command given".into()));
        }
        let expanded = expand(&self.d, &row)?;
        Ok(Exec {
            engine: self.clone(),
            name: name.to_string(),
            request: exec_request(&expanded.config, req),
        })
    }
}

/// The runtime request for `req` in an instance whose expanded config is `config`.
fn exec_request(config: &BTreeMap<String, String>, req: &InstanceExecPost) -> ExecRequest {
    let mut env: BTreeMap<String, String> = config
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("environment.")
                .map(|var| (var.to_string(), v.clone()))
        })
        .collect();
    env.extend(req.environment.clone());
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.entry("LANG".into()).or_insert_with(|| "C.UTF-8".into());
    if req.user == 0 {
        env.entry("HOME".into()).or_insert_with(|| "/root".into());
        env.entry("USER".into()).or_insert_with(|| "root".into());
    }
    let cwd = if req.cwd.is_empty() {
        env.get("HOME").cloned()
    } else {
        Some(req.cwd.clone())
    };
    let pty = req.interactive.then_some(WindowSize {
        cols: if req.width > 0 { req.width } else { 80 },
        rows: if req.height > 0 { req.height } else { 24 },
    });
    ExecRequest {
        command: req.command.clone(),
        env,
        cwd,
        uid: req.user,
        gid: req.group,
        pty,
    }
}

/// What an exit code means for the operation: LXD fails it for 127 and 126.
pub fn exit_result(code: i32) -> Result<()> {
    match code {
        127 => Err(DaemonError::BadRequest("Command not found".into())),
        126 => Err(DaemonError::BadRequest("Command not executable".into())),
        _ => Ok(()),
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| DaemonError::failed("make", "pipe", std::io::Error::from(e)))
}

fn dev_null() -> Result<OwnedFd> {
    std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(Into::into)
        .map_err(|e| DaemonError::io("open", "/dev/null", e))
}

/// Creates a record log for writing.
fn create_log(path: &Path) -> Result<OwnedFd> {
    std::fs::File::create(path)
        .map(OwnedFd::from)
        .map_err(|e| DaemonError::io("create", path, e))
}

impl Exec {
    /// The command's environment (the websocket operation shows it).
    pub fn environment(&self) -> &BTreeMap<String, String> {
        &self.request.env
    }

    /// Starts the helper, keeping the session as `identity` (blocking: call from a
    /// blocking task); `ends` are the daemon's pipe ends the helper holds too.
    fn start(
        engine: &Engine,
        name: &str,
        req: &ExecRequest,
        stdio: ExecStdio,
        identity: &SessionIdentity,
        ends: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<ExecSession> {
        let socket = engine.write_session_identity(identity)?;
        // The runtime removes the socket and the identity when the start fails.
        Ok(hutch_runtime::exec_kept(
            &engine.d.helper,
            &engine.d.runtime_dir(name),
            req,
            stdio,
            &socket,
            ends,
        )?)
    }

    /// Runs the command with three pipes; their other ends are the command's stdio.
    pub async fn start_pipes(self, identity: SessionIdentity) -> Result<PipedExec> {
        let (in_r, in_w) = pipe_pair()?;
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        let stdio = ExecStdio::Pipes {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        };
        let Exec {
            engine,
            name,
            request,
        } = self;
        let (session, in_w, out_r, err_r) = blocking(move || {
            use std::os::fd::AsFd;
            let ends = [in_w.as_fd(), out_r.as_fd(), err_r.as_fd()];
            let session = Self::start(&engine, &name, &request, stdio, &identity, &ends)?;
            Ok((session, in_w, out_r, err_r))
        })
        .await?;
        let registered = |e| DaemonError::io("register", "exec pipe", e);
        Ok(PipedExec {
            stdin: Some(pipe::Sender::from_owned_fd(in_w).map_err(registered)?),
            stdout: pipe::Receiver::from_owned_fd(out_r).map_err(registered)?,
            stderr: pipe::Receiver::from_owned_fd(err_r).map_err(registered)?,
            process: ExecProcess { session },
        })
    }

    /// Runs the command on a new pty inside the instance.
    pub async fn start_pty(self, identity: SessionIdentity) -> Result<PtyExec> {
        let Exec {
            engine,
            name,
            request,
        } = self;
        let mut session =
            blocking(move || Self::start(&engine, &name, &request, ExecStdio::Pty, &identity, &[]))
                .await?;
        // The controls share the pty, for window-resize: taken before the pty goes.
        let controls = ExecControls(session.controller()?);
        let master = session
            .take_pty()
            .ok_or_else(|| DaemonError::failed("take", "the pty", "the exec session has none"))?;
        pty_exec(master, controls, session)
    }

    /// Starts the command with no input and its output discarded, or recorded in the
    /// instance's logs as `exec_<id>.stdout|stderr` when `record_output`: the running
    /// command and the names of its logs. Logs of a command that could not start are
    /// removed.
    pub async fn start_detached(
        self,
        identity: SessionIdentity,
    ) -> Result<(ExecProcess, Option<(String, String)>)> {
        let id = identity.id.clone();
        let record = identity.record_output;
        let (session, logs) = blocking(move || {
            let mut revert = Revert::new();
            let (stdout, stderr, logs) = if record {
                let dir = self.engine.exec_logs_dir(&self.name);
                std::fs::create_dir_all(&dir).map_err(|e| DaemonError::io("create", &dir, e))?;
                let names = (format!("exec_{id}.stdout"), format!("exec_{id}.stderr"));
                let mut open = |name: &str| -> Result<OwnedFd> {
                    let path: PathBuf = dir.join(name);
                    let fd = create_log(&path)?;
                    revert.add(move || {
                        let _ = std::fs::remove_file(&path);
                    });
                    Ok(fd)
                };
                (open(&names.0)?, open(&names.1)?, Some(names))
            } else {
                (dev_null()?, dev_null()?, None)
            };
            let stdio = ExecStdio::Pipes {
                stdin: dev_null()?,
                stdout,
                stderr,
            };
            let session = Self::start(
                &self.engine,
                &self.name,
                &self.request,
                stdio,
                &identity,
                &[],
            )?;
            revert.success();
            Ok((session, logs))
        })
        .await?;
        Ok((ExecProcess { session }, logs))
    }
}

impl ExecProcess {
    /// A handle that resizes and signals the command while `wait` runs.
    pub fn controls(&self) -> Result<ExecControls> {
        Ok(ExecControls(self.session.controller()?))
    }

    /// Waits for the command to end: its exit code, or 128 + the signal that ended it.
    pub async fn wait(self) -> Result<i32> {
        let session = self.session;
        let exit = blocking(move || Ok(session.wait()?)).await?;
        Ok(exit.code())
    }
}

impl ExecControls {
    /// Kills the command and its process group (a cancelled exec).
    pub fn kill(&self) -> Result<()> {
        Ok(self.0.kill()?)
    }

    /// Ends the command's input (the session's own copy of stdin's write end closes).
    pub fn close_stdin(&self) -> Result<()> {
        Ok(self.0.close_stdin()?)
    }

    /// Resizes the command's pty.
    pub fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        Ok(self.0.resize(WindowSize { cols, rows })?)
    }

    /// Forwards a signal to the command.
    pub fn signal(&self, signal: i32) -> Result<()> {
        Ok(self.0.signal(signal)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_follows_lxd() {
        let config = BTreeMap::from([
            ("environment.FOO".to_string(), "bar".to_string()),
            ("environment.LANG".to_string(), "fr_FR.UTF-8".to_string()),
            ("limits.cpu".to_string(), "1".to_string()),
        ]);
        let req = InstanceExecPost {
            command: vec!["sh".into()],
            environment: BTreeMap::from([("FOO".to_string(), "baz".to_string())]),
            ..Default::default()
        };
        let run = exec_request(&config, &req);
        assert_eq!(run.env["FOO"], "baz");
        assert_eq!(run.env["LANG"], "fr_FR.UTF-8");
        assert_eq!(run.env["HOME"], "/root");
        assert_eq!(run.env["USER"], "root");
        assert!(run.env["PATH"].contains("/usr/bin"));
        assert!(!run.env.contains_key("limits.cpu"));
        assert_eq!(run.cwd.as_deref(), Some("/root"));
        assert!(run.pty.is_none());

        let req = InstanceExecPost {
            command: vec!["sh".into()],
            user: 1000,
            cwd: "/tmp".into(),
            interactive: true,
            width: 132,
            ..Default::default()
        };
        let run = exec_request(&BTreeMap::new(), &req);
        assert!(!run.env.contains_key("HOME") && !run.env.contains_key("USER"));
        assert_eq!(run.cwd.as_deref(), Some("/tmp"));
        assert_eq!(
            run.pty,
            Some(WindowSize {
                cols: 132,
                rows: 24
            })
        );
    }

    #[test]
    fn commands_not_found_or_not_executable_fail_the_operation() {
        assert!(exit_result(0).is_ok() && exit_result(1).is_ok() && exit_result(130).is_ok());
        assert_eq!(
            exit_result(127).unwrap_err().to_string(),
            "Command not found"
        );
        assert_eq!(
            exit_result(126).unwrap_err().to_string(),
            "Command not executable"
        );
    }

    #[tokio::test]
    async fn a_recorded_exec_that_cannot_start_leaves_no_logs() {
        let api = crate::api::testing::TestApi::new().await;
        let e = &api.engine;
        e.add_stopped_instance("c1");
        let req = InstanceExecPost {
            command: vec!["true".into()],
            record_output: true,
            ..Default::default()
        };
        let e1 = e.exec("c1", &req).unwrap_err();
        assert_eq!(e1.to_string(), "Instance is not running");
        // Past the check (the instance stopped since), the helper cannot start.
        let run = Exec {
            engine: e.clone(),
            name: "c1".into(),
            request: exec_request(&BTreeMap::new(), &req),
        };
        let identity = SessionIdentity {
            id: "op1".into(),
            instance: "c1".into(),
            created_at: String::new(),
            secrets: BTreeMap::new(),
            interactive: false,
            record_output: true,
            metadata: serde_json::Value::Null,
        };
        run.start_detached(identity).await.unwrap_err();
        let logs = e.exec_logs_dir("c1");
        assert!(logs.is_dir(), "the logs directory was made");
        assert_eq!(
            std::fs::read_dir(&logs).unwrap().count(),
            0,
            "no log is left"
        );
    }
}
