//! hutch-bench: measures whole operations as a user sees them (launch, exec, snapshot,
//! restore, stop, start, delete, file push and pull, list), driven by `hutch` and by LXD's
//! `lxc`, on each storage driver, against a fresh hutchd in a temporary directory. Prints a
//! table of medians (min and max) and writes the numbers as JSON. Not a test: no
//! assertions, just measurements. Run as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

mod api_load;
mod backup;
mod cluster;
mod host;
mod https;
mod images;
mod oci;
mod plot;
mod remote;
mod replay;
mod scale;
mod soak;
mod target;

use images::{busybox_image, debian_image, import_busybox, import_debian};
use target::{lxd_driver, rss_anon_mib, rss_mib, Daemon, ForwardingGuard, Target, IP_FORWARD};

/// One row of the table: target, driver, operation, median, min, max.
type Row = (String, String, String, f64, f64, f64);

#[derive(Parser)]
#[command(about = "Measure hutchd's operations")]
struct Args {
    /// Runs per operation.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Storage drivers to measure.
    #[arg(long, value_delimiter = ',', default_value = "btrfs,dir")]
    drivers: Vec<String>,
    /// Clients to drive hutchd with.
    #[arg(long, value_delimiter = ',', default_value = "hutch,lxc")]
    clients: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    json: PathBuf,
    /// Running containers for the `list` (and RSS) measurements, smallest first.
    #[arg(long, value_delimiter = ',', default_value = "20,200")]
    list_sizes: Vec<usize>,
    /// Containers launched at once for the parallel-launch measurement (0: skip).
    #[arg(long, default_value_t = 100)]
    parallel: usize,
    /// An LXD daemon's directory (`LXD_DIR`, set up with a default profile whose root disk
    /// is on a pool of the measured driver): the `lxc` rows are then measured against it
    /// too, alternating hutchd and LXD run by run, with the ratio of each row.
    #[arg(long)]
    lxd_dir: Option<PathBuf>,
    /// A Debian rootfs tarball for the `launch debian` row (default: the test suite's cache,
    /// `/var/cache/hutch-tests/debian-12-<arch>-r2.tar.zst`, when it exists).
    #[arg(long)]
    debian_rootfs: Option<PathBuf>,
    /// Idle time before each timed command, in milliseconds: with a pause, the kernel's
    /// per-operation costs are measured cold, as a user meets them between commands,
    /// instead of warm from the previous run.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Where the image server's CA is kept from run to run: start LXD with
    /// `SSL_CERT_FILE=<ca-dir>/ca.pem` for its remote-launch rows.
    #[arg(long, default_value = "/var/tmp/hutch-bench-ca")]
    ca_dir: PathBuf,
    /// Skip the remote-launch rows.
    #[arg(long)]
    no_remote: bool,
    /// Skip the HTTPS rows (exec and list over HTTPS, copy of 500 MB to a second daemon).
    #[arg(long)]
    no_https: bool,
    /// Skip the backup rows (export and import of a 500 MB container).
    #[arg(long)]
    no_backup: bool,
    /// Measure only these groups of rows (default: all but scale): basic (launch to
    /// delete), throughput (exec 1 GB stdout), list, debian, remote, oci (launch of a 50 MB
    /// OCI image from a registry on loopback; hutchd and the hutch client only), https
    /// (exec and list over HTTPS), copy (copy 500 MB over HTTPS), backup (export and
    /// import 500 MB), scale
    /// (`--scale` running containers with NICs: list, RSS, launch rates, API load; hutchd
    /// only, and only when named), cluster (three members in etcd against one server:
    /// launches at once, list across members; hutchd only, and only when named).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Running containers of the scale group.
    #[arg(long, default_value_t = 1000)]
    scale: usize,
    /// Containers launched at once in the scale group (0: skip).
    #[arg(long, default_value_t = 128)]
    scale_parallel: usize,
    /// Concurrent API clients in the scale group.
    #[arg(long, default_value_t = 200)]
    scale_clients: usize,
    /// Instances listed across the cluster group's three members.
    #[arg(long, default_value_t = 300)]
    cluster_instances: usize,
    /// Launches at once in the cluster group, on one server and on three members.
    #[arg(long, default_value_t = 60)]
    cluster_parallel: usize,
    /// Instead of the rows: N create/start/exec/stop/delete cycles on the first driver,
    /// sampling the daemon's RSS, fds and threads into a CSV and PNG plots.
    #[arg(long, default_value_t = 0)]
    soak: usize,
    /// Clients cycling side by side in the soak, each with its own container.
    #[arg(long, default_value_t = 1)]
    soak_workers: usize,
    /// Where the soak writes its CSV and plots.
    #[arg(long, default_value = "soak-results")]
    soak_out: PathBuf,
    /// Where each hutchd the bench starts writes its log (its stderr, appended): with
    /// `RUST_LOG=hutchd=debug`, where each start's time went, step by step.
    #[arg(long)]
    daemon_log: Option<PathBuf>,
    /// Make the CA in `--ca-dir` (if missing), print its certificate's path and exit: start
    /// LXD with `SSL_CERT_FILE` set to it before a run with `--lxd-dir`.
    #[arg(long)]
    make_ca: bool,
}

