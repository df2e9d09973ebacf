//! Running a command inside a running container, through a fresh exec helper process
//! (`<hutchd> __exec <dir>`). Needs only the container's runtime directory: no daemon
//! and no round trip to the monitor.

mod helper;
pub mod protocol;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use helper::CONTROL_FD;
pub use helper::{exec_main, set_window_size};
use protocol::{recv_msg, send_msg, ExecControl, ExecEvent};
pub use protocol::{ExecRequest, WindowSize};

use crate::error::{Result, RuntimeError};

/// Where the command's input and output go.
#[derive(Debug)]
pub enum ExecStdio {
    /// Three separate fds, handed to the command as they are (no copying through us).
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A new pty inside the container; its master comes back in the session.
    Pty,
}

/// How an exec'd command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExecExit {
    /// The exit code as LXD reports it: the code, or 128 + the signal number.
    pub fn code(&self) -> i32 {
        self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0))
    }
}

/// A running command.
#[derive(Debug)]
pub struct ExecSession {
    control: OwnedFd,
    helper: Child,
    pty: Option<File>,
    /// Host pid of the command.
    pub pid: i32,
}

/// Starts `req` in the container whose runtime directory is `dir`.
pub fn exec(hutchd: &Path, dir: &Path, req: &ExecRequest, stdio: ExecStdio) -> Result<ExecSession> {
    if req.command.is_empty() {
        return Err(RuntimeError::ExecFailed {
            reason: "no command given".into(),
        });
    }
    if req.pty.is_some() != matches!(stdio, ExecStdio::Pty) {
        return Err(RuntimeError::ExecFailed {
            reason: "a pty size is given exactly when stdio is a pty".into(),
        });
    }
    // Refuse a stopped container here, with a typed error, rather than in the helper.
    if !crate::state::RuntimeDir::new(dir).state().exists() {
        return Err(RuntimeError::NotRunning {
            dir: dir.to_path_buf(),
        });
    }
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::sys("create the exec socket", e))?;
    let mut cmd = Command::new(hutchd);
    cmd.arg("__exec").arg(dir);
    match stdio {
        ExecStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            cmd.stdin(Stdio::from(stdin))
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(stderr));
        }
        ExecStdio::Pty => {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
        }
    }
    let fd = theirs.as_raw_fd();
    // SAFETY: the closure only calls async-signal-safe dup2/fcntl on fds we own.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == CONTROL_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, CONTROL_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let helper = cmd
        .spawn()
        .map_err(|e| RuntimeError::io("run", hutchd, e))?;
    drop(cmd);
    drop(theirs);
    let mut session = ExecSession {
        control: ours,
        helper,
        pty: None,
        pid: 0,
    };
    send_msg(session.control.as_fd(), req, None)?;
    match recv_msg::<ExecEvent>(session.control.as_fd(), "started")? {
        Some((ExecEvent::Started { pid }, fd)) => {
            session.pid = pid;
            session.pty = fd.map(File::from);
            if req.pty.is_some() && session.pty.is_none() {
                return Err(RuntimeError::Protocol {
                    peer: "exec helper",
                    expected: "a pty",
                    got: "none".into(),
                });
            }
            Ok(session)
        }
        Some((ExecEvent::Failed { message }, _)) => {
            let _ = session.helper.wait();
            Err(RuntimeError::ExecFailed { reason: message })
        }
        Some((other, _)) => Err(RuntimeError::Protocol {
            peer: "exec helper",
            expected: "started",
            got: format!("{other:?}"),
        }),
        None => {
            let _ = session.helper.wait();
            Err(RuntimeError::ExecFailed {
                reason: "the exec helper died".into(),
            })
        }
    }
}

/// A handle that can signal and resize a running command while another thread waits for it.
#[derive(Debug)]
pub struct ExecController {
    control: OwnedFd,
    pty: Option<File>,
}

impl ExecController {
    /// Forwards a signal to the command.
    pub fn signal(&self, signal: i32) -> Result<()> {
        send_msg(self.control.as_fd(), &ExecControl::Signal { signal }, None)
    }

    /// Resizes the pty (an error when the command has none).
    pub fn resize(&self, size: WindowSize) -> Result<()> {
        match &self.pty {
            Some(master) => set_window_size(master.as_fd(), size),
            None => Err(RuntimeError::ExecFailed {
                reason: "not a pty session".into(),
            }),
        }
    }
}

impl ExecSession {
    /// A controller sharing this session's control socket and pty.
    pub fn controller(&self) -> Result<ExecController> {
        let control = self
            .control
            .try_clone()
            .map_err(|e| RuntimeError::io("dup", "exec control socket", e))?;
        let pty = match &self.pty {
            Some(p) => Some(
                p.try_clone()
                    .map_err(|e| RuntimeError::io("dup", "exec pty", e))?,
            ),
            None => None,
        };
        Ok(ExecController { control, pty })
    }

    /// The pty master, in pty mode.
    pub fn pty(&self) -> Option<&File> {
        self.pty.as_ref()
    }

    /// Takes the pty master out of the session (to hand it to a reader thread).
    pub fn take_pty(&mut self) -> Option<File> {
        self.pty.take()
    }

    /// Resizes the pty.
    pub fn resize(&self, size: WindowSize) -> Result<()> {
        match &self.pty {
            Some(master) => set_window_size(master.as_fd(), size),
            None => Err(RuntimeError::ExecFailed {
                reason: "not a pty session".into(),
            }),
        }
    }

    /// Forwards a signal to the command.
    pub fn signal(&self, signal: i32) -> Result<()> {
        send_msg(self.control.as_fd(), &ExecControl::Signal { signal }, None)
    }

    /// Waits for the command to end.
    pub fn wait(mut self) -> Result<ExecExit> {
        let event = recv_msg::<ExecEvent>(self.control.as_fd(), "exited");
        let _ = self.helper.wait();
        match event? {
            Some((ExecEvent::Exited { code, signal }, _)) => Ok(ExecExit { code, signal }),
            Some((ExecEvent::Failed { message }, _)) => {
                Err(RuntimeError::ExecFailed { reason: message })
            }
            Some((other, _)) => Err(RuntimeError::Protocol {
                peer: "exec helper",
                expected: "exited",
                got: format!("{other:?}"),
            }),
            None => Err(RuntimeError::ExecFailed {
                reason: "the exec helper died before the command ended".into(),
            }),
        }
    }
}
