//! hutch: the command-line client of hutchd, shaped like LXD's `lxc`. Each command group's
//! arguments and dispatch live in its module under `commands/`.

mod commands;
mod config;
mod http;
mod interrupt;
mod output;
mod progress;
mod stack;
mod tls;

use clap::{CommandFactory, Parser, Subcommand};

use commands::{
    alias, cluster, config as config_cmd, exec, export, file, image, import, instance, misc,
    monitor, network, operation, profile, query, remote, stack as stack_cmd, storage, top,
};

#[derive(Parser)]
#[command(name = "hutch", version, about = "Manage hutch system containers")]
struct Cli {
    /// Don't show progress information.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Instance(instance::Cmd),
    /// Make an image of an instance or of a snapshot (NAME[/SNAPSHOT]), with properties
    /// given as key=value.
    Publish(image::PublishArgs),
    /// Export an instance as a backup tarball (LXD's layout).
    Export(export::ExportArgs),
    /// Import a backup of an instance (from `hutch export` or `lxc export`).
    Import(import::ImportArgs),
    /// Run a command in an instance.
    Exec(exec::ExecArgs),
    /// Attach to an instance's console, or show its log.
    Console(exec::ConsoleArgs),
    /// Transfer files.
    #[command(subcommand)]
    File(file::Cmd),
    /// Instance and server configuration.
    #[command(subcommand)]
    Config(config_cmd::Cmd),
    /// Profiles.
    #[command(subcommand)]
    Profile(profile::Cmd),
    /// Managed networks (bridges with DHCP, DNS and NAT).
    #[command(subcommand)]
    Network(network::Cmd),
    /// Images.
    #[command(subcommand)]
    Image(image::Cmd),
    /// Storage pools and custom volumes.
    #[command(subcommand)]
    Storage(storage::Cmd),
    /// List, show and delete background operations.
    #[command(subcommand)]
    Operation(operation::Cmd),
    /// Send a raw query to hutchd.
    Query(query::QueryArgs),
    /// Monitor the server's events.
    Monitor(monitor::MonitorArgs),
    /// Show the running instances' CPU, memory, disk and network use, live.
    Top(top::TopArgs),
    /// Print a one-time login link to the local server's web UI (and open it).
    Ui(commands::ui::UiArgs),
    /// Show local and remote versions.
    Version,
    /// Manage warnings.
    #[command(subcommand)]
    Warning(misc::WarningCmd),
    /// Manage projects (hutchd has the default project only).
    #[command(subcommand)]
    Project(misc::ProjectCmd),
    /// Manage command aliases.
    #[command(subcommand)]
    Alias(alias::Cmd),
    /// The cluster this server is in and its members.
    #[command(subcommand)]
    Cluster(cluster::Cmd),
    /// Manage the list of remote servers (image servers, other hutchd sockets).
    #[command(subcommand)]
    Remote(remote::Cmd),
    #[command(flatten)]
    Stack(stack_cmd::Cmd),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs the command; returns the process's exit code.
fn run(cli: Cli) -> anyhow::Result<i32> {
    output::set_quiet(cli.quiet);
    let c = remote::default_client();
    match cli.command {
        Cmd::Instance(cmd) => instance::run(&c, cmd)?,
        Cmd::Publish(a) => image::publish(&c, &a)?,
        Cmd::Export(a) => export::export(&c, &a)?,
        Cmd::Import(a) => import::import(&c, &a)?,
        Cmd::Exec(mut a) => {
            let (c, name) = remote::split(&c, &a.name)?;
            a.name = name;
            return exec::exec(&c, &a);
        }
        Cmd::Console(mut a) => {
            let (c, name) = remote::split(&c, &a.name)?;
            a.name = name;
            exec::console(&c, &a)?
        }
        Cmd::File(cmd) => file::run(&c, cmd)?,
        Cmd::Config(cmd) => config_cmd::run(&c, cmd)?,
        Cmd::Profile(cmd) => profile::run(&c, cmd)?,
        Cmd::Network(cmd) => network::run(&c, cmd)?,
        Cmd::Image(cmd) => image::run(&c, cmd)?,
        Cmd::Storage(cmd) => storage::run(&c, cmd)?,
        Cmd::Operation(cmd) => operation::run(&c, cmd)?,
        Cmd::Query(a) => query::query(&c, &a)?,
        Cmd::Monitor(a) => {
            let (c, _) = remote::split(&c, a.remote.as_deref().unwrap_or(""))?;
            monitor::monitor(&c, &a)?
        }
        Cmd::Top(a) => top::top(&c, &a)?,
        Cmd::Ui(a) => commands::ui::ui(&a)?,
        Cmd::Version => misc::version(&c)?,
        Cmd::Warning(cmd) => misc::warning(&c, cmd)?,
        Cmd::Project(cmd) => misc::project(&c, cmd)?,
        Cmd::Alias(cmd) => alias::run(cmd)?,
        Cmd::Remote(cmd) => remote::run(cmd)?,
        Cmd::Cluster(cmd) => cluster::run(&c, cmd)?,
        Cmd::Stack(cmd) => stack_cmd::run(&c, cmd)?,
        Cmd::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "hutch", &mut std::io::stdout())
        }
    }
    Ok(0)
}

