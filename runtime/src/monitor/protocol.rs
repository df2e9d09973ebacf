//! What the daemon and the monitor say to each other: one JSON message per line.

use std::io::{BufRead, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::state::{ExitRecord, MonitorState};

/// A request to a container's monitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorRequest {
    /// What is running and where.
    State,
    /// Ask init to halt, killing it after `timeout_ms`; `force` kills at once. The reply
    /// comes once init is gone and everything is cleaned up.
    Stop { timeout_ms: u64, force: bool },
    /// Send a signal to init.
    Signal { signal: i32 },
    /// After the `Ok` reply the connection carries raw console bytes both ways.
    AttachConsole,
    /// Sets the console's window size.
    ResizeConsole { cols: u16, rows: u16 },
}

/// The monitor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MonitorReply {
    State(Box<MonitorState>),
    Stopped(ExitRecord),
    Ok,
    Error { message: String },
}

/// Writes one message as a JSON line.
pub fn send<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<()> {
    let mut line = serde_json::to_vec(msg).expect("protocol messages serialize");
    line.push(b'\n');
    w.write_all(&line)
        .map_err(|e| RuntimeError::io("write to", "monitor socket", e))
}

/// Reads one JSON line; `Ok(None)` on EOF.
pub fn recv<T: DeserializeOwned>(
    r: &mut impl BufRead,
    peer: &'static str,
    expected: &'static str,
) -> Result<Option<T>> {
    let mut line = String::new();
    let n = r
        .read_line(&mut line)
        .map_err(|e| RuntimeError::io("read from", "monitor socket", e))?;
    if n == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|_| RuntimeError::Protocol {
            peer,
            expected,
            got: line.trim().to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn requests_round_trip() {
        let mut buf = Vec::new();
        send(
            &mut buf,
            &MonitorRequest::Stop {
                timeout_ms: 5,
                force: true,
            },
        )
        .unwrap();
        send(&mut buf, &MonitorRequest::State).unwrap();
        let mut r = BufReader::new(&buf[..]);
        assert_eq!(
            recv::<MonitorRequest>(&mut r, "t", "req").unwrap(),
            Some(MonitorRequest::Stop {
                timeout_ms: 5,
                force: true
            })
        );
        assert_eq!(
            recv::<MonitorRequest>(&mut r, "t", "req").unwrap(),
            Some(MonitorRequest::State)
        );
        assert_eq!(recv::<MonitorRequest>(&mut r, "t", "req").unwrap(), None);
    }

    #[test]
    fn garbage_is_a_protocol_error_naming_what_came() {
        let mut r = BufReader::new(&b"{\"bogus\":1}\n"[..]);
        let err = recv::<MonitorRequest>(&mut r, "monitor", "a request").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unexpected message from monitor: expected a request, got {\"bogus\":1}"
        );
    }
}
