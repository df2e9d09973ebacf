//! The table of instance config keys (name, validator, whether it applies live, doc) and
//! the parsers for their values. Validation, help and docs all come from this one table.

use std::collections::BTreeMap;

/// A refused config key, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for config key {key:?}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

/// One known key.
#[derive(Debug)]
pub struct ConfigKey {
    pub name: &'static str,
    /// Default, as LXD documents it ("" when none).
    pub default: &'static str,
    /// Applies to a running instance without a restart.
    pub live: bool,
    pub doc: &'static str,
    validate: fn(&str) -> Result<(), String>,
}

/// Instance config keys with exact names.
pub static INSTANCE_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "boot.autostart",
        default: "",
        live: true,
        doc: "start at daemon start (unset: restore last state)",
        validate: is_bool,
    },
    ConfigKey {
        name: "boot.autorestart",
        default: "false",
        live: true,
        doc: "start again when init ends unasked (10 times a minute at most)",
        validate: is_bool,
    },
    ConfigKey {
        name: "boot.autostart.delay",
        default: "0",
        live: true,
        doc: "seconds to wait after starting this instance",
        validate: is_uint,
    },
    ConfigKey {
        name: "boot.autostart.priority",
        default: "0",
        live: true,
        doc: "higher starts first",
        validate: is_int,
    },
    ConfigKey {
        name: "boot.host_shutdown_timeout",
        default: "30",
        live: true,
        doc: "seconds to wait for a clean stop at host shutdown",
        validate: is_uint,
    },
    ConfigKey {
        name: "boot.stop.priority",
        default: "0",
        live: true,
        doc: "higher stops first",
        validate: is_int,
    },
    ConfigKey {
        name: "limits.memory",
        default: "",
        live: true,
        doc: "memory limit (512MiB, 1GB, 50%)",
        validate: |v| parse_memory(v, 1 << 30).map(|_| ()),
    },
    ConfigKey {
        name: "limits.memory.swap",
        default: "true",
        live: true,
        doc: "allow swapping",
        validate: is_bool,
    },
    ConfigKey {
        name: "limits.cpu",
        default: "",
        live: true,
        doc: "CPU count (2) or set (0-3,5)",
        validate: |v| parse_cpu(v).map(|_| ()),
    },
    ConfigKey {
        name: "limits.cpu.allowance",
        default: "",
        live: true,
        doc: "CPU time (50% or 25ms/100ms)",
        validate: |v| parse_cpu_allowance(v, 1).map(|_| ()),
    },
    ConfigKey {
        name: "limits.processes",
        default: "",
        live: true,
        doc: "maximum number of processes",
        validate: is_positive,
    },
    ConfigKey {
        name: "nvidia.runtime",
        default: "false",
        live: false,
        doc: "pass the host's NVIDIA driver libraries and nvidia-smi in",
        validate: is_bool,
    },
    ConfigKey {
        name: "security.privileged",
        default: "false",
        live: false,
        doc: "run without a user namespace",
        validate: is_bool,
    },
    ConfigKey {
        name: "security.nesting",
        default: "false",
        live: false,
        doc: "allow nested containers",
        validate: is_bool,
    },
    ConfigKey {
        name: "security.syscalls.allow",
        default: "",
        live: false,
        doc: "system calls to allow, all others fail (excludes the deny keys)",
        validate: |v| parse_syscall_list(v).map(|_| ()),
    },
    ConfigKey {
        name: "security.syscalls.deny",
        default: "",
        live: false,
        doc: "system calls to deny (EPERM), comma or newline separated",
        validate: |v| parse_syscall_list(v).map(|_| ()),
    },
    ConfigKey {
        name: "security.syscalls.deny_compat",
        default: "false",
        live: false,
        doc: "deny every system call of the 32-bit compat ABIs",
        validate: is_bool,
    },
    ConfigKey {
        name: "security.syscalls.deny_default",
        default: "true",
        live: false,
        doc: "deny what LXC's default seccomp profile denies",
        validate: is_bool,
    },
    ConfigKey {
        name: "security.idmap.isolated",
        default: "false",
        live: false,
        doc: "a host id range of its own (65536 ids), kept across restarts",
        validate: is_bool,
    },
    ConfigKey {
        name: "security.protection.delete",
        default: "false",
        live: true,
        doc: "refuse deletion",
        validate: is_bool,
    },
    ConfigKey {
        name: "snapshots.schedule",
        default: "",
        live: true,
        doc: "automatic snapshots (cron, or @hourly, @daily, @weekly, @monthly)",
        validate: |v| crate::schedule::Schedule::parse(v).map(|_| ()),
    },
    ConfigKey {
        name: "snapshots.schedule.stopped",
        default: "false",
        live: true,
        doc: "also take scheduled snapshots while stopped",
        validate: is_bool,
    },
    ConfigKey {
        name: "snapshots.pattern",
        default: "snap%d",
        live: true,
        doc: "names of snapshots taken without a name (%d: lowest free number)",
        validate: |v| {
            if v.contains('/') {
                Err("must not contain '/'".into())
            } else {
                Ok(())
            }
        },
    },
    ConfigKey {
        name: "oci.entrypoint",
        default: "",
        live: false,
        doc: "command an OCI application container runs (overrides the image's Entrypoint and Cmd)",
        validate: |v| match v.trim_start().starts_with('[') {
            true => serde_json::from_str::<Vec<String>>(v)
                .map(|_| ())
                .map_err(|e| format!("not a JSON list of strings: {e}")),
            false => Ok(()),
        },
    },
    ConfigKey {
        name: "oci.cwd",
        default: "",
        live: false,
        doc: "working directory of an OCI application container's process",
        validate: |v| match v.starts_with('/') {
            true => Ok(()),
            false => Err("not an absolute path".into()),
        },
    },
    ConfigKey {
        name: "oci.uid",
        default: "",
        live: false,
        doc: "user id an OCI application container's process runs as",
        validate: is_uint,
    },
    ConfigKey {
        name: "oci.gid",
        default: "",
        live: false,
        doc: "group id an OCI application container's process runs as",
        validate: is_uint,
    },
    ConfigKey {
        name: "snapshots.expiry",
        default: "",
        live: true,
        doc: "how long snapshots are kept (1M 2H 3d 4w 5m 6y)",
        validate: |v| crate::schedule::parse_expiry(v).map(|_| ()),
    },
];

