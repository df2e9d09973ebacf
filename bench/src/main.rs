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
    /// Running containers for the `list` measurement.
    #[arg(long, default_value_t = 20)]
    list_size: usize,
    /// Containers launched at once for the parallel-launch measurement (0: skip).
    #[arg(long, default_value_t = 100)]
    parallel: usize,
}

/// A daemon in its own directory, torn down (containers, network, pool mount, files) on
/// drop. Its containers have a NIC on its own bridge, as after a real `init --auto`.
struct Daemon {
    dir: PathBuf,
    child: Child,
    bin: PathBuf,
    bridge: String,
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

    /// The client command for `client` ("hutch" or "lxc").
    fn cmd(&self, client: &str, args: &[&str]) -> Command {
        let mut c = if client == "lxc" {
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
        let start = Instant::now();
        let out = self.cmd(client, args).output()?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "{client} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(took)
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

fn measure(
    d: &Daemon,
    driver: &str,
    client: &str,
    runs: usize,
    list_size: usize,
    payload: &Path,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut record = |op: &str, samples: &mut Vec<Duration>| {
        let (med, min, max) = stats(samples);
        rows.push((
            op.to_string(),
            client.to_string(),
            driver.to_string(),
            med,
            min,
            max,
        ));
    };
    let names: Vec<String> = (0..runs).map(|i| format!("b{client}{i}")).collect();
    let t = |f: &mut dyn FnMut(&str) -> Result<Duration>| -> Result<Vec<Duration>> {
        names.iter().map(|n| f(n)).collect()
    };
    let mut launch = t(&mut |n| d.time(client, &["launch", "bb", n]))?;
    record("launch", &mut launch);
    let mut exec = t(&mut |n| d.time(client, &["exec", n, "--", "true"]))?;
    record("exec true", &mut exec);
    let mut snap = t(&mut |n| d.time(client, &["snapshot", n, "s0"]))?;
    record("snapshot", &mut snap);
    let mut restore = t(&mut |n| d.time(client, &["restore", n, "s0"]))?;
    record("restore", &mut restore);
    let dest = |n: &str| format!("{n}/root/payload");
    let mut push = t(&mut |n| {
        d.time(
            client,
            &[
                "file",
                "push",
                payload.to_str().unwrap_or_default(),
                &dest(n),
            ],
        )
    })?;
    record("push 100 MB", &mut push);
    let pulled = d.dir.join("pulled");
    let mut pull = t(&mut |n| {
        d.time(
            client,
            &[
                "file",
                "pull",
                &dest(n),
                pulled.to_str().unwrap_or_default(),
            ],
        )
    })?;
    record("pull 100 MB", &mut pull);
    let mut stop = t(&mut |n| d.time(client, &["stop", n, "--force"]))?;
    record("stop --force", &mut stop);
    let mut start = t(&mut |n| d.time(client, &["start", n]))?;
    record("start", &mut start);
    for n in &names {
        d.time(client, &["stop", n, "--force"])?;
    }
    let mut delete = t(&mut |n| d.time(client, &["delete", n]))?;
    record("delete", &mut delete);
    // Exec throughput: 1 GB through stdout (discarded by the client).
    let mut thru: Vec<Duration> = Vec::new();
    d.time(client, &["launch", "bb", &format!("x{client}")])?;
    for _ in 0..runs.min(3) {
        thru.push(d.time(
            client,
            &[
                "exec",
                &format!("x{client}"),
                "--",
                "sh",
                "-c",
                "head -c 1000000000 /dev/zero",
            ],
        )?);
    }
    record("exec 1 GB stdout", &mut thru);
    d.time("hutch", &["delete", &format!("x{client}"), "--force"])?;
    // list with `list_size` running containers.
    let many: Vec<String> = (0..list_size).map(|i| format!("l{client}{i}")).collect();
    for n in &many {
        d.time("hutch", &["launch", "bb", n])?;
    }
    let mut list: Vec<Duration> = (0..runs)
        .map(|_| d.time(client, &["list"]))
        .collect::<Result<_>>()?;
    record(&format!("list of {list_size}"), &mut list);
    for n in &many {
        d.time("hutch", &["delete", n, "--force"])?;
    }
    Ok(rows)
}

fn main() -> Result<()> {
    let args = Args::parse();
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
    for driver in &args.drivers {
        let d = Daemon::start(&bin, driver)?;
        d.time(
            "hutch",
            &[
                "image",
                "import",
                image.to_str().unwrap_or_default(),
                "--alias",
                "bb",
            ],
        )?;
        for client in &args.clients {
            rows.extend(measure(
                &d,
                driver,
                client,
                args.runs,
                args.list_size,
                &payload,
            )?);
        }
        let rss = std::fs::read_to_string(format!("/proc/{}/status", d.child.id()))
            .ok()
            .and_then(|s| {
                s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .unwrap_or("0")
                        .parse::<f64>()
                        .unwrap_or(0.0)
                })
            })
            .unwrap_or(0.0);
        rows.push((
            "daemon RSS (MiB)".into(),
            "-".into(),
            driver.clone(),
            rss / 1024.0,
            rss / 1024.0,
            rss / 1024.0,
        ));
    }
    // Parallel launches: `parallel` containers at once, from one image, with hutch.
    if args.parallel > 0 {
        let driver = args
            .drivers
            .first()
            .cloned()
            .unwrap_or_else(|| "btrfs".into());
        let d = Daemon::start(&bin, &driver)?;
        d.time(
            "hutch",
            &[
                "image",
                "import",
                image.to_str().unwrap_or_default(),
                "--alias",
                "bb",
            ],
        )?;
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
    let json: Vec<_> = rows.iter().map(|(op, client, driver, med, min, max)| json!({"operation": op, "client": client, "driver": driver, "median_s": med, "min_s": min, "max_s": max})).collect();
    std::fs::write(&args.json, serde_json::to_string_pretty(&json)?)?;
    eprintln!("results written to {}", args.json.display());
    Ok(())
}
