//! Creating a container, run inside its monitor: cgroup, user namespace, idmapped root,
//! console, then the fork dance that leaves init as PID 1 of fresh namespaces, a child of
//! the monitor, and exec'ing the image's own init.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{dup2, execve, fork, getpid, pipe2, sethostname, setsid, ForkResult, Pid};

use crate::cgroup::{self, CgroupDriver, CgroupLayout, RealCgroupFs};
use crate::console::{self, ConsolePty};
use crate::error::{Result, RuntimeError};
use crate::rootfs;
use crate::seccomp;
use crate::spec::{ContainerSpec, InitUser};
use crate::sys;
use crate::userns::{self, RootTree};

/// Default PATH for init and exec'd commands.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container whose init is running.
#[derive(Debug)]
pub struct Created {
    pub init_pid: Pid,
    pub console: ConsolePty,
    pub cgroup: Arc<dyn CgroupDriver>,
    pub cgroup_layout: CgroupLayout,
    pub halt_signal: i32,
    pub idmapped: bool,
    /// Where the time went (see [`StepTimes`]).
    pub steps: Vec<(String, u64)>,
}

/// Where a start's time went inside the monitor, step by step, in microseconds: reported
/// to the starter, which the daemon logs beside its own steps (a host with many containers
/// makes some kernel work slower; this says which).
pub(crate) struct StepTimes {
    last: std::time::Instant,
    steps: Vec<(String, u64)>,
}

impl StepTimes {
    pub(crate) fn new() -> Self {
        StepTimes {
            last: std::time::Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Ends step `name` (begun where the previous one ended).
    pub(crate) fn mark(&mut self, name: &str) {
        let now = std::time::Instant::now();
        let us = now.duration_since(self.last).as_micros() as u64;
        self.steps.push((name.to_string(), us));
        self.last = now;
    }

    pub(crate) fn into_steps(self) -> Vec<(String, u64)> {
        self.steps
    }
}

/// Creates and boots the container. On failure nothing of it is left behind.
pub fn create(spec: &ContainerSpec) -> Result<Created> {
    let mut times = StepTimes::new();
    spec.validate()?;
    let meta = std::fs::metadata(&spec.rootfs)
        .map_err(|e| RuntimeError::io("open root filesystem", &spec.rootfs, e))?;
    if !meta.is_dir() {
        return Err(RuntimeError::InvalidSpec {
            field: "rootfs".into(),
            reason: "is not a directory".into(),
        });
    }
    let layout = CgroupLayout::detect()?;
    let cg: Arc<dyn CgroupDriver> =
        Arc::from(cgroup::open(&layout, &spec.cgroup, Arc::new(RealCgroupFs)));
    let mut undo = CgroupUndo(Some(cg.clone()));
    cg.create()?;
    cg.apply_limits(&spec.limits)?;
    match cg.device_filter_dir() {
        Some(dir) => cgroup::devices_bpf::restrict(&dir, &spec.device_rules)?,
        None => cg.update_device_rules(&[], &spec.device_rules)?,
    }

    let (root_uid, root_gid, tty_gid) = match &spec.idmap {
        Some(map) if !spec.privileged => {
            let uid = map.host_uid(0).expect("validated: root is mapped");
            let gid = map.host_gid(0).expect("validated: root is mapped");
            (uid, gid, map.host_gid(5).unwrap_or(gid))
        }
        _ => (0, 0, 5),
    };
    if !spec.privileged {
        cg.delegate(root_uid, root_gid)?;
    }
    times.mark("cgroup");
    let userns = match (&spec.idmap, spec.privileged) {
        (Some(map), false) => Some(userns::create(map)?),
        _ => None,
    };
    times.mark("userns");
    let tree = match (&userns, &spec.idmap) {
        (Some(ns), Some(map)) => match userns::prepare_root(&spec.rootfs, ns, map)? {
            RootTree::Idmapped(fd) => Some(fd),
            RootTree::Shifted => None,
        },
        _ => None,
    };
    times.mark("root");
    let console = console::open(root_uid, tty_gid)?;
    let (root, idmapped) = match tree {
        Some(_) => (rootfs::RootMount::IdmappedTree, true),
        None => (rootfs::RootMount::Bind, false),
    };
    let ops = rootfs::plan(
        spec,
        root,
        &console.slave_path,
        &cg.container_mounts(),
        rootfs::has_run_dir(&spec.rootfs),
    );
    let halt_signal = spec
        .halt_signal
        .unwrap_or_else(|| detect_halt_signal(&spec.rootfs));

    let binds = match (&userns, spec.privileged) {
        (Some(ns), false) => idmapped_binds(spec, ns)?,
        _ => Vec::new(),
    };
    let trees = Trees {
        root: tree.as_ref(),
        binds: &binds,
    };
    times.mark("prepare");
    let init_pid = spawn_init(
        spec,
        &cg,
        userns.as_ref(),
        &trees,
        &console,
        &ops,
        &mut times,
    )?;
    undo.0 = None;
    Ok(Created {
        init_pid,
        console,
        cgroup: cg,
        cgroup_layout: layout,
        halt_signal,
        idmapped,
        steps: times.into_steps(),
    })
}

/// The detached mounts init attaches: the idmapped root and idmapped binds.
struct Trees<'a> {
    root: Option<&'a OwnedFd>,
    binds: &'a [OwnedFd],
}

/// Idmapped detached mounts for the spec's `idmapped` binds, in spec order (the mount
/// plan refers to them by that order).
fn idmapped_binds(spec: &ContainerSpec, userns: &OwnedFd) -> Result<Vec<OwnedFd>> {
    let mut out = Vec::new();
    for m in spec.mounts.iter().filter(|m| m.idmapped) {
        let tree = sys::open_tree_clone(&m.source, true).map_err(|e| {
            RuntimeError::sys(format!("clone mount tree of {}", m.source.display()), e)
        })?;
        sys::mount_setattr_idmap(&tree, userns, true).map_err(|e| {
            RuntimeError::sys(
                format!(
                    "idmap the mount of {} (the filesystem may not support idmapped mounts)",
                    m.source.display()
                ),
                e,
            )
        })?;
        out.push(tree);
    }
    Ok(out)
}

/// Kills and removes the cgroup unless disarmed.
struct CgroupUndo(Option<Arc<dyn CgroupDriver>>);

impl Drop for CgroupUndo {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            let _ = cg.kill_all();
            let _ = cg.destroy();
        }
    }
}

