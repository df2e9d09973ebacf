//! The monitor process: the hidden `__monitor` mode of hutchd-helper. It detaches from the
//! daemon, creates the container, then supervises it: reaps, logs the console, answers
//! on its socket, and cleans up when init exits.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{dup2, fork, setsid, ForkResult, Pid};

use super::protocol::{recv, send, MonitorReply, MonitorRequest};
use super::StartReport;
use crate::console::BoundedLog;
use crate::create::{self, chain, Created};
use crate::error::{Result, RuntimeError};
use crate::spec::ContainerSpec;
use crate::state::{
    read_json, unix_now, write_json_atomic, write_json_replace, ExitRecord, MonitorState,
    RuntimeDir,
};
use crate::sys;

/// The fd on which the starter waits for the monitor's [`StartReport`].
pub const STATUS_FD: i32 = 3;

/// Entry point of `hutchd-helper __monitor <dir>`. Must run before any thread is started.
pub fn monitor_main(dir: &Path) -> ! {
    // SAFETY: the starter put the write end of its status pipe on this fd for us alone.
    let status = unsafe { OwnedFd::from_raw_fd(STATUS_FD) };
    let _ = sys::close_from(STATUS_FD as u32 + 1);
    let _ = sys::set_cloexec(status.as_raw_fd(), true);
    sys::name_after_argv0();
    let _ = setsid();
    // Fork once more so the starter can reap us at once and the monitor is nobody's child.
    // SAFETY: no threads exist yet.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => unsafe_exit(0),
        Ok(ForkResult::Child) => {}
        Err(_) => unsafe_exit(1),
    }
    let _ = std::env::set_current_dir("/");
    let _ = sys::set_child_subreaper();
    // SAFETY: ignoring signals installs no handler code.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigIgn);
        let _ = signal(Signal::SIGHUP, SigHandler::SigIgn);
    }
    let rd = RuntimeDir::new(dir);
    let mut status = File::from(status);
    let started = read_json::<ContainerSpec>(&rd.spec()).and_then(|spec| {
        let spec = spec.ok_or_else(|| RuntimeError::StartFailed {
            reason: "spec.json is missing".into(),
        })?;
        let mut created = create::create(&spec)?;
        let mut times = std::mem::take(&mut created.steps);
        let published = Instant::now();
        let (monitor, listener) = publish(&rd, &spec, created)?;
        times.push(("publish".into(), published.elapsed().as_micros() as u64));
        Ok((monitor, listener, times))
    });
    match started {
        Ok((monitor, listener, steps)) => {
            let report = StartReport::Started {
                init_pid: monitor.state.init_pid,
                monitor_pid: monitor.state.monitor_pid,
                steps,
            };
            let _ = send(&mut status, &report);
            drop(status);
            serve(monitor, listener)
        }
        Err(e) => {
            eprintln!("monitor: {}", chain(&e));
            // The starter wraps the message in its own StartFailed; do not say it twice.
            let message = match &e {
                RuntimeError::StartFailed { reason } => reason.clone(),
                other => chain(other),
            };
            let _ = send(
                &mut status,
                &StartReport::Failed {
                    message,
                    invalid_spec: matches!(e, RuntimeError::InvalidSpec { .. }),
                },
            );
            unsafe_exit(1)
        }
    }
}

fn unsafe_exit(code: i32) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Shared between the monitor's threads.
struct Monitor {
    rd: RuntimeDir,
    state: MonitorState,
    created: Created,
    /// Init's pidfd, for signals that must not reach a later process of the same pid
    /// (`None` on a kernel without pidfds).
    init_pidfd: Option<OwnedFd>,
    /// `Some` once init has exited and the cleanup is done.
    exited: Mutex<Option<ExitRecord>>,
    exited_cond: Condvar,
    /// Connections waiting for the end of a stop.
    stop_waiters: Mutex<Vec<UnixStream>>,
    /// Set by a `Stop` request: the exit record then says the stop was asked for, so the
    /// daemon tells it from init ending by itself (see `ExitRecord::cause`).
    stop_requested: AtomicBool,
    /// Attached console clients.
    consoles: Mutex<Vec<UnixStream>>,
    log_limit: u64,
}

