//! Messages between an exec caller (a daemon) and the exec helper, one per SOCK_SEQPACKET
//! datagram. The helper keeps its session after the caller is gone: a later daemon
//! connects to its socket (`<rundir>/exec/<id>.sock`), says `Attach` with its protocol
//! version, and gets the session's fds back. Versioned so that a newer daemon adopts the
//! helpers an older one started.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// The version of this protocol. A daemon adopts helpers of this version or older; a
/// helper answers an `Attach` of any version with its own.
pub const PROTOCOL_VERSION: u32 = 1;

/// Most fds one message carries (a piped session's three ends).
const MAX_FDS: usize = 3;

/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// A terminal size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
}

/// What to run inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Command and arguments; a command without '/' is looked up in the PATH of `env`.
    pub command: Vec<String>,
    /// The complete environment (PATH defaults to the standard one when missing).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the container; `/` when unset or missing.
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// Run on a new pty of this size instead of the caller's stdio.
    #[serde(default)]
    pub pty: Option<WindowSize>,
}

/// The first message to a fresh helper: the request, and whether to keep the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    #[serde(flatten)]
    pub request: ExecRequest,
    /// Keep the session after the caller is gone, listening on this socket path; the
    /// message then carries the caller's ends of the pipes (stdin's write end, stdout's
    /// and stderr's read ends), which the helper holds so that they outlive the caller.
    #[serde(default)]
    pub keep: Option<std::path::PathBuf>,
}

/// From the helper to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecEvent {
    /// The command runs; with a pty, the master fd travels with this message.
    Started { pid: i32 },
    /// The command ended with an exit code or by a signal.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The command could not be started.
    Failed { message: String },
    /// The answer to `Attach`: the session's fds travel with it (the pty master, or
    /// stdin's write end when still open, then stdout's and stderr's read ends).
    Attached {
        version: u32,
        pid: i32,
        pty: bool,
        stdin_open: bool,
    },
}

/// From the caller to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecControl {
    /// Forward a signal to the command.
    Signal { signal: i32 },
    /// A new caller takes the session over (the first message on a kept session's socket).
    Attach { version: u32 },
    /// The caller's input ended: the helper closes its copy of stdin's write end.
    CloseStdin,
    /// Kill the command and its process group (a cancelled exec).
    Kill,
    /// The caller has the exit status: the helper may go.
    Ack,
}

/// Sends one message, with fds attached when given.
pub fn send_msg<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[RawFd]) -> Result<()> {
    let data = serde_json::to_vec(msg).expect("exec messages serialize");
    let iov = [IoSlice::new(&data)];
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| RuntimeError::sys("send on the exec socket", e))?;
    Ok(())
}

/// Receives one message and the fds sent with it, in order; `Ok(None)` when the peer
/// hung up.
pub fn recv_msg<T: DeserializeOwned>(
    sock: BorrowedFd<'_>,
    expected: &'static str,
) -> Result<Option<(T, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fd) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fd = Vec::new();
                for c in msg
                    .cmsgs()
                    .map_err(|e| RuntimeError::sys("read control message", e))?
                {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for raw in fds {
                            // SAFETY: SCM_RIGHTS gave us a new fd that nothing else owns.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            fd.push(owned);
                        }
                    }
                }
                break (msg.bytes, fd);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RuntimeError::sys("receive on the exec socket", e)),
        }
    };
    if len == 0 {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..len]).map_err(|_| RuntimeError::Protocol {
        peer: "exec",
        expected,
        got: String::from_utf8_lossy(&buf[..len.min(200)]).to_string(),
    })?;
    Ok(Some((msg, fd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn messages_keep_their_boundaries_and_carry_fds() {
        let (a, b) = pair();
        let file = tempfile::tempfile().unwrap();
        send_msg(
            a.as_fd(),
            &ExecEvent::Started { pid: 7 },
            &[file.as_raw_fd()],
        )
        .unwrap();
        send_msg(
            a.as_fd(),
            &ExecEvent::Exited {
                code: Some(3),
                signal: None,
            },
            &[],
        )
        .unwrap();
        let (m, fd) = recv_msg::<ExecEvent>(b.as_fd(), "event").unwrap().unwrap();
        assert_eq!(m, ExecEvent::Started { pid: 7 });
        assert_eq!(fd.len(), 1);
        let (m, fd) = recv_msg::<ExecEvent>(b.as_fd(), "event").unwrap().unwrap();
        assert_eq!(
            m,
            ExecEvent::Exited {
                code: Some(3),
                signal: None
            }
        );
        assert!(fd.is_empty());
        drop(a);
        assert!(recv_msg::<ExecEvent>(b.as_fd(), "event").unwrap().is_none());
    }

    #[test]
    fn a_wrong_message_is_a_protocol_error() {
        let (a, b) = pair();
        send_msg(a.as_fd(), &ExecControl::Signal { signal: 2 }, &[]).unwrap();
        let err = recv_msg::<ExecEvent>(b.as_fd(), "an exec event").unwrap_err();
        assert!(err.to_string().contains("expected an exec event"), "{err}");
    }
}
