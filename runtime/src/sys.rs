//! Thin, safe wrappers over the few kernel calls that neither std nor nix offer.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

fn cstring(path: &Path) -> Result<CString, Errno> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)
}

/// Clones the mount tree at `path` into a detached mount (`open_tree(OPEN_TREE_CLONE)`).
pub fn open_tree_clone(path: &Path, recursive: bool) -> Result<OwnedFd, Errno> {
    let c = cstring(path)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Marks a detached mount as idmapped through the user namespace `userns`. The host's
/// pool is mounted nosuid (so no host user runs a setuid file a container made); the
/// container's own view of it gets setuid back.
pub fn mount_setattr_idmap(tree: &OwnedFd, userns: &OwnedFd, recursive: bool) -> Result<(), Errno> {
    mount_setattr(
        tree,
        &libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_IDMAP,
            attr_clr: libc::MOUNT_ATTR_NOSUID,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        },
        recursive,
    )
}

/// `mount_setattr(2)` on the detached mount `tree` itself (and below it, `recursive`).
fn mount_setattr(tree: &OwnedFd, attr: &libc::mount_attr, recursive: bool) -> Result<(), Errno> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    let empty = c"";
    // SAFETY: `attr` and `empty` are valid for the duration of the call and the size passed
    // matches the struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            flags,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The file at `path` as a read-only (and nosuid, nodev) detached bind mount, to exec
/// from through `/proc/self/fd`. The process's /proc/<pid>/exe then leads to a file no one
/// can open for writing, not even host root in a privileged container (runc
/// CVE-2019-5736); the mount belongs to no namespace, so nothing can remount it writable.
fn readonly_exe(path: &Path) -> Result<OwnedFd, Errno> {
    let tree = open_tree_clone(path, false)?;
    mount_setattr(
        &tree,
        &libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        },
        false,
    )?;
    Ok(tree)
}

/// The read-only bind of `hutchd-helper` this process execs its helpers and monitors from, made
/// once: a detached mount costs an RCU grace period when it goes, which an exec should not
/// pay each time. Kept close-on-exec at fd 100 or above, clear of the fixed fds a child is
/// given before it execs. `None` where it cannot be made (the caller execs `helper_bin` itself).
pub fn helper_exe(helper_bin: &Path) -> Option<std::path::PathBuf> {
    static EXE: std::sync::OnceLock<Option<(std::path::PathBuf, OwnedFd)>> =
        std::sync::OnceLock::new();
    let made = EXE.get_or_init(|| {
        let tree = readonly_exe(helper_bin).ok()?;
        let high =
            nix::fcntl::fcntl(tree.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).ok()?;
        // SAFETY: a new fd from fcntl that nothing else owns.
        let high = unsafe { OwnedFd::from_raw_fd(high) };
        Some((helper_bin.to_path_buf(), high))
    });
    match made {
        Some((path, fd)) if path == helper_bin => {
            Some(format!("/proc/self/fd/{}", fd.as_raw_fd()).into())
        }
        _ => None,
    }
}