/// Keys matched by prefix: free-form values.
pub static INSTANCE_KEY_PREFIXES: &[(&str, &str)] = &[
    ("environment.", "environment variable for exec"),
    ("user.", "free-form user data"),
    ("image.", "copied from the image's properties"),
    ("volatile.", "kept by the daemon"),
];

/// The table entry of `key`, if it has an exact entry.
pub fn instance_key(key: &str) -> Option<&'static ConfigKey> {
    INSTANCE_KEYS.iter().find(|k| k.name == key)
}

/// Checks every key and value; the error names the first bad key.
pub fn validate_instance_config(config: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (key, value) in config {
        let err = |reason: String| ConfigError {
            key: key.clone(),
            reason,
        };
        if let Some(k) = instance_key(key) {
            if !value.is_empty() {
                (k.validate)(value).map_err(err)?;
            }
        } else if let Some((prefix, _)) = INSTANCE_KEY_PREFIXES
            .iter()
            .find(|(p, _)| key.starts_with(p))
        {
            if key.len() == prefix.len() {
                return Err(err("needs a name after the prefix".into()));
            }
        } else {
            return Err(err("unknown config key".into()));
        }
    }
    check_syscall_keys(config)
}

/// `security.syscalls.allow` excludes the deny keys (as in LXD).
pub fn check_syscall_keys(config: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let set = |k: &str| config.get(k).is_some_and(|v| !v.trim().is_empty());
    let deny_compat = config
        .get("security.syscalls.deny_compat")
        .is_some_and(|v| parse_bool(v).unwrap_or(false));
    if set("security.syscalls.allow") && (set("security.syscalls.deny") || deny_compat) {
        return Err(ConfigError {
            key: "security.syscalls.allow".into(),
            reason: "cannot be combined with security.syscalls.deny or deny_compat".into(),
        });
    }
    Ok(())
}

