//! End-to-end: what a process inside a container may not do, tried from inside busybox
//! containers on a real daemon and kernel: the system calls of the seccomp filter, /proc
//! and /sys, device nodes, module loading, the exec helper's binary, and fds or a working
//! directory leaked by exec. Needs root (and gcc, for the small static probes); each test
//! has its own daemon and leaves nothing behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use hutch_tests::{assert_no_leftovers, helper_bin, hutchd_bin, require_root, TestDaemon, Via};

/// Every daemon of this file runs a copy of hutchd and hutchd-helper (through
/// `HUTCH_HUTCHD`), so an attack on the helper's binary that got through could never damage
/// the built one.
fn use_hutchd_copy() {
    static COPY: Once = Once::new();
    COPY.call_once(|| {
        let built = hutchd_bin();
        let dir = built.with_file_name("security-copy");
        fs::create_dir_all(&dir).expect("make the copy's directory");
        for (from, name) in [(built, "hutchd"), (helper_bin(), "hutchd-helper")] {
            let tmp = dir.join(format!("{name}.{}", std::process::id()));
            fs::copy(&from, &tmp).expect("copy the binary");
            fs::rename(&tmp, dir.join(name)).expect("rename the copy");
        }
        std::env::set_var("HUTCH_HUTCHD", dir.join("hutchd"));
    });
}

/// A daemon with the busybox image imported under alias `bb`.
fn daemon() -> TestDaemon {
    use_hutchd_copy();
    let d = TestDaemon::start();
    d.import_busybox(Via::Hutch);
    d
}

/// Nothing of the deleted containers is left: mounts, processes, cgroups.
fn no_leftovers(d: &TestDaemon) {
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}

/// Compiles `source` with gcc (`-static`, or `-shared` for a library) into `dir`.
fn compile(dir: &Path, name: &str, source: &str, shared: bool) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let kind: &[&str] = if shared {
        &["-shared", "-fPIC"]
    } else {
        &["-static"]
    };
    let status = Command::new("gcc")
        .args(kind)
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run gcc");
    assert!(status.success(), "gcc failed on {name}.c");
    out
}

fn push(d: &TestDaemon, local: &Path, dest: &str, mode: &str) {
    d.hutch_ok(&[
        "file",
        "push",
        "-p",
        "--mode",
        mode,
        local.to_str().unwrap(),
        dest,
    ]);
}

/// Calls each named system call with harmless arguments (ones that fail before doing
/// anything even where the call is allowed) and prints `name=errno` (0: it succeeded).
/// `i386_*` calls go through `int $0x80`, the i386 ABI of a 64-bit process.
const SYSCALL_PROBE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long i386_call(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *n = argv[i];
        long r = 0;
        int e = 0;
        errno = 0;
        if (!strcmp(n, "kexec_load")) r = syscall(SYS_kexec_load, 0, 1000, 0, 0);
        else if (!strcmp(n, "kexec_file_load")) r = syscall(SYS_kexec_file_load, -1, -1, 0, 0, 0);
        else if (!strcmp(n, "open_by_handle_at")) r = syscall(SYS_open_by_handle_at, -1, 0, 0);
        else if (!strcmp(n, "init_module")) r = syscall(SYS_init_module, 0, 0, "");
        else if (!strcmp(n, "finit_module")) r = syscall(SYS_finit_module, -1, "", 0);
        else if (!strcmp(n, "delete_module")) r = syscall(SYS_delete_module, "hutch_none", 0);
        else if (!strcmp(n, "bpf")) r = syscall(SYS_bpf, -1, 0, 0);
        else if (!strcmp(n, "umount2_force")) r = syscall(SYS_umount2, "/hutch-none", 1);
        else if (!strcmp(n, "umount2")) r = syscall(SYS_umount2, "/hutch-none", 0);
        else if (!strcmp(n, "mkdirat")) r = syscall(SYS_mkdirat, AT_FDCWD, "/tmp/probe-dir", 0755);
        else if (!strcmp(n, "getpid")) r = syscall(SYS_getpid);
        else {
            long nr = -1, a = 0, b = 0;
            if (!strcmp(n, "i386_getpid")) nr = 20;
            else if (!strcmp(n, "i386_kexec_load")) { nr = 283; b = 1000; }
            else if (!strcmp(n, "i386_init_module")) nr = 128;
            else if (!strcmp(n, "i386_mkdir")) { nr = 39; a = (long)"/tmp/probe-i386"; b = 0755; }
            else { fprintf(stderr, "unknown probe %s\n", n); return 2; }
            r = i386_call(nr, a, b, 0);
            if (r < 0 && r > -4096) { e = -r; r = -1; } else { r = 0; }
        }
        if (r == -1 && !e) e = errno;
        printf("%s=%d\n", n, r == -1 ? e : 0);
    }
    return 0;
}
"#;

