//! The exec helper: the hidden `__exec` mode of hutchd-helper. A fresh single-threaded process
//! that joins the container's cgroup and namespaces with setns, starts the command as the
//! requested user, forwards signals, and reports how it ended.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::unistd::{
    dup2, execve, fork, setgroups, setresgid, setresuid, setsid, ForkResult, Gid, Uid,
};

use super::keeper::{self, Kept};
use super::protocol::{recv_msg, send_msg, ExecEvent, ExecRequest, StartRequest, WindowSize};
use crate::cgroup::{self, RealCgroupFs};
use crate::create::{chain, DEFAULT_PATH};
use crate::error::{Result, RuntimeError};
use crate::seccomp;
use crate::state::{read_json, MonitorState, RuntimeDir};
use crate::sys;
use crate::userns;

/// The fd of the SOCK_SEQPACKET control socket the caller hands the helper.
pub const CONTROL_FD: i32 = 3;

/// The last argument of a helper born in the container's cgroup2 directory by clone3.
pub const BORN_IN_CGROUP2: &str = "born-in-cgroup2";

/// Entry point of `hutchd-helper __exec <dir> [born-in-cgroup2]`. Must run before any thread is
/// started.
pub fn exec_main(dir: &Path, born_in_cgroup2: bool) -> ! {
    // SAFETY: the caller put the control socket on this fd for us alone.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    let _ = sys::close_from(CONTROL_FD as u32 + 1);
    // Before any of us is visible inside: a non-dumpable process's /proc files (exe, mem,
    // fd) are closed to the container's processes, and it cannot be ptraced by them.
    let _ = sys::set_dumpable(false);
    sys::name_after_argv0();
    let _ = sys::set_cloexec(control.as_raw_fd(), true);
    // Detached from the daemon: its terminal, its process group and their signals are not
    // ours (a kept session outlives the daemon).
    let _ = setsid();
    // SAFETY: ignoring signals installs no handler.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let ran = control
        .try_clone()
        .map_err(|e| RuntimeError::io("dup", "exec control socket", e))
        .and_then(|c| run(dir, c, born_in_cgroup2));
    let code = match ran {
        Ok(()) => 0,
        Err(e) => {
            let _ = send_msg(
                control.as_fd(),
                &ExecEvent::Failed { message: chain(&e) },
                &[],
            );
            1
        }
    };
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

fn run(dir: &Path, control: OwnedFd, born_in_cgroup2: bool) -> Result<()> {
    let (start, mut ends) = recv_msg::<StartRequest>(control.as_fd(), "an exec request")?
        .ok_or_else(|| RuntimeError::ExecFailed {
            reason: "the caller hung up before sending a request".into(),
        })?;
    let StartRequest { request: req, keep } = start;
    if req.command.is_empty() {
        return Err(RuntimeError::ExecFailed {
            reason: "no command given".into(),
        });
    }
    let state = read_json::<MonitorState>(&RuntimeDir::new(dir).state())?.ok_or_else(|| {
        RuntimeError::NotRunning {
            dir: dir.to_path_buf(),
        }
    })?;
    let filter = seccomp::compile(&state.seccomp, state.privileged, state.nesting)?;
    // Made on the host's paths, before we join the container's mount namespace.
    let listener = keep.as_deref().map(keeper::listen_at).transpose()?;
    let kept_pipes = match (&listener, req.pty, ends.len()) {
        // With a pty, or without websockets (the command's output goes to files).
        (None, _, _) | (Some(_), _, 0) => None,
        (Some(_), None, 3) => {
            let stderr = ends.pop();
            let stdout = ends.pop();
            Some((ends.pop(), stdout, stderr))
        }
        _ => {
            return Err(RuntimeError::ExecFailed {
                reason: "a kept session needs the caller's three pipe ends".into(),
            })
        }
    };
    // The host's /dev/null, opened before we join the container (whose /dev/null may not
    // be ours to open): it replaces our copies of the command's stdio once it runs.
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| RuntimeError::sys("open /dev/null", e))?;
    // SAFETY: open returned a new fd that we own.
    let null = unsafe { OwnedFd::from_raw_fd(null) };
    join_container(&state, dir, born_in_cgroup2)?;
    if let Some(cwd) = &req.cwd {
        check_cwd(cwd)?;
    }
    let pty = match req.pty {
        Some(size) => Some(open_pty(size, req.uid, req.gid)?),
        None => None,
    };
    let argv = cstrings(&req.command)?;
    let env = environment(&req);
    let envp = cstrings(&env)?;
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();

    // SAFETY: the helper is single-threaded.
    match unsafe { fork() }.map_err(|e| RuntimeError::sys("fork", e))? {
        ForkResult::Child => {
            let code = start_command(
                &req,
                pty.as_ref().map(|p| &p.1),
                filter.as_ref(),
                &argv,
                &envp,
                &path,
            );
            // SAFETY: a forked child leaves with _exit.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let master = pty.map(|(master, slave)| {
                drop(slave);
                master
            });
            // Our copies of the caller's stdio must not keep its pipes open (a kept session
            // would never let its output end).
            for fd in 0..3 {
                let _ = dup2(null.as_raw_fd(), fd);
            }
            drop(null);
            send_msg(
                control.as_fd(),
                &ExecEvent::Started {
                    pid: child.as_raw(),
                },
                &master
                    .as_ref()
                    .map(|m| m.as_raw_fd())
                    .into_iter()
                    .collect::<Vec<_>>(),
            )?;
            let kept = match (listener.is_some(), master, kept_pipes) {
                (true, Some(master), _) => Kept::Pty(master),
                (true, None, Some((stdin, Some(stdout), Some(stderr)))) => Kept::Pipes {
                    stdin,
                    stdout,
                    stderr,
                },
                _ => Kept::Nothing,
            };
            keeper::supervise(control, listener, kept, child)
        }
    }
}

