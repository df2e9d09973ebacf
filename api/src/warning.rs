//! `/1.0/warnings`: problems the daemon records for the administrator.

use serde::{Deserialize, Serialize};

/// One warning, in LXD's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    /// `new`, `acknowledged` or `resolved`.
    pub status: String,
    pub uuid: String,
    pub location: String,
    pub project: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub count: u64,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub last_message: String,
    /// `low`, `moderate` or `high`.
    pub severity: String,
    pub entity_url: String,
}