/// The probe's results by name.
fn probe(d: &TestDaemon, name: &str, calls: &[&str]) -> BTreeMap<String, i32> {
    let mut cmd = vec!["exec", name, "--", "/root/probe"];
    cmd.extend(calls);
    let out = d.hutch_ok(&cmd);
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().parse().unwrap()))
        .collect()
}

/// Launches `name` from `bb` with `config` and pushes the syscall probe into it.
fn launch_with_probe(d: &TestDaemon, name: &str, config: &[&str]) {
    let mut args = vec!["launch", "bb", name];
    for c in config {
        args.extend(["-c", c]);
    }
    d.hutch_ok(&args);
    let bin = compile(d.path(), "probe", SYSCALL_PROBE, false);
    push(d, &bin, &format!("{name}/root/probe"), "0755");
}

/// Whether this kernel runs i386 system calls of 64-bit processes at all.
fn has_ia32(results: &BTreeMap<String, i32>) -> bool {
    let ok = results.get("i386_getpid") == Some(&0);
    if !ok {
        eprintln!("note: no i386 emulation in this kernel; i386 checks skipped");
    }
    ok
}

const EPERM: i32 = 1;
const ENOSYS: i32 = 38;

#[test]
fn the_default_seccomp_filter_refuses_lxcs_denied_calls_on_every_abi() {
    if !require_root("the_default_seccomp_filter_refuses_lxcs_denied_calls_on_every_abi") {
        return;
    }
    let d = daemon();
    // Privileged: host root, so only the filter stands between these calls and the kernel
    // (without it they fail later, with EINVAL, EBADF or ENOENT).
    launch_with_probe(&d, "priv", &["security.privileged=true"]);
    launch_with_probe(&d, "unpriv", &[]);
    let denied = [
        "kexec_load",
        "kexec_file_load",
        "open_by_handle_at",
        "init_module",
        "finit_module",
        "delete_module",
        "umount2_force",
    ];
    for name in ["priv", "unpriv"] {
        let mut calls = denied.to_vec();
        calls.extend(["bpf", "umount2", "getpid", "i386_getpid"]);
        calls.extend(["i386_kexec_load", "i386_init_module"]);
        let r = probe(&d, name, &calls);
        for call in denied {
            assert_eq!(r[call], EPERM, "{name}: {call}: {r:?}");
        }
        // A plain unmount of a missing path is refused by the kernel, not the filter.
        assert_eq!(r["umount2"], libc::ENOENT, "{name}: {r:?}");
        assert_eq!(r["getpid"], 0, "{name}: {r:?}");
        if name == "unpriv" {
            assert_eq!(r["bpf"], EPERM, "{r:?}");
        }
        if has_ia32(&r) {
            assert_eq!(r["i386_kexec_load"], EPERM, "{name}: {r:?}");
            assert_eq!(r["i386_init_module"], EPERM, "{name}: {r:?}");
        }
    }
    // Setuid programs still work: the filter is installed without no_new_privs.
    let (code, out) = d.sh("unpriv", "grep NoNewPrivs /proc/self/status");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains('0'), "{out}");
    let (_, out) = d.sh("unpriv", "grep Seccomp: /proc/1/status");
    assert!(out.contains('2'), "init is not filtered: {out}");

    // busybox's own module tools fail too.
    let (code, _) = d.sh("priv", "echo x > /tmp/m.ko; insmod /tmp/m.ko");
    assert_ne!(code, 0);
    let (code, _) = d.sh("priv", "rmmod loop");
    assert_ne!(code, 0);

    for name in ["priv", "unpriv"] {
        d.hutch_ok(&["delete", "-f", name]);
    }
    no_leftovers(&d);
}

