//! The plain description of one container that the runtime is asked to run.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::idmap::IdMap;

/// Default cap on the console log kept by the monitor, in bytes.
pub const DEFAULT_CONSOLE_LOG_LIMIT: u64 = 1 << 20;

/// Everything the runtime needs to start one system container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Container name; also its hostname.
    pub name: String,
    /// Host path of the root filesystem.
    pub rootfs: PathBuf,
    /// Run without a user namespace (container root is host root).
    #[serde(default)]
    pub privileged: bool,
    /// Host ranges for the user namespace; required unless privileged.
    #[serde(default)]
    pub idmap: Option<IdMap>,
    /// Cgroup path relative to each hierarchy's root, unique per daemon and container.
    pub cgroup: String,
    #[serde(default)]
    pub limits: Limits,
    /// Extra bind mounts (disk devices).
    #[serde(default)]
    pub mounts: Vec<BindMount>,
    /// Extra host device nodes made visible inside.
    #[serde(default)]
    pub devices: Vec<DeviceNode>,
    /// Devices cgroup rules (`c 10:229 rwm`) on top of the standard ones, for `devices`.
    #[serde(default)]
    pub device_rules: Vec<String>,
    /// Environment for init, on top of `container=lxc`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The init command; `/sbin/init` when empty.
    #[serde(default)]
    pub init: Vec<String>,
    /// Working directory of init inside the container (`/` when unset): an application
    /// container's process starts where its image says.
    #[serde(default)]
    pub init_cwd: Option<PathBuf>,
    /// Ids (inside the container) init runs as; root when unset.
    #[serde(default)]
    pub init_user: Option<InitUser>,
    /// Run init as a child of a small PID 1 of ours that reaps orphans and passes
    /// signals on (application containers, whose process is not written to be PID 1).
    #[serde(default)]
    pub reaper: bool,
    /// Signal that asks init to halt; detected from the root filesystem when unset.
    #[serde(default)]
    pub halt_signal: Option<i32>,
    /// Commands the monitor runs once the namespaces exist and before init runs, with
    /// `HUTCH_PID` (host pid of init) and `HUTCH_NETNS` (/proc path of its netns) set;
    /// used to plug NICs into the new network namespace.
    #[serde(default)]
    pub pre_start_hooks: Vec<Vec<String>>,
    /// The container may run containers of its own (`security.nesting`); it keeps the
    /// default seccomp filter's bpf(2) and loses the same capabilities as any other.
    #[serde(default)]
    pub nesting: bool,
    /// Cap on the console log file, in bytes.
    #[serde(default = "default_console_log_limit")]
    pub console_log_limit: u64,
    /// The system calls init and exec'd commands may not make.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// Where lxcfs is mounted on the host, when its views of /proc and /sys files are to
    /// be bound over the container's (see [`crate::rootfs::lxcfs`]); `None`: the host's.
    #[serde(default)]
    pub lxcfs: Option<PathBuf>,
}

/// The seccomp policy of a container, as LXD's `security.syscalls.*` keys describe it.
/// Denied calls fail with EPERM; with an allow list, every other call fails with ENOSYS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seccomp {
    /// Deny what LXC's default profile denies (module loading, kexec,
    /// open_by_handle_at, forced unmounts), and bpf in unprivileged containers.
    #[serde(default = "yes")]
    pub deny_default: bool,
    /// Further system calls to deny, by name.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Refuse every system call of the 32-bit compat ABIs (i386 and x32, or arm).
    #[serde(default)]
    pub deny_compat: bool,
    /// When not empty, only these system calls are allowed (the deny keys must be unset).
    #[serde(default)]
    pub allow: Vec<String>,
}

impl Default for Seccomp {
    fn default() -> Self {
        Seccomp {
            deny_default: true,
            deny: Vec::new(),
            deny_compat: false,
            allow: Vec::new(),
        }
    }
}

fn default_console_log_limit() -> u64 {
    DEFAULT_CONSOLE_LOG_LIMIT
}

/// Resource limits, applied through cgroups. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Whether the container may swap beyond its memory limit (only meaningful with `memory`).
    #[serde(default = "yes")]
    pub memory_swap: bool,
    /// Number of CPUs the container may run on (pinned to the first N host CPUs).
    pub cpu_count: Option<u32>,
    /// Explicit CPU list, in cpuset syntax ("0-1,3"); wins over `cpu_count`.
    pub cpu_set: Option<String>,
    /// CPU time allowance: `quota_us` of CPU time per `period_us`.
    pub cpu_allowance: Option<CpuAllowance>,
    /// Maximum number of processes.
    pub processes: Option<u64>,
}

fn yes() -> bool {
    true
}

/// CPU time allowed per period (cgroup CFS bandwidth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuAllowance {
    pub quota_us: u64,
    pub period_us: u64,
}

