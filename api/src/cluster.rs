//! `/1.0/cluster` and `/1.0/cluster/members`, in LXD 5.0's shapes (what `lxc cluster` and
//! pylxd read and send).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /1.0/cluster`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cluster {
    pub server_name: String,
    pub enabled: bool,
    #[serde(default)]
    pub member_config: Vec<MemberConfigKey>,
}

/// A member-specific key a joining member must give (none yet: hutch's pools and networks
/// need no per-member source).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberConfigKey {
    pub entity: String,
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub description: String,
}

/// `PUT /1.0/cluster`: enable (a name, `enabled: true`), leave (`enabled: false`, no name).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterPut {
    #[serde(default)]
    pub server_name: String,
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub member_config: Vec<MemberConfigKey>,
    #[serde(default)]
    pub cluster_address: String,
    #[serde(default)]
    pub cluster_certificate: String,
    #[serde(default)]
    pub server_address: String,
    #[serde(default)]
    pub cluster_password: String,
    /// A join token (`hutch cluster add`, `lxc cluster add`): the member to join, pinned by
    /// the certificate fingerprint the token carries.
    #[serde(default)]
    pub cluster_token: String,
}

/// A join token, as lxc prints it: base64 of this JSON (LXD's `ClusterMemberJoinToken`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterJoinToken {
    pub server_name: String,
    pub fingerprint: String,
    pub addresses: Vec<String>,
    pub secret: String,
    #[serde(default)]
    pub expires_at: String,
}

/// What a member tells a joiner it has just trusted (`GET /internal/cluster`): where the
/// cluster's state lives.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterJoinInfo {
    /// The member answering.
    pub server_name: String,
    pub cluster_id: String,
    pub etcd_endpoints: Vec<String>,
    pub offline_threshold: i64,
    /// The member's certificate (PEM), which the joiner trusts in turn: the cluster's,
    /// which every member presents.
    pub certificate: String,
    /// The cluster certificate's key (PEM), for an admin caller only (a joiner): the
    /// joiner presents the cluster's certificate from then on, as LXD's members do.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// `GET /1.0/cluster/members/<name>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterMember {
    pub server_name: String,
    pub url: String,
    pub database: bool,
    pub status: String,
    pub message: String,
    pub architecture: String,
    pub roles: Vec<String>,
    pub failure_domain: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
    pub groups: Vec<String>,
}
