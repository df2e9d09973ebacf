//! `GET /1.0/resources`: the host's CPUs and memory, as `lxc info --resources` and pylxd's
//! `client.resources` read them. The device lists (GPU, NICs, disks, USB, PCI) stay empty.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The host's resources (LXD's `resources_v2` shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu: Cpu,
    pub memory: Memory,
    pub gpu: Devices,
    pub network: Devices,
    pub storage: Devices,
    pub usb: Devices,
    pub pci: Devices,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub architecture: String,
    pub sockets: Vec<CpuSocket>,
    /// Threads, all sockets together.
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuSocket {
    pub socket: u64,
    pub name: String,
    pub vendor: String,
    pub cache: Vec<Value>,
    /// MHz.
    pub frequency: u64,
    pub cores: Vec<CpuCore>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuCore {
    pub core: u64,
    pub die: u64,
    pub frequency: u64,
    pub threads: Vec<CpuThread>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuThread {
    pub id: u64,
    pub numa_node: u64,
    pub thread: u64,
    pub online: bool,
    pub isolated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub nodes: Vec<Value>,
    pub hugepages_total: u64,
    pub hugepages_used: u64,
    pub hugepages_size: u64,
    /// Bytes.
    pub used: u64,
    pub total: u64,
}

/// A device list LXD fills and hutch does not: its entries under the key LXD uses
/// (`cards`, `disks`, `devices`) and their count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    #[serde(flatten)]
    pub entries: std::collections::BTreeMap<String, Vec<Value>>,
    pub total: u64,
}

impl Devices {
    /// No entries, listed under `key`.
    pub fn none(key: &str) -> Self {
        Devices {
            entries: [(key.to_string(), Vec::new())].into_iter().collect(),
            total: 0,
        }
    }
}
