//! hutch-bench: measures whole operations as a user sees them (launch, exec, snapshot,
//! restore, stop, start, delete, file push and pull, list), driven by `hutch` and by LXD's
//! `lxc`, on each storage driver, against a fresh hutchd in a temporary directory. Prints a
//! table of medians (min and max) and writes the numbers as JSON. Not a test: no
//! assertions, just measurements. Run as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

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
    /// `/var/cache/hutch-tests/debian-12-<arch>.tar.zst`, when it exists).
    #[arg(long)]
    debian_rootfs: Option<PathBuf>,
    /// Idle time before each timed command, in milliseconds: with a pause, the kernel's
    /// per-operation costs are measured cold, as a user meets them between commands,
    /// instead of warm from the previous run.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

/// `--pause-ms`, set once at start.
static PAUSE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// The Debian split image (metadata tarball, rootfs tarball), if a rootfs is at hand.
fn debian_image(args: &Args, work: &Path) -> Result<Option<(PathBuf, PathBuf)>> {
    let cache = std::env::var_os("HUTCH_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/hutch-tests"));
    let rootfs = match &args.debian_rootfs {
        Some(p) => p.clone(),
        None => cache.join(format!("debian-12-{}.tar.zst", lxd_arch())),
    };
    if !rootfs.exists() {
        return Ok(None);
    }
    let meta_dir = work.join("debian-meta");
    std::fs::create_dir_all(&meta_dir)?;
    std::fs::write(
        meta_dir.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: debian\n  release: bookworm\n",
    )?;
    let meta = work.join("debian-meta.tar.gz");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&meta_dir)
        .arg("-czf")
        .arg(&meta)
        .arg("metadata.yaml")
        .status()?
        .success();
    if !ok {
        bail!("making the Debian metadata tarball failed");
    }
    Ok(Some((meta, rootfs)))
}

/// Debian's name for this architecture, as the test suite names its cache.
fn lxd_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Imports the busybox image as `bb` into `t` (replacing one of that alias, on LXD).
fn import_busybox(t: &Target, image: &Path) -> Result<()> {
    // `hutch` for hutchd (no lxc needed to benchmark it alone); LXD is always driven by lxc.
    let _ = t.time("hutch", &["image", "delete", "bb"]);
    t.time(
        "hutch",
        &[
            "image",
            "import",
            image.to_str().unwrap_or_default(),
            "--alias",
            "bb",
        ],
    )?;
    Ok(())
}

/// Imports the Debian image as `deb` into `t` (with lxc: both daemons take split images).
fn import_debian(t: &Target, image: &(PathBuf, PathBuf)) -> Result<()> {
    let _ = t.time("lxc", &["image", "delete", "deb"]);
    t.time(
        "lxc",
        &[
            "image",
            "import",
            image.0.to_str().unwrap_or_default(),
            image.1.to_str().unwrap_or_default(),
            "--alias",
            "deb",
        ],
    )?;
    Ok(())
}

