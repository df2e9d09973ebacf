//! hutchd: the hutch daemon. Serves LXD's `/1.0` REST API on `$HUTCH_DIR/unix.socket`,
//! and is also re-executed in two hidden modes: the per-container monitor and the exec
//! helper.

mod api;
mod dev;
mod engine;
mod error;
mod events;
mod layout;
mod logging;
mod operations;
mod serve;

// The daemon's state and its database belong to the engine; these names are shortcuts.
use engine::{daemon, db};

use std::ffi::OsString;
use std::path::{Path, PathBuf};

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
    /// Set up the state directory with working defaults.
    Init {
        /// Do not ask anything (the only mode for now).
        #[arg(long)]
        auto: bool,
        /// Storage driver of the default pool: btrfs (on a loop file) or dir.
        #[arg(long)]
        storage_backend: Option<String>,
        /// Managed bridge to create and put in the default profile (`none`: no network).
        #[arg(long, default_value = "hutchbr0")]
        network_bridge: String,
    },
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

/// An error and its causes on one line.
pub use crate::error::chain;

fn main() -> anyhow::Result<()> {
    // The hidden modes run before anything else: they must stay single-threaded.
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.len() == 3 || args.len() == 4 {
        let dir = Path::new(&args[2]);
        if args[1] == "__monitor" {
            hutch_runtime::monitor_main(dir);
        }
        if args[1] == "__exec" {
            let born = args
                .get(3)
                .is_some_and(|a| a == hutch_runtime::BORN_IN_CGROUP2);
            hutch_runtime::exec_main(dir, born);
        }
        if args[1] == "__proxy" {
            hutch_network::proxy::proxy_main(dir);
        }
        if args[1] == "__nic-plug" {
            engine::devices::nic_plug_main(dir);
        }
    }
    let cli = Cli::parse();
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
    std::fs::create_dir_all(&cli.dir).with_context(|| format!("create {}", cli.dir.display()))?;
    // One daemon per state directory: a second would take the socket and undo the first's
    // work in flight. Held until the process exits.
    let _lock = match cli.command {
        None | Some(Command::Init { .. }) => Some(layout::lock_state_dir(&cli.dir)?),
        Some(Command::Container(_)) => None,
    };
    match cli.command {
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve::serve(&cli.dir, hutchd, events)),
        Some(Command::Init {
            storage_backend,
            network_bridge,
            ..
        }) => serve::init_auto(&cli.dir, hutchd, events, storage_backend, &network_bridge),
        Some(Command::Container(cmd)) => {
            let code = dev::run(&cli.dir, cmd)?;
            std::process::exit(code)
        }
    }
}
