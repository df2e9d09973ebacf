//! The image tasks: refreshing images pulled by alias (from simplestreams or LXD-protocol
//! servers) with `auto_update` every
//! `images.auto_update_interval` hours, and removing cached images unused for
//! `images.remote_cache_expiry` days, as LXD's `autoUpdateImages` and
//! `pruneExpiredImages` do.
//!
//! Tests shorten both with the undocumented `HUTCH_IMAGE_TASKS_PERIOD=<seconds>`: the tasks
//! then look every that many seconds, and the two keys count seconds instead of hours
//! and days.

use std::time::{Duration, Instant};

use hutch_api::server_config::server_config_value;
use serde_json::json;
use time::OffsetDateTime;

use super::image_pull::{pull_image, Protocol, PullOptions, PullSource};
use crate::daemon::AppState;
use crate::db::images::ImageRow;
use crate::error::{DaemonError, Result};

/// How often the tasks look, and the length of an hour and of a day to them.
struct Clock {
    period: Duration,
    hour: Duration,
    day: Duration,
}

fn clock() -> Clock {
    match std::env::var("HUTCH_IMAGE_TASKS_PERIOD")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(secs) => Clock {
            period: Duration::from_secs(secs.max(1)),
            hour: Duration::from_secs(1),
            day: Duration::from_secs(1),
        },
        None => Clock {
            period: Duration::from_secs(600),
            hour: Duration::from_secs(3600),
            day: Duration::from_secs(86400),
        },
    }
}

/// Runs forever in the background.
pub fn start_image_tasks(d: AppState) {
    tokio::spawn(async move {
        let clock = clock();
        let mut last_update = Instant::now();
        loop {
            tokio::time::sleep(clock.period).await;
            let config = d.db.server_config().unwrap_or_default();
            let interval: u64 = server_config_value(&config, "images.auto_update_interval")
                .parse()
                .unwrap_or(6);
            if interval > 0 && last_update.elapsed() >= clock.hour * interval as u32 {
                last_update = Instant::now();
                auto_update_all(&d).await;
            }
            let expiry: u64 = server_config_value(&config, "images.remote_cache_expiry")
                .parse()
                .unwrap_or(10);
            if expiry > 0 {
                expire_cached(&d, clock.day * expiry as u32).await;
            }
        }
    });
}

/// Refreshes every image that asks for it; a failure is logged and the others go on.
async fn auto_update_all(d: &AppState) {
    let Ok(images) = d.db.images() else { return };
    for row in images {
        if !row.auto_update || row.update_source.is_none() {
            continue;
        }
        if let Err(e) = refresh_image(d, &row).await {
            tracing::warn!(fingerprint = %row.fingerprint, error = %e.chain(), "image refresh failed");
        }
    }
}

/// Refreshes one image from its `update_source`: when the remote alias now names another
/// image, that one is pulled, takes the aliases and settings of the old one in one
/// transaction, and the old one is removed (instances are clones and keep working).
/// Returns whether it changed.
pub async fn refresh_image(d: &AppState, row: &ImageRow) -> Result<bool> {
    let source = row
        .update_source
        .clone()
        .ok_or_else(|| DaemonError::NotFound("Image source not found".into()))?;
    // With the certificate it was first pulled with: an LXD-protocol server stays pinned.
    let pull = PullSource::new(&source.server, &source.protocol, "pull", &source.alias, "")?
        .with_credentials(&source.certificate, "")?;
    // A refresh must see what the server publishes now, not what was read a moment ago
    // (LXD-protocol servers are asked afresh each time).
    if pull.protocol == Protocol::SimpleStreams {
        if let Ok(client) = hutch_images::simplestreams::SimpleStreams::new(&pull.server) {
            client.forget_cached();
        }
    }
    let options = PullOptions {
        cached: row.cached,
        auto_update: Some(row.auto_update),
        public: row.public,
        prefer_cached: false,
    };
    let new = pull_image(d, &pull, options).await?;
    if new.fingerprint == row.fingerprint {
        return Ok(false);
    }
    d.db.replace_image(row, &new.fingerprint)?;
    d.events.lifecycle(
        "image-refreshed",
        &format!("/1.0/images/{}", row.fingerprint),
        json!({}),
    );
    super::image_catalog::remove_image(d, &row.fingerprint).await?;
    tracing::info!(old = %row.fingerprint, new = %new.fingerprint, "image refreshed");
    Ok(true)
}

/// When an image was last used: its last use, else its arrival.
fn last_activity(row: &ImageRow) -> Option<OffsetDateTime> {
    let parse = |t: &str| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .ok()
            .filter(|t| t.year() > 1)
    };
    parse(&row.last_used_at).or_else(|| parse(&row.uploaded_at))
}

/// Removes cached images unused for `expiry`.
async fn expire_cached(d: &AppState, expiry: Duration) {
    let Ok(images) = d.db.images() else { return };
    let now = OffsetDateTime::now_utc();
    for row in images {
        if !row.cached {
            continue;
        }
        let Some(at) = last_activity(&row) else {
            continue;
        };
        if now - at < expiry {
            continue;
        }
        match super::image_catalog::remove_image(d, &row.fingerprint).await {
            Ok(()) => {
                tracing::info!(fingerprint = %row.fingerprint, "expired cached image removed")
            }
            Err(e) => {
                tracing::warn!(fingerprint = %row.fingerprint, error = %e.chain(), "image expiry failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_is_last_use_else_arrival() {
        let mut row = ImageRow {
            last_used_at: "0001-01-01T00:00:00Z".into(),
            uploaded_at: "2024-05-01T00:00:00Z".into(),
            ..Default::default()
        };
        assert_eq!(last_activity(&row).unwrap().month(), time::Month::May);
        row.last_used_at = "2024-06-01T00:00:00Z".into();
        assert_eq!(last_activity(&row).unwrap().month(), time::Month::June);
    }
}
