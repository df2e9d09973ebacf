//! Operations: background work a client can wait on, as LXD reports it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// LXD's status codes for operations and instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Created = 100,
    Started = 101,
    Stopped = 102,
    Running = 103,
    Cancelling = 104,
    Pending = 105,
    Starting = 106,
    Stopping = 107,
    Aborting = 108,
    Freezing = 109,
    Frozen = 110,
    Thawed = 111,
    Error = 112,
    Ready = 113,
    Success = 200,
    Failure = 400,
    Cancelled = 401,
}

impl StatusCode {
    /// The status text LXD pairs with the code.
    pub fn text(self) -> &'static str {
        use StatusCode::*;
        match self {
            Created => "Operation created",
            Started => "Started",
            Stopped => "Stopped",
            Running => "Running",
            Cancelling => "Cancelling",
            Pending => "Pending",
            Starting => "Starting",
            Stopping => "Stopping",
            Aborting => "Aborting",
            Freezing => "Freezing",
            Frozen => "Frozen",
            Thawed => "Thawed",
            Error => "Error",
            Ready => "Ready",
            Success => "Success",
            Failure => "Failure",
            Cancelled => "Cancelled",
        }
    }

    /// Codes of 200 and above are final.
    pub fn is_final(self) -> bool {
        self as u16 >= 200
    }
}

/// An operation as `GET /1.0/operations/<id>` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    /// `task`, `websocket` or `token`.
    pub class: String,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    pub status: String,
    pub status_code: u16,
    pub resources: BTreeMap<String, Vec<String>>,
    pub metadata: Value,
    pub may_cancel: bool,
    pub err: String,
    pub location: String,
}
