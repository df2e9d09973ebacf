//! Profiles: config and devices shared by instances.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Devices by name, each a map of string options with a `type`.
pub type Devices = BTreeMap<String, BTreeMap<String, String>>;

/// The writable part of a profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfilePut {
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub description: String,
    #[serde(default, deserialize_with = "crate::instance::null_as_default")]
    pub devices: Devices,
}

/// A profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    #[serde(flatten)]
    pub put: ProfilePut,
    pub used_by: Vec<String>,
}

/// `POST /1.0/profiles`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfilesPost {
    pub name: String,
    #[serde(flatten)]
    pub put: ProfilePut,
}

/// `PATCH /1.0/profiles/<name>`: what is given is merged into the profile (config keys and
/// devices added or replaced, the description replaced); what is absent stays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfilePatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Devices>,
}

/// `POST /1.0/profiles/<name>` (rename).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfilePost {
    pub name: String,
}