/// The user and group init runs as, as the container sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitUser {
    pub uid: u32,
    pub gid: u32,
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
    #[serde(default)]
    pub readonly: bool,
    /// Present host ids 0.. as the container's 0.. (an idmapped bind, for volumes that
    /// unprivileged containers own); ignored for privileged containers.
    #[serde(default)]
    pub idmapped: bool,
}

/// A host device node made visible inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
}

impl ContainerSpec {
    /// A spec with defaults for everything but name, root filesystem, idmap and cgroup.
    pub fn new(name: &str, rootfs: impl Into<PathBuf>, idmap: Option<IdMap>, cgroup: &str) -> Self {
        ContainerSpec {
            name: name.to_string(),
            rootfs: rootfs.into(),
            privileged: idmap.is_none(),
            idmap,
            cgroup: cgroup.to_string(),
            limits: Limits {
                memory_swap: true,
                ..Limits::default()
            },
            mounts: Vec::new(),
            devices: Vec::new(),
            device_rules: Vec::new(),
            env: BTreeMap::new(),
            init: Vec::new(),
            init_cwd: None,
            init_user: None,
            reaper: false,
            halt_signal: None,
            pre_start_hooks: Vec::new(),
            nesting: false,
            console_log_limit: DEFAULT_CONSOLE_LOG_LIMIT,
            seccomp: Seccomp::default(),
            lxcfs: None,
        }
    }

    /// The init command line, defaulting to `/sbin/init`.
    pub fn init_command(&self) -> Vec<String> {
        if self.init.is_empty() {
            vec!["/sbin/init".to_string()]
        } else {
            self.init.clone()
        }
    }

    /// Checks everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<()> {
        validate_hostname(&self.name)?;
        if !self.rootfs.is_absolute() {
            return Err(invalid("rootfs", "must be an absolute path"));
        }
        match (&self.idmap, self.privileged) {
            (None, false) => return Err(invalid("idmap", "required for unprivileged containers")),
            (Some(_), true) => {
                return Err(invalid("idmap", "must be empty for privileged containers"))
            }
            (Some(map), false) => map.validate()?,
            (None, true) => {}
        }
        validate_cgroup_path(&self.cgroup)?;
        self.limits.validate()?;
        for (i, m) in self.mounts.iter().enumerate() {
            if !m.source.is_absolute() {
                return Err(invalid(
                    &format!("mounts[{i}].source"),
                    "must be an absolute path",
                ));
            }
            validate_container_path(&format!("mounts[{i}].target"), &m.target)?;
        }
        for (i, d) in self.devices.iter().enumerate() {
            if !d.source.is_absolute() {
                return Err(invalid(
                    &format!("devices[{i}].source"),
                    "must be an absolute path",
                ));
            }
            validate_container_path(&format!("devices[{i}].target"), &d.target)?;
        }
        if let Some(r) = self
            .device_rules
            .iter()
            .find(|r| !crate::cgroup::valid_device_rule(r))
        {
            return Err(invalid(
                "device_rules",
                &format!("{r:?} is not a device rule"),
            ));
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(invalid("env", &format!("invalid variable name {key:?}")));
            }
        }
        if self.env.values().any(|v| v.contains('\0')) {
            return Err(invalid("env", "values must not contain NUL"));
        }
        if self.init.iter().any(|a| a.contains('\0')) {
            return Err(invalid("init", "arguments must not contain NUL"));
        }
        if let Some(cwd) = &self.init_cwd {
            if !cwd.is_absolute() || cwd.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(invalid("init_cwd", "must be an absolute path without '..'"));
            }
        }
        if let Some(sig) = self.halt_signal {
            if !(1..=64).contains(&sig) {
                return Err(invalid(
                    "halt_signal",
                    &format!("{sig} is not a signal number"),
                ));
            }
        }
        if self.pre_start_hooks.iter().any(|h| h.is_empty()) {
            return Err(invalid("pre_start_hooks", "a hook needs a command"));
        }
        crate::seccomp::compile(&self.seccomp, self.privileged, self.nesting)?;
        Ok(())
    }
}

impl Limits {
    fn validate(&self) -> Result<()> {
        if self.memory == Some(0) {
            return Err(invalid("limits.memory", "must be more than 0"));
        }
        if self.cpu_count == Some(0) {
            return Err(invalid("limits.cpu_count", "must be at least 1"));
        }
        if let Some(set) = &self.cpu_set {
            parse_cpu_list(set).map_err(|reason| invalid("limits.cpu_set", &reason))?;
        }
        if let Some(a) = self.cpu_allowance {
            if a.period_us < 1000 || a.period_us > 1_000_000 {
                return Err(invalid("limits.cpu_allowance", "period must be 1ms to 1s"));
            }
            if a.quota_us < 1000 {
                return Err(invalid(
                    "limits.cpu_allowance",
                    "quota must be at least 1ms",
                ));
            }
        }
        if self.processes == Some(0) {
            return Err(invalid("limits.processes", "must be at least 1"));
        }
        Ok(())
    }
}

