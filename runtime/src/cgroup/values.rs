//! Pure value logic: rendering limits as cgroup files want them, parsing what they report.

use crate::spec::{parse_cpu_list, Limits};

/// Renders CPU numbers back into cpuset list syntax ("0-2,5").
pub fn render_cpu_list(cpus: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// The cpuset for `limits` given the parent's effective cpus; `None` when no CPU pinning
/// was asked for (then the parent's set applies).
pub fn cpuset_for(limits: &Limits, parent_cpus: &str) -> Result<Option<String>, String> {
    let available = parse_cpu_list(parent_cpus)?;
    if let Some(set) = &limits.cpu_set {
        let wanted = parse_cpu_list(set)?;
        if let Some(cpu) = wanted.iter().find(|c| !available.contains(c)) {
            return Err(format!("CPU {cpu} is not available (have {parent_cpus})"));
        }
        return Ok(Some(render_cpu_list(&wanted)));
    }
    if let Some(n) = limits.cpu_count {
        if n == 0 {
            return Err("at least 1 CPU is needed".into());
        }
        if n as usize > available.len() {
            return Err(format!("{n} CPUs asked, {} available", available.len()));
        }
        return Ok(Some(render_cpu_list(&available[..n as usize])));
    }
    Ok(None)
}

/// v2 cpu.max: "quota period" or "max period".
pub fn render_cpu_max(limits: &Limits) -> String {
    match limits.cpu_allowance {
        Some(a) => format!("{} {}", a.quota_us, a.period_us),
        None => "max 100000".to_string(),
    }
}

/// A v2 limit value: the number or "max".
pub fn max_or(v: Option<u64>) -> String {
    v.map(|n| n.to_string())
        .unwrap_or_else(|| "max".to_string())
}

/// Devices every container may use under the v1 devices controller, after `deny a`:
/// mknod of anything, then null, zero, full, random, urandom, tty, console, ptmx, the
/// pts, fuse and tun.
pub const DEVICE_ALLOW: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:229 rwm",
    "c 10:200 rwm",
];

/// Whether a v1 devices.list shows exactly [`DEVICE_ALLOW`] (the kernel lists the rules in
/// the order they were written).
pub fn devices_match(list: &str) -> bool {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .eq(DEVICE_ALLOW.iter().copied())
}

/// The v1 memory writes for `limits` (file name, value), in an order the kernel accepts
/// from any current state. memory.memsw.limit_in_bytes may never be below
/// memory.limit_in_bytes, so it is lifted first, then the memory limit is set, then memsw is
/// lowered to the same value when swap is not allowed. This works when raising and when
/// lowering without reading the current values.
pub fn v1_memory_writes(limits: &Limits, has_memsw: bool) -> Vec<(&'static str, String)> {
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    let limit = limits
        .memory
        .map_or_else(|| "-1".to_string(), |m| m.to_string());
    let mut out = Vec::new();
    if has_memsw {
        out.push((MEMSW, "-1".to_string()));
    }
    out.push(("memory.limit_in_bytes", limit.clone()));
    if has_memsw && !limits.memory_swap && limits.memory.is_some() {
        out.push((MEMSW, limit));
    }
    out
}

/// The v1 CPU bandwidth writes (file name, value). The quota is lifted before a new period
/// is written, so the kernel never checks the new period against the old quota.
pub fn v1_cpu_writes(limits: &Limits) -> Vec<(&'static str, String)> {
    const QUOTA: &str = "cpu.cfs_quota_us";
    match limits.cpu_allowance {
        None => vec![(QUOTA, "-1".into())],
        Some(a) => vec![
            (QUOTA, "-1".into()),
            ("cpu.cfs_period_us", a.period_us.to_string()),
            (QUOTA, a.quota_us.to_string()),
        ],
    }
}

