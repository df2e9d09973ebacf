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

/// `key value` lines (cpu.stat, memory.stat) → the value of `key`.
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
        limits.cpu_allowance = Some(CpuAllowance {
            quota_us: 50_000,
            period_us: 100_000,
        });
        assert_eq!(render_cpu_max(&limits), "50000 100000");
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
