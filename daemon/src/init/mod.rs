//! `hutchd init`: LXD's `lxd init --auto` and `--preseed`. Both become one preseed applied
//! through the API: over the running daemon's socket when a daemon holds the state
//! directory (never behind its back), else through the router in this process, holding
//! the directory's lock so that no daemon starts meanwhile.

mod apply;
mod client;
mod local;
mod preseed;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::layout::{LayoutError, LockError};
use apply::Api;
use preseed::{AutoFlags, Current, Preseed};

/// How long init waits for a daemon that holds the state directory to answer (it may be
/// starting: the lock is taken before the socket is bound).
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// `hutchd init`'s flags (LXD's names).
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Do not ask anything: working defaults (the mode without --preseed).
    #[arg(long, conflicts_with = "preseed")]
    auto: bool,
    /// Read LXD's preseed YAML (config, storage_pools, networks, profiles) from stdin.
    #[arg(long)]
    preseed: bool,
    /// Storage driver of the new pool: btrfs (on a loop file), dir or zfs (default: btrfs
    /// where it works, else dir).
    #[arg(long, conflicts_with = "preseed")]
    storage_backend: Option<String>,
    /// Make the pool on a loop file of SIZE GiB.
    #[arg(long, value_name = "SIZE", conflicts_with = "preseed")]
    storage_create_loop: Option<u64>,
    /// With --storage-create-loop the new pool's name, else the existing source it uses
    /// (a directory on btrfs, a zfs dataset).
    #[arg(long, value_name = "POOL", conflicts_with = "preseed")]
    storage_pool: Option<String>,
    /// Managed bridge to create and put in the default profile (`none`: no network).
    #[arg(long, default_value = "hutchbr0", conflicts_with = "preseed")]
    network_bridge: String,
    /// Address to serve the API on over HTTPS (`core.https_address`).
    #[arg(long, value_name = "IP", conflicts_with = "preseed")]
    network_address: Option<String>,
    /// Port to serve the API on over HTTPS (default 8443).
    #[arg(long, value_name = "PORT", conflicts_with = "preseed")]
    network_port: Option<u16>,
    /// Password clients give to be trusted (`core.trust_password`).
    #[arg(long, value_name = "PASSWORD", conflicts_with = "preseed")]
    trust_password: Option<String>,
    /// Join the cluster of this token (from `hutch cluster add NAME` on a member) once the
    /// rest is applied; the server must listen on the network (--network-address).
    #[arg(long, value_name = "TOKEN", conflicts_with = "preseed")]
    join: Option<String>,
}

