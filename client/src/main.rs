//! hutch: the command-line client of hutchd, shaped like LXD's `lxc`. Each command group's
//! arguments and dispatch live in its module under `commands/`.

mod commands;
mod http;
mod output;

use clap::{Parser, Subcommand};

use commands::{config, exec, file, image, instance, network, operation, profile, storage};
use http::Client;

#[derive(Parser)]
#[command(name = "hutch", version, about = "Manage hutch system containers")]
struct Cli {
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
    /// Run a command in an instance.
    Exec(exec::ExecArgs),
    /// Attach to an instance's console, or show its log.
    Console(exec::ConsoleArgs),
    /// Transfer files.
    #[command(subcommand)]
    File(file::Cmd),
    /// Instance and server configuration.
    #[command(subcommand)]
    Config(config::Cmd),
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
    /// Background operations.
    #[command(subcommand)]
    Operation(operation::Cmd),
}

/// Runs the command; returns the process's exit code.
fn run(cli: Cli) -> anyhow::Result<i32> {
    let c = Client::new();
    match cli.command {
        Cmd::Instance(cmd) => instance::run(&c, cmd)?,
        Cmd::Publish(a) => image::publish(&c, &a)?,
        Cmd::Exec(a) => return exec::exec(&c, &a),
        Cmd::Console(a) => exec::console(&c, &a)?,
        Cmd::File(cmd) => file::run(&c, cmd)?,
        Cmd::Config(cmd) => config::run(&c, cmd)?,
        Cmd::Profile(cmd) => profile::run(&c, cmd)?,
        Cmd::Network(cmd) => network::run(&c, cmd)?,
        Cmd::Image(cmd) => image::run(&c, cmd)?,
        Cmd::Storage(cmd) => storage::run(&c, cmd)?,
        Cmd::Operation(cmd) => operation::run(&c, cmd)?,
    }
    Ok(0)
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One clear line: the error and its causes.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("Error: {}", msg.join(": "));
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

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
        ] {
            assert!(Cli::try_parse_from(args).is_ok(), "{args:?}");
        }
    }
}
