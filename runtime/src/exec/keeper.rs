//! The exec helper once its command runs: it supervises the command and keeps the session
//! (the pty master, or the caller's ends of the pipes) for whichever daemon is attached,
//! so that a daemon restart, `kill -9` or upgrade loses nothing. While no daemon is
//! attached nobody reads the output: the pipe or pty fills and the command blocks (no byte
//! is dropped). The exit status is kept until a daemon acknowledges it; unclaimed, the
//! helper goes [`UNCLAIMED_EXIT_GRACE`] after the command ended.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    accept4, bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::protocol::{recv_msg, send_msg, ExecControl, ExecEvent, PROTOCOL_VERSION};
use crate::error::{Result, RuntimeError};
use crate::sys;

/// How long an ended command's status waits for a daemon to claim it.
pub const UNCLAIMED_EXIT_GRACE: Duration = Duration::from_secs(600);

/// The fds a session keeps for its callers.
#[derive(Debug)]
pub enum Kept {
    /// A session without a socket: it ends with its first caller, as before.
    Nothing,
    Pty(OwnedFd),
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

impl Kept {
    fn fds(&self) -> Vec<RawFd> {
        match self {
            Kept::Nothing => vec![],
            Kept::Pty(m) => vec![m.as_raw_fd()],
            Kept::Pipes {
                stdin,
                stdout,
                stderr,
            } => stdin
                .iter()
                .chain([stdout, stderr])
                .map(|f| f.as_raw_fd())
                .collect(),
        }
    }
}

/// A socket path short enough for `sockaddr_un` whatever the directory's length: the
/// name under an fd of the directory, through /proc.
fn short_path(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> std::path::PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

fn open_dir(path: &Path) -> Result<(OwnedFd, std::ffi::OsString)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| RuntimeError::ExecFailed {
            reason: format!("{} names no socket", path.display()),
        })?
        .to_os_string();
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| RuntimeError::sys(format!("open {}", dir.display()), e))?;
    // SAFETY: open returned a new fd that we own.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, name))
}

/// The session's listening socket at `path`, 0600 (made before the helper joins the
/// container: the path is the host's).
pub fn listen_at(path: &Path) -> Result<OwnedFd> {
    let (dir, name) = open_dir(path)?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| RuntimeError::sys("create the session socket", e))?;
    let addr = UnixAddr::new(&short_path(dir.as_fd(), &name))
        .map_err(|e| RuntimeError::sys("name the session socket", e))?;
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let bound = bind(sock.as_raw_fd(), &addr);
    nix::sys::stat::umask(old);
    bound.map_err(|e| RuntimeError::sys(format!("bind {}", path.display()), e))?;
    listen(&sock, Backlog::new(4).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| RuntimeError::sys("listen on the session socket", e))?;
    Ok(sock)
}

/// Connects to a kept session's socket.
pub fn connect_to(path: &Path) -> Result<OwnedFd> {
    let (dir, name) = open_dir(path)?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| RuntimeError::sys("create a session socket", e))?;
    let addr = UnixAddr::new(&short_path(dir.as_fd(), &name))
        .map_err(|e| RuntimeError::sys("name the session socket", e))?;
    connect(sock.as_raw_fd(), &addr)
        .map_err(|e| RuntimeError::sys(format!("connect to {}", path.display()), e))?;
    Ok(sock)
}

/// How the command ended, as the protocol reports it.
fn exit_event(child: Pid) -> Result<ExecEvent> {
    match waitpid(child, None) {
        Ok(WaitStatus::Exited(_, code)) => Ok(ExecEvent::Exited {
            code: Some(code),
            signal: None,
        }),
        Ok(WaitStatus::Signaled(_, sig, _)) => Ok(ExecEvent::Exited {
            code: None,
            signal: Some(sig as i32),
        }),
        Ok(other) => Err(RuntimeError::ExecFailed {
            reason: format!("unexpected wait status {other:?}"),
        }),
        Err(e) => Err(RuntimeError::sys("wait for the command", e)),
    }
}

fn ready(f: Option<&PollFd<'_>>) -> bool {
    f.and_then(|f| f.revents()).is_some_and(|r| !r.is_empty())
}

