//! The `scale` group: a fresh hutchd with a managed bridge, N running busybox containers
//! each with a NIC on it, and what N costs: launch latency as N grows (lxc), `lxc list`,
//! `hutch list` and a metrics scrape of N, `lxc list` of the same answer replayed from
//! memory, the daemon's RSS, 128 launches at once (hutch), and API latency under 200
//! concurrent clients. Everything is deleted afterwards (the daemon's teardown removes the
//! bridge, its dnsmasq and nftables table).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::images::import_busybox;
use crate::target::{rss_mib, Daemon, Target};
use crate::{stats, Row};

/// Launches counted at each end of the sequential run.
const EDGE: usize = 50;

/// What the group measures.
pub(crate) struct ScalePlan<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) image: &'a Path,
    pub(crate) driver: &'a str,
    /// Running containers.
    pub(crate) n: usize,
    /// Containers launched at once.
    pub(crate) parallel: usize,
    /// Concurrent API clients.
    pub(crate) clients: usize,
    pub(crate) runs: usize,
}

/// A row whose one value is `v` (a count, a rate, MiB).
fn value_row(op: String, client: &str, driver: &str, v: f64) -> Row {
    (op, client.into(), driver.into(), v, v, v)
}

/// Deletes `names` with `threads` hutch clients side by side.
fn delete_all(t: &Target, names: &[String], threads: usize) {
    std::thread::scope(|s| {
        for chunk in names.chunks(names.len().div_ceil(threads.max(1)).max(1)) {
            s.spawn(move || {
                for n in chunk {
                    let _ = t.time("hutch", &["delete", n, "--force"]);
                }
            });
        }
    });
}

/// `count` launches at once with hutch: how many per second.
fn parallel_launches(t: &Target, count: usize) -> Result<(f64, Vec<String>)> {
    let names: Vec<String> = (0..count).map(|i| format!("sp{i}")).collect();
    let start = Instant::now();
    let ok = std::thread::scope(|s| {
        let hs: Vec<_> = names
            .iter()
            .map(|n| s.spawn(move || t.time("hutch", &["launch", "bb", n]).is_ok()))
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().ok())
            .filter(|ok| *ok)
            .count()
    });
    let took = start.elapsed().as_secs_f64();
    if ok != count {
        delete_all(t, &names, 8);
        bail!("only {ok} of {count} parallel launches succeeded");
    }
    Ok((count as f64 / took, names))
}

/// A /20 gateway address (4,093 leases) in a 10.X.0.0/16 no host route touches.
fn free_subnet() -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()?;
    let routes = String::from_utf8_lossy(&out.stdout);
    (200..=250)
        .map(|x| format!("10.{x}."))
        .find(|p| !routes.contains(p.as_str()))
        .map(|p| format!("{p}0.1/20"))
        .ok_or_else(|| anyhow::anyhow!("no free 10.X.0.0/20 for {n} NICs", n = 4093))
}

/// Measures the scale rows on a fresh hutchd.
pub(crate) fn measure(plan: &ScalePlan) -> Result<Vec<Row>> {
    let ScalePlan {
        bin,
        image,
        driver,
        n,
        parallel,
        clients,
        runs,
    } = *plan;
    let d = Daemon::start(bin, driver)?;
    let t = &d.target;
    import_busybox(t, image)?;
    // A /24 leases 253 addresses: past that the rest of the containers' DHCP clients
    // broadcast forever, and every broadcast is copied to every port of the bridge.
    if n + parallel > 200 {
        let subnet = free_subnet()?;
        t.time(
            "hutch",
            &["network", "set", &d.bridge, "ipv4.address", &subnet],
        )?;
    }
    let mut rows = Vec::new();
    if parallel > 0 {
        let (rate, names) = parallel_launches(t, parallel)?;
        rows.push(value_row(
            format!("launch {parallel} parallel (/s)"),
            "hutch",
            driver,
            rate,
        ));
        delete_all(t, &names, 8);
    }
    // Sequential launches with lxc while the count grows.
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let mut launches = Vec::with_capacity(n);
    let start = Instant::now();
    for (i, name) in names.iter().enumerate() {
        match t.time("lxc", &["launch", "bb", name]) {
            Ok(took) => launches.push(took),
            Err(err) => {
                delete_all(t, &names[..i], 8);
                return Err(err.context(format!("launch #{}", i + 1)));
            }
        }
        if (i + 1) % 100 == 0 {
            eprintln!("scale: {} running", i + 1);
        }
    }
    let total = start.elapsed().as_secs_f64();
    let edge = EDGE.min(n);
    let (first, _, _) = stats(&mut launches[..edge].to_vec());
    let (last, _, _) = stats(&mut launches[n - edge..].to_vec());
    rows.push(value_row(
        format!("launch #1-{edge} (median s)"),
        "lxc",
        driver,
        first,
    ));
    rows.push(value_row(
        format!("launch #{}-{n} (median s)", n - edge + 1),
        "lxc",
        driver,
        last,
    ));
    rows.push(value_row(
        format!("launches to {n} (/s)"),
        "lxc",
        driver,
        n as f64 / total,
    ));
    for client in ["lxc", "hutch"] {
        let mut list: Vec<Duration> = (0..runs)
            .map(|_| t.time(client, &["list"]))
            .collect::<Result<_>>()?;
        let (med, min, max) = stats(&mut list);
        rows.push((
            format!("list of {n}"),
            client.into(),
            driver.into(),
            med,
            min,
            max,
        ));
    }
    // What lxc itself takes for the same answer, served from memory: no server does better.
    let mut floor = crate::replay::lxc_list_floor(t, runs)?;
    let (med, min, max) = stats(&mut floor);
    rows.push((
        format!("list of {n}, lxc alone"),
        "lxc".into(),
        driver.into(),
        med,
        min,
        max,
    ));
    let mut scrapes: Vec<Duration> = (0..runs)
        .map(|_| crate::api_load::scrape(&d.dir.join("unix.socket")))
        .collect::<Result<_>>()?;
    let (med, min, max) = stats(&mut scrapes);
    rows.push((
        format!("metrics scrape, {n} running"),
        "http".into(),
        driver.into(),
        med,
        min,
        max,
    ));
    // Read at rest, as the other RSS rows.
    std::thread::sleep(Duration::from_millis(2500));
    rows.push(value_row(
        format!("RSS, {n} running (MiB)"),
        "-",
        driver,
        rss_mib(t.pid),
    ));
    let load = crate::api_load::run(&d.dir.join("unix.socket"), &names, clients, 5)?;
    let label = format!("API, {clients} clients");
    rows.push(value_row(
        format!("{label} p99 (s)"),
        "http",
        driver,
        load.quantile(0.99).as_secs_f64(),
    ));
    rows.push(value_row(
        format!("{label} max (s)"),
        "http",
        driver,
        load.quantile(1.0).as_secs_f64(),
    ));
    rows.push(value_row(
        format!("{label} errors"),
        "http",
        driver,
        load.errors as f64,
    ));
    eprintln!("scale: deleting {n} containers");
    delete_all(t, &names, 8);
    Ok(rows)
}
