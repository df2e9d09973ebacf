//! The host's resources (`GET /1.0/resources`), read from /proc/cpuinfo and /proc/meminfo.

use std::path::Path;

use hutch_api::resources::{Cpu, CpuCore, CpuSocket, CpuThread, Devices, Memory, Resources};

use super::{blocking, Engine};
use crate::error::{DaemonError, Result};

impl Engine {
    /// `GET /1.0/resources`: CPUs (sockets, cores, threads) and memory of the host.
    pub async fn resources(&self) -> Result<Resources> {
        blocking(|| {
            let read = |p: &str| {
                std::fs::read_to_string(p).map_err(|e| DaemonError::io("read", Path::new(p), e))
            };
            Ok(host_resources(
                &read("/proc/cpuinfo")?,
                &read("/proc/meminfo")?,
            ))
        })
        .await
    }
}

/// LXD's resources object from /proc/cpuinfo and /proc/meminfo: sockets with their cores
/// and threads, and memory used and total; the device lists are empty.
fn host_resources(cpuinfo: &str, meminfo: &str) -> Resources {
    struct Thread {
        id: u64,
        socket: u64,
        core: u64,
        vendor: String,
        model: String,
        mhz: f64,
    }
    let mut threads = Vec::new();
    for block in cpuinfo.split("\n\n").filter(|b| b.contains("processor")) {
        let field = |k: &str| {
            block.lines().find_map(|l| {
                let (key, v) = l.split_once(':')?;
                (key.trim() == k).then(|| v.trim().to_string())
            })
        };
        let num = |k: &str| field(k).and_then(|v| v.parse().ok());
        let id = num("processor").unwrap_or(threads.len() as u64);
        threads.push(Thread {
            id,
            socket: num("physical id").unwrap_or(0),
            core: num("core id").unwrap_or(id),
            vendor: field("vendor_id").unwrap_or_default(),
            model: field("model name").unwrap_or_default(),
            mhz: field("cpu MHz").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        });
    }
    let mut socket_ids: Vec<u64> = threads.iter().map(|t| t.socket).collect();
    socket_ids.sort_unstable();
    socket_ids.dedup();
    let sockets = socket_ids
        .into_iter()
        .map(|s| {
            let mine: Vec<&Thread> = threads.iter().filter(|t| t.socket == s).collect();
            let mut cores: Vec<u64> = mine.iter().map(|t| t.core).collect();
            cores.sort_unstable();
            cores.dedup();
            let first = mine.first();
            let mhz = first.map(|t| t.mhz as u64).unwrap_or(0);
            CpuSocket {
                socket: s,
                name: first.map(|t| t.model.clone()).unwrap_or_default(),
                vendor: first.map(|t| t.vendor.clone()).unwrap_or_default(),
                cache: vec![],
                frequency: mhz,
                cores: cores
                    .into_iter()
                    .map(|c| CpuCore {
                        core: c,
                        die: 0,
                        frequency: mhz,
                        threads: mine
                            .iter()
                            .filter(|t| t.core == c)
                            .map(|t| CpuThread {
                                id: t.id,
                                numa_node: 0,
                                thread: 0,
                                online: true,
                                isolated: false,
                            })
                            .collect(),
                    })
                    .collect(),
            }
        })
        .collect();
    let kib = |k: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let (total, available) = (kib("MemTotal"), kib("MemAvailable"));
    Resources {
        cpu: Cpu {
            architecture: std::env::consts::ARCH.into(),
            sockets,
            total: threads.len() as u64,
        },
        memory: Memory {
            nodes: vec![],
            hugepages_total: 0,
            hugepages_used: 0,
            hugepages_size: 0,
            used: total.saturating_sub(available),
            total,
        },
        gpu: Devices::none("cards"),
        network: Devices::none("cards"),
        storage: Devices::none("disks"),
        usb: Devices::none("devices"),
        pci: Devices::none("devices"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_and_memory_are_read_from_proc() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\n\
                       physical id\t: 0\ncore id\t: 0\ncpu MHz\t\t: 2000.5\n\n\
                       processor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\n\
                       physical id\t: 0\ncore id\t: 1\ncpu MHz\t\t: 2000.5\n\n";
        let meminfo = "MemTotal:        2048 kB\nMemFree:  10 kB\nMemAvailable:    1024 kB\n";
        let r = serde_json::to_value(host_resources(cpuinfo, meminfo)).unwrap();
        assert_eq!(r["cpu"]["total"], 2);
        assert_eq!(r["cpu"]["sockets"][0]["name"], "Xeon");
        assert_eq!(r["cpu"]["sockets"][0]["cores"][1]["threads"][0]["id"], 1);
        assert_eq!(r["memory"]["total"], 2048 * 1024);
        assert_eq!(r["memory"]["used"], 1024 * 1024);
        assert_eq!(r["gpu"], serde_json::json!({"cards": [], "total": 0}));
        assert_eq!(r["storage"], serde_json::json!({"disks": [], "total": 0}));
    }
}
