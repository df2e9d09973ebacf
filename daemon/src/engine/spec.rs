//! Profiles expanded into the final config and devices, and the runtime spec built from them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hutch_api::config::{
    check_syscall_keys, parse_bool, parse_cpu, parse_cpu_allowance, parse_memory,
    parse_syscall_list, CpuLimit,
};
use hutch_api::profile::Devices;
use hutch_runtime::{BindMount, ContainerSpec, CpuAllowance, Limits, Seccomp};

use crate::daemon::Daemon;
use crate::db::instances::InstanceRow;
use crate::error::{DaemonError, Result};

/// Config and devices after profiles, in order, with the instance's own last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expanded {
    pub config: BTreeMap<String, String>,
    pub devices: Devices,
}

/// Drops keys set to `""` from a config and from each device's options, as LXD's database
/// does on every write: an empty value means unset (`lxc config device unset` sends one).
pub fn drop_empty_values(config: &mut BTreeMap<String, String>, devices: &mut Devices) {
    config.retain(|_, v| !v.is_empty());
    for dev in devices.values_mut() {
        dev.retain(|_, v| !v.is_empty());
    }
}

pub fn expand(d: &Daemon, row: &InstanceRow) -> Result<Expanded> {
    expand_with(row, |name| d.db.profile(name))
}

/// `row` expanded over the profiles `profile` gives (a profile's pending change, say).
pub fn expand_with(
    row: &InstanceRow,
    profile: impl Fn(&str) -> Result<Option<hutch_api::profile::ProfilePut>>,
) -> Result<Expanded> {
    let mut out = Expanded::default();
    for name in &row.profiles {
        if let Some(p) = profile(name)? {
            out.config.extend(p.config);
            out.devices.extend(p.devices);
        }
    }
    out.config.extend(row.config.clone());
    out.devices.extend(row.devices.clone());
    // A device of type none masks the profile's device of the same name.
    out.devices
        .retain(|_, dev| dev.get("type").map(String::as_str) != Some("none"));
    Ok(out)
}

fn host_memory() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Limits from `limits.*` keys.
pub fn limits_from(config: &BTreeMap<String, String>) -> Result<Limits> {
    let bad = |k: &str, e: String| {
        DaemonError::BadRequest(format!("invalid value for config key {k:?}: {e}"))
    };
    let mut limits = Limits {
        memory_swap: true,
        ..Limits::default()
    };
    if let Some(v) = config.get("limits.memory").filter(|v| !v.is_empty()) {
        limits.memory = Some(parse_memory(v, host_memory()).map_err(|e| bad("limits.memory", e))?);
    }
    if let Some(v) = config.get("limits.memory.swap").filter(|v| !v.is_empty()) {
        limits.memory_swap = parse_bool(v).map_err(|e| bad("limits.memory.swap", e))?;
    }
    let mut cpus = 1;
    if let Some(v) = config.get("limits.cpu").filter(|v| !v.is_empty()) {
        match parse_cpu(v).map_err(|e| bad("limits.cpu", e))? {
            CpuLimit::Count(n) => {
                limits.cpu_count = Some(n);
                cpus = n;
            }
            CpuLimit::Set(s) => limits.cpu_set = Some(s),
        }
    }
    if let Some(v) = config.get("limits.cpu.allowance").filter(|v| !v.is_empty()) {
        let (quota_us, period_us) =
            parse_cpu_allowance(v, cpus).map_err(|e| bad("limits.cpu.allowance", e))?;
        limits.cpu_allowance = Some(CpuAllowance {
            quota_us,
            period_us,
        });
    }
    if let Some(v) = config.get("limits.processes").filter(|v| !v.is_empty()) {
        limits.processes = Some(
            v.parse()
                .map_err(|_| bad("limits.processes", "not a number".into()))?,
        );
    }
    Ok(limits)
}