/// Parses a cpuset list ("0-3,5") into CPU numbers.
pub fn parse_cpu_list(list: &str) -> std::result::Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let part = part.trim();
        let parse = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("{part:?} is not a CPU number or range"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if a > b {
                    return Err(format!("range {part:?} is backwards"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(parse(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn invalid(field: &str, reason: &str) -> RuntimeError {
    RuntimeError::InvalidSpec {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// Hostnames as the kernel and DNS accept them: 1-63 chars of letters, digits and dashes.
fn validate_hostname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            &format!("{name:?} is not a valid host name"),
        ))
    }
}

fn validate_cgroup_path(path: &str) -> Result<()> {
    let p = Path::new(path);
    if path.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(invalid("cgroup", "must be a relative path without '..'"));
    }
    Ok(())
}

fn validate_container_path(field: &str, path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(invalid(field, "must be an absolute path"));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(invalid(field, "must not contain '..'"));
    }
    if path == Path::new("/") {
        return Err(invalid(field, "must not be /"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_cwd_must_be_absolute() {
        let mut s = spec();
        s.init_cwd = Some("/srv/app".into());
        assert!(s.validate().is_ok());
        s.init_cwd = Some("srv".into());
        assert!(s.validate().is_err());
        s.init_cwd = Some("/srv/../..".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn old_specs_read_without_init_user_or_cwd() {
        let mut v = serde_json::to_value(spec()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("init_cwd");
        obj.remove("init_user");
        let back: ContainerSpec = serde_json::from_value(v).unwrap();
        assert_eq!(back.init_cwd, None);
        assert_eq!(back.init_user, None);
    }
    use crate::idmap::IdMap;

    fn spec() -> ContainerSpec {
        ContainerSpec::new(
            "web",
            "/var/lib/hutch/c/web/rootfs",
            Some(IdMap::single(1_000_000, 65536)),
            "hutch/web",
        )
    }

    #[test]
    fn a_default_spec_is_valid() {
        spec().validate().unwrap();
        assert_eq!(spec().init_command(), vec!["/sbin/init"]);
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            let mut s = spec();
            s.name = name.to_string();
            assert!(s.validate().is_err(), "{name:?} accepted");
        }
    }

    #[test]
    fn cgroup_path_must_stay_below_the_root() {
        for cg in ["", "/hutch/web", "hutch/../web", "./web"] {
            let mut s = spec();
            s.cgroup = cg.to_string();
            let err = s.validate().unwrap_err();
            assert!(err.to_string().contains("cgroup"), "{err}");
        }
    }

    #[test]
    fn privileged_and_idmap_must_agree() {
        let mut s = spec();
        s.privileged = true;
        assert!(s.validate().is_err());
        s.idmap = None;
        s.validate().unwrap();
        s.privileged = false;
        assert!(s.validate().is_err());
    }

    #[test]
    fn mount_targets_must_be_absolute_and_not_escape() {
        for target in ["rel", "/a/../../etc", "/"] {
            let mut s = spec();
            s.mounts.push(BindMount {
                source: "/srv".into(),
                target: target.into(),
                readonly: false,
                idmapped: false,
            });
            assert!(s.validate().is_err(), "{target} accepted");
        }
    }

    #[test]
    fn limits_are_checked() {
        let mut s = spec();
        s.limits.memory = Some(0);
        assert!(s.validate().is_err());
        let mut s = spec();
        s.limits.cpu_set = Some("3-1".into());
        assert!(s.validate().is_err());
        let mut s = spec();
        s.limits.cpu_allowance = Some(CpuAllowance {
            quota_us: 50_000,
            period_us: 100_000,
        });
        s.validate().unwrap();
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0-2,5,1").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("a").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn an_old_spec_without_seccomp_gets_the_default_filter() {
        let mut json = serde_json::to_value(spec()).unwrap();
        json.as_object_mut().unwrap().remove("seccomp");
        let back: ContainerSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back.seccomp, Seccomp::default());
        assert!(back.seccomp.deny_default);
    }

    #[test]
    fn unknown_syscalls_and_allow_with_deny_are_refused() {
        let mut s = spec();
        s.seccomp.deny = vec!["no_such_call".into()];
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("no_such_call"), "{err}");
        let mut s = spec();
        s.seccomp.allow = vec!["read".into()];
        s.seccomp.deny = vec!["write".into()];
        assert!(s.validate().is_err());
    }

    #[test]
    fn spec_round_trips_through_json() {
        let s = spec();
        let json = serde_json::to_string(&s).unwrap();
        let back: ContainerSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(s, back);
    }
}
