//! `GET /1.0/metrics`: every running instance's counters under LXD's metric names and
//! labels (so LXD's Grafana dashboards read hutch), then the daemon's own (`hutch_*`):
//! instances, operations, API request durations, threads, descriptors, memory, uptime.
//! A scrape reads files only: the instances' cgroups, `/proc/net/dev` of the host (the
//! host ends of their veths), `/proc/partitions`, the mounts, and a `statfs` per disk; it
//! never enters a container and spawns nothing.

mod cgroup;
mod host;
mod requests;
pub mod text;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hutch_api::profile::Devices;
use hutch_runtime::{container, MonitorState};

pub use requests::{RequestDurations, OTHER_ROUTE};
use text::{Desc, Kind, MetricSet};

use self::cgroup::CgroupStats;
use self::host::{FsUsage, Mount, NetCounters};
use super::{blocking, Engine};
use crate::daemon::Daemon;
use crate::db::instances::InstanceRow;
use crate::error::{DaemonError, Result};

/// What the daemon keeps between scrapes.
#[derive(Debug)]
pub struct MetricsState {
    requests: RequestDurations,
    started: Instant,
}

impl Default for MetricsState {
    fn default() -> Self {
        MetricsState {
            requests: RequestDurations::default(),
            started: Instant::now(),
        }
    }
}

const fn desc(name: &'static str, help: &'static str, kind: Kind) -> Desc {
    Desc { name, help, kind }
}

use Kind::{Counter, Gauge, Histogram};