/// Messages from the container's setup processes to the monitor, one per line.
const MSG_PID: &str = "pid ";
const MSG_MOUNTED: &str = "mounted";
const MSG_ERROR: &str = "error ";

/// Writes one report line in a single write: the intermediate and init share the pipe, and
/// `writeln!` may split a line into several writes that the other writer's line can come
/// between ("mountedpid 42"). A pipe write of at most PIPE_BUF bytes is atomic.
fn report_line(report: &mut File, kind: &str, text: &str) -> std::io::Result<()> {
    const MAX: usize = 4000;
    let mut line = String::with_capacity(kind.len() + text.len().min(MAX) + 1);
    line.push_str(kind);
    let mut end = text.len().min(MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    line.push_str(&text[..end]);
    line.push('\n');
    report.write_all(line.as_bytes())
}

fn spawn_init(
    spec: &ContainerSpec,
    cg: &Arc<dyn CgroupDriver>,
    userns: Option<&OwnedFd>,
    trees: &Trees<'_>,
    console: &ConsolePty,
    ops: &[rootfs::MountOp],
    times: &mut StepTimes,
) -> Result<Pid> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (report_r, report_w) = pipe2(cloexec).map_err(|e| RuntimeError::sys("create pipe", e))?;
    let (release_r, release_w) = pipe2(cloexec).map_err(|e| RuntimeError::sys("create pipe", e))?;
    // Prepared before fork: the children must not allocate what they can avoid.
    let argv = to_cstrings(&spec.init_command())?;
    let envp = to_cstrings(&init_environment(spec))?;
    let filter = seccomp::compile(&spec.seccomp, spec.privileged, spec.nesting)?;

    // Born in its cgroup2 directory where there is one: moving in costs a grace period.
    let cgroup2 = cg.v2_dir().and_then(|dir| sys::open_cgroup_dir(&dir).ok());
    let born = cgroup2.as_ref().map(|fd| {
        // SAFETY: the monitor is single-threaded while it creates the container.
        unsafe { sys::fork_into_cgroup(fd.as_fd()) }
    });
    let (forked, born_in_cgroup2) = match born {
        Some(Ok(forked)) => (forked, true),
        _ => {
            // SAFETY: as above.
            let forked = unsafe { fork() }.map_err(|e| RuntimeError::sys("fork", e))?;
            (forked, false)
        }
    };
    drop(cgroup2);
    match forked {
        ForkResult::Child => {
            drop(report_r);
            drop(release_w);
            let mut report = File::from(report_w);
            let err = intermediate(
                spec,
                cg,
                born_in_cgroup2,
                userns,
                trees,
                console,
                ops,
                &Exec {
                    argv: &argv,
                    envp: &envp,
                    filter: filter.as_ref(),
                },
                &mut report,
                release_r,
            );
            let _ = report_line(&mut report, MSG_ERROR, &chain(&err));
            // SAFETY: _exit skips the parent's destructors, which is what a forked child needs.
            unsafe { libc::_exit(1) }
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            drop(release_r);
            let _ = waitpid(child, None);
            let mut lines = BufReader::new(File::from(report_r));
            // Two writers share the report pipe: the intermediate's pid line and init's
            // "mounted" may come in either order when the intermediate is slow to run.
            let mut mounted = false;
            let init = loop {
                match read_report(&mut lines)? {
                    Some(m) if m == MSG_MOUNTED && !mounted => mounted = true,
                    Some(pid) => {
                        break Pid::from_raw(pid.parse().map_err(|_| protocol("init pid", &pid))?)
                    }
                    None => {
                        return Err(RuntimeError::StartFailed {
                            reason: "setup process died".into(),
                        })
                    }
                }
            };
            // The intermediate's work: joining the cgroup and the user namespace, making
            // the other namespaces, forking init.
            times.mark("namespaces");
            let result = release_init(spec, init, &mut lines, release_w, mounted, times);
            if result.is_err() {
                let _ = kill(init, Signal::SIGKILL);
                let _ = waitpid(init, None);
            }
            result.map(|()| init)
        }
    }
}