/// Why `hutchd init` failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("failed to read the preseed from stdin")]
    ReadStdin(#[source] std::io::Error),
    #[error("failed to parse the preseed")]
    Parse(#[source] serde_yaml::Error),
    #[error("invalid preseed: {0}")]
    InvalidPreseed(String),
    #[error("{0}")]
    Usage(String),
    #[error("storage has already been configured (storage pools: {0})")]
    StorageConfigured(String),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("another hutchd{} holds {} but does not answer on {}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), .dir.display(), .dir.join("unix.socket").display())]
    NotAnswering { dir: PathBuf, pid: Option<u32> },
    #[error("failed to reach hutchd at {}", .socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to talk to hutchd at {}", .socket.display())]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open {} in this process", .dir.display())]
    Open {
        dir: PathBuf,
        #[source]
        source: crate::error::DaemonError,
    },
    #[error("failed to start the request runtime")]
    Runtime(#[source] std::io::Error),
    #[error("unexpected response from hutchd to {method} {path} (HTTP {status})")]
    BadResponse {
        method: String,
        path: String,
        status: u16,
    },
    /// The server refused a request; its message, as LXD words it.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("it exists and is not managed by hutchd")]
    NotManaged,
    #[error("it is a {have}, not a {want}")]
    KindMismatch { have: String, want: String },
    #[error("failed to apply {kind}{}", if .name.is_empty() { String::new() } else { format!(" {:?}", .name) })]
    Step {
        kind: &'static str,
        name: String,
        #[source]
        source: Box<InitError>,
    },
}

/// The transport of init's requests: a running daemon's socket, or the router in this
/// process.
pub trait Transport {
    /// Sends one request with an optional JSON body; returns the HTTP status and body.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Vec<u8>), InitError>;
}

/// What init is asked to do.
enum Mode {
    Preseed(Box<Preseed>),
    Auto(AutoFlags),
}

/// Runs `hutchd init` on the state directory `dir`.
pub fn run(
    dir: &Path,
    hutchd: PathBuf,
    events: crate::events::EventHub,
    args: InitArgs,
) -> Result<(), InitError> {
    let mode = mode(args)?;
    with_api(dir, hutchd, events, |api| execute(dir, api, mode))
}

/// Runs `f` with the API of state directory `dir`: the running daemon's socket when a
/// daemon holds the directory (never behind its back), else the router in this process,
/// holding the directory's lock so that no daemon starts meanwhile. `hutchd recover`
/// uses it too.
pub fn with_api<T>(
    dir: &Path,
    hutchd: PathBuf,
    events: crate::events::EventHub,
    f: impl FnOnce(&dyn Transport) -> Result<T, InitError>,
) -> Result<T, InitError> {
    match crate::layout::lock_state_dir(dir) {
        Ok(lock) => {
            crate::layout::prepare_state_dir(dir)?;
            let local = local::LocalApi::open(dir, hutchd, events)?;
            let res = f(&local);
            // The daemon's state goes before the lock does: no daemon may start while
            // pools are still mounted by this process.
            drop(local);
            drop(lock);
            res
        }
        Err(LockError::Held { pid, .. }) => {
            let socket = client::SocketApi::new(&dir.join("unix.socket"));
            let deadline = Instant::now() + ANSWER_LIMIT;
            while !socket.answers() {
                if Instant::now() > deadline {
                    return Err(InitError::NotAnswering {
                        dir: dir.to_path_buf(),
                        pid,
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            f(&socket)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads the flags, and the preseed from stdin: everything is checked before the state
/// directory is touched.
fn mode(args: InitArgs) -> Result<Mode, InitError> {
    if args.preseed {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(InitError::ReadStdin)?;
        return Ok(Mode::Preseed(Box::new(Preseed::parse(&text)?)));
    }
    let mut config = std::collections::BTreeMap::new();
    match (&args.network_address, args.network_port) {
        (None, Some(_)) => {
            return Err(InitError::Usage(
                "--network-port can't be used without --network-address".into(),
            ))
        }
        (Some(ip), port) => {
            // As lxd init joins them: an IPv6 address gets brackets.
            let port = port.unwrap_or(8443);
            let address = if ip.contains(':') && !ip.starts_with('[') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            };
            config.insert("core.https_address".to_string(), address);
        }
        (None, None) => {}
    }
    if let Some(password) = args.trust_password {
        config.insert("core.trust_password".to_string(), password);
    }
    Ok(Mode::Auto(AutoFlags {
        config,
        backend: args.storage_backend,
        loop_gib: args.storage_create_loop,
        pool: args.storage_pool,
        bridge: Some(args.network_bridge).filter(|b| b != "none"),
        join: args.join,
    }))
}

/// Builds the preseed (for `--auto`, from what the server has), applies it, reports.
fn execute(dir: &Path, t: &dyn Transport, mode: Mode) -> Result<(), InitError> {
    let api = Api::new(t);
    let auto = matches!(mode, Mode::Auto(_));
    let seed = match mode {
        Mode::Preseed(seed) => *seed,
        Mode::Auto(flags) => {
            let current = current(&api, flags.bridge.as_deref())?;
            let backend = match &flags.backend {
                Some(b) => b.clone(),
                None if current.pools.is_empty() && btrfs_available() => "btrfs".into(),
                None => "dir".into(),
            };
            flags.check(&backend)?;
            let (mut seed, skipped) = flags.preseed(&backend, &current)?;
            seed.config.extend(flags.config.clone());
            if let Some(token) = &flags.join {
                seed.cluster = Some(hutch_api::cluster::ClusterPut {
                    enabled: true,
                    cluster_token: token.clone(),
                    ..Default::default()
                });
            }
            for s in skipped {
                eprintln!("hutchd init: {s}");
            }
            seed
        }
    };
    if seed.is_empty() && !auto {
        println!("the preseed is empty: nothing to do");
    }
    for done in apply::apply(&api, &seed)? {
        println!("{done}");
    }
    if auto {
        println!("{}", summary(dir, &api)?);
    }
    Ok(())
}

/// What `--auto` needs to know of the server.
fn current(api: &Api, bridge: Option<&str>) -> Result<Current, InitError> {
    let pools: Vec<String> =
        serde_json::from_value(api.call("GET", "/1.0/storage-pools", None)?).unwrap_or_default();
    let default = api.get("/1.0/profiles/default")?;
    let bridge = match bridge {
        Some(b) => api
            .get(&format!("/1.0/networks/{b}"))?
            .map(|n| n["managed"].as_bool() == Some(true)),
        None => None,
    };
    Ok(Current {
        pools: pools
            .iter()
            .map(|p| p.trim_start_matches("/1.0/storage-pools/").to_string())
            .collect(),
        default_devices: default
            .and_then(|p| serde_json::from_value(p["devices"].clone()).ok())
            .unwrap_or_default(),
        bridge,
    })
}

/// `hutch is initialised in D: storage pool "default" (btrfs), network "hutchbr0"
/// (10.1.2.1/24), profile "default"`, from what the default profile now uses.
fn summary(dir: &Path, api: &Api) -> Result<String, InitError> {
    let profile = api.call("GET", "/1.0/profiles/default", None)?;
    let mut out = format!("hutch is initialised in {}:", dir.display());
    let devices = profile["devices"].as_object().cloned().unwrap_or_default();
    let root = devices
        .values()
        .find(|d| d["type"] == "disk" && d["path"] == "/");
    if let Some(pool) = root.and_then(|d| d["pool"].as_str()) {
        let driver = api
            .get(&format!("/1.0/storage-pools/{pool}"))?
            .and_then(|p| p["driver"].as_str().map(String::from))
            .unwrap_or_else(|| "missing".into());
        out.push_str(&format!(" storage pool {pool:?} ({driver}),"));
    }
    for net in devices
        .values()
        .filter(|d| d["type"] == "nic")
        .filter_map(|d| d["network"].as_str())
    {
        let address = api
            .get(&format!("/1.0/networks/{net}"))?
            .and_then(|n| n["config"]["ipv4.address"].as_str().map(String::from))
            .unwrap_or_default();
        out.push_str(&format!(" network {net:?} ({address}),"));
    }
    out.push_str(" profile \"default\"");
    Ok(out)
}

/// btrfs needs its tools and the kernel's support.
fn btrfs_available() -> bool {
    let tools = std::process::Command::new("mkfs.btrfs")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let kernel = std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("btrfs"))
        || Path::new("/sys/module/btrfs").exists()
        || std::process::Command::new("modprobe")
            .arg("btrfs")
            .status()
            .is_ok_and(|s| s.success());
    tools && kernel
}
