//! The `cluster` group (hutchd only, and only when named): a standalone hutchd against a
//! cluster of three on this machine (their state in Debian's etcd on loopback, each member
//! with its own pool; no NICs, since three bridges of one name cannot share one host):
//! launches at once through the first member, the scheduler spreading them, against the
//! same on one server; then `hutch list` and `lxc list` of N instances across the three
//! members through the first, one request, against N on one server; and the cost of the
//! cluster's records in etcd: N placements written and read back.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hutch_tests::etcd::Etcd;

use crate::images::import_busybox;
use crate::target::{Daemon, Target};
use crate::{stats, Row};

/// What the group measures.
pub(crate) struct ClusterPlan<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) image: &'a Path,
    pub(crate) driver: &'a str,
    pub(crate) work: &'a Path,
    /// Instances listed across the members.
    pub(crate) instances: usize,
    /// Launches at once.
    pub(crate) parallel: usize,
    pub(crate) runs: usize,
}

fn value_row(op: String, driver: &str, v: f64) -> Row {
    (op, "hutch".into(), driver.into(), v, v, v)
}

/// A started daemon without the NIC of its default profile.
fn member(bin: &Path, driver: &str, name: &str) -> Result<Daemon> {
    let d = Daemon::start_named(bin, driver, name)?;
    d.target
        .time("hutch", &["profile", "device", "remove", "default", "eth0"])?;
    Ok(d)
}

/// Runs `hutch args` on `t`, failing with its error output.
fn ok(t: &Target, args: &[&str]) -> Result<String> {
    let out = t
        .cmd("hutch", args)
        .stdout(std::process::Stdio::piped())
        .output()?;
    if !out.status.success() {
        bail!(
            "hutch {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `names` launched at once on `t` (with `target` members in turn, when given): how many
/// per second.
fn launch_all(t: &Target, names: &[String], targets: &[&str]) -> Result<f64> {
    let start = Instant::now();
    let launched = std::thread::scope(|s| {
        let hs: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                s.spawn(move || {
                    let mut args = vec!["launch", "bb", n.as_str()];
                    if !targets.is_empty() {
                        args.extend(["--target", targets[i % targets.len()]]);
                    }
                    t.time("hutch", &args)
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>()
    });
    let took = start.elapsed().as_secs_f64();
    let failed: Vec<String> = launched
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    if let Some(first) = failed.first() {
        bail!(
            "{} of {} launches failed, the first: {first}",
            failed.len(),
            names.len()
        );
    }
    Ok(names.len() as f64 / took)
}

/// Deletes `names` through `t`, eight at a time.
fn delete_all(t: &Target, names: &[String]) {
    std::thread::scope(|s| {
        for chunk in names.chunks(names.len().div_ceil(8).max(1)) {
            s.spawn(move || {
                for n in chunk {
                    let _ = t.time("hutch", &["delete", n, "--force"]);
                }
            });
        }
    });
}

/// The median of `runs` timings of `client list` on `t`.
fn list_row(t: &Target, client: &str, runs: usize) -> Result<(f64, f64, f64)> {
    let args = ["list", "--format", "csv"];
    let mut samples: Vec<Duration> = (0..runs.max(3))
        .map(|_| t.time(client, &args))
        .collect::<Result<_>>()?;
    Ok(stats(&mut samples))
}

pub(crate) fn measure(plan: &ClusterPlan) -> Result<Vec<Row>> {
    let ClusterPlan {
        bin,
        image,
        driver,
        work,
        instances,
        parallel,
        runs,
    } = *plan;
    let mut rows = Vec::new();
    let n = instances;

    // One server.
    let alone = member(bin, driver, "s")?;
    let t = &alone.target;
    import_busybox(t, image)?;
    let names: Vec<String> = (0..parallel).map(|i| format!("p{i}")).collect();
    let rate = launch_all(t, &names, &[]);
    delete_all(t, &names);
    rows.push(value_row(
        format!("launches/s, {parallel} at once, 1 server"),
        driver,
        rate?,
    ));
    let names: Vec<String> = (0..n).map(|i| format!("l{i}")).collect();
    let launched = launch_all(t, &names, &[]);
    if launched.is_ok() {
        for client in ["hutch", "lxc"] {
            let (m, lo, hi) = list_row(t, client, runs)?;
            rows.push((
                format!("list of {n}, 1 server"),
                client.into(),
                driver.into(),
                m,
                lo,
                hi,
            ));
        }
    }
    delete_all(t, &names);
    launched?;
    drop(alone);

    // Three members.
    let etcd = Etcd::start(work);
    let members = [
        member(bin, driver, "m1")?,
        member(bin, driver, "m2")?,
        member(bin, driver, "m3")?,
    ];
    for (i, m) in members.iter().enumerate() {
        let port = hutch_tests::free_port();
        ok(
            &m.target,
            &[
                "config",
                "set",
                "core.https_address",
                &format!("127.0.0.1:{port}"),
            ],
        )?;
        if i == 0 {
            ok(
                &m.target,
                &["cluster", "enable", "m1", "--etcd", &etcd.url()],
            )?;
        } else {
            let name = format!("m{}", i + 1);
            let out = ok(&members[0].target, &["cluster", "add", &name])?;
            let token = out
                .lines()
                .last()
                .context("a join token")?
                .trim()
                .to_string();
            ok(&m.target, &["cluster", "join", &token])?;
        }
    }
    let first = &members[0].target;
    import_busybox(first, image)?;
    let names: Vec<String> = (0..parallel).map(|i| format!("p{i}")).collect();
    // Once with an image pulled to each member, as a second launch finds it.
    let warm: Vec<String> = ["w1", "w2", "w3"].iter().map(|s| s.to_string()).collect();
    launch_all(first, &warm, &["m1", "m2", "m3"])?;
    delete_all(first, &warm);
    let rate = launch_all(first, &names, &[]);
    delete_all(first, &names);
    rows.push(value_row(
        format!("launches/s, {parallel} at once, 3 members (scheduled)"),
        driver,
        rate?,
    ));
    let names: Vec<String> = (0..n).map(|i| format!("l{i}")).collect();
    let launched = launch_all(first, &names, &["m1", "m2", "m3"]);
    if launched.is_ok() {
        for client in ["hutch", "lxc"] {
            let (m, lo, hi) = list_row(first, client, runs)?;
            rows.push((
                format!("list of {n}, across 3 members"),
                client.into(),
                driver.into(),
                m,
                lo,
                hi,
            ));
        }
        let keys = etcd.keys("/hutch/clusters/");
        let placed = keys.iter().filter(|k| k.contains("/instances/")).count();
        rows.push(value_row(
            format!("etcd keys with {n} instances (placements: {placed})"),
            driver,
            keys.len() as f64,
        ));
    }
    delete_all(first, &names);
    launched?;
    drop(members);
    drop(etcd);
    Ok(rows)
}
