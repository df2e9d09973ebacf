//! `GET /1.0/resources` (the host's CPUs and memory, as `lxc info --resources` and pylxd's
//! `client.resources` read them), `GET /1.0/certificates` (no trusted certificates: the
//! API is served on the unix socket only) and `GET /1.0/warnings` (none are recorded).

use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::sync;
use crate::daemon::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/resources", get(resources))
        .route("/1.0/certificates", get(certificates))
        .route("/1.0/warnings", get(warnings))
}

async fn resources() -> Response {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    sync(host_resources(&cpuinfo, &meminfo))
}

async fn certificates() -> Response {
    sync(Vec::<Value>::new())
}

/// hutch records no warnings (LXD's are mostly about clustering and missing kernel
/// features): `lxc warning list` shows an empty table.
async fn warnings() -> Response {
    sync(Vec::<Value>::new())
}

/// LXD's resources object from /proc/cpuinfo and /proc/meminfo: sockets with their cores
/// and threads, and memory used and total; the device lists are empty.
fn host_resources(cpuinfo: &str, meminfo: &str) -> Value {
    #[derive(Default)]
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
    let mut sockets: Vec<u64> = threads.iter().map(|t| t.socket).collect();
    sockets.sort_unstable();
    sockets.dedup();
    let sockets: Vec<Value> = sockets
        .into_iter()
        .map(|s| {
            let mine: Vec<&Thread> = threads.iter().filter(|t| t.socket == s).collect();
            let mut cores: Vec<u64> = mine.iter().map(|t| t.core).collect();
            cores.sort_unstable();
            cores.dedup();
            let first = mine.first();
            json!({
                "socket": s,
                "name": first.map(|t| t.model.clone()).unwrap_or_default(),
                "vendor": first.map(|t| t.vendor.clone()).unwrap_or_default(),
                "cache": [],
                "frequency": first.map(|t| t.mhz as u64).unwrap_or(0),
                "cores": cores.into_iter().map(|c| json!({
                    "core": c,
                    "die": 0,
                    "frequency": first.map(|t| t.mhz as u64).unwrap_or(0),
                    "threads": mine.iter().filter(|t| t.core == c).map(|t| json!({
                        "id": t.id,
                        "numa_node": 0,
                        "thread": 0,
                        "online": true,
                        "isolated": false,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
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
    let empty = |key: &str| json!({key: [], "total": 0});
    json!({
        "cpu": {
            "architecture": std::env::consts::ARCH,
            "sockets": sockets,
            "total": threads.len(),
        },
        "memory": {
            "nodes": [],
            "hugepages_total": 0,
            "hugepages_used": 0,
            "hugepages_size": 0,
            "used": total.saturating_sub(available),
            "total": total,
        },
        "gpu": empty("cards"),
        "network": empty("cards"),
        "storage": empty("disks"),
        "usb": empty("devices"),
        "pci": empty("devices"),
    })
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
        let r = host_resources(cpuinfo, meminfo);
        assert_eq!(r["cpu"]["total"], 2);
        assert_eq!(r["cpu"]["sockets"][0]["name"], "Xeon");
        assert_eq!(r["cpu"]["sockets"][0]["cores"][1]["threads"][0]["id"], 1);
        assert_eq!(r["memory"]["total"], 2048 * 1024);
        assert_eq!(r["memory"]["used"], 1024 * 1024);
        assert_eq!(r["gpu"]["total"], 0);
    }
}
