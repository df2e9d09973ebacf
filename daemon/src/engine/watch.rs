//! Watching running instances. Each one has a watcher: a task holding a connection to its
//! monitor, which ends when the monitor does (once init is gone and cleaned up). An
//! instance that stopped without being asked is then handled as LXD's stop hook handles
//! it: cleaned up and recorded stopped, started again after a `reboot` inside, and, with
//! `boot.autorestart`, started again after any other end of init (rate-limited). A stop
//! while the daemon was down is handled at the next start.
//!
//! Why here and not in the monitor: a start needs the daemon's whole start path (profiles,
//! devices, NICs into the new network namespace, proxies, templates), which the monitor
//! does not have; the monitor's part is to record how init ended (`ExitRecord`).

use std::path::Path;
use std::time::Instant;

use hutch_api::operation::StatusCode;
use hutch_runtime::container;
use hutch_runtime::state::ExitCause;
use hutch_runtime::{ExitRecord, RuntimeDir};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::spec::{expand, flag};
use super::{blocking, devices, runtime_status, Engine};
use crate::error::Result;

/// Volatile keys of the autorestart record, shown by `hutch info`; an explicit start
/// clears them.
pub const KEY_RESTARTS: &str = "volatile.autorestart.count";
pub const KEY_LAST: &str = "volatile.autorestart.last";
pub const KEY_GAVE_UP: &str = "volatile.autorestart.gave_up";

/// Why an instance is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartReason {
    /// `reboot` inside.
    Reboot,
    /// `boot.autorestart` after init ended by itself.
    Autorestart,
}

impl RestartReason {
    fn as_str(self) -> &'static str {
        match self {
            RestartReason::Reboot => "reboot",
            RestartReason::Autorestart => "autorestart",
        }
    }
}

/// What to do about an instance whose init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Someone asked for the stop and records it, or the host is shutting down.
    Nothing,
    /// Leave it stopped (`poweroff` inside, or an end without `boot.autorestart`).
    Stopped,
    Restart(RestartReason),
    /// `boot.autorestart` is set but the rate limit is spent: left stopped, with a warning.
    GiveUp,
}

/// The verdict on an end of init; `allow` asks the rate limit (and counts a restart).
pub fn decide(
    cause: ExitCause,
    autorestart: bool,
    shutting_down: bool,
    allow: impl FnOnce() -> bool,
) -> Verdict {
    if shutting_down {
        // Its power state stays RUNNING, so that the next start brings it back.
        return Verdict::Nothing;
    }
    match cause {
        ExitCause::Requested => Verdict::Nothing,
        ExitCause::Reboot => Verdict::Restart(RestartReason::Reboot),
        // A clean `poweroff` inside is a stop, not a failure (Incus restarts it too; its
        // documentation says "unexpected exit", which is what hutch does).
        ExitCause::Poweroff => Verdict::Stopped,
        ExitCause::Ended if !autorestart => Verdict::Stopped,
        ExitCause::Ended if allow() => Verdict::Restart(RestartReason::Autorestart),
        ExitCause::Ended => Verdict::GiveUp,
    }
}

/// How init ended, in words.
fn describe(record: Option<&ExitRecord>) -> String {
    match record {
        Some(ExitRecord {
            signal: Some(sig), ..
        }) => format!("killed by signal {sig}"),
        Some(ExitRecord { code: Some(c), .. }) => format!("exited with code {c}"),
        _ => "ended".to_string(),
    }
}

/// Watches instance `name`, just started (or found running at daemon start).
pub fn watch(e: &Engine, name: &str) {
    let token = e.supervision.register(name);
    let socket = RuntimeDir::new(e.runtime_dir(name)).socket();
    let (e, name) = (e.clone(), name.to_string());
    tokio::spawn(async move {
        wait_for_monitor_end(&socket).await;
        if let Err(err) = handle_exit(&e, &name, token).await {
            tracing::warn!(instance = %name, error = %err.chain(), "handling the instance's stop");
        }
    });
}