/// Waits for init to finish its mounts (unless its report came already), runs the hooks,
/// lets it exec, and waits for the exec.
fn release_init(
    spec: &ContainerSpec,
    init: Pid,
    lines: &mut BufReader<File>,
    release: OwnedFd,
    mounted: bool,
    times: &mut StepTimes,
) -> Result<()> {
    if !mounted {
        match read_report(lines)? {
            Some(m) if m == MSG_MOUNTED => {}
            Some(other) => return Err(protocol(MSG_MOUNTED, &other)),
            None => {
                return Err(RuntimeError::StartFailed {
                    reason: "init died while mounting".into(),
                })
            }
        }
    }
    times.mark("mounts");
    for hook in &spec.pre_start_hooks {
        run_hook(hook, spec, init)?;
    }
    times.mark("hooks");
    File::from(release)
        .write_all(b"1")
        .map_err(|e| RuntimeError::io("release", "init", e))?;
    // EOF without a message means the exec succeeded (the pipe is close-on-exec).
    let execed = match read_report(lines)? {
        None => Ok(()),
        Some(other) => Err(protocol("exec", &other)),
    };
    times.mark("exec");
    execed
}

/// A pre-start hook the monitor runs in its own process instead of executing it. The
/// helper registers its own hook modes (`hutchd-helper __nic-plug PLAN`), so a start pays no
/// exec and process start for them. Called with the hook's arguments after the mode and
/// init's pid; the error is what an executed hook would have printed.
pub type BuiltinHook = fn(args: &[String], init_pid: i32) -> std::result::Result<(), String>;