/// A daemon to drive: a hutchd this harness started, or an LXD daemon set up beforehand.
struct Target {
    /// `hutchd` or `lxd`, for the table.
    label: &'static str,
    dir: PathBuf,
    bin: PathBuf,
    /// The daemon's pid, for its memory.
    pid: u32,
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

impl Target {
    /// The client command for `client` ("hutch" or "lxc"; LXD is driven by lxc only).
    fn cmd(&self, client: &str, args: &[&str]) -> Command {
        let mut c = if client == "lxc" || self.label == "lxd" {
            Command::new("lxc")
        } else {
            Command::new(self.bin.join("hutch"))
        };
        c.args(args)
            .env("HUTCH_DIR", &self.dir)
            .env("LXD_DIR", &self.dir)
            .env("LXD_CONF", self.dir.join("lxc-conf"))
            .env("HOME", &self.dir);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Runs a client command and returns how long it took.
    fn time(&self, client: &str, args: &[&str]) -> Result<Duration> {
        if let Some(pause) = PAUSE.get().filter(|p| !p.is_zero()) {
            std::thread::sleep(*pause);
        }
        let start = Instant::now();
        let out = self.cmd(client, args).output()?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "{} {client} {args:?}: {}",
                self.label,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
    }
}

/// A daemon in its own directory, torn down (containers, network, pool mount, files) on
/// drop. Its containers have a NIC on its own bridge, as after a real `init --auto`.
struct Daemon {
    dir: PathBuf,
    child: Child,
    bin: PathBuf,
    bridge: String,
    target: Target,
}

impl Daemon {
    fn start(bin: &Path, driver: &str) -> Result<Self> {
        let dir = PathBuf::from(format!("/tmp/hutch-bench-{}-{driver}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let hutchd = bin.join("hutchd");
        let bridge = format!("hbench{}", std::process::id() % 100_000);
        let ok = Command::new(&hutchd)
            .arg("--dir")
            .arg(&dir)
            .args(["init", "--auto", "--storage-backend", driver])
            .args(["--network-bridge", &bridge])
            .stdout(Stdio::null())
            .status()?
            .success();
        if !ok {
            bail!("hutchd init --storage-backend {driver} failed");
        }
        let child = Command::new(&hutchd)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let d = Daemon {
            target: Target {
                label: "hutchd",
                dir: dir.clone(),
                bin: bin.to_path_buf(),
                pid: child.id(),
            },
            dir,
            child,
            bin: bin.to_path_buf(),
            bridge,
        };
        for _ in 0..100 {
            if std::os::unix::net::UnixStream::connect(d.dir.join("unix.socket")).is_ok() {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("hutchd did not come up")
    }

    fn cmd(&self, client: &str, args: &[&str]) -> Command {
        self.target.cmd(client, args)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("containers")) {
            for e in entries.flatten() {
                let _ = Command::new(self.bin.join("hutchd"))
                    .arg("--dir")
                    .arg(&self.dir)
                    .args(["container", "stop", "--force"])
                    .arg(e.file_name())
                    .stdout(Stdio::null())
                    .status();
            }
        }
        // The network: its dnsmasq, its bridge, and the daemon's nftables tables.
        let net = self.dir.join("networks").join(&self.bridge);
        if let Ok(pid) = std::fs::read_to_string(net.join("dnsmasq.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let tables = Command::new("nft").args(["list", "tables"]).output();
        let prefix = format!("{}_", hutch_prefix(&self.dir).replace('-', "_"));
        for line in tables
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
        {
            if let Some(t) = line
                .split_whitespace()
                .nth(2)
                .filter(|t| t.starts_with(&prefix))
            {
                let _ = Command::new("nft")
                    .args(["delete", "table", "inet", t])
                    .status();
            }
        }
        let _ = nix::mount::umount2(
            &self.dir.join("storage-pools/default"),
            nix::mount::MntFlags::MNT_DETACH,
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// hutchd's per-directory prefix of cgroups and nftables tables.
fn hutch_prefix(dir: &Path) -> String {
    let mut hash: u32 = 2166136261;
    for b in dir.as_os_str().as_encoded_bytes() {
        hash = (hash ^ *b as u32).wrapping_mul(16777619);
    }
    format!("hutch-{hash:08x}")
}

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

fn busybox_image(repo: &Path, work: &Path) -> Result<PathBuf> {
    let tree = work.join("image");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    let ok = Command::new("bash")
        .arg(repo.join("tests/images/busybox.sh"))
        .arg(tree.join("rootfs"))
        .status()?
        .success();
    if !ok {
        bail!("building the busybox image failed");
    }
    std::fs::write(
        tree.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n",
    )?;
    let file = work.join("busybox.tar.gz");
    Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-czf")
        .arg(&file)
        .args(["metadata.yaml", "rootfs"])
        .status()?;
    Ok(file)
}

type Row = (String, String, String, f64, f64, f64);

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
}

fn measure(targets: &[&Target], driver: &str, client: &str, plan: &Plan) -> Result<Vec<Row>> {
    let Plan {
        runs,
        list_sizes,
        payload,
        work,
        debian,
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
    // Exec throughput: 1 GB through stdout (discarded by the client).
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
    // list (and daemon memory) with each number of running containers.
    let mut running = 0;
    let mut memory = Vec::new();
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
    if debian {
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
    rows.extend(memory);
    Ok(rows)
}

/// The storage driver of the pool of the default profile's root disk of an LXD daemon.
fn lxd_driver(lxd: &Target) -> Result<String> {
    let pool = Command::new("lxc")
        .args(["profile", "device", "get", "default", "root", "pool"])
        .env("LXD_DIR", &lxd.dir)
        .output()?;
    let pool = String::from_utf8_lossy(&pool.stdout).trim().to_string();
    let out = Command::new("lxc")
        .args(["storage", "get", &pool, "--property", "driver"])
        .env("LXD_DIR", &lxd.dir)
        .output()?;
    let driver = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if driver.is_empty() {
        let show = Command::new("lxc")
            .args(["storage", "show", &pool])
            .env("LXD_DIR", &lxd.dir)
            .output()?;
        let text = String::from_utf8_lossy(&show.stdout).into_owned();
        return Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("driver: "))
            .unwrap_or_default()
            .to_string());
    }
    Ok(driver)
}

/// Puts IPv4 forwarding back as it was: the daemons' NAT bridges turn it on, as LXD's do,
/// and a benchmark leaves the host as it found it.
struct ForwardingGuard(Option<String>);

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

impl Drop for ForwardingGuard {
    fn drop(&mut self) {
        if let Some(v) = &self.0 {
            let _ = std::fs::write(IP_FORWARD, v.trim());
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let _ = PAUSE.set(Duration::from_millis(args.pause_ms));
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
    let debian = debian_image(&args, &work)?;
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
        for client in &args.clients {
            // LXD joins the lxc rows of the driver its default pool uses.
            let lxd = match (&lxd, client.as_str()) {
                (Some((t, drv)), "lxc") if drv == driver => Some(t),
                _ => None,
            };
            let targets: Vec<&Target> = std::iter::once(&d.target).chain(lxd).collect();
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
    println!(
        "{:<18} {:<6} {:<6} {:>9} {:>9} {:>9}",
        "operation", "client", "driver", "median", "min", "max"
    );
    for (op, client, driver, med, min, max) in &rows {
        println!("{op:<18} {client:<6} {driver:<6} {med:>9.4} {min:>9.4} {max:>9.4}");
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
    let json = json!({"rows": json, "hutchd_vs_lxd": ratio_json});
    std::fs::write(&args.json, serde_json::to_string_pretty(&json)?)?;
    eprintln!("results written to {}", args.json.display());
    Ok(())
}