/// The system call names hutch's seccomp filters know (any of x86_64, x32, i386, aarch64,
/// arm), generated with the runtime's table by runtime/src/seccomp/gen_table.py.
const SYSCALL_NAMES: &str = "\
    _llseek _newselect _sysctl accept accept4 access acct add_key adjtimex afs_syscall \
    alarm arch_prctl arm_fadvise64_64 arm_sync_file_range bdflush bind bpf break brk capget \
    capset chdir chmod chown chown32 chroot clock_adjtime clock_getres clock_gettime \
    clock_nanosleep clock_settime clone clone3 close close_range connect copy_file_range \
    creat delete_module dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old \
    epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat \
    exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_init \
    fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 \
    fdatasync fgetxattr finit_module flistxattr flock fork fremovexattr fsconfig fsetxattr \
    fsmount fsopen fspick fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftime ftruncate \
    ftruncate64 futex futex_waitv futimesat get_mempolicy get_robust_list get_thread_area \
    getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 \
    getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getpmsg getppid \
    getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit getrusage \
    getsid getsockname getsockopt gettid gettimeofday getuid getuid32 getxattr gtty idle \
    init_module inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel \
    io_destroy io_getevents io_setup io_submit io_uring_enter io_uring_register \
    io_uring_setup ioctl ioperm iopl ioprio_get ioprio_set ipc kcmp kexec_file_load \
    kexec_load keyctl kill landlock_add_rule landlock_create_ruleset landlock_restrict_self \
    lchown lchown32 lgetxattr link linkat listen listxattr llistxattr lock lookup_dcookie \
    lremovexattr lseek lsetxattr lstat lstat64 madvise mbind membarrier memfd_create \
    memfd_secret migrate_pages mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall \
    mmap mmap2 modify_ldt mount mount_setattr move_mount move_pages mprotect mpx \
    mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend mq_unlink mremap mseal \
    msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep \
    newfstatat nfsservctl nice oldfstat oldlstat oldolduname oldstat olduname open \
    open_by_handle_at open_tree openat openat2 pause pciconfig_iobase pciconfig_read \
    pciconfig_write perf_event_open personality pidfd_getfd pidfd_open pidfd_send_signal \
    pipe pipe2 pivot_root pkey_alloc pkey_free pkey_mprotect poll ppoll prctl pread64 \
    preadv preadv2 prlimit64 process_madvise process_mrelease process_vm_readv \
    process_vm_writev prof profil pselect6 ptrace putpmsg pwrite64 pwritev pwritev2 \
    quotactl quotactl_fd read readahead readdir readlink readlinkat readv reboot recv \
    recvfrom recvmmsg recvmsg remap_file_pages removexattr rename renameat renameat2 \
    request_key restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask \
    rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo \
    sched_get_priority_max sched_get_priority_min sched_getaffinity sched_getattr \
    sched_getparam sched_getscheduler sched_rr_get_interval sched_setaffinity sched_setattr \
    sched_setparam sched_setscheduler sched_yield seccomp security select semctl semget \
    semop semtimedop send sendfile sendfile64 sendmmsg sendmsg sendto set_mempolicy \
    set_mempolicy_home_node set_robust_list set_thread_area set_tid_address setdomainname \
    setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 \
    sethostname setitimer setns setpgid setpriority setregid setregid32 setresgid \
    setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit setsid setsockopt \
    settimeofday setuid setuid32 setxattr sgetmask shmat shmctl shmdt shmget shutdown \
    sigaction sigaltstack signal signalfd signalfd4 sigpending sigprocmask sigreturn \
    sigsuspend socket socketcall socketpair splice ssetmask stat stat64 statfs statfs64 \
    statx stime stty swapoff swapon symlink symlinkat sync sync_file_range syncfs sysfs \
    sysinfo syslog tee tgkill time timer_create timer_delete timer_getoverrun timer_gettime \
    timer_settime timerfd_create timerfd_gettime timerfd_settime times tkill truncate \
    truncate64 tuxcall ugetrlimit ulimit umask umount umount2 uname unlink unlinkat unshare \
    uselib userfaultfd ustat utime utimensat utimes vfork vhangup vm86 vm86old vmsplice \
    vserver wait4 waitid waitpid write writev ";