// LXD's names, help texts and types (lxd/metrics/types.go), in its order.
const CPU_SECONDS: Desc = desc(
    "lxd_cpu_seconds_total",
    "The total number of CPU time used in seconds.",
    Counter,
);
const CPU_EFFECTIVE: Desc = desc(
    "lxd_cpu_effective_total",
    "The total number of effective CPUs.",
    Gauge,
);
const DISK_READ_BYTES: Desc = desc(
    "lxd_disk_read_bytes_total",
    "The total number of bytes read.",
    Counter,
);
const DISK_READS: Desc = desc(
    "lxd_disk_reads_completed_total",
    "The total number of completed reads.",
    Counter,
);
const DISK_WRITTEN_BYTES: Desc = desc(
    "lxd_disk_written_bytes_total",
    "The total number of bytes written.",
    Counter,
);
const DISK_WRITES: Desc = desc(
    "lxd_disk_writes_completed_total",
    "The total number of completed writes.",
    Counter,
);
const FS_AVAIL: Desc = desc(
    "lxd_filesystem_avail_bytes",
    "The number of available space in bytes.",
    Gauge,
);
const FS_FREE: Desc = desc(
    "lxd_filesystem_free_bytes",
    "The number of free space in bytes.",
    Gauge,
);
const FS_SIZE: Desc = desc(
    "lxd_filesystem_size_bytes",
    "The size of the filesystem in bytes.",
    Gauge,
);
const MEM_ACTIVE_ANON: Desc = desc(
    "lxd_memory_Active_anon_bytes",
    "The amount of anonymous memory on active LRU list.",
    Gauge,
);
const MEM_ACTIVE_FILE: Desc = desc(
    "lxd_memory_Active_file_bytes",
    "The amount of file-backed memory on active LRU list.",
    Gauge,
);
const MEM_ACTIVE: Desc = desc(
    "lxd_memory_Active_bytes",
    "The amount of memory on active LRU list.",
    Gauge,
);
const MEM_CACHED: Desc = desc(
    "lxd_memory_Cached_bytes",
    "The amount of cached memory.",
    Gauge,
);
const MEM_DIRTY: Desc = desc(
    "lxd_memory_Dirty_bytes",
    "The amount of memory waiting to get written back to the disk.",
    Gauge,
);
const MEM_INACTIVE_ANON: Desc = desc(
    "lxd_memory_Inactive_anon_bytes",
    "The amount of anonymous memory on inactive LRU list.",
    Gauge,
);
const MEM_INACTIVE_FILE: Desc = desc(
    "lxd_memory_Inactive_file_bytes",
    "The amount of file-backed memory on inactive LRU list.",
    Gauge,
);
const MEM_INACTIVE: Desc = desc(
    "lxd_memory_Inactive_bytes",
    "The amount of memory on inactive LRU list.",
    Gauge,
);
const MEM_MAPPED: Desc = desc(
    "lxd_memory_Mapped_bytes",
    "The amount of mapped memory.",
    Gauge,
);
const MEM_AVAILABLE: Desc = desc(
    "lxd_memory_MemAvailable_bytes",
    "The amount of available memory.",
    Gauge,
);
const MEM_FREE: Desc = desc(
    "lxd_memory_MemFree_bytes",
    "The amount of free memory.",
    Gauge,
);
const MEM_TOTAL: Desc = desc(
    "lxd_memory_MemTotal_bytes",
    "The amount of used memory.",
    Gauge,
);
const MEM_RSS: Desc = desc(
    "lxd_memory_RSS_bytes",
    "The amount of anonymous and swap cache memory.",
    Gauge,
);
const MEM_SHMEM: Desc = desc(
    "lxd_memory_Shmem_bytes",
    "The amount of cached filesystem data that is swap-backed.",
    Gauge,
);
const MEM_SWAP: Desc = desc(
    "lxd_memory_Swap_bytes",
    "The amount of used swap memory.",
    Gauge,
);
const MEM_UNEVICTABLE: Desc = desc(
    "lxd_memory_Unevictable_bytes",
    "The amount of unevictable memory.",
    Gauge,
);
const MEM_WRITEBACK: Desc = desc(
    "lxd_memory_Writeback_bytes",
    "The amount of memory queued for syncing to disk.",
    Gauge,
);
const MEM_OOM_KILLS: Desc = desc(
    "lxd_memory_OOM_kills_total",
    "The number of out of memory kills.",
    Counter,
);
const NET_RX_BYTES: Desc = desc(
    "lxd_network_receive_bytes_total",
    "The amount of received bytes on a given interface.",
    Counter,
);
const NET_RX_DROP: Desc = desc(
    "lxd_network_receive_drop_total",
    "The amount of received dropped bytes on a given interface.",
    Counter,
);
const NET_RX_ERRS: Desc = desc(
    "lxd_network_receive_errs_total",
    "The amount of received errors on a given interface.",
    Counter,
);
const NET_RX_PACKETS: Desc = desc(
    "lxd_network_receive_packets_total",
    "The amount of received packets on a given interface.",
    Counter,
);
const NET_TX_BYTES: Desc = desc(
    "lxd_network_transmit_bytes_total",
    "The amount of transmitted bytes on a given interface.",
    Counter,
);
const NET_TX_DROP: Desc = desc(
    "lxd_network_transmit_drop_total",
    "The amount of transmitted dropped bytes on a given interface.",
    Counter,
);
const NET_TX_ERRS: Desc = desc(
    "lxd_network_transmit_errs_total",
    "The amount of transmitted errors on a given interface.",
    Counter,
);
const NET_TX_PACKETS: Desc = desc(
    "lxd_network_transmit_packets_total",
    "The amount of transmitted packets on a given interface.",
    Counter,
);
const PROCS: Desc = desc("lxd_procs_total", "The number of running processes.", Gauge);

// The daemon's own.
const INSTANCES: Desc = desc(
    "hutch_instances",
    "The number of instances, by status.",
    Gauge,
);
const OPERATIONS: Desc = desc(
    "hutch_operations",
    "The number of operations the daemon holds, by class and status.",
    Gauge,
);
const REQUEST_DURATION: Desc = desc(
    "hutch_api_request_duration_seconds",
    "Time to answer API requests, by method and route.",
    Histogram,
);
const THREADS: Desc = desc(
    "hutch_threads",
    "The number of threads of the daemon.",
    Gauge,
);
const OPEN_FDS: Desc = desc(
    "hutch_open_fds",
    "The number of open file descriptors of the daemon.",
    Gauge,
);
const RESIDENT_MEMORY: Desc = desc(
    "hutch_resident_memory_bytes",
    "The resident memory of the daemon in bytes.",
    Gauge,
);
const UPTIME: Desc = desc(
    "hutch_uptime_seconds",
    "The time since the daemon started in seconds.",
    Counter,
);

