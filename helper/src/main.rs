//! `hutchd-helper`: every process hutchd spawns for a container, one hidden mode each.
//! A binary of its own, not hutchd re-executed: it carries the runtime and network crates
//! only (no HTTP server, TLS, SQLite or CLI parser), so each exec, start and proxy pays
//! for loading a few MB rather than all of hutchd, and each monitor maps that much.
//!
//! Every mode runs before any thread starts, as the runtime requires. The monitor runs the
//! `__nic-plug` start hook in its own process rather than executing this binary again.

use std::ffi::OsString;
use std::path::Path;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    // Nothing of a container inherits the daemon's raised open-file limit.
    hutch_runtime::fd_limit::restore();
    let mode = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let arg = args.get(2).map(Path::new);
    match (mode, arg) {
        ("__monitor", Some(dir)) => {
            hutch_runtime::register_builtin_hooks(vec![("__nic-plug", nic_plug_hook)]);
            hutch_runtime::monitor_main(dir)
        }
        ("__exec", Some(dir)) => {
            let born = args
                .get(3)
                .is_some_and(|a| a == hutch_runtime::BORN_IN_CGROUP2);
            hutch_runtime::exec_main(dir, born)
        }
        ("__proxy", Some(spec)) => hutch_network::proxy::proxy_main(spec),
        ("__device-plug", Some(_)) => exit_with(hutch_runtime::device_plug()),
        ("__nic-plug", Some(plan)) => {
            // Executed as a hook: the runtime names init in HUTCH_PID.
            let pid = std::env::var("HUTCH_PID").ok().and_then(|p| p.parse().ok());
            match pid {
                Some(pid) => exit_with(hutch_network::nic::plug_planned(plan, pid)),
                None => {
                    eprintln!("HUTCH_PID names no process");
                    std::process::exit(1)
                }
            }
        }
        _ => {
            eprintln!(
                "hutchd-helper is run by hutchd only (modes: __monitor, __exec, __proxy, \
                 __device-plug, __nic-plug)"
            );
            std::process::exit(2)
        }
    }
}

/// `__nic-plug PLAN` as the monitor runs it, in process, for init `pid`.
fn nic_plug_hook(args: &[String], pid: i32) -> Result<(), String> {
    let plan = args.first().ok_or("the hook names no plan")?;
    hutch_network::nic::plug_planned(Path::new(plan), pid).map_err(|e| chain(&e))
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// Exits 0, or 1 with the error and its causes on one line of stderr (the daemon shows it).
fn exit_with<E: std::error::Error>(result: Result<(), E>) -> ! {
    let Err(e) = result else {
        std::process::exit(0)
    };
    eprintln!("{}", chain(&e));
    std::process::exit(1)
}
