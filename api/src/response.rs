//! LXD's response envelope: every body carries the same seven keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `type` of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseType {
    Sync,
    Async,
    Error,
}

/// A whole response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    #[serde(rename = "type")]
    pub kind: ResponseType,
    pub status: String,
    pub status_code: u16,
    pub operation: String,
    pub error_code: u16,
    pub error: String,
    pub metadata: Value,
}

impl Response {
    /// A 200 with `metadata`.
    pub fn sync(metadata: Value) -> Self {
        Response {
            kind: ResponseType::Sync,
            status: "Success".into(),
            status_code: 200,
            operation: String::new(),
            error_code: 0,
            error: String::new(),
            metadata,
        }
    }

    /// A 202 for an operation (`metadata` is the operation object).
    pub fn async_op(operation_url: &str, metadata: Value) -> Self {
        Response {
            kind: ResponseType::Async,
            status: "Operation created".into(),
            status_code: 100,
            operation: operation_url.into(),
            error_code: 0,
            error: String::new(),
            metadata,
        }
    }

    /// An error; the HTTP status equals `code`.
    pub fn error(code: u16, message: &str) -> Self {
        Response {
            kind: ResponseType::Error,
            status: String::new(),
            status_code: 0,
            operation: String::new(),
            error_code: code,
            error: message.into(),
            metadata: Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_have_all_seven_keys() {
        for r in [
            Response::sync(serde_json::json!({})),
            Response::error(404, "Instance not found"),
            Response::async_op("/1.0/operations/x", Value::Null),
        ] {
            let v = serde_json::to_value(&r).unwrap();
            for k in [
                "type",
                "status",
                "status_code",
                "operation",
                "error_code",
                "error",
                "metadata",
            ] {
                assert!(v.get(k).is_some(), "{k} missing in {v}");
            }
        }
        let e = serde_json::to_value(Response::error(404, "Instance not found")).unwrap();
        assert_eq!(e["type"], "error");
        assert_eq!(e["error_code"], 404);
        assert_eq!(e["metadata"], Value::Null);
    }
}