/// Every family, in the order a scrape shows them.
const ORDER: &[Desc] = &[
    CPU_SECONDS,
    CPU_EFFECTIVE,
    DISK_READ_BYTES,
    DISK_READS,
    DISK_WRITTEN_BYTES,
    DISK_WRITES,
    FS_AVAIL,
    FS_FREE,
    FS_SIZE,
    MEM_ACTIVE_ANON,
    MEM_ACTIVE_FILE,
    MEM_ACTIVE,
    MEM_CACHED,
    MEM_DIRTY,
    MEM_INACTIVE_ANON,
    MEM_INACTIVE_FILE,
    MEM_INACTIVE,
    MEM_MAPPED,
    MEM_AVAILABLE,
    MEM_FREE,
    MEM_TOTAL,
    MEM_RSS,
    MEM_SHMEM,
    MEM_SWAP,
    MEM_UNEVICTABLE,
    MEM_WRITEBACK,
    MEM_OOM_KILLS,
    NET_RX_BYTES,
    NET_RX_DROP,
    NET_RX_ERRS,
    NET_RX_PACKETS,
    NET_TX_BYTES,
    NET_TX_DROP,
    NET_TX_ERRS,
    NET_TX_PACKETS,
    PROCS,
    INSTANCES,
    OPERATIONS,
    REQUEST_DURATION,
    THREADS,
    OPEN_FDS,
    RESIDENT_MEMORY,
    UPTIME,
];

/// A disk device's filesystem, as LXD labels it.
#[derive(Debug, Clone, PartialEq)]
struct Filesystem {
    device: String,
    fstype: String,
    /// The disk's `path` inside the instance.
    mountpoint: String,
    usage: FsUsage,
}

/// What one running instance reports.
#[derive(Debug, Clone, Default, PartialEq)]
struct InstanceMetrics {
    name: String,
    kind: String,
    cgroup: CgroupStats,
    filesystems: Vec<Filesystem>,
    /// By interface name inside the instance.
    network: Vec<(String, NetCounters)>,
}

/// What a scrape reads of the host once.
struct HostView {
    net: std::collections::HashMap<String, NetCounters>,
    partitions: std::collections::HashMap<String, String>,
    mounts: Vec<Mount>,
    mem_total: u64,
}

impl HostView {
    fn read() -> HostView {
        let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        HostView {
            // Our own namespace: the host's, where the veths' host ends are.
            net: host::parse_net_dev(&text("/proc/self/net/dev")),
            partitions: host::parse_partitions(&text("/proc/partitions")),
            mounts: host::parse_mountinfo(&text("/proc/self/mountinfo")),
            mem_total: host::parse_mem_total(&text("/proc/meminfo")).unwrap_or(0),
        }
    }
}

/// Instances per reading thread, at least: fewer are not worth a thread.
const CHUNK_MIN: usize = 16;

impl Engine {
    /// Counts one API request (`route` is its template, not its raw path).
    pub fn observe_request(&self, method: &str, route: &str, took: Duration) {
        self.metrics.requests.observe(method, route, took);
    }

    /// The metrics text of `project` (all projects when None; there is only `default`).
    pub async fn metrics(&self, project: Option<&str>) -> Result<String> {
        if project.is_some_and(|p| !p.is_empty() && p != "default") {
            return Err(DaemonError::NotFound("Project not found".into()));
        }
        let e = self.clone();
        blocking(move || e.render_metrics()).await
    }