static BUILTIN_HOOKS: std::sync::OnceLock<Vec<(&'static str, BuiltinHook)>> =
    std::sync::OnceLock::new();

/// Registers the hooks `hutchd-helper MODE ...` that the monitor runs in process (once, before
/// `monitor_main`). A hook runs after init is forked: the monitor forks nothing more while it
/// creates the container, so threads a hook starts are safe.
pub fn register_builtin_hooks(hooks: Vec<(&'static str, BuiltinHook)>) {
    let _ = BUILTIN_HOOKS.set(hooks);
}

/// The builtin that `hook` names: its program is this process's own (the monitor runs as
/// the helper, started under its name) and its first argument a registered mode.
fn builtin(hook: &[String]) -> Option<BuiltinHook> {
    let mode = hook.get(1)?;
    let own = std::env::args_os().next()?;
    if own.as_os_str() != std::ffi::OsStr::new(&hook[0]) {
        return None;
    }
    BUILTIN_HOOKS
        .get()?
        .iter()
        .find(|(name, _)| name == mode)
        .map(|(_, f)| *f)
}

fn run_hook(hook: &[String], spec: &ContainerSpec, init: Pid) -> Result<()> {
    if let Some(run) = builtin(hook) {
        return run(&hook[2..], init.as_raw()).map_err(|reason| RuntimeError::StartFailed {
            reason: format!("hook {} {} failed: {reason}", hook[0], hook[1]),
        });
    }
    let out = Command::new(&hook[0])
        .args(&hook[1..])
        .env("HUTCH_PID", init.to_string())
        .env("HUTCH_NETNS", format!("/proc/{init}/ns/net"))
        .env("HUTCH_NAME", &spec.name)
        .output()
        .map_err(|e| RuntimeError::io("run hook", &hook[0], e))?;
    if !out.status.success() {
        return Err(RuntimeError::StartFailed {
            reason: format!(
                "hook {} failed ({}): {}",
                hook[0],
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// Reads one report line; `Ok(None)` on EOF. An error line becomes the start error.
fn read_report(lines: &mut BufReader<File>) -> Result<Option<String>> {
    let mut line = String::new();
    let n = lines
        .read_line(&mut line)
        .map_err(|e| RuntimeError::io("read", "setup report", e))?;
    if n == 0 {
        return Ok(None);
    }
    let line = line.trim_end().to_string();
    if let Some(reason) = line.strip_prefix(MSG_ERROR) {
        return Err(RuntimeError::StartFailed {
            reason: reason.to_string(),
        });
    }
    Ok(Some(
        line.strip_prefix(MSG_PID)
            .map(str::to_string)
            .unwrap_or(line),
    ))
}

fn protocol(expected: &'static str, got: &str) -> RuntimeError {
    RuntimeError::Protocol {
        peer: "container setup",
        expected,
        got: got.to_string(),
    }
}

/// What init execs, prepared before the fork, and the seccomp filter it execs under.
struct Exec<'a> {
    argv: &'a [CString],
    envp: &'a [CString],
    filter: Option<&'a seccomp::Filter>,
}

/// The first child: joins the cgroup (what it was not born in) and user namespace,
/// unshares the rest, and forks
/// init into the new pid namespace. Returns only on error.
#[allow(clippy::too_many_arguments)]
fn intermediate(
    spec: &ContainerSpec,
    cg: &Arc<dyn CgroupDriver>,
    born_in_cgroup2: bool,
    userns: Option<&OwnedFd>,
    trees: &Trees<'_>,
    console: &ConsolePty,
    ops: &[rootfs::MountOp],
    exec: &Exec<'_>,
    report: &mut File,
    release: OwnedFd,
) -> RuntimeError {
    let step = || -> Result<Pid> {
        if born_in_cgroup2 {
            cg.add_process_v1(getpid().as_raw())?;
        } else {
            cg.add_process(getpid().as_raw())?;
        }
        if let Some(ns) = userns {
            userns::enter(ns)?;
        }
        let flags = CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWCGROUP
            | CloneFlags::CLONE_NEWPID;
        unshare(flags).map_err(|e| RuntimeError::sys("unshare namespaces", e))?;
        // SAFETY: single-threaded process (forked from the single-threaded monitor).
        match unsafe { fork() }.map_err(|e| RuntimeError::sys("fork init", e))? {
            ForkResult::Child => {
                let err = init_process(spec, trees, console, ops, exec, report, release);
                let _ = report_line(report, MSG_ERROR, &chain(&err));
                // SAFETY: see above; a forked child leaves with _exit.
                unsafe { libc::_exit(1) }
            }
            ForkResult::Parent { child } => Ok(child),
        }
    };
    match step() {
        Ok(init) => {
            // Test-only (debug builds): the intermediate is late, as under load, so init's
            // report comes first.
            #[cfg(debug_assertions)]
            if std::env::var_os("HUTCH_FAULT").is_some_and(|v| v == "slow-intermediate") {
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
            let _ = report_line(report, MSG_PID, &init.to_string());
            // SAFETY: see above.
            unsafe { libc::_exit(0) }
        }
        Err(e) => e,
    }
}

/// PID 1 of the container: mounts, pivots, waits for the monitor, then execs init.
/// Returns only on error.
#[allow(clippy::too_many_arguments)]
fn init_process(
    spec: &ContainerSpec,
    trees: &Trees<'_>,
    console: &ConsolePty,
    ops: &[rootfs::MountOp],
    exec: &Exec<'_>,
    report: &mut File,
    release: OwnedFd,
) -> RuntimeError {
    let mut step = || -> Result<()> {
        sethostname(&spec.name).map_err(|e| RuntimeError::sys("set hostname", e))?;
        sys::loopback_up().map_err(|e| RuntimeError::sys("bring the loopback interface up", e))?;
        rootfs::apply(ops, &spec.rootfs, trees.root, trees.binds)?;
        report_line(report, MSG_MOUNTED, "")
            .map_err(|e| RuntimeError::io("report", "monitor", e))?;
        let mut byte = [0u8; 1];
        let n = nix::unistd::read(release.as_raw_fd(), &mut byte)
            .map_err(|e| RuntimeError::sys("wait for release", e))?;
        if n != 1 {
            return Err(RuntimeError::StartFailed {
                reason: "monitor gave up before release".into(),
            });
        }
        setsid().map_err(|e| RuntimeError::sys("setsid", e))?;
        let slave = console.slave.as_raw_fd();
        // SAFETY: TIOCSCTTY with arg 0 on an fd we own.
        if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } < 0 {
            return Err(RuntimeError::sys(
                "set the console as controlling tty",
                nix::errno::Errno::last(),
            ));
        }
        for fd in 0..3 {
            dup2(slave, fd).map_err(|e| RuntimeError::sys("dup the console", e))?;
        }
        if let Some(cwd) = &spec.init_cwd {
            nix::unistd::chdir(cwd.as_path()).map_err(|e| {
                RuntimeError::sys(format!("change directory to {}", cwd.display()), e)
            })?;
        }
        sys::drop_bounding_caps().map_err(|e| RuntimeError::sys("drop capabilities", e))?;
        sys::reset_signals();
        sys::cloexec_from(3).map_err(|e| RuntimeError::sys("mark fds close-on-exec", e))?;
        // Last, with CAP_SYS_ADMIN in the container's user namespace rather than
        // no_new_privs, so setuid programs inside keep working.
        if let Some(filter) = exec.filter {
            seccomp::install(filter).map_err(|e| RuntimeError::sys("install seccomp filter", e))?;
        }
        if spec.reaper {
            return Err(crate::reaper::run(exec.argv, exec.envp, spec.init_user));
        }
        // After the filter, which needs the capabilities a non-root user loses.
        become_user(spec.init_user)?;
        let e = execve(&exec.argv[0], exec.argv, exec.envp).unwrap_err();
        Err(RuntimeError::sys(
            format!("exec {}", exec.argv[0].to_string_lossy()),
            e,
        ))
    };
    match step() {
        Ok(()) => unreachable!("exec returned without error"),
        Err(e) => e,
    }
}

/// Takes the ids init (or the application under the reaper) runs as, when not root.
pub(crate) fn become_user(user: Option<InitUser>) -> Result<()> {
    let Some(user) = user else { return Ok(()) };
    let gid = nix::unistd::Gid::from_raw(user.gid);
    nix::unistd::setgroups(&[gid]).map_err(|e| RuntimeError::sys("set groups", e))?;
    nix::unistd::setgid(gid).map_err(|e| RuntimeError::sys("set gid", e))?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(user.uid))
        .map_err(|e| RuntimeError::sys("set uid", e))
}

/// The environment init gets: what LXD gives, plus the spec's own.
fn init_environment(spec: &ContainerSpec) -> Vec<String> {
    let mut env = vec![
        "container=lxc".to_string(),
        format!("PATH={DEFAULT_PATH}"),
        "TERM=linux".to_string(),
        "HOME=/root".to_string(),
    ];
    for (k, v) in &spec.env {
        env.retain(|e| !e.starts_with(&format!("{k}=")));
        env.push(format!("{k}={v}"));
    }
    env
}

fn to_cstrings(items: &[String]) -> Result<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| RuntimeError::InvalidSpec {
                field: "command".into(),
                reason: "contains NUL".into(),
            })
        })
        .collect()
}

/// The error and its causes on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out.replace('\n', " ")
}

