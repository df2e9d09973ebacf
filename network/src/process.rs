//! The daemon's helper processes that outlive it (dnsmasq, proxy forwarders): whether one
//! still lives, and stopping it within a bound.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// SIGTERM to each of `pids`, SIGKILL after `grace` to those that `gone` does not yet
/// report gone; returns once it does (or after `grace` more).
pub fn terminate(pids: &[i32], grace: Duration, mut gone: impl FnMut() -> bool) {
    let signal_all = |s| {
        for pid in pids {
            let _ = kill(Pid::from_raw(*pid), s);
        }
    };
    signal_all(Signal::SIGTERM);
    let start = Instant::now();
    while !gone() {
        if start.elapsed() > grace * 2 {
            return;
        }
        if start.elapsed() > grace {
            signal_all(Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_terminated_and_seen_gone() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(alive(pid));
        terminate(&[pid], Duration::from_secs(2), || {
            !matches!(child.try_wait(), Ok(None))
        });
        assert!(!alive(pid));
    }
}
