//! hutchd: the hutch daemon. Serves LXD's `/1.0` REST API on `$HUTCH_DIR/unix.socket`.
//! What it spawns for containers (monitors, exec helpers, proxies, device and NIC plugs)
//! is `hutchd-helper`, a binary of its own beside it.

mod api;
mod auth;
mod dev;
mod engine;
mod error;
mod events;
mod https;
mod init;
mod layout;
mod listener;
mod logging;
mod operations;
mod recover;
mod serve;
mod shutdown;
mod ui;

// The daemon's state and its database belong to the engine; these names are shortcuts.
use engine::{daemon, db};

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "hutchd", version, about = "The hutch system-container daemon")]
struct Cli {
    /// State directory.
    #[arg(
        long,
        env = "HUTCH_DIR",
        default_value = "/var/lib/hutch",
        global = true
    )]
    dir: PathBuf,
    /// Log what the daemon does.
    #[arg(long, global = true)]
    verbose: bool,
    /// Log everything.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Set up storage, network and the default profile, as `lxd init`: with working
    /// defaults (--auto) or from LXD's preseed YAML on stdin (--preseed). Goes through the
    /// running daemon's API when one runs.
    Init(init::InitArgs),
    /// Rebuild the database's rows from what the storage pools hold (after the database
    /// was lost): pools, instances with their snapshots, custom volumes. Goes through the
    /// running daemon's API when one runs.
    Recover(recover::RecoverArgs),
    /// Stop every container, highest boot.stop.priority first, and have the daemon exit,
    /// as `lxd shutdown`: for host shutdown (SIGPWR to hutchd does the same). SIGTERM, as
    /// a restart or upgrade sends, stops the daemon alone.
    Shutdown(shutdown::ShutdownArgs),
    /// Drive one container through the runtime, without the API (developer tool).
    #[command(subcommand)]
    Container(dev::ContainerCommand),
}

/// The current time as LXD writes it (RFC 3339, UTC).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix time `t` as LXD writes times (RFC 3339, UTC).
pub fn rfc3339_of(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// An error and its causes on one line.
pub use crate::error::chain;

/// glibc gives threads that allocate at the same time arenas of their own, up to eight per
/// core, and keeps what was freed in each: listings of 1,000 instances (built on every core)
/// left about 10 MiB behind in them. As many arenas as cores (unless `MALLOC_ARENA_MAX` says
/// otherwise) kept the daemon's RSS after the same listings at 35-36 MiB instead of 45-46.
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    // SAFETY: mallopt sets one of glibc's tunables, before the runtime's threads start.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, i32::try_from(cores).unwrap_or(8)) };
}

fn main() -> anyhow::Result<()> {
    // rsync's transport for a migration (`-e "hutchd __netcat SOCKET"`); rsync appends
    // its own arguments to this one's: any count is fine. Before anything else, as it
    // must stay single-threaded.
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.len() >= 3 && args[1] == "__netcat" {
        hutch_runtime::fd_limit::restore();
        engine::migration::netcat_main(&args[2]);
    }
    let cli = Cli::parse();
    if cli.command.is_none() {
        // Before any thread: it records the original limit in the environment.
        hutch_runtime::fd_limit::raise();
    }
    let level = if cli.debug {
        "debug"
    } else if cli.verbose {
        "info"
    } else {
        "warn"
    };
    let events = events::EventHub::new();
    logging::init(level, events.clone());
    let hutchd = std::env::current_exe().context("find the hutchd binary")?;
    match cli.command {
        None => {
            // Containers' roots must be able to traverse every directory down to theirs.
            layout::prepare_state_dir(&cli.dir)?;
            layout::check_helper(&hutchd)?;
            // One daemon per state directory: a second would take the socket and undo the
            // first's work in flight. Held until the process exits.
            let _lock = layout::lock_state_dir(&cli.dir)?;
            limit_malloc_arenas();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve::serve(&cli.dir, hutchd, events))
        }
        Some(Command::Init(args)) => {
            std::fs::create_dir_all(&cli.dir)
                .with_context(|| format!("create {}", cli.dir.display()))?;
            if let Err(e) = init::run(&cli.dir, hutchd, events, args) {
                eprintln!("Error: {}", chain(&e));
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Recover(args)) => match recover::run(&cli.dir, hutchd, events, args) {
            Ok(refused) => std::process::exit(i32::from(refused)),
            Err(e) => {
                eprintln!("Error: {}", chain(&e));
                std::process::exit(1);
            }
        },
        Some(Command::Shutdown(args)) => {
            if let Err(e) = shutdown::run(&cli.dir, hutchd, events, args) {
                eprintln!("Error: {}", chain(&e));
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Container(cmd)) => {
            std::fs::create_dir_all(&cli.dir)
                .with_context(|| format!("create {}", cli.dir.display()))?;
            let code = dev::run(&cli.dir, cmd)?;
            std::process::exit(code)
        }
    }
}