/// Supervises `child` until its end is acknowledged (or, without a listener, reported to
/// the first caller), serving callers on `control` and, later, on `listener`.
pub fn supervise(
    control: OwnedFd,
    listener: Option<OwnedFd>,
    mut kept: Kept,
    child: Pid,
) -> Result<()> {
    let child_fd =
        sys::pidfd_open(child.as_raw()).map_err(|e| RuntimeError::sys("watch the command", e))?;
    let mut control = Some(control);
    let mut exit: Option<ExecEvent> = None;
    // Since when the ended command's status waits with no caller attached.
    let mut unclaimed_since = Instant::now();
    loop {
        let timeout = match (&exit, &control) {
            (Some(_), None) => {
                let left = UNCLAIMED_EXIT_GRACE.saturating_sub(unclaimed_since.elapsed());
                if left.is_zero() {
                    return Ok(());
                }
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
            _ => PollTimeout::NONE,
        };
        let mut fds = Vec::with_capacity(3);
        let child_at = exit.is_none().then(|| {
            fds.push(PollFd::new(child_fd.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let control_at = control.as_ref().map(|c| {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let listener_at = listener.as_ref().map(|l| {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys("poll", e)),
            Ok(_) => {}
        }
        let child_done = ready(child_at.and_then(|i| fds.get(i)));
        let control_ready = ready(control_at.and_then(|i| fds.get(i)));
        let caller_waiting = ready(listener_at.and_then(|i| fds.get(i)));
        drop(fds);
        if control_ready {
            let c = control.as_ref().map(|c| c.as_fd());
            match c.map(|c| recv_msg::<ExecControl>(c, "an exec control message")) {
                Some(Ok(Some((msg, _)))) => match msg {
                    // Raw numbers: real-time signals are forwarded too.
                    // SAFETY: kill with plain integers.
                    ExecControl::Signal { signal } if exit.is_none() => unsafe {
                        libc::kill(child.as_raw(), signal);
                    },
                    // The command made itself a session leader: its group is its pid.
                    // SAFETY: kill with plain integers.
                    ExecControl::Kill if exit.is_none() => unsafe {
                        libc::kill(-child.as_raw(), libc::SIGKILL);
                        libc::kill(child.as_raw(), libc::SIGKILL);
                    },
                    ExecControl::CloseStdin => {
                        if let Kept::Pipes { stdin, .. } = &mut kept {
                            *stdin = None;
                        }
                    }
                    ExecControl::Ack if exit.is_some() => return Ok(()),
                    _ => {}
                },
                // The caller is gone: the command runs on, for the next one.
                _ => {
                    control = None;
                    unclaimed_since = Instant::now();
                }
            }
        }
        if caller_waiting {
            if let Some(l) = &listener {
                if let Some(c) = attach(l.as_fd(), &kept, child)? {
                    control = Some(c);
                    if let (Some(event), Some(c)) = (&exit, &control) {
                        if send_msg(c.as_fd(), event, &[]).is_err() {
                            control = None;
                        }
                    }
                }
            }
        }
        if child_done {
            let event = exit_event(child)?;
            if let Some(c) = &control {
                if send_msg(c.as_fd(), &event, &[]).is_err() {
                    control = None;
                }
            }
            if listener.is_none() {
                // Nobody can come back for the status: reported once, as before.
                return Ok(());
            }
            exit = Some(event);
            unclaimed_since = Instant::now();
        }
    }
}

/// Accepts a caller and hands it the session; `None` when it hung up or spoke wrongly.
fn attach(listener: BorrowedFd<'_>, kept: &Kept, child: Pid) -> Result<Option<OwnedFd>> {
    let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(RuntimeError::sys("accept a caller", e)),
    };
    // SAFETY: accept4 returned a new fd that we own.
    let conn = unsafe { OwnedFd::from_raw_fd(fd) };
    match recv_msg::<ExecControl>(conn.as_fd(), "attach") {
        Ok(Some((ExecControl::Attach { .. }, _))) => {}
        _ => return Ok(None),
    }
    let (pty, stdin_open) = match kept {
        Kept::Pty(_) => (true, false),
        Kept::Pipes { stdin, .. } => (false, stdin.is_some()),
        Kept::Nothing => (false, false),
    };
    let answer = ExecEvent::Attached {
        version: PROTOCOL_VERSION,
        pid: child.as_raw(),
        pty,
        stdin_open,
    };
    Ok(send_msg(conn.as_fd(), &answer, &kept.fds())
        .is_ok()
        .then_some(conn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::socketpair;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[test]
    fn a_later_caller_attaches_gets_the_fds_and_the_exit_once_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let mut cat = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let child = Pid::from_raw(cat.id() as i32);
        let (first, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let listener = listen_at(&path).unwrap();
        let ((_, stdin), (stdout, _), (stderr, _)) = (pipe(), pipe(), pipe());
        let kept = Kept::Pipes {
            stdin: Some(stdin),
            stdout,
            stderr,
        };
        let keeper = std::thread::spawn(move || supervise(theirs, Some(listener), kept, child));
        // The first caller goes; the session stays.
        drop(first);
        let conn = connect_to(&path).unwrap();
        let attach = ExecControl::Attach {
            version: PROTOCOL_VERSION,
        };
        send_msg(conn.as_fd(), &attach, &[]).unwrap();
        let (answer, fds) = recv_msg::<ExecEvent>(conn.as_fd(), "attached")
            .unwrap()
            .unwrap();
        assert!(matches!(
            answer,
            ExecEvent::Attached {
                pty: false,
                stdin_open: true,
                ..
            }
        ));
        assert_eq!(fds.len(), 3);
        send_msg(conn.as_fd(), &ExecControl::CloseStdin, &[]).unwrap();
        drop(cat.stdin.take());
        let (exit, _) = recv_msg::<ExecEvent>(conn.as_fd(), "exited")
            .unwrap()
            .unwrap();
        assert_eq!(
            exit,
            ExecEvent::Exited {
                code: Some(0),
                signal: None
            }
        );
        assert!(
            !keeper.is_finished(),
            "the status waits for its acknowledgement"
        );
        send_msg(conn.as_fd(), &ExecControl::Ack, &[]).unwrap();
        keeper.join().unwrap().unwrap();
        // The keeper reaped it already.
        let _ = cat.wait();
    }
}