/// Returns when the monitor behind `socket` is gone (at once if there is none).
async fn wait_for_monitor_end(socket: &Path) {
    let Ok(mut conn) = tokio::net::UnixStream::connect(socket).await else {
        return;
    };
    let mut buf = [0u8; 64];
    // The monitor writes only when asked: the read ends when the monitor exits.
    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// At daemon start: a watcher for every running instance.
pub fn watch_running(e: &Engine) {
    let rows = match e.db.instances() {
        Ok(rows) => rows,
        Err(err) => {
            tracing::warn!(error = %err.chain(), "cannot list instances to watch");
            return;
        }
    };
    for row in rows {
        if runtime_status(e, &row.name).0 != StatusCode::Stopped {
            watch(e, &row.name);
        }
    }
}

/// At daemon start, before autostart: instances that stopped by themselves while no daemon
/// watched (recorded RUNNING, not running, ended since the host booted) are handled as a
/// watcher would have. Those that went down with the host are left to autostart.
pub async fn settle_exits_while_away(e: &Engine) {
    let booted = host_boot_time(Path::new("/proc")).unwrap_or(0);
    for row in e.db.instances().unwrap_or_default() {
        if row
            .config
            .get("volatile.last_state.power")
            .map(String::as_str)
            != Some("RUNNING")
            || runtime_status(e, &row.name).0 != StatusCode::Stopped
        {
            continue;
        }
        let Some(record) = container::last_exit(&e.runtime_dir(&row.name)) else {
            continue;
        };
        if record.stopped_at < booted {
            continue;
        }
        let token = e.supervision.register(&row.name);
        if let Err(err) = handle_exit(e, &row.name, token).await {
            tracing::warn!(instance = %row.name, error = %err.chain(), "handling a stop while the daemon was down");
        }
    }
}

/// The host's boot time (unix seconds), from `<proc>/stat`.
fn host_boot_time(proc_root: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// What happens once instance `name`'s monitor is gone, for the watcher holding `token`.
async fn handle_exit(e: &Engine, name: &str, token: u64) -> Result<()> {
    let lock = e.instance_lock(name);
    let guard = lock.lock().await;
    if !e.supervision.take(name, token) {
        // Started again meanwhile: its new watcher is in charge.
        return Ok(());
    }
    let Some(row) = e.db.instance(name)? else {
        return Ok(());
    };
    if runtime_status(e, name).0 != StatusCode::Stopped {
        tracing::warn!(instance = %name, "the monitor is gone but init runs on; a stop cleans it up");
        return Ok(());
    }
    // A stop through the API records STOPPED before it lets go of the lock: it is never
    // taken for an end of init, even when init ended by itself as the stop came.
    if row
        .config
        .get("volatile.last_state.power")
        .map(String::as_str)
        != Some("RUNNING")
    {
        return Ok(());
    }
    let record = container::last_exit(&e.runtime_dir(name));
    let cause = record
        .as_ref()
        .map(ExitRecord::cause)
        .unwrap_or(ExitCause::Ended);
    let config = expand(e, &row)?.config;
    let verdict = decide(
        cause,
        flag(&config, "boot.autorestart"),
        e.supervision.shutting_down(),
        || e.supervision.restarts.allow(name, Instant::now()),
    );
    if verdict == Verdict::Nothing {
        return Ok(());
    }
    let how = describe(record.as_ref());
    // What a stop through the API cleans up.
    let (e2, n2) = (e.clone(), name.to_string());
    blocking(move || {
        devices::stop_proxies(&e2, &n2);
        Ok(())
    })
    .await?;
    devices::forget_host_names(e, &row)?;
    let source = format!("/1.0/instances/{name}");
    match verdict {
        Verdict::Nothing => Ok(()),
        Verdict::Restart(reason) => {
            let count: u64 = row
                .config
                .get(KEY_RESTARTS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            drop(guard);
            tracing::info!(instance = %name, reason = reason.as_str(), how = %how, "restarting");
            if let Err(err) = super::start_instance(e.clone(), name.to_string()).await {
                tracing::warn!(instance = %name, error = %err.chain(), "restart failed; left stopped");
                e.db.set_instance_config_key(name, "volatile.last_state.power", Some("STOPPED"))?;
                return Err(err);
            }
            if reason == RestartReason::Autorestart {
                let count = (count + 1).to_string();
                e.db.set_instance_config_key(name, KEY_RESTARTS, Some(&count))?;
                e.db.set_instance_config_key(name, KEY_LAST, Some(&crate::now()))?;
            }
            e.events.lifecycle(
                "instance-restarted",
                &source,
                json!({"reason": reason.as_str(), "exit": how}),
            );
            Ok(())
        }
        Verdict::Stopped | Verdict::GiveUp => {
            e.db.set_instance_config_key(name, "volatile.last_state.power", Some("STOPPED"))?;
            let mut context = json!({"reason": if cause == ExitCause::Poweroff { "poweroff" } else { "exit" }, "exit": how});
            if verdict == Verdict::GiveUp {
                let limit = &e.supervision.restarts;
                let warning = format!(
                    "autorestart gave up: {} restarts within {}s; left stopped",
                    limit.max(),
                    limit.window().as_secs()
                );
                tracing::warn!(instance = %name, how = %how, "{warning}");
                e.db.set_instance_config_key(name, KEY_GAVE_UP, Some(&crate::now()))?;
                context["autorestart"] = json!(warning);
            } else {
                tracing::info!(instance = %name, how = %how, "stopped by itself");
            }
            e.events.lifecycle("instance-shutdown", &source, context);
            drop(guard);
            if row.ephemeral {
                super::delete_instance(e.clone(), name.to_string()).await?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> bool {
        panic!("the rate limit is asked only for an autorestart")
    }

    #[test]
    fn verdicts_follow_the_cause_the_key_and_the_limit() {
        use ExitCause::*;
        assert_eq!(decide(Requested, true, false, never), Verdict::Nothing);
        assert_eq!(
            decide(Reboot, false, false, never),
            Verdict::Restart(RestartReason::Reboot)
        );
        assert_eq!(decide(Poweroff, true, false, never), Verdict::Stopped);
        assert_eq!(decide(Ended, false, false, never), Verdict::Stopped);
        assert_eq!(
            decide(Ended, true, false, || true),
            Verdict::Restart(RestartReason::Autorestart)
        );
        assert_eq!(decide(Ended, true, false, || false), Verdict::GiveUp);
        // During a host shutdown nothing is restarted and nothing recorded.
        assert_eq!(decide(Ended, true, true, never), Verdict::Nothing);
        assert_eq!(decide(Reboot, true, true, never), Verdict::Nothing);
    }

    #[test]
    fn the_end_of_init_is_described() {
        let rec = |code, signal| ExitRecord {
            code,
            signal,
            stopped_at: 0,
            requested: false,
        };
        assert_eq!(describe(Some(&rec(None, Some(9)))), "killed by signal 9");
        assert_eq!(describe(Some(&rec(Some(3), None))), "exited with code 3");
        assert_eq!(describe(None), "ended");
    }

    #[test]
    fn boot_time_comes_from_proc_stat() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stat"),
            "cpu  1 2 3\nintr 5\nbtime 1764720000\nprocesses 9\n",
        )
        .unwrap();
        assert_eq!(host_boot_time(dir.path()), Some(1764720000));
        assert_eq!(host_boot_time(&dir.path().join("missing")), None);
    }
}
