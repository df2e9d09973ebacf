//! hutchd: the hutch daemon. Today it carries the runtime's hidden modes (the per-container
//! monitor and the exec helper) and developer subcommands that drive the runtime directly;
//! the REST API arrives with the daemon issue.

mod dev;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive one container through the runtime, without the API (developer tool).
    #[command(subcommand)]
    Container(dev::ContainerCommand),
}

fn main() -> anyhow::Result<()> {
    // The hidden modes run before anything else: they must stay single-threaded.
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.len() == 3 {
        let dir = Path::new(&args[2]);
        if args[1] == "__monitor" {
            hutch_runtime::monitor_main(dir);
        }
        if args[1] == "__exec" {
            hutch_runtime::exec_main(dir);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Container(cmd) => {
            let code = dev::run(&cli.dir, cmd)?;
            std::process::exit(code)
        }
    }
}