/// Writes state.json and binds the socket: after this the container is visible.
fn publish(
    rd: &RuntimeDir,
    spec: &ContainerSpec,
    created: Created,
) -> Result<(Arc<Monitor>, UnixListener)> {
    let init_pid = created.init_pid.as_raw();
    let state = MonitorState {
        name: spec.name.clone(),
        init_pid,
        init_start_time: sys::process_start_time(init_pid).unwrap_or(0),
        monitor_pid: std::process::id() as i32,
        privileged: spec.privileged,
        nesting: spec.nesting,
        cgroup_layout: created.cgroup_layout.clone(),
        cgroup: spec.cgroup.clone(),
        halt_signal: created.halt_signal,
        started_at: unix_now(),
        idmapped: created.idmapped,
        seccomp: spec.seccomp.clone(),
        lxcfs: spec.lxcfs.is_some(),
    };
    let result = (|| {
        write_json_replace(&rd.state(), &state)?;
        let _ = std::fs::remove_file(rd.socket());
        UnixListener::bind(rd.socket()).map_err(|e| RuntimeError::io("bind", rd.socket(), e))
    })();
    let listener = match result {
        Ok(l) => l,
        Err(e) => {
            let _ = kill(created.init_pid, Signal::SIGKILL);
            let _ = waitpid(created.init_pid, None);
            let _ = created.cgroup.kill_all();
            let _ = created.cgroup.destroy();
            let _ = std::fs::remove_file(rd.state());
            return Err(e);
        }
    };
    // Opened while init is our unreaped child, so it is init's for good.
    let init_pidfd = sys::pidfd_open(created.init_pid.as_raw()).ok();
    let monitor = Monitor {
        rd: rd.clone(),
        state,
        created,
        init_pidfd,
        exited: Mutex::new(None),
        exited_cond: Condvar::new(),
        stop_waiters: Mutex::new(Vec::new()),
        stop_requested: AtomicBool::new(false),
        consoles: Mutex::new(Vec::new()),
        log_limit: spec.console_log_limit,
    };
    Ok((Arc::new(monitor), listener))
}

fn serve(m: Arc<Monitor>, listener: UnixListener) -> ! {
    let console = m.clone();
    let (pumped, console_drained) = mpsc::channel();
    thread::spawn(move || {
        pump_console(&console);
        let _ = pumped.send(());
    });
    let accept = m.clone();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let m = accept.clone();
            thread::spawn(move || handle(&m, conn));
        }
    });
    let record = reap_until_init_exits(m.created.init_pid);
    finish(&m, record, &console_drained)
}

/// Reaps every child (we are their subreaper) until init itself exits.
fn reap_until_init_exits(init: Pid) -> ExitRecord {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == init => {
                return ExitRecord {
                    code: Some(code),
                    signal: None,
                    stopped_at: unix_now(),
                    requested: false,
                }
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == init => {
                return ExitRecord {
                    code: None,
                    signal: Some(sig as i32),
                    stopped_at: unix_now(),
                    requested: false,
                }
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => {
                // No children left without init having been seen: it is gone.
                return ExitRecord {
                    code: None,
                    signal: None,
                    stopped_at: unix_now(),
                    requested: false,
                };
            }
        }
    }
}

/// Cleans up after init, answers everyone waiting for the stop, and exits.
fn finish(m: &Monitor, mut record: ExitRecord, console_drained: &Receiver<()>) -> ! {
    record.requested = m.stop_requested.load(Ordering::SeqCst);
    let _ = std::fs::remove_file(m.rd.socket());
    let _ = m.created.cgroup.thaw();
    let _ = m.created.cgroup.kill_all();
    if let Err(e) = m.created.cgroup.destroy() {
        eprintln!("monitor: {}", chain(&e));
    }
    drain_console(m, console_drained);
    if let Err(e) = write_json_atomic(&m.rd.exit(), &record) {
        eprintln!("monitor: {}", chain(&e));
    }
    let _ = std::fs::remove_file(m.rd.state());
    *m.exited.lock().unwrap_or_else(|e| e.into_inner()) = Some(record.clone());
    m.exited_cond.notify_all();
    let waiters = std::mem::take(&mut *m.stop_waiters.lock().unwrap_or_else(|e| e.into_inner()));
    for mut w in waiters {
        let _ = send(&mut w, &MonitorReply::Stopped(record.clone()));
    }
    unsafe_exit(0)
}