/// Joins the container's cgroup, then all its namespaces at once through a pidfd.
fn join_container(state: &MonitorState, dir: &Path, born_in_cgroup2: bool) -> Result<()> {
    // The pid must still be the init the monitor started, not a recycled pid.
    if sys::process_start_time(state.init_pid) != Some(state.init_start_time) {
        return Err(RuntimeError::NotRunning {
            dir: dir.to_path_buf(),
        });
    }
    let pidfd = sys::pidfd_open(state.init_pid).map_err(|_| RuntimeError::NotRunning {
        dir: dir.to_path_buf(),
    })?;
    let cg = cgroup::open(&state.cgroup_layout, &state.cgroup, Arc::new(RealCgroupFs));
    let me = std::process::id() as i32;
    if born_in_cgroup2 {
        cg.add_exec_process_v1(me)?;
    } else {
        cg.add_exec_process(me)?;
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    if !state.privileged {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    nix::sched::setns(pidfd.as_fd(), flags)
        .map_err(|e| RuntimeError::sys("join the container's namespaces", e))?;
    if !state.privileged {
        userns::become_root()?;
    }
    sys::drop_bounding_caps().map_err(|e| RuntimeError::sys("drop capabilities", e))
}

/// A missing working directory fails the exec with its own reason (in the container's
/// mount namespace, before the command is started), never as a missing command.
fn check_cwd(cwd: &str) -> Result<()> {
    let failed = |e| RuntimeError::sys(format!("change directory to {cwd}"), e);
    let st = nix::sys::stat::stat(cwd).map_err(failed)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(failed(nix::errno::Errno::ENOTDIR));
    }
    Ok(())
}

/// A pty from the container's own devpts, so the command sees /dev/pts/N inside.
fn open_pty(size: WindowSize, uid: u32, gid: u32) -> Result<(OwnedFd, OwnedFd)> {
    let master = open(
        "/dev/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| RuntimeError::sys("open /dev/ptmx in the container", e))?;
    // SAFETY: open returned a new fd that we own.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int; TIOCGPTPEER returns a new fd.
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) < 0 {
            return Err(RuntimeError::sys(
                "unlock the pty",
                nix::errno::Errno::last(),
            ));
        }
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(RuntimeError::sys(
            "open the pty peer",
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: TIOCGPTPEER returned a new fd that we own.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_window_size(master.as_fd(), size)?;
    nix::unistd::fchown(
        slave.as_raw_fd(),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )
    .map_err(|e| RuntimeError::sys("chown the pty", e))?;
    Ok((master, slave))
}

/// Sets a pty's window size.
pub fn set_window_size(fd: BorrowedFd<'_>, size: WindowSize) -> Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(RuntimeError::sys(
            "set the window size",
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// In the forked child: become the user, then exec. Returns an exit code on failure,
/// shell style (127 not found, 126 not executable), with the reason on stderr.
fn start_command(
    req: &ExecRequest,
    slave: Option<&OwnedFd>,
    filter: Option<&seccomp::Filter>,
    argv: &[CString],
    envp: &[CString],
    path: &str,
) -> i32 {
    let fail = |what: &str, e: nix::errno::Errno| {
        eprintln!("hutch exec: {what}: {}", e.desc());
        match e {
            nix::errno::Errno::ENOENT => 127,
            nix::errno::Errno::EACCES | nix::errno::Errno::ENOEXEC => 126,
            _ => 1,
        }
    };
    let _ = setsid();
    if let Some(slave) = slave {
        // SAFETY: TIOCSCTTY with arg 0 on an fd we own.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
        for fd in 0..3 {
            let _ = dup2(slave.as_raw_fd(), fd);
        }
    }
    // While still root in the container's user namespace: installing a filter then needs
    // no no_new_privs, which would break setuid programs the command runs.
    if let Some(filter) = filter {
        if let Err(e) = seccomp::install(filter) {
            return fail("install seccomp filter", e);
        }
    }
    if let Err(e) = setgroups(&[]).and_then(|_| {
        let g = Gid::from_raw(req.gid);
        setresgid(g, g, g)
    }) {
        return fail("set group", e);
    }
    let u = Uid::from_raw(req.uid);
    if let Err(e) = setresuid(u, u, u) {
        return fail("set user", e);
    }
    // The container's root first: no host directory may stay the working directory.
    if let Err(e) = nix::unistd::chdir("/") {
        return fail("change directory to /", e);
    }
    let cwd = req.cwd.as_deref().unwrap_or("/");
    if let Err(e) = nix::unistd::chdir(cwd) {
        if req.cwd.is_some() {
            // Not 127/126: a directory the user may not enter is no missing command.
            eprintln!("hutch exec: change directory to {cwd}: {}", e.desc());
            return 1;
        }
    }
    sys::reset_signals();
    // Only 0, 1 and 2 may reach the command.
    if let Err(e) = sys::cloexec_from(3) {
        return fail("mark fds close-on-exec", e);
    }
    let program = match resolve(&req.command[0], path) {
        Some(p) => p,
        None => {
            return fail(
                &format!("{}: command not found", req.command[0]),
                nix::errno::Errno::ENOENT,
            )
        }
    };
    let e = execve(&program, argv, envp).unwrap_err();
    fail(&format!("exec {}", req.command[0]), e)
}

/// Finds `cmd` in `path` as seen from inside the container (we are in its mount namespace).
fn resolve(cmd: &str, path: &str) -> Option<CString> {
    if cmd.contains('/') {
        return CString::new(cmd).ok();
    }
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let full = format!("{dir}/{cmd}");
        let c = CString::new(full).ok()?;
        // SAFETY: c is a valid NUL-terminated path.
        (unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0).then_some(c)
    })
}

/// The command's environment: the request's, with a default PATH.
fn environment(req: &ExecRequest) -> Vec<String> {
    let mut env: Vec<String> = req.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !req.env.contains_key("PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    env
}

fn cstrings(items: &[String]) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| RuntimeError::ExecFailed {
                reason: format!("{s:?} contains NUL"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_on_the_path() {
        assert_eq!(
            resolve("sh", "/nonexistent:/bin")
                .unwrap()
                .to_str()
                .unwrap(),
            "/bin/sh"
        );
        assert!(resolve("no-such-command-here", "/bin:/usr/bin").is_none());
        assert_eq!(resolve("./x", "").unwrap().to_str().unwrap(), "./x");
    }

    #[test]
    fn path_defaults_when_the_request_has_none() {
        let mut req = ExecRequest {
            command: vec!["true".into()],
            env: Default::default(),
            cwd: None,
            uid: 0,
            gid: 0,
            pty: None,
        };
        assert!(environment(&req).contains(&format!("PATH={DEFAULT_PATH}")));
        req.env.insert("PATH".into(), "/x".into());
        assert_eq!(environment(&req), vec!["PATH=/x".to_string()]);
    }
}
