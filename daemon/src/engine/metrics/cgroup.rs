//! A running container's counters, read straight from its cgroup's files on the host
//! (cgroup v2, or the v1 controllers of a legacy or hybrid host): CPU time, memory, block
//! I/O and processes. Nothing enters the container; each value is one small file read.

use std::path::{Path, PathBuf};

use hutch_runtime::cgroup::CgroupLayout;

/// CPU time of one CPU (`cpu` label) in one mode, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTime {
    pub cpu: String,
    pub mode: &'static str,
    pub seconds: f64,
}

/// Block I/O of one device, by `major:minor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskIo {
    pub read_bytes: u64,
    pub reads: u64,
    pub written_bytes: u64,
    pub writes: u64,
}

/// Memory as LXD reports it (`lxd_memory_*`), in bytes. `None` where the host does not
/// count it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub active_anon: u64,
    pub active_file: u64,
    pub inactive_anon: u64,
    pub inactive_file: u64,
    pub cached: u64,
    pub dirty: u64,
    pub mapped: u64,
    pub shmem: u64,
    pub unevictable: u64,
    pub writeback: u64,
    /// Anonymous and swap cache memory (v1 only, as LXD).
    pub rss: Option<u64>,
    pub swap: Option<u64>,
    pub usage: u64,
    /// The effective limit; `None` when unlimited.
    pub limit: Option<u64>,
    pub oom_kills: Option<u64>,
}

/// What one container's cgroup says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu: Vec<CpuTime>,
    /// CPUs it may run on (its effective cpuset).
    pub effective_cpus: Option<u64>,
    /// None without a memory controller (its samples are then left out, not zeros).
    pub memory: Option<Memory>,
    /// By `major:minor`.
    pub disk: Vec<(String, DiskIo)>,
    pub processes: u64,
}

/// v1 writes "no limit" as `i64::MAX` rounded down to a page: anything this large.
const UNLIMITED: u64 = 1 << 62;

/// A limit file's value: `max` (v2) or a page-rounded `i64::MAX` (v1) mean none.
fn limit_value(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < UNLIMITED).then_some(v)
}

/// The value of `key` in `key value` lines (cpu.stat, memory.events, memory.oom_control).
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// How many CPUs a cpuset list (`0-3,6`) names.
pub fn count_cpus(list: &str) -> Option<u64> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => {
                part.parse::<u64>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// v1 `cpuacct.usage_all`: `cpu user system` then one line per CPU, in nanoseconds.
pub fn parse_usage_all(text: &str) -> Vec<CpuTime> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [cpu, user, system] = f.as_slice() {
            let ns = |s: &str| s.parse::<u64>().unwrap_or(0) as f64 / 1e9;
            out.push(CpuTime {
                cpu: cpu.to_string(),
                mode: "system",
                seconds: ns(system),
            });
            out.push(CpuTime {
                cpu: cpu.to_string(),
                mode: "user",
                seconds: ns(user),
            });
        }
    }
    out
}

/// v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N ...` per device.
pub fn parse_io_stat(text: &str) -> Vec<(String, DiskIo)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let dev = f.next()?.to_string();
            let mut io = DiskIo::default();
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => io.read_bytes = v,
                    "wbytes" => io.written_bytes = v,
                    "rios" => io.reads = v,
                    "wios" => io.writes = v,
                    _ => {}
                }
            }
            Some((dev, io))
        })
        .collect()
}