/// systemd halts on SIGRTMIN+3; busybox init and sysvinit on SIGPWR.
pub fn detect_halt_signal(rootfs: &Path) -> i32 {
    match resolve_in_root(rootfs, Path::new("/sbin/init")) {
        Some(p) if p.to_string_lossy().contains("systemd") => libc::SIGRTMIN() + 3,
        _ => libc::SIGPWR,
    }
}

/// Follows symlinks of `path` as the container would see them, never leaving `root`.
fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..16 {
        let rel: PathBuf = current
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        let host = root.join(&rel);
        match std::fs::read_link(&host) {
            Ok(target) if target.is_absolute() => current = target,
            Ok(target) => {
                current = Path::new("/")
                    .join(rel.parent().unwrap_or(Path::new("")))
                    .join(target)
            }
            Err(_) => return Some(current),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said_ok(args: &[String], pid: i32) -> std::result::Result<(), String> {
        match (args, pid) {
            ([plan], 42) if plan == "plan.json" => Ok(()),
            _ => Err(format!("{args:?} {pid}")),
        }
    }

    #[test]
    fn a_hook_naming_this_process_and_a_registered_mode_runs_in_process() {
        register_builtin_hooks(vec![("__said-ok", said_ok)]);
        let own = std::env::args().next().unwrap();
        let hook = |prog: &str, mode: &str| vec![prog.to_string(), mode.into(), "plan.json".into()];
        let run = builtin(&hook(&own, "__said-ok")).expect("registered");
        assert_eq!(run(&hook(&own, "__said-ok")[2..], 42), Ok(()));
        // Another program, or a mode nobody registered, is executed as before.
        assert!(builtin(&hook("/usr/bin/other", "__said-ok")).is_none());
        assert!(builtin(&hook(&own, "__nic-plug")).is_none());
        assert!(builtin(&[own]).is_none());
    }
    use std::os::unix::fs::symlink;

    #[test]
    fn report_lines_from_two_writers_never_mix() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = File::from(w);
        let mut other = w.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            for _ in 0..2000 {
                report_line(&mut other, MSG_MOUNTED, "").unwrap();
            }
        });
        for i in 0..2000 {
            report_line(&mut w, MSG_PID, &i.to_string()).unwrap();
        }
        writer.join().unwrap();
        drop(w);
        let mut lines = BufReader::new(File::from(r));
        let (mut pids, mut mounted) = (0, 0);
        while let Some(m) = read_report(&mut lines).unwrap() {
            if m == MSG_MOUNTED {
                mounted += 1;
            } else {
                assert_eq!(m.parse::<usize>().unwrap(), pids, "{m:?}");
                pids += 1;
            }
        }
        assert_eq!((pids, mounted), (2000, 2000));
        // A long error is cut at a character boundary, still one line.
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = File::from(w);
        report_line(&mut w, MSG_ERROR, &"é".repeat(3000)).unwrap();
        drop(w);
        let err = read_report(&mut BufReader::new(File::from(r))).unwrap_err();
        assert!(err.to_string().len() < 4100);
    }

    #[test]
    fn halt_signal_follows_init_symlinks_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sbin")).unwrap();
        std::fs::create_dir_all(dir.path().join("lib/systemd")).unwrap();
        symlink("/lib/systemd/systemd", dir.path().join("sbin/init")).unwrap();
        assert_eq!(detect_halt_signal(dir.path()), libc::SIGRTMIN() + 3);

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sbin")).unwrap();
        symlink("../bin/busybox", dir.path().join("sbin/init")).unwrap();
        assert_eq!(detect_halt_signal(dir.path()), libc::SIGPWR);
    }

    #[test]
    fn symlink_loops_do_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sbin")).unwrap();
        symlink("/sbin/init", dir.path().join("sbin/init")).unwrap();
        assert_eq!(detect_halt_signal(dir.path()), libc::SIGPWR);
    }

    #[test]
    fn spec_environment_overrides_defaults() {
        let mut spec = ContainerSpec::new("c", "/r", None, "h/c");
        spec.env.insert("TERM".into(), "xterm".into());
        spec.env.insert("FOO".into(), "bar".into());
        let env = init_environment(&spec);
        assert!(env.contains(&"container=lxc".to_string()));
        assert!(env.contains(&"TERM=xterm".to_string()));
        assert!(!env.contains(&"TERM=linux".to_string()));
        assert!(env.contains(&"FOO=bar".to_string()));
    }
}