/// Whether a boolean key is true.
pub fn flag(config: &BTreeMap<String, String>, key: &str) -> bool {
    config
        .get(key)
        .is_some_and(|v| parse_bool(v).unwrap_or(false))
}

/// The seccomp policy from `security.syscalls.*` keys (after profiles, so a profile's
/// deny list and an instance's allow list are caught together).
pub fn seccomp_from(config: &BTreeMap<String, String>) -> Result<Seccomp> {
    let bad = |e: String| DaemonError::BadRequest(e);
    check_syscall_keys(config).map_err(|e| bad(e.to_string()))?;
    let list = |k: &str| -> Result<Vec<String>> {
        parse_syscall_list(config.get(k).map_or("", String::as_str))
            .map_err(|e| bad(format!("invalid value for config key {k:?}: {e}")))
    };
    let deny_default = config
        .get("security.syscalls.deny_default")
        .filter(|v| !v.is_empty())
        .map_or(Ok(true), |v| parse_bool(v))
        .map_err(|e| bad(format!("security.syscalls.deny_default: {e}")))?;
    Ok(Seccomp {
        deny_default,
        deny: list("security.syscalls.deny")?,
        deny_compat: flag(config, "security.syscalls.deny_compat"),
        allow: list("security.syscalls.allow")?,
    })
}

/// The runtime spec for starting `row`.
pub fn build_spec(d: &Daemon, row: &InstanceRow, expanded: &Expanded) -> Result<ContainerSpec> {
    let idmap = super::idmaps::instance_idmap(d, row, expanded)?;
    let mut spec = ContainerSpec::new(
        &row.name,
        d.pool(&row.pool)?
            .path(&crate::daemon::instance_vol(&row.name))
            .join("rootfs"),
        idmap,
        &d.cgroup_path(&row.name),
    );
    spec.limits = limits_from(&expanded.config)?;
    spec.nesting = flag(&expanded.config, "security.nesting");
    spec.seccomp = seccomp_from(&expanded.config)?;
    for (k, v) in &expanded.config {
        if let Some(var) = k.strip_prefix("environment.") {
            spec.env.insert(var.to_string(), v.clone());
        }
    }
    if super::oci::is_oci(&expanded.config) {
        super::oci::apply_to_spec(&mut spec, &expanded.config)?;
    }
    spec.mounts = disk_mounts(d, &expanded.devices)?;
    spec.lxcfs = super::lxcfs::serving_dir();
    Ok(spec)
}

/// The bind mounts of the disk devices among `devices` (the root disk aside).
pub fn disk_mounts(d: &Daemon, devices: &hutch_api::profile::Devices) -> Result<Vec<BindMount>> {
    let mut mounts = Vec::new();
    for (name, dev) in devices {
        mounts.extend(disk_mount(d, name, dev)?);
    }
    Ok(mounts)
}

/// The bind mount of device `name`, when it is a disk other than the root disk.
pub fn disk_mount(
    d: &Daemon,
    name: &str,
    dev: &BTreeMap<String, String>,
) -> Result<Option<BindMount>> {
    if dev.get("type").map(String::as_str) != Some("disk") {
        return Ok(None);
    }
    let path = dev.get("path").cloned().unwrap_or_default();
    if path == "/" {
        return Ok(None);
    }
    let source = dev.get("source").cloned().unwrap_or_default();
    if !path.starts_with('/') || source.is_empty() {
        return Err(DaemonError::BadRequest(format!(
            "disk device {name:?} needs a source and an absolute path"
        )));
    }
    // A source that is not a host path names a custom volume of the pool; unprivileged
    // containers own its files, so it is presented through an idmapped mount.
    let (source, idmapped) = if source.starts_with('/') {
        (PathBuf::from(source), flag(dev, "shift"))
    } else {
        // Records stored before names were checked are checked again here.
        super::volumes::validate_volume_name(&source)?;
        let vol = crate::daemon::custom_vol(&source);
        let pool = d.pool(dev.get("pool").map(String::as_str).unwrap_or("default"))?;
        if !pool.path(&vol).exists() {
            return Err(DaemonError::BadRequest(format!(
                "disk device {name:?}: storage volume {source:?} not found"
            )));
        }
        (pool.path(&vol), true)
    };
    Ok(Some(BindMount {
        source,
        target: PathBuf::from(path),
        readonly: flag(dev, "readonly"),
        idmapped,
    }))
}

