//! Running a command inside a running container, through a fresh exec helper process
//! (`<hutchd-helper> __exec <dir>`). Needs only the container's runtime directory: no daemon
//! and no round trip to the monitor.

mod helper;
mod keeper;
pub mod protocol;

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::unistd::Pid;

use helper::CONTROL_FD;
pub use helper::{exec_main, set_window_size, BORN_IN_CGROUP2};
use protocol::{recv_msg, send_msg, ExecControl, ExecEvent, StartRequest, PROTOCOL_VERSION};
pub use protocol::{ExecRequest, WindowSize};

/// The directory of a container's kept exec sessions (`<rundir>/exec`).
pub fn sessions_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("exec")
}

/// Where the session `id` listens, and where its identity (written by the daemon) lies.
pub fn session_paths(dir: &Path, id: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let d = sessions_dir(dir);
    (d.join(format!("{id}.sock")), d.join(format!("{id}.json")))
}

/// Removes a kept session's socket and identity.
fn remove_session_files(socket: &Path) {
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(socket.with_extension("json"));
}

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

/// The daemon's ends of a piped session it re-attached to.
#[derive(Debug)]
pub struct AttachedPipes {
    /// `None` once the input was closed.
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The exec helper process, a child of ours: reaped by `wait`, or else when dropped.
#[derive(Debug)]
struct Helper {
    pid: Pid,
    reaped: bool,
}

impl Helper {
    fn wait(&mut self) {
        let _ = nix::sys::wait::waitpid(self.pid, None);
        self.reaped = true;
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if !self.reaped {
            // It leaves once its control socket (dropped first, see ExecSession) closes.
            let pid = self.pid;
            std::thread::spawn(move || nix::sys::wait::waitpid(pid, None));
        }
    }
}

/// A running command.
#[derive(Debug)]
pub struct ExecSession {
    /// Declared before `helper`: dropped first, so an unwaited helper sees its end.
    control: OwnedFd,
    /// `None` for a session attached to (started by another daemon).
    helper: Option<Helper>,
    pty: Option<File>,
    /// Host pid of the command.
    pub pid: i32,
    /// The socket of a kept session, removed with its identity once the end is acknowledged.
    kept: Option<std::path::PathBuf>,
}

/// Starts `req` in the container whose runtime directory is `dir`; the session ends with
/// its caller.
pub fn exec(
    helper_bin: &Path,
    dir: &Path,
    req: &ExecRequest,
    stdio: ExecStdio,
) -> Result<ExecSession> {
    start(helper_bin, dir, req, stdio, None, &[])
}

/// Starts `req` as [`exec`] does, the helper keeping the session for later daemons on
/// `socket` (see [`session_paths`]); with pipes, `caller_ends` are the caller's ends
/// (stdin's write end, stdout's and stderr's read ends), which it holds for them.
pub fn exec_kept(
    helper_bin: &Path,
    dir: &Path,
    req: &ExecRequest,
    stdio: ExecStdio,
    socket: &Path,
    caller_ends: &[BorrowedFd<'_>],
) -> Result<ExecSession> {
    std::fs::create_dir_all(sessions_dir(dir))
        .map_err(|e| RuntimeError::io("create", sessions_dir(dir), e))?;
    let started = start(helper_bin, dir, req, stdio, Some(socket), caller_ends);
    if started.is_err() {
        remove_session_files(socket);
    }
    started
}

fn start(
    helper_bin: &Path,
    dir: &Path,
    req: &ExecRequest,
    stdio: ExecStdio,
    keep: Option<&Path>,
    caller_ends: &[BorrowedFd<'_>],
) -> Result<ExecSession> {
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
    let state = crate::state::read_json::<crate::state::MonitorState>(
        &crate::state::RuntimeDir::new(dir).state(),
    )
    .ok()
    .flatten()
    .ok_or_else(|| RuntimeError::NotRunning {
        dir: dir.to_path_buf(),
    })?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| RuntimeError::sys("create the exec socket", e))?;
    let helper = spawn_helper(helper_bin, dir, &state, stdio, theirs)?;
    let mut session = ExecSession {
        control: ours,
        helper: Some(Helper {
            pid: helper,
            reaped: false,
        }),
        pty: None,
        pid: 0,
        kept: None,
    };
    let ends: Vec<_> = caller_ends.iter().map(|f| f.as_raw_fd()).collect();
    let start = StartRequest {
        request: req.clone(),
        keep: keep.map(Path::to_path_buf),
    };
    send_msg(session.control.as_fd(), &start, &ends)?;
    match recv_msg::<ExecEvent>(session.control.as_fd(), "started")? {
        Some((ExecEvent::Started { pid }, fds)) => {
            session.pid = pid;
            session.pty = fds.into_iter().next().map(File::from);
            session.kept = keep.map(Path::to_path_buf);
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
            session.reap();
            Err(RuntimeError::ExecFailed { reason: message })
        }
        Some((other, _)) => Err(RuntimeError::Protocol {
            peer: "exec helper",
            expected: "started",
            got: format!("{other:?}"),
        }),
        None => {
            session.reap();
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
        send_msg(self.control.as_fd(), &ExecControl::Signal { signal }, &[])
    }

    /// Kills the command and its process group.
    pub fn kill(&self) -> Result<()> {
        send_msg(self.control.as_fd(), &ExecControl::Kill, &[])
    }

    /// Tells a kept session that the input ended (it closes its copy of stdin).
    pub fn close_stdin(&self) -> Result<()> {
        send_msg(self.control.as_fd(), &ExecControl::CloseStdin, &[])
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

/// Starts `hutchd-helper __exec DIR` with `stdio` and the control socket on fd 3: born in the
/// container's cgroup2 directory where the kernel allows it (it then joins only the v1
/// hierarchies, if any), else by posix_spawn (it then moves itself in).
fn spawn_helper(
    helper_bin: &Path,
    dir: &Path,
    state: &crate::state::MonitorState,
    stdio: ExecStdio,
    control: OwnedFd,
) -> Result<Pid> {
    let (stdin, stdout, stderr) = match stdio {
        ExecStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => (stdin, stdout, stderr),
        ExecStdio::Pty => {
            let null = || {
                File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .map(OwnedFd::from)
                    .map_err(|e| RuntimeError::io("open", Path::new("/dev/null"), e))
            };
            (null()?, null()?, null()?)
        }
    };
    // The helper runs from a read-only bind of hutchd-helper: a container process that reaches
    // /proc/<helper>/exe cannot write through it.
    let exe = crate::sys::helper_exe(helper_bin).unwrap_or_else(|| helper_bin.to_path_buf());
    let stdio = [&stdin, &stdout, &stderr];
    if let Some(pid) = spawn_into_cgroup2(helper_bin, &exe, dir, state, stdio, &control)? {
        return Ok(pid);
    }
    let stdio = [&stdin, &stdout, &stderr].map(crate::spawn::fd);
    // Reaped through its pid, like the helpers born by clone3.
    crate::spawn::spawn(
        &exe,
        &[helper_bin.as_os_str(), "__exec".as_ref(), dir.as_os_str()],
        stdio,
        (control.as_raw_fd(), CONTROL_FD),
    )
    .map_err(|e| RuntimeError::io("run", helper_bin, e))
}

/// The helper born in the container's cgroup2 directory (or its exec leaf) by clone3;
/// `None` where that cannot be, for the caller to spawn it plainly.
fn spawn_into_cgroup2(
    helper_bin: &Path,
    exe: &Path,
    dir: &Path,
    state: &crate::state::MonitorState,
    stdio: [&OwnedFd; 3],
    control: &OwnedFd,
) -> Result<Option<Pid>> {
    let cg = crate::cgroup::open(
        &state.cgroup_layout,
        &state.cgroup,
        std::sync::Arc::new(crate::cgroup::RealCgroupFs),
    );
    let Some(v2) = cg.v2_dir() else {
        return Ok(None);
    };
    // The dups below must not overwrite a source before it is used.
    let fds = stdio.map(|f| f.as_raw_fd());
    if fds.iter().chain([&control.as_raw_fd()]).any(|fd| *fd <= 2) {
        return Ok(None);
    }
    // Everything the child needs is made now: after clone3 in this multithreaded process
    // it may only make raw system calls.
    let cstr = |b: &[u8]| {
        CString::new(b).map_err(|_| RuntimeError::ExecFailed {
            reason: "a NUL byte in the helper's command line or environment".into(),
        })
    };
    let program = cstr(exe.as_os_str().as_bytes())?;
    let argv = [
        cstr(helper_bin.as_os_str().as_bytes())?,
        cstr(b"__exec")?,
        cstr(dir.as_os_str().as_bytes())?,
        cstr(helper::BORN_IN_CGROUP2.as_bytes())?,
    ];
    let envp = crate::spawn::environment().map_err(|e| RuntimeError::ExecFailed {
        reason: e.to_string(),
    })?;
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect::<Vec<_>>()
    };
    let (argv_p, envp_p) = (ptrs(&argv), ptrs(&envp));
    let ctl = control.as_raw_fd();
    for target in [v2.clone(), v2.join(crate::cgroup::EXEC_LEAF)] {
        let Ok(cgroup) = crate::sys::open_cgroup_dir(&target) else {
            continue;
        };
        // SAFETY: the child makes raw system calls only, on memory prepared above, and
        // leaves by execve or _exit.
        match unsafe { crate::sys::fork_into_cgroup(cgroup.as_fd()) } {
            Ok(nix::unistd::ForkResult::Child) => {
                helper_child(fds, ctl, &program, &argv_p, &envp_p)
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => return Ok(Some(child)),
            // EBUSY: a cgroup that may not hold processes (v2, once systemd inside enabled
            // controllers); its exec leaf is next.
            Err(_) => continue,
        }
    }
    Ok(None)
}

/// The child side of `spawn_into_cgroup2`: stdio on 0-2, the control socket on 3, the
/// signal state std's spawn would give, then the helper. Raw system calls only.
fn helper_child(
    stdio: [i32; 3],
    control: i32,
    program: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: dup2, fcntl, sigemptyset, sigprocmask, sigaction, execve and _exit on fds and
    // memory this process owns (no allocation: `all` over a fixed array); every pointer
    // array ends with a null.
    unsafe {
        let moved = [
            (stdio[0], 0),
            (stdio[1], 1),
            (stdio[2], 2),
            (control, CONTROL_FD),
        ]
        .iter()
        .all(|&(fd, target)| crate::sys::keep_fd_as(fd, target).is_ok());
        if moved {
            // What std's spawn resets: the signal mask, and SIGPIPE (ignored by Rust
            // programs) back to its default.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut());
            libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        libc::_exit(127)
    }
}

/// Attaches to the kept session listening on `socket` (started by an earlier daemon): the
/// session, and with pipes the daemon's ends of them.
pub fn attach(socket: &Path) -> Result<(ExecSession, Option<AttachedPipes>)> {
    let control = keeper::connect_to(socket)?;
    send_msg(
        control.as_fd(),
        &ExecControl::Attach {
            version: PROTOCOL_VERSION,
        },
        &[],
    )?;
    let (event, mut fds) =
        recv_msg::<ExecEvent>(control.as_fd(), "attached")?.ok_or_else(|| {
            RuntimeError::ExecFailed {
                reason: "the exec session hung up".into(),
            }
        })?;
    let ExecEvent::Attached {
        version,
        pid,
        pty,
        stdin_open,
    } = event
    else {
        return Err(RuntimeError::Protocol {
            peer: "exec session",
            expected: "attached",
            got: format!("{event:?}"),
        });
    };
    if version > PROTOCOL_VERSION {
        return Err(RuntimeError::ExecFailed {
            reason: format!("the exec session speaks version {version}, newer than ours"),
        });
    }
    let wrong = |n: usize| RuntimeError::Protocol {
        peer: "exec session",
        expected: "the session's fds",
        got: format!("{n} fds"),
    };
    let mut session = ExecSession {
        control,
        helper: None,
        pty: None,
        pid,
        kept: Some(socket.to_path_buf()),
    };
    if pty {
        let master = fds.pop().ok_or_else(|| wrong(0))?;
        session.pty = Some(File::from(master));
        return Ok((session, None));
    }
    if fds.is_empty() {
        // An exec without websockets: its output goes to files.
        return Ok((session, None));
    }
    let expected = if stdin_open { 3 } else { 2 };
    if fds.len() != expected {
        return Err(wrong(fds.len()));
    }
    let stderr = fds.pop().ok_or_else(|| wrong(0))?;
    let stdout = fds.pop().ok_or_else(|| wrong(0))?;
    let stdin = fds.pop();
    Ok((
        session,
        Some(AttachedPipes {
            stdin,
            stdout,
            stderr,
        }),
    ))
}

impl ExecSession {
    fn reap(&mut self) {
        if let Some(h) = &mut self.helper {
            h.wait();
        }
    }

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
        send_msg(self.control.as_fd(), &ExecControl::Signal { signal }, &[])
    }

    /// Waits for the command to end, and acknowledges its end: a kept session then goes,
    /// and its socket and identity are removed.
    pub fn wait(mut self) -> Result<ExecExit> {
        let event = recv_msg::<ExecEvent>(self.control.as_fd(), "exited");
        if matches!(&event, Ok(Some((ExecEvent::Exited { .. }, _)))) {
            // A session that is not kept has gone already: nothing to acknowledge.
            let _ = send_msg(self.control.as_fd(), &ExecControl::Ack, &[]);
            if let Some(socket) = &self.kept {
                remove_session_files(socket);
            }
        }
        self.reap();
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