/// Names this process (/proc/self/comm) after the file name of its argv[0]: a program
/// exec'd through `helper_exe` would otherwise be named after its fd number.
pub fn name_after_argv0() {
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let name = Path::new(&arg0).file_name().unwrap_or(arg0.as_os_str());
    let mut buf = [0u8; 16];
    let bytes = name.as_encoded_bytes();
    let n = bytes.len().min(15);
    buf[..n].copy_from_slice(&bytes[..n]);
    // SAFETY: PR_SET_NAME reads at most 16 bytes from a NUL-terminated buffer we own.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Attaches a detached mount at `target`.
pub fn move_mount_to(tree: &OwnedFd, target: &Path) -> Result<(), Errno> {
    let c = cstring(target)?;
    let empty = c"";
    // SAFETY: both strings are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Makes a detached mount (and everything below it) read-only.
pub fn mount_setattr_readonly(tree: &OwnedFd) -> Result<(), Errno> {
    mount_setattr(
        tree,
        &libc::mount_attr {
            attr_set: libc::MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        },
        true,
    )
}

/// Attaches a detached mount on the mount point `target` (an `O_PATH` fd): nothing is
/// resolved by name, so nothing can be swapped in between.
pub fn move_mount_onto(tree: &OwnedFd, target: &OwnedFd) -> Result<(), Errno> {
    let empty = c"";
    // SAFETY: `empty` is a valid NUL-terminated string; both fds are open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Whether a detached mount (or any fd) is a directory.
pub fn fd_is_dir(fd: &OwnedFd) -> bool {
    nix::sys::stat::fstat(fd.as_raw_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// A pollable handle on a process that cannot be confused with a later one of the same pid.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` to the process of `pidfd`: never to a later process that reuses its pid.
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall on a pidfd we own, with no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Marks every fd from `first` upward close-on-exec, so nothing leaks into a container.
pub fn cloexec_from(first: u32) -> Result<(), Errno> {
    // SAFETY: close_range only changes flags on fds of this process.
    let rc = unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Closes every fd from `first` upward: what a parent leaked must not reach a container.
pub fn close_from(first: u32) -> Result<(), Errno> {
    // SAFETY: closes only fds of this process; callers own none of them above `first`.
    let rc = unsafe { libc::close_range(first, u32::MAX, 0) };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Sets or clears close-on-exec on one fd.
pub fn set_cloexec(fd: RawFd, on: bool) -> Result<(), Errno> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags)).map(|_| ())
}

/// Starts time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), used
/// to tell a process from a later one that reuses its pid.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether signal `sig` sent to `pid` now surely reaches it: the process catches or blocks
/// it, or it waits in sigtimedwait (busybox init, hutch's reaper), whose awaited signals
/// /proc shows as neither caught nor blocked while it waits. `false` means it may be
/// dropped: an init of a pid namespace has every signal it does not handle dropped, and a
/// freshly exec'd one handles none until it installs its handlers. `None` when the process
/// is gone.
pub fn signal_would_reach(pid: i32, sig: i32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    if signal_in_masks(&status, sig) {
        return Some(true);
    }
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    Some(in_sigtimedwait(&syscall))
}

/// Whether a /proc/PID/syscall text says the process is blocked in rt_sigtimedwait (it
/// starts with the number of the system call it sleeps in, or says "running").
fn in_sigtimedwait(syscall: &str) -> bool {
    syscall
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<i64>().ok())
        == Some(libc::SYS_rt_sigtimedwait)
}

/// Whether `sig` is in the SigCgt or SigBlk mask of a /proc/PID/status text.
fn signal_in_masks(status: &str, sig: i32) -> bool {
    if !(1..=64).contains(&sig) {
        return false;
    }
    let bit = 1u64 << (sig - 1);
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("SigCgt:")
                .or_else(|| l.strip_prefix("SigBlk:"))
        })
        .filter_map(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .any(|mask| mask & bit != 0)
}

/// Resets every signal to its default action and unblocks all, as a fresh process expects.
pub fn reset_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL cannot violate any handler invariants.
        let _ = unsafe { sigaction(sig, &default) };
    }
    let _ = SigSet::all().thread_unblock();
}

/// Capabilities no container may keep, privileged, nested or not: they act on the whole
/// host. LXC's and LXD's drop list (`lxc.cap.drop`), without AppArmor stacking.
pub const CAPS_DROPPED: &[u32] = &[
    16, // sys_module
    17, // sys_rawio
    25, // sys_time
    32, // mac_override
    33, // mac_admin
];

/// Drops host-wide capabilities from the bounding set of this process and its descendants.
pub fn drop_bounding_caps() -> Result<(), Errno> {
    for &cap in CAPS_DROPPED {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc < 0 && Errno::last() != Errno::EINVAL {
            return Err(Errno::last());
        }
    }
    Ok(())
}

