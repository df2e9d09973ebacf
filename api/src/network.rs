//! Networks: managed bridges, their leases and their state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::instance::null_as_default;

/// The writable part of a network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkPut {
    #[serde(default, deserialize_with = "null_as_default")]
    pub config: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
}

/// A network, managed (a hutch bridge) or not (another host interface).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    #[serde(flatten)]
    pub put: NetworkPut,
    #[serde(rename = "type")]
    pub kind: String,
    pub managed: bool,
    pub status: String,
    pub used_by: Vec<String>,
    pub locations: Vec<String>,
}

/// `POST /1.0/networks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworksPost {
    pub name: String,
    #[serde(rename = "type", default, deserialize_with = "null_as_default")]
    pub kind: String,
    #[serde(flatten)]
    pub put: NetworkPut,
}

/// `PATCH /1.0/networks/<name>`: what is given is merged into the network (config keys
/// added or replaced, the description replaced); what is absent stays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `POST /1.0/networks/<name>` (rename).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkPost {
    pub name: String,
}

/// One entry of `GET /1.0/networks/<name>/leases`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkLease {
    pub hostname: String,
    pub hwaddr: String,
    pub address: String,
    /// `dynamic` or `static`.
    #[serde(rename = "type")]
    pub kind: String,
    pub location: String,
}

/// An address in a network or instance interface state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceAddress {
    /// `inet` or `inet6`.
    pub family: String,
    pub address: String,
    /// The prefix length, as a string.
    pub netmask: String,
    /// `global`, `local` or `link`.
    pub scope: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
}

/// `GET /1.0/networks/<name>/state`, and each entry of an instance state's `network`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceState {
    pub addresses: Vec<InterfaceAddress>,
    pub counters: InterfaceCounters,
    pub hwaddr: String,
    /// The host side of an instance's veth (instance state only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_name: String,
    pub mtu: u32,
    /// `up` or `down`.
    pub state: String,
    #[serde(rename = "type")]
    pub kind: String,
}