/// The `size` of the root disk (`path=/`) among expanded devices, in bytes.
pub fn root_size(devices: &hutch_api::profile::Devices) -> Result<Option<u64>> {
    let root = devices.values().find(|d| {
        d.get("type").map(String::as_str) == Some("disk")
            && d.get("path").map(String::as_str) == Some("/")
    });
    match root.and_then(|d| d.get("size")).filter(|s| !s.is_empty()) {
        Some(size) => parse_memory(size, 0)
            .map(Some)
            .map_err(|e| DaemonError::BadRequest(format!("invalid root disk size: {e}"))),
        None => Ok(None),
    }
}

/// The `pool` of the root disk (`path=/`) among expanded devices (`default` without one).
pub fn root_pool(devices: &hutch_api::profile::Devices) -> String {
    devices
        .values()
        .find(|d| {
            d.get("type").map(String::as_str) == Some("disk")
                && d.get("path").map(String::as_str) == Some("/")
        })
        .and_then(|d| d.get("pool"))
        .filter(|p| !p.is_empty())
        .cloned()
        .unwrap_or_else(|| "default".into())
}

/// Refuses a root disk on a missing pool, or a size on a pool that cannot enforce one,
/// before anything is made.
pub fn check_root_size(d: &Daemon, devices: &hutch_api::profile::Devices) -> Result<Option<u64>> {
    let size = root_size(devices)?;
    let pool_name = root_pool(devices);
    let pool = d.pool(&pool_name).map_err(|_| {
        DaemonError::BadRequest(format!(
            "Storage pool {pool_name:?} of the root disk not found"
        ))
    })?;
    if size.is_some() && !pool.info().quotas {
        return Err(DaemonError::BadRequest(format!(
            "{} pools cannot limit the size of a volume",
            pool.info().name
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn seccomp_comes_from_the_syscall_keys() {
        assert_eq!(seccomp_from(&config(&[])).unwrap(), Seccomp::default());
        let s = seccomp_from(&config(&[
            ("security.syscalls.deny", "mkdirat,chmod"),
            ("security.syscalls.deny_default", "false"),
            ("security.syscalls.deny_compat", "true"),
        ]))
        .unwrap();
        assert_eq!(s.deny, vec!["mkdirat", "chmod"]);
        assert!(!s.deny_default && s.deny_compat && s.allow.is_empty());
        let both = config(&[
            ("security.syscalls.allow", "read"),
            ("security.syscalls.deny", "write"),
        ]);
        assert!(matches!(
            seccomp_from(&both),
            Err(DaemonError::BadRequest(_))
        ));
    }

    #[test]
    fn the_api_and_the_runtime_know_the_same_syscalls() {
        let api: Vec<&str> = hutch_api::config::syscall_names().collect();
        let runtime: Vec<&str> = hutch_runtime::seccomp::known_names().collect();
        assert_eq!(api, runtime);
    }

    #[test]
    fn limits_come_from_config() {
        let cfg: BTreeMap<String, String> = [
            ("limits.memory", "64MiB"),
            ("limits.cpu", "2"),
            ("limits.cpu.allowance", "50%"),
            ("limits.processes", "100"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let l = limits_from(&cfg).unwrap();
        assert_eq!(l.memory, Some(64 << 20));
        assert_eq!(l.cpu_count, Some(2));
        assert_eq!(
            l.cpu_allowance,
            Some(CpuAllowance {
                quota_us: 100_000,
                period_us: 100_000
            })
        );
        assert_eq!(l.processes, Some(100));
    }
}