    fn render_metrics(&self) -> Result<String> {
        let d = &self.d;
        let rows = d.db.instances()?;
        let profiles = d.db.profiles_by_name()?;
        let running: Vec<(&InstanceRow, MonitorState)> = rows
            .iter()
            .filter_map(|r| container::running_state(&d.runtime_dir(&r.name)).map(|s| (r, s)))
            .collect();
        let host = HostView::read();
        let read_one = |(row, state): &(&InstanceRow, MonitorState)| -> InstanceMetrics {
            let devices = super::spec::expand_with(row, |name| Ok(profiles.get(name).cloned()))
                .map(|x| x.devices)
                .unwrap_or_else(|_| row.devices.clone());
            instance_metrics(d, &host, row, state, &devices)
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_thread = running.len().div_ceil(threads).max(CHUNK_MIN);
        let instances: Vec<InstanceMetrics> = match running.len() {
            0 => Vec::new(),
            n if n <= per_thread => running.iter().map(read_one).collect(),
            _ => std::thread::scope(|s| {
                let handles: Vec<_> = running
                    .chunks(per_thread)
                    .map(|chunk| s.spawn(|| chunk.iter().map(read_one).collect::<Vec<_>>()))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            }),
        };
        let mut set = MetricSet::with_order(ORDER);
        for m in &instances {
            add_instance(&mut set, m, host.mem_total);
        }
        let daemon = DaemonFigures {
            running: running.len(),
            stopped: rows.len() - running.len(),
            operations: d
                .ops
                .all()
                .iter()
                .map(|op| {
                    let s = op.snapshot();
                    (s.class, s.status)
                })
                .collect(),
            process: host::process_stats(Path::new("/proc/self")),
            uptime: self.metrics.started.elapsed(),
        };
        add_daemon(&mut set, &daemon, &self.metrics.requests);
        Ok(set.render())
    }
}

/// Reads one running instance: its cgroup, its disks' filesystems and its veths' host ends.
fn instance_metrics(
    d: &Daemon,
    host: &HostView,
    row: &InstanceRow,
    state: &MonitorState,
    devices: &Devices,
) -> InstanceMetrics {
    let mut cg = cgroup::read_stats(&state.cgroup_layout, &state.cgroup);
    for (dev, _) in cg.disk.iter_mut() {
        if let Some(name) = host.partitions.get(dev.as_str()) {
            *dev = name.clone();
        }
    }
    let network = super::devices::host_ends(&row.config, devices)
        .into_iter()
        .filter_map(|(inside, host_end)| Some((inside, host.net.get(&host_end)?.swapped())))
        .collect();
    InstanceMetrics {
        name: row.name.clone(),
        kind: row.kind.clone(),
        cgroup: cg,
        filesystems: filesystems(d, host, row, devices),
        network,
    }
}

/// The filesystems of an instance's disk devices: its root volume, custom volumes and
/// host paths, each by one `statfs` on the host side.
fn filesystems(
    d: &Daemon,
    host: &HostView,
    row: &InstanceRow,
    devices: &Devices,
) -> Vec<Filesystem> {
    let mut out = Vec::new();
    for dev in devices
        .values()
        .filter(|dev| dev.get("type").map(String::as_str) == Some("disk"))
    {
        let get = |k: &str| dev.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let Some(path) = get("path") else {
            continue;
        };
        let on_host: Option<PathBuf> = match (get("pool"), get("source")) {
            (Some(_), None) if path == "/" => d
                .pool(&row.pool)
                .ok()
                .map(|p| p.path(&crate::daemon::instance_vol(&row.name))),
            (Some(pool), Some(vol)) => d
                .pool(pool)
                .ok()
                .map(|p| p.path(&crate::daemon::custom_vol(vol))),
            (None, Some(source)) => Some(PathBuf::from(source)),
            _ => None,
        };
        let Some(on_host) = on_host else {
            continue;
        };
        let Some(usage) = host::fs_usage(&on_host) else {
            continue;
        };
        let (device, fstype) = match host::mount_of(&host.mounts, &on_host) {
            Some(m) => (m.source.clone(), m.fstype.clone()),
            None => (String::new(), String::new()),
        };
        out.push(Filesystem {
            device,
            fstype,
            mountpoint: path.to_string(),
            usage,
        });
    }
    out
}

/// Adds an instance's samples under LXD's names.
fn add_instance(set: &mut MetricSet, m: &InstanceMetrics, host_mem_total: u64) {
    let base = || {
        vec![
            ("name", m.name.clone()),
            ("project", "default".to_string()),
            ("type", m.kind.clone()),
        ]
    };
    // Extra labels (`cpu`, `device`, `mode`) sort before `name`: in this order no sort
    // is needed when rendering.
    let with = |extra: &[(&'static str, &str)]| {
        let mut l: Vec<(&'static str, String)> =
            extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
        l.extend(base());
        l
    };
    let cg = &m.cgroup;
    for c in &cg.cpu {
        set.add(
            CPU_SECONDS,
            with(&[("cpu", &c.cpu), ("mode", c.mode)]),
            c.seconds,
        );
    }
    if let Some(n) = cg.effective_cpus {
        set.add(CPU_EFFECTIVE, base(), n as f64);
    }
    for (dev, io) in &cg.disk {
        let l = || with(&[("device", dev)]);
        set.add(DISK_READ_BYTES, l(), io.read_bytes as f64);
        set.add(DISK_READS, l(), io.reads as f64);
        set.add(DISK_WRITTEN_BYTES, l(), io.written_bytes as f64);
        set.add(DISK_WRITES, l(), io.writes as f64);
    }
    for fs in &m.filesystems {
        // As LXD: filesystem samples carry no `type`.
        let l = || {
            vec![
                ("device", fs.device.clone()),
                ("fstype", fs.fstype.clone()),
                ("mountpoint", fs.mountpoint.clone()),
                ("name", m.name.clone()),
                ("project", "default".to_string()),
            ]
        };
        set.add(FS_AVAIL, l(), fs.usage.avail as f64);
        set.add(FS_FREE, l(), fs.usage.free as f64);
        set.add(FS_SIZE, l(), fs.usage.size as f64);
    }
    if let Some(mem) = &cg.memory {
        add_memory(set, mem, host_mem_total, base());
    }
    for (dev, c) in &m.network {
        let l = || with(&[("device", dev)]);
        set.add(NET_RX_BYTES, l(), c.rx_bytes as f64);
        set.add(NET_RX_DROP, l(), c.rx_drop as f64);
        set.add(NET_RX_ERRS, l(), c.rx_errs as f64);
        set.add(NET_RX_PACKETS, l(), c.rx_packets as f64);
        set.add(NET_TX_BYTES, l(), c.tx_bytes as f64);
        set.add(NET_TX_DROP, l(), c.tx_drop as f64);
        set.add(NET_TX_ERRS, l(), c.tx_errs as f64);
        set.add(NET_TX_PACKETS, l(), c.tx_packets as f64);
    }
    set.add(PROCS, base(), cg.processes as f64);
}

/// LXD's memory samples: `MemTotal` is the limit (the host's memory when unlimited),
/// `MemFree` what the limit leaves, `MemAvailable` that and the page cache.
fn add_memory(
    set: &mut MetricSet,
    mem: &cgroup::Memory,
    host_mem_total: u64,
    labels: Vec<(&'static str, String)>,
) {
    let total = mem.limit.unwrap_or(host_mem_total);
    let free = total.saturating_sub(mem.usage);
    for (desc, v) in [
        (MEM_ACTIVE_ANON, Some(mem.active_anon)),
        (MEM_ACTIVE_FILE, Some(mem.active_file)),
        (MEM_ACTIVE, Some(mem.active_anon + mem.active_file)),
        (MEM_CACHED, Some(mem.cached)),
        (MEM_DIRTY, Some(mem.dirty)),
        (MEM_INACTIVE_ANON, Some(mem.inactive_anon)),
        (MEM_INACTIVE_FILE, Some(mem.inactive_file)),
        (MEM_INACTIVE, Some(mem.inactive_anon + mem.inactive_file)),
        (MEM_MAPPED, Some(mem.mapped)),
        (MEM_AVAILABLE, Some(free + mem.cached)),
        (MEM_FREE, Some(free)),
        (MEM_TOTAL, Some(total)),
        (MEM_RSS, mem.rss),
        (MEM_SHMEM, Some(mem.shmem)),
        (MEM_SWAP, mem.swap),
        (MEM_UNEVICTABLE, Some(mem.unevictable)),
        (MEM_WRITEBACK, Some(mem.writeback)),
        (MEM_OOM_KILLS, mem.oom_kills),
    ] {
        if let Some(v) = v {
            set.add(desc, labels.clone(), v as f64);
        }
    }
}

/// The daemon's own figures at a scrape.
struct DaemonFigures {
    running: usize,
    stopped: usize,
    /// (class, status) of each operation held.
    operations: Vec<(String, String)>,
    process: host::ProcessStats,
    uptime: Duration,
}

fn add_daemon(set: &mut MetricSet, f: &DaemonFigures, requests: &RequestDurations) {
    for (status, n) in [("Running", f.running), ("Stopped", f.stopped)] {
        set.add(INSTANCES, vec![("status", status.to_string())], n as f64);
    }
    let mut ops: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for (class, status) in &f.operations {
        *ops.entry((class.as_str(), status.as_str())).or_default() += 1;
    }
    for ((class, status), n) in ops {
        set.add(
            OPERATIONS,
            vec![("class", class.to_string()), ("status", status.to_string())],
            n as f64,
        );
    }
    let mut series = requests.snapshot();
    // A stable order from scrape to scrape (the table's is by hash).
    series.sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));
    for s in series {
        set.add_histogram(
            REQUEST_DURATION,
            vec![("method", s.method), ("route", s.route)],
            &s.buckets,
            s.sum_seconds,
            s.count,
        );
    }
    set.add(THREADS, Vec::new(), f.process.threads as f64);
    set.add(OPEN_FDS, Vec::new(), f.process.open_fds as f64);
    set.add(RESIDENT_MEMORY, Vec::new(), f.process.resident_bytes as f64);
    set.add(UPTIME, Vec::new(), f.uptime.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgroup::{CpuTime, DiskIo, Memory};

    fn sample() -> InstanceMetrics {
        InstanceMetrics {
            name: "c1".into(),
            kind: "container".into(),
            cgroup: CgroupStats {
                cpu: vec![CpuTime {
                    cpu: "0".into(),
                    mode: "user",
                    seconds: 1.5,
                }],
                effective_cpus: Some(2),
                memory: Some(Memory {
                    active_anon: 4096,
                    cached: 8192,
                    usage: 65536,
                    limit: Some(1 << 20),
                    rss: None,
                    swap: Some(0),
                    oom_kills: None,
                    ..Memory::default()
                }),
                disk: vec![(
                    "vda".into(),
                    DiskIo {
                        read_bytes: 1,
                        reads: 2,
                        written_bytes: 3,
                        writes: 4,
                    },
                )],
                processes: 3,
            },
            filesystems: vec![Filesystem {
                device: "/dev/loop3".into(),
                fstype: "btrfs".into(),
                mountpoint: "/".into(),
                usage: FsUsage {
                    avail: 10,
                    free: 20,
                    size: 30,
                },
            }],
            network: vec![(
                "eth0".into(),
                NetCounters {
                    rx_bytes: 100,
                    ..NetCounters::default()
                },
            )],
        }
    }

    #[test]
    fn an_instance_renders_under_lxds_names_and_labels() {
        let mut set = MetricSet::with_order(ORDER);
        add_instance(&mut set, &sample(), 1 << 30);
        let text = set.render();
        let l = r#"name="c1",project="default",type="container""#;
        for line in [
            format!(r#"lxd_cpu_seconds_total{{cpu="0",mode="user",{l}}} 1.5"#),
            format!("lxd_cpu_effective_total{{{l}}} 2"),
            format!(r#"lxd_disk_writes_completed_total{{device="vda",{l}}} 4"#),
            r#"lxd_filesystem_size_bytes{device="/dev/loop3",fstype="btrfs",mountpoint="/",name="c1",project="default"} 30"#.to_string(),
            format!("lxd_memory_Active_bytes{{{l}}} 4096"),
            format!("lxd_memory_MemTotal_bytes{{{l}}} 1.048576e+06"),
            format!("lxd_memory_MemFree_bytes{{{l}}} 983040"),
            format!("lxd_memory_MemAvailable_bytes{{{l}}} 991232"),
            format!("lxd_memory_Swap_bytes{{{l}}} 0"),
            format!(r#"lxd_network_receive_bytes_total{{device="eth0",{l}}} 100"#),
            format!("lxd_procs_total{{{l}}} 3"),
            "# TYPE lxd_procs_total gauge".to_string(),
            "# TYPE lxd_cpu_seconds_total counter".to_string(),
        ] {
            assert!(text.lines().any(|x| x == line), "no {line:?} in:\n{text}");
        }
        // What the host does not count is left out, not shown as 0.
        assert!(!text.contains("lxd_memory_RSS_bytes"), "{text}");
        assert!(!text.contains("lxd_memory_OOM_kills_total"), "{text}");
        // No memory controller: no memory samples, rather than zeros.
        let mut bare = sample();
        bare.cgroup.memory = None;
        let mut set = MetricSet::with_order(ORDER);
        add_instance(&mut set, &bare, 1 << 30);
        let bare_text = set.render();
        assert!(!bare_text.contains("lxd_memory_"), "{bare_text}");
        assert!(bare_text.contains("lxd_procs_total"), "{bare_text}");
        // LXD's order: CPU, disk, filesystem, memory, network, processes.
        let at = |name: &str| text.find(&format!("# TYPE {name} ")).unwrap();
        assert!(at("lxd_cpu_seconds_total") < at("lxd_disk_read_bytes_total"));
        assert!(at("lxd_filesystem_avail_bytes") < at("lxd_memory_Active_anon_bytes"));
        assert!(at("lxd_memory_Active_file_bytes") < at("lxd_memory_Active_bytes"));
        assert!(at("lxd_network_transmit_packets_total") < at("lxd_procs_total"));
    }

    #[test]
    fn an_unlimited_instance_counts_the_hosts_memory() {
        let mut m = sample();
        m.cgroup.memory.as_mut().unwrap().limit = None;
        let mut set = MetricSet::with_order(ORDER);
        add_instance(&mut set, &m, 1000 * 1024);
        assert!(set.render().contains(
            r#"lxd_memory_MemTotal_bytes{name="c1",project="default",type="container"} 1.024e+06"#
        ));
    }

    #[test]
    fn daemon_figures_render_with_the_request_histogram() {
        let requests = RequestDurations::default();
        requests.observe("GET", "/1.0/instances", Duration::from_millis(2));
        let f = DaemonFigures {
            running: 2,
            stopped: 1,
            operations: vec![
                ("task".into(), "Running".into()),
                ("task".into(), "Running".into()),
                ("websocket".into(), "Success".into()),
            ],
            process: host::ProcessStats {
                threads: 9,
                resident_bytes: 4096,
                open_fds: 12,
            },
            uptime: Duration::from_secs(5),
        };
        let mut set = MetricSet::with_order(ORDER);
        add_daemon(&mut set, &f, &requests);
        let text = set.render();
        for line in [
            r#"hutch_instances{status="Running"} 2"#,
            r#"hutch_instances{status="Stopped"} 1"#,
            r#"hutch_operations{class="task",status="Running"} 2"#,
            r#"hutch_operations{class="websocket",status="Success"} 1"#,
            r#"hutch_api_request_duration_seconds_bucket{le="0.0025",method="GET",route="/1.0/instances"} 1"#,
            r#"hutch_api_request_duration_seconds_count{method="GET",route="/1.0/instances"} 1"#,
            "hutch_threads 9",
            "hutch_open_fds 12",
            "hutch_resident_memory_bytes 4096",
            "hutch_uptime_seconds 5",
            "# TYPE hutch_api_request_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|x| x == line), "no {line:?} in:\n{text}");
        }
    }
}
