//! Messages between an exec caller and the exec helper, one per SOCK_SEQPACKET datagram.

use std::collections::BTreeMap;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

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
}

/// From the caller to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecControl {
    /// Forward a signal to the command.
    Signal { signal: i32 },
}

/// Sends one message, with an fd attached when given.
pub fn send_msg<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fd: Option<RawFd>) -> Result<()> {
    let data = serde_json::to_vec(msg).expect("exec messages serialize");
    let iov = [IoSlice::new(&data)];
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| RuntimeError::sys("send on the exec socket", e))?;
    Ok(())
}

/// Receives one message and any fd sent with it; `Ok(None)` when the peer hung up.
pub fn recv_msg<T: DeserializeOwned>(
    sock: BorrowedFd<'_>,
    expected: &'static str,
) -> Result<Option<(T, Option<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let (len, fd) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fd = None;
                for c in msg
                    .cmsgs()
                    .map_err(|e| RuntimeError::sys("read control message", e))?
                {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for raw in fds {
                            // SAFETY: SCM_RIGHTS gave us a new fd that nothing else owns.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            fd.get_or_insert(owned);
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
            Some(file.as_raw_fd()),
        )
        .unwrap();
        send_msg(
            a.as_fd(),
            &ExecEvent::Exited {
                code: Some(3),
                signal: None,
            },
            None,
        )
        .unwrap();
        let (m, fd) = recv_msg::<ExecEvent>(b.as_fd(), "event").unwrap().unwrap();
        assert_eq!(m, ExecEvent::Started { pid: 7 });
        assert!(fd.is_some());
        let (m, fd) = recv_msg::<ExecEvent>(b.as_fd(), "event").unwrap().unwrap();
        assert_eq!(
            m,
            ExecEvent::Exited {
                code: Some(3),
                signal: None
            }
        );
        assert!(fd.is_none());
        drop(a);
        assert!(recv_msg::<ExecEvent>(b.as_fd(), "event").unwrap().is_none());
    }

    #[test]
    fn a_wrong_message_is_a_protocol_error() {
        let (a, b) = pair();
        send_msg(a.as_fd(), &ExecControl::Signal { signal: 2 }, None).unwrap();
        let err = recv_msg::<ExecEvent>(b.as_fd(), "an exec event").unwrap_err();
        assert!(err.to_string().contains("expected an exec event"), "{err}");
    }
}
