//! A small PID 1 for application containers: the container's init forks the application's
//! process, then stays to reap every orphan the namespace hands it and to pass signals on
//! to the application; it exits with the application's status when the application ends.
//! A process that is not written to be PID 1 (a shell, most servers) then stops on
//! SIGTERM and leaves no zombies.

use std::ffi::CString;

use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execve, fork, ForkResult, Pid};

use crate::spec::InitUser;
use crate::RuntimeError;

/// The signals passed on to the application (SIGKILL and SIGSTOP cannot be caught).
const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGPWR,
    Signal::SIGCONT,
];

/// Runs `argv` (as `user`) under this process as its reaper. Returns only on an error
/// before the fork, or in the child on a failed exec.
pub(crate) fn run(argv: &[CString], envp: &[CString], user: Option<InitUser>) -> RuntimeError {
    let mut waited = SigSet::empty();
    for &sig in FORWARDED {
        waited.add(sig);
    }
    waited.add(Signal::SIGCHLD);
    // Blocked, so that they queue for sigwait: PID 1 of a namespace would otherwise drop
    // signals it has no handler for.
    if let Err(e) = waited.thread_block() {
        return RuntimeError::sys("block signals", e);
    }
    // SAFETY: this process is single-threaded (the container's init before exec).
    match unsafe { fork() } {
        Err(e) => RuntimeError::sys("fork the application", e),
        Ok(ForkResult::Child) => {
            let _ = SigSet::all().thread_unblock();
            if let Err(e) = super::create::become_user(user) {
                return e;
            }
            let e = execve(&argv[0], argv, envp).unwrap_err();
            RuntimeError::sys(format!("exec {}", argv[0].to_string_lossy()), e)
        }
        Ok(ForkResult::Parent { child }) => {
            // What the monitor waits to see closed at exec (the report pipe) closes now.
            // SAFETY: close_range closes only this process's descriptors above stdio.
            unsafe { libc::close_range(3, u32::MAX, 0) };
            reap(child, &waited)
        }
    }
}

/// Waits for signals: passes them on to `app`, reaps children, and exits as `app` did.
fn reap(app: Pid, waited: &SigSet) -> ! {
    loop {
        let Ok(sig) = waited.wait() else { continue };
        if sig != Signal::SIGCHLD {
            let _ = kill(app, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == app => exit(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == app => exit(128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running anything of the monitor's.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `script` under the reaper in a child process; its exit status.
    fn reaped(script: &str) -> WaitStatus {
        let argv: Vec<CString> = ["/bin/sh", "-c", script]
            .iter()
            .map(|a| CString::new(*a).unwrap())
            .collect();
        let envp = [CString::new("PATH=/bin:/usr/bin").unwrap()];
        // SAFETY: the child only forks, waits and execs (or exits) before it ends.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let _ = run(&argv, &envp, None);
                exit(99)
            }
            ForkResult::Parent { child } => waitpid(child, None).expect("wait"),
        }
    }

    #[test]
    fn the_reaper_exits_as_the_application_did() {
        assert!(matches!(reaped("exit 7"), WaitStatus::Exited(_, 7)));
        // Killed by a signal: 128 + its number, as a shell reports it.
        assert!(matches!(reaped("kill -9 $$"), WaitStatus::Exited(_, 137)));
    }
}