/// Sets whether this process is dumpable. A non-dumpable one keeps its /proc files (exe,
/// mem, fd, environ) from processes without CAP_SYS_PTRACE over the namespace it was
/// exec'd in; execve of another program resets it.
pub fn set_dumpable(on: bool) -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants.
pub fn set_child_subreaper() -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Brings the loopback interface of this process's network namespace up, as LXC and
/// docker do: an application container has no init that would, and its processes talk to
/// each other over 127.0.0.1.
pub fn loopback_up() -> Result<(), Errno> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: a zeroed ifreq is a valid value of this plain C struct.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which lives across the calls.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(Errno::last());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_is_readable() {
        let pid = std::process::id() as i32;
        assert!(process_start_time(pid).is_some());
        assert_eq!(process_start_time(pid), process_start_time(pid));
        assert!(process_start_time(i32::MAX).is_none());
    }

    #[test]
    fn a_signal_reaches_a_process_that_catches_or_blocks_it() {
        // SIGPWR is 30: bit 29. SIGRTMIN+3 (37 with glibc): bit 36.
        let status = "Name:\tinit\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000020000000\n";
        assert!(signal_in_masks(status, libc::SIGPWR));
        assert!(!signal_in_masks(status, libc::SIGTERM));
        let blocked = "SigBlk:\t0000001000000000\nSigCgt:\t0000000000000000\n";
        assert!(signal_in_masks(blocked, 37));
        assert!(!signal_in_masks(blocked, libc::SIGPWR));
        // A fresh exec: nothing caught, nothing blocked.
        let fresh = "SigBlk:\t0000000000000000\nSigCgt:\t0000000000000000\n";
        assert!(!signal_in_masks(fresh, libc::SIGPWR));
        assert!(!signal_in_masks(fresh, 0));
        assert!(signal_would_reach(i32::MAX, libc::SIGPWR).is_none());
        // Waiting in sigtimedwait: its awaited signals show in neither mask.
        let waiting = format!("{} 0x5eb308 0x0 0x0 0x8", libc::SYS_rt_sigtimedwait);
        assert!(in_sigtimedwait(&waiting));
        assert!(!in_sigtimedwait("running"));
        assert!(!in_sigtimedwait("7 0x0 0x0"));
        assert!(!in_sigtimedwait(""));
    }
}

/// `struct clone_args` of clone3(2), up to its `cgroup` field (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The cgroup2 directory `dir`, opened as `fork_into_cgroup` needs it (not O_PATH).
pub fn open_cgroup_dir(dir: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    // SAFETY: open returned a new fd that nothing else owns.
    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// fork(2) by clone3 with CLONE_INTO_CGROUP: the child is born in the cgroup2 directory
/// `cgroup`. Moving a process into a cgroup by writing cgroup.procs takes the kernel's
/// threadgroup lock for writing, which waits for an RCU grace period (5 to 17 ms); being
/// born there takes it for reading only. Fails (and makes no child) where the kernel
/// refuses, e.g. EBUSY for a cgroup that must not hold processes.
///
/// # Safety
/// As fork(2), and more: glibc's fork handlers do not run, so in a multithreaded parent
/// the child may only make raw system calls (dup2, execve, _exit); in a single-threaded
/// one it may go on as after fork.
pub unsafe fn fork_into_cgroup(
    cgroup: std::os::fd::BorrowedFd<'_>,
) -> Result<nix::unistd::ForkResult, Errno> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` lives across the call and its size is passed; without CLONE_VM and
    // with no stack, clone3 duplicates the process as fork does.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(nix::unistd::ForkResult::Child),
        pid => Ok(nix::unistd::ForkResult::Parent {
            child: nix::unistd::Pid::from_raw(pid as i32),
        }),
    }
}

/// In a child about to exec: makes `fd` the inherited descriptor `target` (dup2, or only
/// clearing close-on-exec where it is `target` already). Async-signal-safe.
pub fn keep_fd_as(fd: RawFd, target: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl and dup2 on descriptors of this process.
    let rc = unsafe {
        if fd == target {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