/// v1 blkio `..._recursive` files: `MAJ:MIN Read|Write|... N` lines, as (bytes, ops).
pub fn parse_blkio(bytes: &str, ops: &str) -> Vec<(String, DiskIo)> {
    let mut by_dev: Vec<(String, DiskIo)> = Vec::new();
    let mut fill = |text: &str, is_bytes: bool| {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [dev, op, n] = f.as_slice() else {
                continue;
            };
            let n: u64 = n.parse().unwrap_or(0);
            let i = match by_dev.iter().position(|(d, _)| d == dev) {
                Some(i) => i,
                None => {
                    by_dev.push((dev.to_string(), DiskIo::default()));
                    by_dev.len() - 1
                }
            };
            let io = &mut by_dev[i].1;
            match (*op, is_bytes) {
                ("Read", true) => io.read_bytes = n,
                ("Write", true) => io.written_bytes = n,
                ("Read", false) => io.reads = n,
                ("Write", false) => io.writes = n,
                _ => {}
            }
        }
    };
    fill(bytes, true);
    fill(ops, false);
    by_dev
}

/// Memory from `memory.stat`: v1's hierarchical `total_*` keys, or v2's own, and (v1)
/// the limit in force with its parents' (`hierarchical_memory_limit`), so that no other
/// file is read for it.
fn memory_of(text: &str, v1: bool) -> Memory {
    let mut m = Memory::default();
    let mut rss = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        let key = match (v1, key.strip_prefix("total_")) {
            (true, Some(k)) => k,
            (true, None) if key == "hierarchical_memory_limit" => {
                m.limit = (v < UNLIMITED).then_some(v);
                continue;
            }
            (true, None) => continue,
            (false, _) => key,
        };
        let field = match (key, v1) {
            ("active_anon", _) => &mut m.active_anon,
            ("active_file", _) => &mut m.active_file,
            ("inactive_anon", _) => &mut m.inactive_anon,
            ("inactive_file", _) => &mut m.inactive_file,
            ("cache", true) | ("file", false) => &mut m.cached,
            ("dirty", true) | ("file_dirty", false) => &mut m.dirty,
            ("mapped_file", true) | ("file_mapped", false) => &mut m.mapped,
            ("writeback", true) | ("file_writeback", false) => &mut m.writeback,
            ("shmem", _) => &mut m.shmem,
            ("unevictable", _) => &mut m.unevictable,
            ("rss", true) => &mut rss,
            _ => continue,
        };
        *field = v;
    }
    // As LXD: RSS is a v1 figure only.
    m.rss = v1.then_some(rss);
    m
}