fn handle(m: &Arc<Monitor>, conn: UnixStream) {
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut writer = write_half;
    loop {
        let req = match recv::<MonitorRequest>(&mut reader, "client", "a monitor request") {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                let _ = send(
                    &mut writer,
                    &MonitorReply::Error {
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        let reply = match req {
            MonitorRequest::State => MonitorReply::State(Box::new(m.state.clone())),
            MonitorRequest::Signal { signal } => match signal_init(m, signal) {
                Ok(()) => MonitorReply::Ok,
                Err(e) => MonitorReply::Error {
                    message: e.to_string(),
                },
            },
            MonitorRequest::Stop { timeout_ms, force } => {
                let Ok(waiter) = writer.try_clone() else {
                    return;
                };
                return stop(m, timeout_ms, force, waiter);
            }
            MonitorRequest::ResizeConsole { cols, rows } => {
                use std::os::fd::AsFd;
                match crate::exec::set_window_size(
                    m.created.console.master.as_fd(),
                    crate::exec::WindowSize { cols, rows },
                ) {
                    Ok(()) => MonitorReply::Ok,
                    Err(e) => MonitorReply::Error {
                        message: e.to_string(),
                    },
                }
            }
            MonitorRequest::AttachConsole => {
                if send(&mut writer, &MonitorReply::Ok).is_err() {
                    return;
                }
                return attach_console(m, reader, writer);
            }
        };
        if send(&mut writer, &reply).is_err() {
            return;
        }
    }
}

/// Sends a raw signal number: nix's `Signal` has no real-time signals, and systemd halts
/// on SIGRTMIN+3.
fn signal_init(m: &Monitor, signal: i32) -> Result<()> {
    let sent = match &m.init_pidfd {
        Some(pidfd) => sys::pidfd_send_signal(pidfd, signal),
        // SAFETY: kill with plain integers.
        None => match unsafe { libc::kill(m.created.init_pid.as_raw(), signal) } {
            0 => Ok(()),
            _ => Err(Errno::last()),
        },
    };
    sent.map_err(|e| RuntimeError::sys(format!("send signal {signal} to init"), e))
}

/// Asks init to halt (or kills it), escalating to SIGKILL after the timeout. The reply is
/// sent by `finish` once everything is cleaned up.
fn stop(m: &Arc<Monitor>, timeout_ms: u64, force: bool, mut waiter: UnixStream) {
    {
        let exited = m.exited.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(record) = exited.as_ref() {
            let _ = send(&mut waiter, &MonitorReply::Stopped(record.clone()));
            return;
        }
        m.stop_requested.store(true, Ordering::SeqCst);
        m.stop_waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waiter);
    }
    // A frozen init cannot act on a signal.
    let _ = m.created.cgroup.thaw();
    let init = m.created.init_pid;
    if force {
        let _ = signal_init(m, libc::SIGKILL);
        return;
    }
    // A stop without limit sends a timeout no clock can add.
    let now = Instant::now();
    let deadline = now
        .checked_add(Duration::from_millis(timeout_ms))
        .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
    // A pid namespace's init gets no signal it neither catches nor blocks: one sent before
    // init installed its handlers (a stop right after the start) is dropped, and the stop
    // would wait out its whole timeout. So the signal goes again, less and less often,
    // until it was sent while /proc showed init catching it, blocking it or waiting for
    // signals in sigtimedwait: an init that handles it gets it once (an application behind
    // hutch's reaper may take a second SIGTERM as "now").
    let halt = m.state.halt_signal;
    let mut again = Some(Instant::now());
    let mut gap = Duration::from_millis(50);
    let mut exited = m.exited.lock().unwrap_or_else(|e| e.into_inner());
    while exited.is_none() {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if again.is_some_and(|at| now >= at) {
            let handled = sys::signal_would_reach(init.as_raw(), halt) == Some(true);
            // By pidfd: init may be reaped and its pid reused before `exited` is set.
            let _ = signal_init(m, halt);
            again = (!handled).then(|| now + gap);
            gap = gap.saturating_mul(2);
        }
        let until = again.map_or(deadline, |at| at.min(deadline));
        exited = m
            .exited_cond
            .wait_timeout_while(exited, until.saturating_duration_since(now), |e| {
                e.is_none()
            })
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    if exited.is_none() {
        let _ = signal_init(m, libc::SIGKILL);
    }
}

/// How long the exit waits for the console's last bytes; only a slave held open outside
/// the container's cgroup (passed out over a socket) can make it wait this long.
const CONSOLE_DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Lets the pump log what the container's last writes left in the pty before the exit is
/// recorded: a process that prints and exits at once would otherwise lose its last words.
/// With the container's processes gone and the monitor's slave swapped for /dev/null, the
/// master reads out what is buffered and then fails with EIO.
fn drain_console(m: &Monitor, console_drained: &Receiver<()>) {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // dup2 over the slave's number closes the pty there while the OwnedFd stays valid.
        let _ = dup2(null.as_raw_fd(), m.created.console.slave.as_raw_fd());
    }
    let _ = console_drained.recv_timeout(CONSOLE_DRAIN_LIMIT);
}

/// Reads the console until the last slave is closed: into the bounded log and out to
/// attached clients.
fn pump_console(m: &Monitor) {
    let mut log = BoundedLog::open(&m.rd.console_log(), m.log_limit).ok();
    let mut master = match m.created.console.master.try_clone() {
        Ok(fd) => File::from(fd),
        Err(_) => return,
    };
    let mut buf = [0u8; 8192];
    loop {
        let n = match master.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO once nobody holds the slave: the monitor closes its own only at the end.
            Err(_) => return,
        };
        if let Some(log) = log.as_mut() {
            let _ = log.append(&buf[..n]);
        }
        let mut clients = m.consoles.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain_mut(|c| c.write_all(&buf[..n]).is_ok());
    }
}

/// Copies what an attached client types into the console until it hangs up.
fn attach_console(m: &Monitor, mut reader: BufReader<UnixStream>, writer: UnixStream) {
    m.consoles
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(writer);
    let Ok(fd) = m.created.console.master.try_clone() else {
        return;
    };
    let mut master = File::from(fd);
    let mut buf = [0u8; 4096];
    // Bytes the JSON reader already buffered belong to the console.
    let pending = reader.buffer().to_vec();
    if !pending.is_empty() && master.write_all(&pending).is_err() {
        return;
    }
    let inner = reader.get_mut();
    while let Ok(n) = inner.read(&mut buf) {
        if n == 0 || master.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}
