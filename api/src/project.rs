//! `/1.0/projects`: hutch has the default project alone, holding everything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The name of the one project.
pub const DEFAULT_PROJECT: &str = "default";

/// A project (LXD 5.0's shape: no `project` field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
    /// URLs of what lives in the project: instances, images, custom volumes, profiles,
    /// networks.
    pub used_by: Vec<String>,
}