/// `--pause-ms`, set once at start.
static PAUSE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Median, min and max in seconds.
fn stats(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let s = |d: Duration| d.as_secs_f64();
    (
        s(samples[samples.len() / 2]),
        s(samples[0]),
        s(samples[samples.len() - 1]),
    )
}

/// Measures every operation with `client` on each of `targets`, alternating targets run
/// by run (A/B), so that drift of the machine hits all alike. One row per target and op.
/// What every target is measured with.
struct Plan<'a> {
    runs: usize,
    list_sizes: &'a [usize],
    payload: &'a Path,
    work: &'a Path,
    /// Whether the Debian image was imported (the `launch debian` row).
    debian: bool,
    /// The image server of the remote-launch rows.
    remote: Option<&'a remote::RemoteImages>,
    /// The registry of the OCI rows.
    oci: Option<&'a hutch_tests::registry::Registry>,
    /// For the HTTPS rows (lxc only): each target's copy destination, by URL.
    https_dests: Option<&'a [String]>,
    /// The backup rows (lxc only).
    backup: bool,
    /// `--only`: the groups of rows to measure (empty: all).
    only: &'a [String],
}

impl Plan<'_> {
    /// Whether the rows of `group` are measured.
    fn wants(&self, group: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|g| g == group)
    }
}

