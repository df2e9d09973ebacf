//! Networks over the daemon's life: brought back at start (deletes a crash interrupted
//! finished, tables nobody owns removed), then supervised every few seconds.

use std::time::Duration;

use hutch_network::{bridge, nft};

use super::lifecycle::finish_delete;
use super::{dnsmasq, parse_row, table};
use crate::db::intents::IntentKind;
use crate::engine::net_state::lock;
use crate::engine::Engine;

/// At startup: deletes a crash interrupted are finished, every network is brought back
/// (bridge, addresses, rules, a dnsmasq adopted or restarted), and tables of this daemon
/// that no network or instance owns are removed.
pub fn start_networks(e: &Engine) {
    let d = &e.d;
    let _ops = lock(&d.net.networks.ops);
    let intents = d.db.intents().unwrap_or_default();
    for i in intents.iter().filter(|i| i.kind == IntentKind::Network) {
        tracing::info!(network = i.name, "finishing a delete that was interrupted");
        if let Err(err) = finish_delete(e, &i.name) {
            tracing::error!(network = i.name, error = %err.chain(), "finish a delete");
        }
    }
    let rows = d.db.networks().unwrap_or_default();
    if let Ok(tables) = d.net.nft.tables() {
        let wanted: Vec<String> = rows.iter().map(|r| table(d, &r.name)).collect();
        let ours = format!("{}_", d.net.scope.replace('-', "_"));
        for (family, t) in tables {
            if family == "inet" && t.starts_with(&ours) && !wanted.contains(&t) {
                let _ = d.net.nft.apply(&nft::delete_table_script(&t));
            }
        }
    }
    for row in rows {
        let result = parse_row(&row).and_then(|cfg| {
            bridge::apply(
                &*d.net.netlink,
                &*d.net.nft,
                &row.name,
                &cfg,
                &table(d, &row.name),
            )?;
            // A dnsmasq an older hutchd started with other arguments is started again.
            if dnsmasq::needs_dnsmasq(&cfg) && !dnsmasq::current(d, &row.name, &cfg) {
                dnsmasq::restart(d, &row.name, &cfg)?;
            }
            Ok(())
        });
        if let Err(err) = result {
            tracing::error!(network = row.name, error = %err.chain(), "bring up network");
        }
    }
}

/// Every two seconds: a dead dnsmasq is restarted, proxies of instances that stopped on
/// their own are removed, and memory left free by bursts goes back to the kernel.
/// `HUTCH_SUPERVISE_MS` shortens the period, so that tests can race the supervisor
/// against requests.
pub fn start_supervisor(e: Engine) {
    let period = std::env::var("HUTCH_SUPERVISE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let e2 = e.clone();
            let _ = tokio::task::spawn_blocking(move || supervise_once(&e2)).await;
        }
    });
}

fn supervise_once(e: &Engine) {
    let d = &e.d;
    release_free_memory();
    dnsmasq::forget_dead(d);
    {
        // Rows are read under the lock: a network being created or deleted is not looked
        // at halfway.
        let _ops = lock(&d.net.networks.ops);
        for row in d.db.networks().unwrap_or_default() {
            let Ok(cfg) = parse_row(&row) else { continue };
            if !dnsmasq::needs_dnsmasq(&cfg) || dnsmasq::running(d, &row.name) {
                continue;
            }
            tracing::warn!(network = row.name, "dnsmasq is not running; restarting it");
            if let Err(err) = dnsmasq::restart(d, &row.name, &cfg) {
                tracing::error!(network = row.name, error = %err.chain(), "restart dnsmasq");
            }
        }
    }
    e.stop_proxies_of_stopped();
}

/// Hands memory that bursts (a 1 GB exec, a 100 MB push) left free in glibc's per-thread
/// arenas back to the kernel, so the daemon's footprint follows its working set.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