/// A list of system call names, separated by commas, spaces or newlines; unknown names are
/// refused by name.
pub fn parse_syscall_list(v: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for name in v.split(|c: char| c == ',' || c.is_whitespace()) {
        if name.is_empty() {
            continue;
        }
        if !SYSCALL_NAMES.split_ascii_whitespace().any(|n| n == name) {
            return Err(format!("unknown system call {name:?}"));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// Every system call name [`parse_syscall_list`] accepts.
pub fn syscall_names() -> impl Iterator<Item = &'static str> {
    SYSCALL_NAMES.split_ascii_whitespace()
}

fn is_bool(v: &str) -> Result<(), String> {
    parse_bool(v).map(|_| ())
}

/// LXD's booleans.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean")),
    }
}

fn is_uint(v: &str) -> Result<(), String> {
    v.parse::<u64>()
        .map(|_| ())
        .map_err(|_| format!("{v:?} is not a non-negative integer"))
}

fn is_int(v: &str) -> Result<(), String> {
    v.parse::<i64>()
        .map(|_| ())
        .map_err(|_| format!("{v:?} is not an integer"))
}

fn is_positive(v: &str) -> Result<(), String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!("{v:?} is not a positive integer")),
    }
}

/// Parses a size with LXD's units (B, kB/KB, MB, GB, TB, KiB, MiB, GiB, TiB) or a
/// percentage of `total`.
pub fn parse_memory(v: &str, total: u64) -> Result<u64, String> {
    let v = v.trim();
    if let Some(pct) = v.strip_suffix('%') {
        let p: f64 = pct
            .parse()
            .map_err(|_| format!("{v:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&p) || p == 0.0 {
            return Err(format!("{v:?} is not between 0% and 100%"));
        }
        return Ok((total as f64 * p / 100.0) as u64);
    }
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{v:?} is not a size"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "MB" => 1000u64.pow(2),
        "GB" => 1000u64.pow(3),
        "TB" => 1000u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(format!("{v:?} has an unknown unit {unit:?}")),
    };
    let bytes = (n * mult as f64) as u64;
    if bytes == 0 {
        return Err(format!("{v:?} is zero"));
    }
    Ok(bytes)
}

/// `limits.cpu`: a count, or an explicit set of CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuLimit {
    Count(u32),
    Set(String),
}

pub fn parse_cpu(v: &str) -> Result<CpuLimit, String> {
    if let Ok(n) = v.parse::<u32>() {
        return if n == 0 {
            Err("0 CPUs".into())
        } else {
            Ok(CpuLimit::Count(n))
        };
    }
    let valid = !v.is_empty()
        && v.split(',').all(|part| {
            let mut ends = part.splitn(2, '-').map(|x| x.parse::<u32>());
            match (ends.next(), ends.next()) {
                (Some(Ok(_)), None) => true,
                (Some(Ok(a)), Some(Ok(b))) => a <= b,
                _ => false,
            }
        });
    if valid {
        Ok(CpuLimit::Set(v.to_string()))
    } else {
        Err(format!("{v:?} is neither a CPU count nor a CPU set"))
    }
}