/// `key value` lines (cpu.stat, memory.stat, cgroup.events) → the value of `key`.
pub fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::CpuAllowance;

    #[test]
    fn cpu_lists_render_as_ranges() {
        assert_eq!(render_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(render_cpu_list(&[3]), "3");
        assert_eq!(render_cpu_list(&[]), "");
    }

    #[test]
    fn cpu_count_takes_the_first_available() {
        let limits = Limits {
            cpu_count: Some(2),
            ..Limits::default()
        };
        assert_eq!(cpuset_for(&limits, "2-5").unwrap().as_deref(), Some("2-3"));
        let too_many = Limits {
            cpu_count: Some(9),
            ..Limits::default()
        };
        assert!(cpuset_for(&too_many, "0-1").unwrap_err().contains("9 CPUs"));
        assert_eq!(cpuset_for(&Limits::default(), "0-1").unwrap(), None);
    }

    #[test]
    fn explicit_cpu_sets_must_be_available() {
        let limits = Limits {
            cpu_set: Some("1,3".into()),
            cpu_count: Some(1),
            ..Limits::default()
        };
        assert_eq!(cpuset_for(&limits, "0-3").unwrap().as_deref(), Some("1,3"));
        assert!(cpuset_for(&limits, "0-1").is_err());
    }

    #[test]
    fn cpu_max_renders_allowance_or_max() {
        let mut limits = Limits::default();
        assert_eq!(render_cpu_max(&limits), "max 100000");
        limits.cpu_allowance = allowance(50_000, 100_000);
        assert_eq!(render_cpu_max(&limits), "50000 100000");
    }

    fn allowance(quota_us: u64, period_us: u64) -> Option<CpuAllowance> {
        Some(CpuAllowance {
            quota_us,
            period_us,
        })
    }

    #[test]
    fn memsw_is_lifted_before_the_memory_limit_moves() {
        let no_swap = Limits {
            memory: Some(1 << 30),
            memory_swap: false,
            ..Limits::default()
        };
        assert_eq!(
            v1_memory_writes(&no_swap, true),
            vec![
                ("memory.memsw.limit_in_bytes", "-1".to_string()),
                ("memory.limit_in_bytes", "1073741824".to_string()),
                ("memory.memsw.limit_in_bytes", "1073741824".to_string()),
            ]
        );
        // Without swap accounting there is only the memory limit.
        assert_eq!(
            v1_memory_writes(&no_swap, false),
            vec![("memory.limit_in_bytes", "1073741824".to_string())]
        );
        // Swap allowed, or no limit at all: memsw stays unlimited.
        let swap = Limits {
            memory_swap: true,
            ..no_swap.clone()
        };
        assert_eq!(v1_memory_writes(&swap, true).len(), 2);
        let cleared = v1_memory_writes(&Limits::default(), true);
        assert_eq!(
            cleared,
            vec![
                ("memory.memsw.limit_in_bytes", "-1".to_string()),
                ("memory.limit_in_bytes", "-1".to_string()),
            ]
        );
    }

    #[test]
    fn v1_cpu_quota_is_lifted_before_the_period_changes() {
        assert_eq!(
            v1_cpu_writes(&Limits::default()),
            vec![("cpu.cfs_quota_us", "-1".to_string())]
        );
        let limits = Limits {
            cpu_allowance: allowance(20_000, 50_000),
            ..Limits::default()
        };
        assert_eq!(
            v1_cpu_writes(&limits),
            vec![
                ("cpu.cfs_quota_us", "-1".to_string()),
                ("cpu.cfs_period_us", "50000".to_string()),
                ("cpu.cfs_quota_us", "20000".to_string()),
            ]
        );
    }

    #[test]
    fn devices_list_is_compared_in_order() {
        let ours = DEVICE_ALLOW.join("\n") + "\n";
        assert!(devices_match(&ours));
        assert!(!devices_match("a *:* rwm\n"));
        assert!(!devices_match(&DEVICE_ALLOW[..3].join("\n")));
    }

    #[test]
    fn memory_stat_fields_parse() {
        let text = "cache 8192\nrss 4096\ntotal_rss 4096\nswap 0\n";
        assert_eq!(stat_field(text, "rss"), Some(4096));
        assert_eq!(stat_field(text, "total_rss"), Some(4096));
        assert_eq!(stat_field("populated 1\nfrozen 1\n", "frozen"), Some(1));
    }

    #[test]
    fn stat_fields_parse() {
        let text = "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n";
        assert_eq!(stat_field(text, "usage_usec"), Some(1234));
        assert_eq!(stat_field(text, "nope"), None);
        assert_eq!(max_or(None), "max");
        assert_eq!(max_or(Some(5)), "5");
    }
}