#[test]
fn the_syscall_keys_deny_allow_and_refuse_unknown_names() {
    if !require_root("the_syscall_keys_deny_allow_and_refuse_unknown_names") {
        return;
    }
    let d = daemon();
    launch_with_probe(
        &d,
        "deny",
        &[
            "security.syscalls.deny=mkdirat,mkdir",
            "security.syscalls.deny_compat=true",
        ],
    );
    let (code, out) = d.sh("deny", "mkdir /tmp/x");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let r = probe(
        &d,
        "deny",
        &["mkdirat", "getpid", "kexec_load", "i386_getpid"],
    );
    assert_eq!(r["mkdirat"], EPERM, "{r:?}");
    assert_eq!(r["getpid"], 0, "{r:?}");
    assert_eq!(r["kexec_load"], EPERM, "the default list stays: {r:?}");
    // The whole i386 ABI is gone (ENOSYS whether or not the kernel emulates it).
    assert_eq!(r["i386_getpid"], ENOSYS, "{r:?}");

    // Without the default list, the deny list alone.
    launch_with_probe(
        &d,
        "nodefault",
        &[
            "security.syscalls.deny_default=false",
            "security.syscalls.deny=mkdirat",
        ],
    );
    let r = probe(
        &d,
        "nodefault",
        &["mkdirat", "umount2_force", "i386_getpid"],
    );
    assert_eq!(r["mkdirat"], EPERM, "{r:?}");
    assert_eq!(r["umount2_force"], libc::ENOENT, "{r:?}");

    // Unknown names are refused by name, at once and over the raw API.
    let bad = d.hutch(
        &["config", "set", "deny", "security.syscalls.deny=frobnicate"],
        b"",
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("frobnicate"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let (status, body) = d.http(
        "PATCH",
        "/1.0/instances/deny",
        br#"{"config": {"security.syscalls.deny": "mkdir,no_such_call"}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no_such_call"), "{body}");
    let bad = d.hutch(
        &[
            "launch",
            "bb",
            "both",
            "-c",
            "security.syscalls.allow=read",
            "-c",
            "security.syscalls.deny=write",
        ],
        b"",
    );
    assert!(!bad.status.success());

    for name in ["deny", "nodefault"] {
        d.hutch_ok(&["delete", "-f", name]);
    }
    no_leftovers(&d);
}

#[test]
fn an_exec_sees_only_stdio_and_a_working_directory_inside() {
    if !require_root("an_exec_sees_only_stdio_and_a_working_directory_inside") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["launch", "bb", "u"]);
    d.hutch_ok(&["launch", "bb", "p", "-c", "security.privileged=true"]);
    let host_dir = d.path().to_string_lossy().into_owned();
    for name in ["u", "p"] {
        // ls opens the directory it lists as fd 3; nothing else may be there.
        let out = d.hutch_ok(&["exec", name, "--", "ls", "/proc/self/fd"]);
        let fds: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{name}: {out}");
        let (_, links) = d.sh(
            name,
            "for f in /proc/$$/fd/* /proc/1/fd/*; do echo $f $(readlink $f); done",
        );
        assert!(
            !links.contains(&host_dir),
            "{name}: host path leaked: {links}"
        );
        let cwd = d.hutch_ok(&["exec", name, "--", "readlink", "/proc/self/cwd"]);
        // LXD's default for root: its home, inside.
        assert_eq!(cwd.trim(), "/root", "{name}");
        let cwd = d.hutch_ok(&[
            "exec",
            name,
            "--cwd",
            "/tmp",
            "--",
            "readlink",
            "/proc/self/cwd",
        ]);
        assert_eq!(cwd.trim(), "/tmp", "{name}");
        let root = d.hutch_ok(&["exec", name, "--", "readlink", "/proc/self/root"]);
        assert_eq!(root.trim(), "/", "{name}");
    }
    // With a terminal too.
    let out = d.hutch_ok(&["exec", "-t", "p", "--", "ls", "/proc/self/fd"]);
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2", "3"], "{out}");

    for name in ["u", "p"] {
        d.hutch_ok(&["delete", "-f", name]);
    }
    no_leftovers(&d);
}

/// Loaded into hutchd when a container makes the exec helper run itself (a script whose
/// interpreter is /proc/self/exe, as in runc's CVE-2019-5736): reports what the process
/// could do to its own binary, without ever writing to it.
const EXE_HOOK: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/statvfs.h>
#include <unistd.h>

__attribute__((constructor)) static void hook(void) {
    int ro = -1, w = 0, w2 = 0;
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    struct statvfs st;
    if (fd >= 0 && fstatvfs(fd, &st) == 0) ro = !!(st.f_flag & ST_RDONLY);
    int wfd = open("/proc/self/exe", O_WRONLY | O_APPEND);
    w = wfd < 0 ? errno : 0;
    if (wfd >= 0) close(wfd);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int wfd2 = open(path, O_WRONLY | O_APPEND);
    w2 = wfd2 < 0 ? errno : 0;
    if (wfd2 >= 0) close(wfd2);
    char link[4096] = {0};
    readlink("/proc/self/exe", link, sizeof link - 1);
    printf("exe=%s readonly=%d write=%d reopen=%d\n", link, ro, w, w2);
    fflush(stdout);
    _exit(0);
}
"#;

#[test]
fn a_privileged_container_cannot_overwrite_the_exec_helper() {
    if !require_root("a_privileged_container_cannot_overwrite_the_exec_helper") {
        return;
    }
    let d = daemon();
    let helper = PathBuf::from(std::env::var_os("HUTCH_HUTCHD").unwrap());
    let before = fs::read(&helper).unwrap();
    d.hutch_ok(&["launch", "bb", "p", "-c", "security.privileged=true"]);

    // hutchd's own loader and libraries, so the helper's binary can run inside.
    let ldd = Command::new("ldd").arg(&helper).output().unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let real = fs::canonicalize(path).unwrap();
        push(&d, &real, &format!("p{path}"), "0755");
    }
    let hook = compile(d.path(), "hook.so", EXE_HOOK, true);
    push(&d, &hook, "p/root/hook.so", "0644");
    let script = d.path().join("evil");
    fs::write(&script, "#!/proc/self/exe\n").unwrap();
    push(&d, &script, "p/root/evil", "0755");

    let out = d.hutch(
        &[
            "exec",
            "p",
            "--env",
            "LD_PRELOAD=/root/hook.so",
            "--",
            "/root/evil",
        ],
        b"",
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.contains("exe="),
        "the helper did not run: {report} {stderr}"
    );
    // The binary behind /proc/<pid>/exe sits on a read-only mount; opening it for
    // writing fails, directly and through a reopened fd.
    eprintln!("{report}");
    assert!(report.contains("readonly=1"), "{report}");
    assert!(!report.contains("write=0"), "{report}");
    assert!(!report.contains("reopen=0"), "{report}");
    assert_eq!(fs::read(&helper).unwrap(), before, "hutchd was modified");

    d.hutch_ok(&["delete", "-f", "p"]);
    no_leftovers(&d);
}

#[test]
fn proc_and_sys_cannot_reach_the_host() {
    if !require_root("proc_and_sys_cannot_reach_the_host") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["launch", "bb", "u"]);
    d.hutch_ok(&["launch", "bb", "p", "-c", "security.privileged=true"]);
    for name in ["u", "p"] {
        // The host's memory reads as nothing.
        let (_, out) = d.sh(name, "head -c 64 /proc/kcore 2>/dev/null | wc -c");
        assert_eq!(out.trim(), "0", "{name}: /proc/kcore: {out}");
        // sysrq and the host's sysctls cannot be opened for writing (nothing is written
        // even where they could).
        let (code, out) = d.sh(name, ": > /proc/sysrq-trigger");
        assert_ne!(code, 0, "{name}: sysrq-trigger: {out}");
        let (code, out) = d.sh(name, ": > /proc/sys/kernel/panic");
        assert_ne!(code, 0, "{name}: /proc/sys/kernel: {out}");
        // /sys stays read-only. (Host root in a privileged container may remount it, as
        // in LXC without AppArmor: privileged containers are not root-safe.)
        if name == "u" {
            let (code, out) = d.sh(name, "mount -o remount,rw /sys");
            assert_ne!(code, 0, "{name}: remount /sys: {out}");
        }
        let (code, out) = d.sh(name, "echo 1 > /sys/kernel/mm/ksm/run");
        assert_ne!(code, 0, "{name}: /sys written: {out}");
        let (_, out) = d.sh(name, "grep ' /sys sysfs ' /proc/mounts");
        assert!(out.contains("ro,"), "{name}: {out}");
        for opt in ["nosuid", "nodev", "noexec"] {
            assert!(out.contains(opt), "{name}: /sys without {opt}: {out}");
        }
        let (_, out) = d.sh(name, "cat /proc/mounts");
        // Where this kernel has them at all.
        for (file, want) in [
            ("kcore", " /proc/kcore devtmpfs "),
            ("timer_list", " /proc/timer_list devtmpfs "),
            ("sysrq-trigger", " /proc/sysrq-trigger proc ro,"),
        ] {
            if Path::new("/proc").join(file).exists() {
                assert!(out.contains(want), "{name}: {file} not protected: {out}");
            }
        }
        let (_, out) = d.sh(name, "grep ' /proc proc ' /proc/mounts");
        for opt in ["nosuid", "nodev", "noexec"] {
            assert!(out.contains(opt), "{name}: /proc without {opt}: {out}");
        }
    }
    // The container's own network sysctls stay writable where /proc/sys is read-only.
    let (code, out) = d.sh(
        "p",
        "v=$(cat /proc/sys/net/ipv4/ip_forward) && echo $v > /proc/sys/net/ipv4/ip_forward",
    );
    assert_eq!(code, 0, "{out}");

    for name in ["u", "p"] {
        d.hutch_ok(&["delete", "-f", name]);
    }
    no_leftovers(&d);
}