/// The command line with a user alias (or lxc's built-in `shell`) expanded, as lxc
/// expands them before anything else; once only, so an alias may name a built-in.
/// An alias whose target is an absolute path runs that program instead.
fn expand_aliases(args: Vec<String>) -> anyhow::Result<Vec<String>> {
    // lxc ignores a config it cannot read here; the alias commands report it.
    let user = config::aliases().unwrap_or_default();
    let Some(expanded) = alias::expand(&user, &args)? else {
        return Ok(args);
    };
    if expanded[0].starts_with('/') {
        let status = std::process::Command::new(&expanded[0])
            .args(&expanded[1..])
            .status()
            .map_err(|e| anyhow::anyhow!("Processing aliases failed: {e}"))?;
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(expanded)
}

/// Prints an error as lxc does and exits 1.
fn fail(e: &anyhow::Error) -> ! {
    if e.downcast_ref::<interrupt::Interrupted>().is_some() {
        // The wait said so already.
        std::process::exit(interrupt::EXIT_STATUS);
    }
    let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    eprintln!("Error: {}", msg.join(": "));
    std::process::exit(1);
}

fn main() {
    let args = match expand_aliases(std::env::args().collect()) {
        Ok(a) => a,
        Err(e) => fail(&e),
    };
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => e.exit(),
                // A group without its subcommand shows its usage, as lxc does.
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    print!("{}", e.render());
                    std::process::exit(0);
                }
                _ => {}
            }
            // One `Error: ` line as lxc prints, then clap's usage hint.
            let text = e.render().to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            eprint!("Error: {text}");
            std::process::exit(1);
        }
    };
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_without_an_instance_parses() {
        for args in [
            &["hutch", "config", "get", "core.https_address"][..],
            &["hutch", "config", "get", "c1", "limits.memory"],
            &["hutch", "config", "set", "core.https_address", ":8443"],
            &["hutch", "config", "unset", "core.https_address"],
            &["hutch", "config", "show"],
            &["hutch", "config", "show", "c1", "--expanded"],
            &["hutch", "stop", "c1", "--force"],
            &["hutch", "publish", "c1", "--alias", "x", "os=busybox"],
            &["hutch", "console", "c1", "--show-log"],
            &[
                "hutch",
                "list",
                "web",
                "status=running",
                "type=container",
                "-c",
                "nsN",
                "-f",
                "compact",
            ],
            &["hutch", "ls", "--fast", "--format", "csv"],
            &["hutch", "start", "--all"],
            &["hutch", "stop", "--all", "--force", "--timeout", "5"],
            &["hutch", "restart", "--all"],
            &["hutch", "delete", "-i", "c1", "c2/snap0"],
            &["hutch", "rm", "-f", "c1"],
            &["hutch", "info"],
            &["hutch", "info", "--resources"],
            &["hutch", "info", "c1", "--show-log"],
            &[
                "hutch",
                "query",
                "-X",
                "POST",
                "-d",
                "{}",
                "--wait",
                "--raw",
                "/1.0/instances",
            ],
            &[
                "hutch",
                "monitor",
                "--type",
                "lifecycle",
                "--type",
                "logging",
                "-f",
                "json",
            ],
            &["hutch", "operation", "show", "abc"],
            &["hutch", "operation", "cancel", "abc"],
            &["hutch", "version"],
            &["hutch", "warning", "list", "-a", "-c", "ut", "-f", "yaml"],
            &["hutch", "warning", "show", "abc"],
            &["hutch", "project", "list", "-f", "json"],
            &["hutch", "project", "show", "default"],
            &["hutch", "alias", "add", "ll", "list -c ns"],
            &["hutch", "alias", "ls", "-f", "csv"],
            &["hutch", "alias", "rename", "ll", "l2"],
            &["hutch", "alias", "rm", "l2"],
            &["hutch", "completion", "bash"],
            &[
                "hutch",
                "remote",
                "add",
                "s",
                "https://x",
                "--protocol",
                "simplestreams",
                "--public",
            ],
            &["hutch", "remote", "ls", "-f", "yaml"],
            &["hutch", "remote", "rm", "s"],
            &["hutch", "remote", "mv", "s", "t"],
            &["hutch", "remote", "set-url", "s", "https://y"],
            &["hutch", "remote", "switch", "s"],
            &["hutch", "remote", "get-default"],
            &["hutch", "launch", "images:debian/12", "c1"],
            &["hutch", "image", "list", "images:", "debian"],
            &[
                "hutch",
                "image",
                "copy",
                "images:alpine/edge",
                "local:",
                "--alias",
                "a",
                "--auto-update",
                "--copy-aliases",
            ],
            &["hutch", "-q", "launch", "bb", "c1"],
            &[
                "hutch",
                "remote",
                "add",
                "h1",
                "https://h",
                "--accept-certificate",
                "--password",
                "p",
            ],
            &[
                "hutch", "copy", "c1", "h2:", "--mode", "relay", "-s", "p", "-p", "x", "-c", "k=v",
            ],
            &[
                "hutch",
                "copy",
                "c1/snap0",
                "h2:c2",
                "--instance-only",
                "--refresh",
            ],
            &["hutch", "move", "c1", "h2:c1", "--stateless"],
            &["hutch", "config", "trust", "add", "h1:", "--name", "n"],
            &["hutch", "config", "trust", "add", "h1:", "c.crt"],
            &[
                "hutch",
                "config",
                "trust",
                "list-tokens",
                "h1:",
                "-f",
                "csv",
            ],
            &["hutch", "config", "trust", "revoke-token", "h1:n"],
            &["hutch", "config", "trust", "rm", "h1:abc"],
            &["hutch", "monitor", "h1:", "--type", "lifecycle"],
            &["hutch", "ui", "--no-open", "--address", "127.0.0.1:9444"],
            &["hutch", "profile", "list", "h1:"],
            &["hutch", "operation", "list", "h1:"],
            &["hutch", "launch", "bb", "c1", "--quiet"],
            &["hutch", "apply", "-f", "s.yaml", "--dry-run", "--replace"],
            &["hutch", "apply", "--remove-orphans"],
            &["hutch", "diff", "-f", "s.yaml"],
            &["hutch", "down", "-f", "s.yaml", "--volumes"],
            &["hutch", "ps", "-f", "s.yaml", "--format", "csv"],
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
    }
}