fn read(path: &Path) -> Option<String> {
    super::host::read_small(path)
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// Lines of a `cgroup.procs` file.
fn count_lines(path: &Path) -> Option<u64> {
    Some(read(path)?.lines().count() as u64)
}

/// Reads the counters of the cgroup at `rel` (relative to each hierarchy's root) of
/// `layout`'s hierarchies.
pub fn read_stats(layout: &CgroupLayout, rel: &str) -> CgroupStats {
    let rel = rel.trim_matches('/');
    match layout.unified_hierarchy() {
        Some(h) => read_v2(&h.mountpoint.join(rel)),
        None => read_v1(layout, rel),
    }
}

/// v2 CPU time: no per-CPU split, so LXD reports it all as CPU 0.
fn cpu_v2(dir: &Path) -> Vec<CpuTime> {
    let Some(text) = read(&dir.join("cpu.stat")) else {
        return Vec::new();
    };
    [("system", "system_usec"), ("user", "user_usec")]
        .into_iter()
        .map(|(mode, key)| CpuTime {
            cpu: "0".into(),
            mode,
            seconds: field(&text, key).unwrap_or(0) as f64 / 1e6,
        })
        .collect()
}

fn read_v2(dir: &Path) -> CgroupStats {
    let f = |name: &str| dir.join(name);
    let memory = read(&f("memory.stat")).map(|text| {
        let mut m = memory_of(&text, false);
        m.usage = read_u64(&f("memory.current")).unwrap_or(0);
        m.limit = read(&f("memory.max")).and_then(|s| limit_value(&s));
        m.swap = read_u64(&f("memory.swap.current"));
        m.oom_kills = read(&f("memory.events")).and_then(|t| field(&t, "oom_kill"));
        m
    });
    CgroupStats {
        cpu: cpu_v2(dir),
        effective_cpus: read(&f("cpuset.cpus.effective")).and_then(|s| count_cpus(&s)),
        memory,
        disk: read(&f("io.stat"))
            .map(|t| parse_io_stat(&t))
            .unwrap_or_default(),
        processes: read_u64(&f("pids.current"))
            .or_else(|| count_lines(&f("cgroup.procs")))
            .unwrap_or(0),
    }
}

fn read_v1(layout: &CgroupLayout, rel: &str) -> CgroupStats {
    let dir = |controller: &str| -> Option<PathBuf> {
        layout.v1(controller).map(|h| h.mountpoint.join(rel))
    };
    let file = |controller: &str, name: &str| dir(controller).map(|d| d.join(name));
    let text = |controller: &str, name: &str| file(controller, name).and_then(|p| read(&p));
    let mut stats = CgroupStats {
        cpu: match text("cpuacct", "cpuacct.usage_all") {
            Some(t) => parse_usage_all(&t),
            // No cpuacct: the hybrid host's v2 tree counts CPU time (cpu.stat is core).
            None => layout
                .v2()
                .map(|h| cpu_v2(&h.mountpoint.join(rel)))
                .unwrap_or_default(),
        },
        effective_cpus: text("cpuset", "cpuset.effective_cpus").and_then(|s| count_cpus(&s)),
        ..CgroupStats::default()
    };
    stats.memory = text("memory", "memory.stat").map(|t| {
        let mut m = memory_of(&t, true);
        let num = |name: &str| file("memory", name).and_then(|p| read_u64(&p));
        m.usage = num("memory.usage_in_bytes").unwrap_or(0);
        m.swap = num("memory.memsw.usage_in_bytes").map(|t| t.saturating_sub(m.usage));
        m.oom_kills = text("memory", "memory.oom_control").and_then(|t| field(&t, "oom_kill"));
        m
    });
    if let (Some(bytes), Some(ops)) = (
        text("blkio", "blkio.throttle.io_service_bytes_recursive"),
        text("blkio", "blkio.throttle.io_serviced_recursive"),
    ) {
        stats.disk = parse_blkio(&bytes, &ops);
    }
    stats.processes = file("pids", "pids.current")
        .and_then(|p| read_u64(&p))
        .or_else(|| {
            let d = dir("memory").or_else(|| layout.v2().map(|h| h.mountpoint.join(rel)))?;
            count_lines(&d.join("cgroup.procs"))
        })
        .unwrap_or(0);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_runtime::cgroup::Hierarchy;

    #[test]
    fn cpusets_are_counted() {
        assert_eq!(count_cpus("0-3,6\n"), Some(5));
        assert_eq!(count_cpus("1"), Some(1));
        assert_eq!(count_cpus(""), Some(0));
        assert_eq!(count_cpus("x"), None);
    }

    #[test]
    fn per_cpu_usage_is_split_by_mode() {
        let got = parse_usage_all("cpu user system\n0 1500000000 0\n1 0 250000000\n");
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].cpu, "0");
        assert_eq!(got[0].mode, "system");
        assert_eq!(got[1].seconds, 1.5);
        assert_eq!((got[2].cpu.as_str(), got[2].seconds), ("1", 0.25));
    }

    #[test]
    fn block_io_is_read_in_both_formats() {
        let v2 = parse_io_stat("254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(
            v2,
            vec![(
                "254:0".to_string(),
                DiskIo {
                    read_bytes: 4096,
                    reads: 1,
                    written_bytes: 8192,
                    writes: 2
                }
            )]
        );
        let v1 = parse_blkio(
            "254:0 Read 4096\n254:0 Write 8192\n254:0 Total 12288\nTotal 12288\n",
            "254:0 Read 1\n254:0 Write 2\n",
        );
        assert_eq!(v1, v2);
    }

    #[test]
    fn limits_mean_none_when_unlimited() {
        assert_eq!(limit_value("max\n"), None);
        assert_eq!(limit_value("9223372036854771712\n"), None);
        assert_eq!(limit_value("268435456\n"), Some(268435456));
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn a_v2_cgroup_is_read_from_its_files() {
        let root = tempfile::tempdir().unwrap();
        let layout = CgroupLayout {
            hierarchies: vec![Hierarchy {
                mountpoint: root.path().to_path_buf(),
                controllers: vec!["cpu".into(), "memory".into()],
                v2: true,
            }],
        };
        write(
            &root.path().join("hutch-x/c1"),
            &[
                (
                    "cpu.stat",
                    "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n",
                ),
                ("cpuset.cpus.effective", "0-1\n"),
                (
                    "memory.stat",
                    "anon 4096\nfile 8192\nactive_anon 4096\nfile_dirty 512\n",
                ),
                ("memory.current", "65536\n"),
                ("memory.max", "max\n"),
                ("memory.swap.current", "0\n"),
                ("memory.events", "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n"),
                ("io.stat", "8:0 rbytes=1 wbytes=2 rios=3 wios=4\n"),
                ("pids.current", "3\n"),
            ],
        );
        let s = read_stats(&layout, "/hutch-x/c1/");
        assert_eq!(
            s.cpu,
            vec![
                CpuTime {
                    cpu: "0".into(),
                    mode: "system",
                    seconds: 1.0
                },
                CpuTime {
                    cpu: "0".into(),
                    mode: "user",
                    seconds: 2.0
                }
            ]
        );
        assert_eq!(s.effective_cpus, Some(2));
        assert_eq!(s.memory.as_ref().unwrap().cached, 8192);
        assert_eq!(s.memory.as_ref().unwrap().dirty, 512);
        assert_eq!(s.memory.as_ref().unwrap().usage, 65536);
        assert_eq!(s.memory.as_ref().unwrap().limit, None);
        assert_eq!(s.memory.as_ref().unwrap().rss, None);
        assert_eq!(s.memory.as_ref().unwrap().swap, Some(0));
        assert_eq!(s.memory.as_ref().unwrap().oom_kills, Some(1));
        assert_eq!(s.disk[0].1.writes, 4);
        assert_eq!(s.processes, 3);
    }

    #[test]
    fn a_v1_cgroup_is_read_per_controller() {
        let root = tempfile::tempdir().unwrap();
        let h = |c: &str| Hierarchy {
            mountpoint: root.path().join(c),
            controllers: vec![c.into()],
            v2: false,
        };
        let layout = CgroupLayout {
            hierarchies: vec![h("cpuacct"), h("memory"), h("pids"), h("blkio")],
        };
        let rel = "hutch-x/c1";
        write(
            &root.path().join("cpuacct").join(rel),
            &[("cpuacct.usage_all", "cpu user system\n0 1000000000 0\n")],
        );
        write(
            &root.path().join("memory").join(rel),
            &[
                (
                    "memory.stat",
                    "cache 1\nhierarchical_memory_limit 268435456\ntotal_cache 5246976\ntotal_rss 61440\n",
                ),
                ("memory.usage_in_bytes", "6082560\n"),
                ("memory.memsw.usage_in_bytes", "6086656\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        write(
            &root.path().join("pids").join(rel),
            &[("pids.current", "1\n")],
        );
        let s = read_stats(&layout, rel);
        assert_eq!(s.cpu.len(), 2);
        assert_eq!(s.cpu[1].seconds, 1.0);
        assert_eq!(s.memory.as_ref().unwrap().cached, 5246976);
        assert_eq!(s.memory.as_ref().unwrap().rss, Some(61440));
        assert_eq!(s.memory.as_ref().unwrap().limit, Some(268435456));
        assert_eq!(s.memory.as_ref().unwrap().swap, Some(4096));
        assert_eq!(s.memory.as_ref().unwrap().oom_kills, Some(2));
        assert!(s.disk.is_empty());
        assert_eq!(s.processes, 1);
        assert_eq!(s.effective_cpus, None);
    }
}