#[test]
fn devices_and_capabilities_stay_contained() {
    if !require_root("devices_and_capabilities_stay_contained") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["launch", "bb", "u"]);
    d.hutch_ok(&["launch", "bb", "p", "-c", "security.privileged=true"]);
    d.hutch_ok(&[
        "launch",
        "bb",
        "n",
        "-c",
        "security.privileged=true",
        "-c",
        "security.nesting=true",
    ]);
    for name in ["u", "p", "n"] {
        // A node can be made (privileged) or not, but never read.
        let (code, out) = d.sh(name, "mknod /tmp/sda b 8 0 && head -c 1 /tmp/sda");
        assert_ne!(code, 0, "{name}: block device: {out}");
        let (code, out) = d.sh(name, "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem");
        assert_ne!(code, 0, "{name}: /dev/mem: {out}");
        let (code, out) = d.sh(name, "head -c 1 /dev/zero | wc -c");
        assert_eq!((code, out.trim()), (0, "1"), "{name}: /dev/zero");
        // LXC's drop list is out of init's and an exec's bounding sets.
        for pid in ["1", "self"] {
            let out = d.hutch_ok(&[
                "exec",
                name,
                "--",
                "grep",
                "CapBnd",
                &format!("/proc/{pid}/status"),
            ]);
            let hex = out.split_whitespace().nth(1).unwrap();
            let caps = u64::from_str_radix(hex, 16).unwrap();
            for cap in [16, 17, 25, 32, 33] {
                assert_eq!(caps & (1 << cap), 0, "{name} {pid}: capability {cap} kept");
            }
        }
        // busybox reports the refusal but exits 0.
        let (_, out) = d.sh(name, "date -s 2001-01-01");
        assert!(
            out.contains("not permitted"),
            "{name}: the clock was set: {out}"
        );
    }

    for name in ["u", "p", "n"] {
        d.hutch_ok(&["delete", "-f", name]);
    }
    no_leftovers(&d);
}

#[test]
fn a_unified_host_keeps_privileged_containers_off_host_devices() {
    if !require_root("a_unified_host_keeps_privileged_containers_off_host_devices") {
        return;
    }
    // A daemon that sees the cgroup2 hierarchy alone: no devices controller, so the
    // allowlist is the BPF program attached to each container's cgroup.
    use_hutchd_copy();
    let d = TestDaemon::start_cgroup2_only();
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", "p1", "-c", "security.privileged=true"]);
    // Root may make a node (mknod is allowed, as in LXC), never open a device beyond the
    // allowlist: a loop device (7:0), which host root itself can open here.
    let (code, out) = d.sh(
        "p1",
        "mknod /root/loop b 7 0 && head -c 1 /root/loop | wc -c",
    );
    assert!(
        out.contains("Operation not permitted"),
        "a privileged container opened the host's /dev/loop0 ({code}): {out}"
    );
    // What the allowlist grants still works.
    let (code, out) = d.sh("p1", "head -c 4 /dev/zero | wc -c && echo x > /dev/null");
    assert_eq!((code, out.trim()), (0, "4"), "{out}");
    d.hutch_ok(&["stop", "p1", "--force"]);
    d.hutch_ok(&["delete", "p1"]);
    no_leftovers(&d);
}