fn measure(targets: &[&Target], driver: &str, client: &str, plan: &Plan) -> Result<Vec<Row>> {
    let Plan {
        runs,
        list_sizes,
        payload,
        work,
        debian,
        remote,
        oci,
        https_dests,
        backup,
        only: _,
    } = *plan;
    let mut rows = Vec::new();
    let label = |t: &Target| {
        if t.label == "lxd" {
            "lxd".to_string()
        } else {
            client.to_string()
        }
    };
    let mut record = |op: &str, samples: Vec<Vec<Duration>>| {
        for (t, mut s) in targets.iter().zip(samples) {
            let (med, min, max) = stats(&mut s);
            rows.push((op.to_string(), label(t), driver.to_string(), med, min, max));
        }
    };
    let names: Vec<String> = (0..runs).map(|i| format!("b{client}{i}")).collect();
    // One sample per run per target, the targets taking turns.
    let ab = |f: &dyn Fn(&Target, &str) -> Result<Duration>| -> Result<Vec<Vec<Duration>>> {
        let mut out = vec![Vec::new(); targets.len()];
        for n in &names {
            for (i, t) in targets.iter().enumerate() {
                out[i].push(f(t, n)?);
            }
        }
        Ok(out)
    };
    if plan.wants("basic") {
        record("launch", ab(&|t, n| t.time(client, &["launch", "bb", n]))?);
        record(
            "exec true",
            ab(&|t, n| t.time(client, &["exec", n, "--", "true"]))?,
        );
        record(
            "snapshot",
            ab(&|t, n| t.time(client, &["snapshot", n, "s0"]))?,
        );
        record(
            "copy",
            ab(&|t, n| t.time(client, &["copy", n, &format!("{n}c")]))?,
        );
        for t in targets {
            for n in &names {
                t.time(client, &["delete", &format!("{n}c")])?;
            }
        }
        record(
            "restore",
            ab(&|t, n| t.time(client, &["restore", n, "s0"]))?,
        );
        let dest = |n: &str| format!("{n}/root/payload");
        let payload_s = payload.to_str().unwrap_or_default();
        record(
            "push 100 MB",
            ab(&|t, n| t.time(client, &["file", "push", payload_s, &dest(n)]))?,
        );
        let pulled = work.join("pulled");
        let pulled_s = pulled.to_str().unwrap_or_default();
        record(
            "pull 100 MB",
            ab(&|t, n| t.time(client, &["file", "pull", &dest(n), pulled_s]))?,
        );
        record(
            "stop --force",
            ab(&|t, n| t.time(client, &["stop", n, "--force"]))?,
        );
        record("start", ab(&|t, n| t.time(client, &["start", n]))?);
        // A clean stop: init is asked to halt (busybox init sleeps about 2 s on the way).
        record("stop (clean)", ab(&|t, n| t.time(client, &["stop", n]))?);
        record("delete", ab(&|t, n| t.time(client, &["delete", n]))?);
    }
    // Exec throughput: 1 GB through stdout (discarded by the client).
    if plan.wants("throughput") {
        let x = format!("x{client}");
        for t in targets {
            t.time(client, &["launch", "bb", &x])?;
        }
        let mut thru = vec![Vec::new(); targets.len()];
        for _ in 0..runs.min(3) {
            for (i, t) in targets.iter().enumerate() {
                let cmd = ["exec", &x, "--", "sh", "-c", "head -c 1000000000 /dev/zero"];
                thru[i].push(t.time(client, &cmd)?);
            }
        }
        record("exec 1 GB stdout", thru);
        for t in targets {
            t.time(client, &["delete", &x, "--force"])?;
        }
    }
    // list (and daemon memory) with each number of running containers.
    let mut running = 0;
    let mut memory = Vec::new();
    let list_sizes = if plan.wants("list") { list_sizes } else { &[] };
    for &size in list_sizes {
        for t in targets {
            for k in running..size {
                t.time("hutch", &["launch", "bb", &format!("l{client}{k}")])?;
            }
        }
        running = size;
        let mut list = vec![Vec::new(); targets.len()];
        for _ in 0..runs {
            for (i, t) in targets.iter().enumerate() {
                list[i].push(t.time(client, &["list"])?);
            }
        }
        record(&format!("list of {size}"), list);
        // One Prometheus scrape of every running container (LXD's row too, from its own
        // socket; LXD may answer from its 8 s cache, hutchd reads afresh every time).
        let mut scrapes = vec![Vec::new(); targets.len()];
        for _ in 0..runs {
            for (i, t) in targets.iter().enumerate() {
                scrapes[i].push(api_load::scrape(&t.dir.join("unix.socket"))?);
            }
        }
        record(&format!("metrics scrape, {size} running"), scrapes);
        // A launch must cost the same however many containers already run.
        record(
            &format!("launch, {size} running"),
            ab(&|t, n| t.time(client, &["launch", "bb", &format!("{n}r{size}")]))?,
        );
        for t in targets {
            for n in &names {
                t.time(client, &["delete", &format!("{n}r{size}"), "--force"])?;
            }
        }
        // Read at rest: hutchd hands memory that bursts left free back every two seconds.
        std::thread::sleep(Duration::from_millis(2500));
        for t in targets {
            let m = rss_mib(t.pid);
            memory.push((
                format!("RSS, {size} running (MiB)"),
                label(t),
                driver.to_string(),
                m,
                m,
                m,
            ));
        }
    }
    for t in targets {
        for k in 0..running {
            t.time("hutch", &["delete", &format!("l{client}{k}"), "--force"])?;
        }
    }
    // Debian (systemd) launches, when its image was imported.
    if debian && plan.wants("debian") {
        record(
            "launch debian",
            ab(&|t, n| t.time(client, &["launch", "deb", &format!("d{n}")]))?,
        );
        for t in targets {
            for n in &names {
                t.time(client, &["delete", &format!("d{n}"), "--force"])?;
            }
        }
    }
    if let Some(remote) = remote.filter(|_| plan.wants("remote")) {
        remote::measure(targets, client, runs, remote, &mut record)?;
    }
    if let Some(registry) = oci.filter(|_| client == "hutch" && plan.wants("oci")) {
        oci::measure(targets[0], runs, registry, &mut record)?;
    }
    if let Some(dests) = https_dests.filter(|_| client == "lxc") {
        if plan.wants("https") {
            https::measure(targets, runs, &mut record)?;
        }
        if plan.wants("copy") {
            https::measure_copy(targets, dests, runs, &mut record)?;
        }
    }
    if backup && client == "lxc" && plan.wants("backup") {
        backup::measure(targets, runs, work, &mut record)?;
    }
    rows.extend(memory);
    Ok(rows)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.make_ca {
        hutch_tests::image_server::TestCa::persistent(&args.ca_dir)?;
        println!("{}", args.ca_dir.join("ca.pem").display());
        return Ok(());
    }
    let _ = PAUSE.set(Duration::from_millis(args.pause_ms));
    if let Some(log) = &args.daemon_log {
        let _ = target::DAEMON_LOG.set(log.clone());
    }
    let _forwarding = ForwardingGuard(std::fs::read_to_string(IP_FORWARD).ok());
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("binary directory")?.to_path_buf();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("repository")?
        .to_path_buf();
    let work = PathBuf::from(format!("/tmp/hutch-bench-work-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let image = busybox_image(&repo, &work)?;
    let payload = work.join("payload");
    std::fs::write(&payload, vec![7u8; 100 << 20])?;
    let mut rows = Vec::new();
    let first_driver = args
        .drivers
        .first()
        .cloned()
        .unwrap_or_else(|| "btrfs".into());
    if args.soak > 0 {
        let flat = soak::run(
            &bin,
            &image,
            &first_driver,
            args.soak,
            args.soak_workers,
            &args.soak_out,
        );
        let _ = std::fs::remove_dir_all(&work);
        flat?;
        return Ok(());
    }
    if args.only.iter().any(|g| g == "cluster") {
        if let Some(why) = hutch_tests::etcd::Etcd::missing() {
            println!("cluster rows: not measured ({why})");
        } else {
            rows.extend(cluster::measure(&cluster::ClusterPlan {
                bin: &bin,
                image: &image,
                driver: &first_driver,
                work: &work,
                instances: args.cluster_instances,
                parallel: args.cluster_parallel,
                runs: args.runs,
            })?);
        }
        if args.only.iter().all(|g| g == "cluster") {
            let _ = std::fs::remove_dir_all(&work);
            return report(&rows, &args.json);
        }
    }
    if args.only.iter().any(|g| g == "scale") {
        if args.lxd_dir.is_some() {
            println!(
                "scale rows: hutchd only (LXD is not measured at {} containers: it would take hours)",
                args.scale
            );
        }
        rows.extend(scale::measure(&scale::ScalePlan {
            bin: &bin,
            image: &image,
            driver: &first_driver,
            n: args.scale,
            parallel: args.scale_parallel,
            clients: args.scale_clients,
            runs: args.runs,
        })?);
        if args.only.iter().all(|g| g == "scale") {
            let _ = std::fs::remove_dir_all(&work);
            return report(&rows, &args.json);
        }
    }
    let debian = debian_image(&args, &work)?;
    // Served before any daemon starts: each is given the server's CA.
    let remote = if args.no_remote {
        None
    } else {
        Some(remote::serve(
            &work,
            &args.ca_dir,
            &work.join("image").join("rootfs"),
            debian.as_ref().map(|d| d.1.as_path()),
        )?)
    };
    let oci = if args.only.is_empty() || args.only.iter().any(|g| g == "oci") {
        oci::serve(&work, &work.join("image").join("rootfs"))?
    } else {
        None
    };
    let lxd = match &args.lxd_dir {
        Some(dir) => {
            let info = Command::new("lxc")
                .args(["query", "/1.0"])
                .env("LXD_DIR", dir)
                .output()?;
            let info: serde_json::Value =
                serde_json::from_slice(&info.stdout).context("lxc query /1.0 against --lxd-dir")?;
            let t = Target {
                label: "lxd",
                dir: dir.clone(),
                bin: bin.clone(),
                pid: info["environment"]["server_pid"].as_u64().unwrap_or(0) as u32,
            };
            let driver = lxd_driver(&t)?;
            // The same image, under the same alias.
            import_busybox(&t, &image)?;
            if let Some(img) = &debian {
                import_debian(&t, img)?;
            }
            Some((t, driver))
        }
        None => None,
    };
    let plan = Plan {
        runs: args.runs,
        list_sizes: &args.list_sizes,
        payload: &payload,
        work: &work,
        debian: debian.is_some(),
        remote: remote.as_ref(),
        oci: oci.as_ref(),
        https_dests: None,
        backup: !args.no_backup,
        only: &args.only,
    };
    // The copy rows' second LXD, when LXD is measured.
    // The HTTPS rows' daemons are started only when some HTTPS row is measured.
    let no_https = args.no_https
        || !(args.only.is_empty() || args.only.iter().any(|g| g == "https" || g == "copy"));
    let lxd_dest = match (&lxd, no_https) {
        (Some(_), false) => Some(https::SecondLxd::start()?),
        _ => None,
    };
    for driver in &args.drivers {
        let d = Daemon::start(&bin, driver)?;
        import_busybox(&d.target, &image)?;
        if let Some(img) = &debian {
            import_debian(&d.target, img)?;
        }
        let idle = rss_mib(d.target.pid);
        rows.push((
            "RSS, idle (MiB)".into(),
            "-".into(),
            driver.clone(),
            idle,
            idle,
            idle,
        ));
        let anon = rss_anon_mib(d.target.pid);
        rows.push((
            "RSS anon, idle (MiB)".into(),
            "-".into(),
            driver.clone(),
            anon,
            anon,
            anon,
        ));
        for client in &args.clients {
            // LXD joins the lxc rows of the driver its default pool uses.
            let lxd = match (&lxd, client.as_str()) {
                (Some((t, drv)), "lxc") if drv == driver => Some(t),
                _ => None,
            };
            let targets: Vec<&Target> = std::iter::once(&d.target).chain(lxd).collect();
            // The HTTPS rows copy to a second daemon of each target's kind.
            let dest = match (client.as_str(), no_https) {
                ("lxc", false) => Some(https::second_hutchd(&bin, driver)?),
                _ => None,
            };
            let dests: Option<Vec<String>> = dest.as_ref().map(|(_, url)| {
                std::iter::once(url.clone())
                    .chain(lxd.and(lxd_dest.as_ref()).map(|l| l.url.clone()))
                    .collect()
            });
            let plan = Plan {
                https_dests: dests.as_deref(),
                ..plan
            };
            rows.extend(measure(&targets, driver, client, &plan)?);
        }
    }
    // Parallel launches: `parallel` containers at once, from one image, with hutch.
    if args.parallel > 0 {
        let driver = args
            .drivers
            .first()
            .cloned()
            .unwrap_or_else(|| "btrfs".into());
        let d = Daemon::start(&bin, &driver)?;
        import_busybox(&d.target, &image)?;
        let start = Instant::now();
        let handles: Vec<_> = (0..args.parallel)
            .map(|i| {
                let mut c = d.cmd("hutch", &["launch", "bb", &format!("p{i}")]);
                std::thread::spawn(move || c.status().is_ok_and(|s| s.success()))
            })
            .collect();
        let launched = handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .filter(|ok| *ok)
            .count();
        let took = start.elapsed();
        if launched != args.parallel {
            bail!(
                "only {launched} of {} parallel launches succeeded",
                args.parallel
            );
        }
        let secs = took.as_secs_f64();
        rows.push((
            format!("launch {} parallel", args.parallel),
            "hutch".into(),
            driver.clone(),
            secs,
            secs,
            secs,
        ));
    }
    let _ = std::fs::remove_dir_all(&work);
    report(&rows, &args.json)
}

/// Prints the host's line, the table (and hutchd's ratio to LXD where both were measured)
/// and writes the JSON results to `json`.
fn report(rows: &[Row], json_path: &Path) -> Result<()> {
    let host = host::facts();
    println!("{}", host::describe(&host));
    println!(
        "{:<28} {:<6} {:<6} {:>9} {:>9} {:>9}",
        "operation", "client", "driver", "median", "min", "max"
    );
    for (op, client, driver, med, min, max) in rows {
        println!("{op:<28} {client:<6} {driver:<6} {med:>9.4} {min:>9.4} {max:>9.4}");
    }
    // hutchd against LXD, both driven by lxc: the ratio of medians per operation.
    let ratios: Vec<(String, String, f64, f64, f64)> = rows
        .iter()
        .filter(|r| r.1 == "lxd")
        .filter_map(|(op, _, driver, lxd_med, _, _)| {
            rows.iter()
                .find(|r| r.0 == *op && r.1 == "lxc" && r.2 == *driver)
                .map(|r| (op.clone(), driver.clone(), r.3, *lxd_med, r.3 / lxd_med))
        })
        .collect();
    if !ratios.is_empty() {
        println!(
            "\n{:<18} {:<6} {:>9} {:>9} {:>9}",
            "operation (lxc)", "driver", "hutchd", "lxd", "ratio"
        );
        for (op, driver, h, l, r) in &ratios {
            println!("{op:<18} {driver:<6} {h:>9.4} {l:>9.4} {r:>9.3}");
        }
    }
    let json: Vec<_> = rows.iter().map(|(op, client, driver, med, min, max)| json!({"operation": op, "client": client, "driver": driver, "median_s": med, "min_s": min, "max_s": max})).collect();
    let ratio_json: Vec<_> = ratios.iter().map(|(op, driver, h, l, r)| json!({"operation": op, "driver": driver, "hutchd_s": h, "lxd_s": l, "ratio": r})).collect();
    let json = json!({"host": host, "rows": json, "hutchd_vs_lxd": ratio_json});
    std::fs::write(json_path, serde_json::to_string_pretty(&json)?)?;
    eprintln!("results written to {}", json_path.display());
    Ok(())
}
