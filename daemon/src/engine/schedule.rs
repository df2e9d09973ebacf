//! The snapshot scheduler: takes the snapshots `snapshots.schedule` asks for (of running
//! instances, and of stopped ones with `snapshots.schedule.stopped`), and deletes
//! snapshots whose `expires_at` has passed.

use std::collections::HashMap;
use std::time::Duration;

use hutch_api::operation::StatusCode;
use hutch_api::schedule::Schedule;
use time::OffsetDateTime;

use super::spec::flag;
use super::{delete_snapshot, expand, runtime_status};
use crate::daemon::AppState;

/// How often the scheduler looks; tests shorten it with `HUTCH_SCHEDULER_INTERVAL_MS`.
fn interval() -> Duration {
    let ms = std::env::var("HUTCH_SCHEDULER_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    Duration::from_millis(ms)
}

/// Whether `schedule` fires in the minute of `now`.
pub fn due(schedule: &str, now: OffsetDateTime) -> bool {
    Schedule::parse(schedule).is_ok_and(|s| {
        s.matches(
            now.minute() as u32,
            now.hour() as u32,
            now.day() as u32,
            now.month() as u32,
            now.weekday().number_days_from_sunday() as u32,
        )
    })
}

/// Whether a snapshot's `expires_at` has passed (the zero time means never).
pub fn expired(expires_at: &str, now: OffsetDateTime) -> bool {
    if expires_at.starts_with("0001-01-01") || expires_at.is_empty() {
        return false;
    }
    OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
        .is_ok_and(|t| t <= now)
}

/// Runs forever in the background.
pub fn start_scheduler(d: AppState) {
    tokio::spawn(async move {
        // Each instance's schedule fires at most once per minute, however often we look.
        let mut fired: HashMap<String, i64> = HashMap::new();
        loop {
            let now = OffsetDateTime::now_utc();
            take_due(&d, now, &mut fired).await;
            remove_expired(&d, now).await;
            super::backups::remove_expired_backups(&d, now).await;
            tokio::time::sleep(interval()).await;
        }
    });
}

async fn take_due(d: &AppState, now: OffsetDateTime, fired: &mut HashMap<String, i64>) {
    let minute = now.unix_timestamp() / 60;
    let Ok(rows) = d.db.instances() else { return };
    // Forget deleted instances: nothing grows that is not freed.
    fired.retain(|name, _| rows.iter().any(|r| &r.name == name));
    for row in rows {
        let Ok(expanded) = expand(d, &row) else {
            continue;
        };
        let Some(schedule) = expanded
            .config
            .get("snapshots.schedule")
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        if !due(schedule, now) || fired.get(&row.name) == Some(&minute) {
            continue;
        }
        let running = runtime_status(d, &row.name).0 != StatusCode::Stopped;
        if !running && !flag(&expanded.config, "snapshots.schedule.stopped") {
            continue;
        }
        fired.insert(row.name.clone(), minute);
        match super::create_snapshot(d.clone(), row.name.clone(), None, None).await {
            Ok(snap) => {
                tracing::info!(instance = %row.name, snapshot = %snap, "scheduled snapshot taken")
            }
            Err(e) => {
                tracing::warn!(instance = %row.name, error = %e.chain(), "scheduled snapshot failed")
            }
        }
    }
}

async fn remove_expired(d: &AppState, now: OffsetDateTime) {
    let Ok(rows) = d.db.instances() else { return };
    for row in rows {
        for snap in d.db.snapshots(&row.name).unwrap_or_default() {
            if expired(&snap.expires_at, now) {
                match delete_snapshot(d.clone(), row.name.clone(), snap.name.clone()).await {
                    Ok(()) => {
                        tracing::info!(instance = %row.name, snapshot = %snap.name, "expired snapshot deleted")
                    }
                    Err(e) => {
                        tracing::warn!(instance = %row.name, error = %e.chain(), "deleting an expired snapshot failed")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn schedules_fire_in_their_minute() {
        let t = datetime!(2026-11-23 09:30 UTC); // a Monday
        assert!(due("*/15 * * * *", t));
        assert!(!due("*/7 * * * *", t));
        assert!(due("30 9 * * 1", t));
        assert!(!due("30 9 * * 0", t));
        assert!(!due("@daily", t));
        assert!(!due("not cron", t));
    }

    #[test]
    fn zero_time_never_expires() {
        let t = datetime!(2026-11-23 09:30 UTC);
        assert!(!expired("0001-01-01T00:00:00Z", t));
        assert!(expired("2026-11-23T09:29:00Z", t));
        assert!(!expired("2026-11-23T09:31:00Z", t));
        assert!(!expired("garbage", t));
    }
}