/// `limits.cpu.allowance`: `50%` (of `cpus` CPUs) or `25ms/100ms`; returns (quota, period) in µs.
pub fn parse_cpu_allowance(v: &str, cpus: u32) -> Result<(u64, u64), String> {
    if let Some(pct) = v.strip_suffix('%') {
        let p: u64 = pct
            .parse()
            .map_err(|_| format!("{v:?} is not a percentage"))?;
        if p == 0 {
            return Err(format!("{v:?} is zero"));
        }
        let period = 100_000;
        return Ok((period * p * cpus.max(1) as u64 / 100, period));
    }
    let (q, p) = v
        .split_once('/')
        .ok_or_else(|| format!("{v:?} is neither N% nor Nms/Nms"))?;
    let ms = |s: &str| {
        s.strip_suffix("ms")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
    };
    match (ms(q), ms(p)) {
        (Some(q), Some(p)) => Ok((q * 1000, p * 1000)),
        _ => Err(format!("{v:?} is not Nms/Nms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn known_and_prefixed_keys_pass() {
        validate_instance_config(&cfg(&[
            ("boot.autostart", "true"),
            ("limits.memory", "512MiB"),
            ("limits.cpu", "0-1"),
            ("environment.FOO", "bar"),
            ("user.note", "x"),
            ("volatile.base_image", "abc"),
        ]))
        .unwrap();
    }

    #[test]
    fn syscall_lists_parse_and_unknown_names_are_refused() {
        assert_eq!(
            parse_syscall_list("mkdirat, chmod\nmkdirat").unwrap(),
            vec!["mkdirat", "chmod"]
        );
        let err = parse_syscall_list("read,no_such_call").unwrap_err();
        assert!(err.contains("no_such_call"), "{err}");
        let err =
            validate_instance_config(&cfg(&[("security.syscalls.deny", "bogus")])).unwrap_err();
        assert_eq!(err.key, "security.syscalls.deny");
        let both = cfg(&[
            ("security.syscalls.allow", "read"),
            ("security.syscalls.deny", "write"),
        ]);
        assert!(validate_instance_config(&both).is_err());
        validate_instance_config(&cfg(&[
            ("security.syscalls.allow", "read write"),
            ("security.syscalls.deny_default", "false"),
        ]))
        .unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let e = validate_instance_config(&cfg(&[("limits.memory", "lots")])).unwrap_err();
        assert_eq!(e.key, "limits.memory");
        let e = validate_instance_config(&cfg(&[("bogus.key", "1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value for config key \"bogus.key\": unknown config key"
        );
        assert!(validate_instance_config(&cfg(&[("environment.", "x")])).is_err());
        assert!(validate_instance_config(&cfg(&[("boot.autostart", "maybe")])).is_err());
        assert!(validate_instance_config(&cfg(&[("boot.autorestart", "true")])).is_ok());
        assert!(validate_instance_config(&cfg(&[("boot.autorestart", "often")])).is_err());
    }

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("512MiB", 0).unwrap(), 512 << 20);
        assert_eq!(parse_memory("1GB", 0).unwrap(), 1_000_000_000);
        assert_eq!(parse_memory("50%", 1000).unwrap(), 500);
        assert_eq!(parse_memory("4096", 0).unwrap(), 4096);
        assert!(parse_memory("1XB", 0).is_err());
        assert!(parse_memory("0", 0).is_err());
    }

    #[test]
    fn cpu_limits_parse() {
        assert_eq!(parse_cpu("2").unwrap(), CpuLimit::Count(2));
        assert_eq!(parse_cpu("0-3,5").unwrap(), CpuLimit::Set("0-3,5".into()));
        assert!(parse_cpu("3-1").is_err());
        assert!(parse_cpu("0").is_err());
        assert_eq!(parse_cpu_allowance("50%", 2).unwrap(), (100_000, 100_000));
        assert_eq!(
            parse_cpu_allowance("25ms/100ms", 1).unwrap(),
            (25_000, 100_000)
        );
        assert!(parse_cpu_allowance("fast", 1).is_err());
    }
}
