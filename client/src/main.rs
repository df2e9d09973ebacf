//! hutch: the command-line client of hutchd, shaped like LXD's `lxc`.

mod commands;
mod http;
mod output;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use commands::{config, exec, file, image, instance, network, operation, profile, storage};
use http::Client;
use output::Format;

#[derive(Parser)]
#[command(name = "hutch", version, about = "Manage hutch system containers")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create and start an instance from an image.
    Launch(instance::CreateArgs),
    /// Create an instance from an image.
    Init(instance::CreateArgs),
    /// Start instances.
    Start { names: Vec<String> },
    /// Stop instances.
    Stop {
        names: Vec<String>,
        #[arg(short, long)]
        force: bool,
        #[arg(long, default_value_t = -1)]
        timeout: i64,
    },
    /// Restart instances.
    Restart {
        names: Vec<String>,
        #[arg(short, long)]
        force: bool,
        #[arg(long, default_value_t = -1)]
        timeout: i64,
    },
    /// Freeze instances.
    Pause { names: Vec<String> },
    /// Delete instances.
    Delete {
        names: Vec<String>,
        #[arg(short, long)]
        force: bool,
    },
    /// Snapshot an instance.
    Snapshot {
        name: String,
        snapshot: Option<String>,
    },
    /// Restore an instance from one of its snapshots.
    Restore { name: String, snapshot: String },
    /// Make an image of an instance or of a snapshot (NAME[/SNAPSHOT]), with properties
    /// given as key=value.
    Publish {
        source: String,
        properties: Vec<String>,
        /// Alias of the new image (repeatable); an alias of that name moves to it.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Make the image public.
        #[arg(long)]
        public: bool,
        /// Stop a running instance for the time of publishing.
        #[arg(short, long)]
        force: bool,
        /// none, gzip (the default), xz or zstd.
        #[arg(long)]
        compression: Option<String>,
    },
    /// Copy an instance or a snapshot (SOURCE[/SNAPSHOT]) to a new instance.
    Copy {
        source: String,
        name: String,
        /// Leave the source's snapshots behind.
        #[arg(long)]
        instance_only: bool,
    },
    /// Rename an instance, or move it to another storage pool (`--storage`).
    #[command(alias = "move")]
    Rename {
        from: String,
        to: Option<String>,
        /// Move the instance's volumes to this storage pool (it must be stopped).
        #[arg(short, long)]
        storage: Option<String>,
    },
    /// List instances.
    List {
        filter: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
        #[arg(short, long, default_value = "ns46tS")]
        columns: String,
    },
    /// Show an instance's state and resources.
    Info { name: String },
    /// Run a command in an instance.
    Exec(exec::ExecArgs),
    /// Show an instance's console log.
    Console {
        name: String,
        #[arg(long)]
        show_log: bool,
    },
    /// Transfer files.
    #[command(subcommand)]
    File(FileCmd),
    /// Instance configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Managed networks (bridges with DHCP, DNS and NAT).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Storage pools and custom volumes.
    #[command(subcommand)]
    Storage(StorageCmd),
    /// Background operations.
    #[command(subcommand)]
    Operation(OperationCmd),
}

#[derive(Subcommand)]
enum FileCmd {
    /// Copy local files into an instance (DEST is INSTANCE/PATH).
    Push {
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
        #[arg(short, long)]
        recursive: bool,
        #[arg(short = 'p', long)]
        create_dirs: bool,
        #[arg(long)]
        uid: Option<u32>,
        #[arg(long)]
        gid: Option<u32>,
        /// Octal mode, e.g. 0644.
        #[arg(long)]
        mode: Option<String>,
    },
    /// Copy files out of an instance (sources are INSTANCE/PATH).
    Pull {
        #[arg(required = true, num_args = 2..)]
        paths: Vec<String>,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Delete files in an instance.
    Delete { targets: Vec<String> },
}

#[derive(Subcommand)]
enum ConfigCmd {
    Get {
        name: String,
        key: String,
    },
    Set {
        name: String,
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    Unset {
        name: String,
        key: String,
    },
    Show {
        name: String,
        #[arg(long)]
        expanded: bool,
    },
    /// Replace the configuration with YAML from stdin.
    Edit {
        name: String,
    },
    #[command(subcommand)]
    Device(DeviceCmd),
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Add a device: NAME DEVICE TYPE [KEY=VALUE...].
    Add {
        name: String,
        device: String,
        kind: String,
        props: Vec<String>,
    },
    Remove {
        name: String,
        device: String,
    },
    /// Set device keys: NAME DEVICE KEY=VALUE... (a profile's device is overridden).
    Set {
        name: String,
        device: String,
        #[arg(required = true)]
        props: Vec<String>,
    },
    List {
        name: String,
    },
}

#[derive(Subcommand)]
enum ProfileCmd {
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    Show {
        name: String,
    },
    Create {
        name: String,
    },
    Delete {
        name: String,
    },
    Get {
        name: String,
        key: String,
    },
    Set {
        name: String,
        key: String,
        value: String,
    },
    Unset {
        name: String,
        key: String,
    },
    Rename {
        name: String,
        new: String,
    },
    /// Replace the profile with YAML from stdin.
    Edit {
        name: String,
    },
}

#[derive(Subcommand)]
enum NetworkCmd {
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    Show {
        name: String,
    },
    /// Create a bridge: NAME [KEY=VALUE...] (ipv4.address defaults to auto).
    Create {
        name: String,
        config: Vec<String>,
    },
    Delete {
        name: String,
    },
    Get {
        name: String,
        key: String,
    },
    /// Set config keys: NAME KEY=VALUE...
    Set {
        name: String,
        #[arg(required = true)]
        config: Vec<String>,
    },
    Unset {
        name: String,
        key: String,
    },
    Rename {
        name: String,
        new: String,
    },
    /// Replace the network's config with YAML from stdin.
    Edit {
        name: String,
    },
    /// The bridge's addresses, counters and leases.
    Info {
        name: String,
    },
    ListLeases {
        name: String,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Give INSTANCE a NIC on NETWORK: NETWORK INSTANCE [DEVICE [INTERFACE]].
    Attach {
        network: String,
        instance: String,
        device: Option<String>,
        interface: Option<String>,
    },
    /// Remove INSTANCE's NICs on NETWORK.
    Detach {
        network: String,
        instance: String,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Import a unified image tarball.
    Import {
        file: PathBuf,
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(long)]
        public: bool,
    },
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    Info {
        name: String,
    },
    Delete {
        names: Vec<String>,
    },
    Export {
        name: String,
        dest: PathBuf,
    },
    #[command(subcommand)]
    Alias(AliasCmd),
}

#[derive(Subcommand)]
enum AliasCmd {
    Create {
        alias: String,
        target: String,
    },
    Delete {
        alias: String,
    },
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
}

#[derive(Subcommand)]
enum StorageCmd {
    /// List storage pools.
    List,
    /// Space used and available on a pool, and what uses it.
    Info { pool: String },
    /// Create a pool: NAME DRIVER [KEY=VALUE...] (dir, btrfs, zfs; source=, size=).
    Create {
        pool: String,
        driver: String,
        config: Vec<String>,
    },
    /// Delete an unused pool.
    Delete { pool: String },
    #[command(subcommand)]
    Volume(VolumeCmd),
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// Create a custom volume (KEY=VALUE config, e.g. size=1GiB).
    Create {
        pool: String,
        name: String,
        config: Vec<String>,
    },
    List {
        pool: String,
    },
    Show {
        pool: String,
        name: String,
    },
    /// Space used by a volume: POOL [TYPE/]NAME (type: custom, container or image).
    Info {
        pool: String,
        name: String,
    },
    Delete {
        pool: String,
        name: String,
    },
    /// Attach a custom volume to an instance at PATH (as a disk device named after it).
    Attach {
        pool: String,
        name: String,
        instance: String,
        path: String,
    },
    /// Detach a custom volume from an instance.
    Detach {
        pool: String,
        name: String,
        instance: String,
    },
    /// Snapshot a custom volume.
    Snapshot {
        pool: String,
        name: String,
        snapshot: Option<String>,
    },
    /// Copy a custom volume: POOL/NAME[/SNAPSHOT] POOL/NEW (its snapshots too, unless
    /// --volume-only).
    Copy {
        source: String,
        target: String,
        #[arg(long)]
        volume_only: bool,
    },
    /// Rename a custom volume, or move it to another pool: POOL/NAME POOL/NEW.
    #[command(alias = "rename")]
    Move {
        source: String,
        target: String,
    },
    /// Set config keys of a custom volume (KEY=VALUE; size=1GiB, or size= to lift it).
    Set {
        pool: String,
        name: String,
        config: Vec<String>,
    },
}

#[derive(Subcommand)]
enum OperationCmd {
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let c = Client::new();
    match cli.command {
        Cmd::Launch(a) => instance::create(&c, &a, true)?,
        Cmd::Init(a) => instance::create(&c, &a, false)?,
        Cmd::Start { names } => instance::start(&c, &names)?,
        Cmd::Stop {
            names,
            force,
            timeout,
        } => names
            .iter()
            .try_for_each(|n| instance::state(&c, n, "stop", timeout, force))?,
        Cmd::Restart {
            names,
            force,
            timeout,
        } => names
            .iter()
            .try_for_each(|n| instance::state(&c, n, "restart", timeout, force))?,
        Cmd::Pause { names } => names
            .iter()
            .try_for_each(|n| instance::state(&c, n, "freeze", -1, false))?,
        Cmd::Delete { names, force } => instance::delete(&c, &names, force)?,
        Cmd::Rename { from, to, storage } => {
            instance::rename(&c, &from, to.as_deref(), storage.as_deref())?
        }
        Cmd::Snapshot { name, snapshot } => instance::snapshot(&c, &name, snapshot.as_deref())?,
        Cmd::Restore { name, snapshot } => instance::restore(&c, &name, &snapshot)?,
        Cmd::Publish {
            source,
            properties,
            aliases,
            public,
            force,
            compression,
        } => image::publish(
            &c,
            &image::PublishArgs {
                source: &source,
                properties: &properties,
                aliases: &aliases,
                public,
                force,
                compression: compression.as_deref(),
            },
        )?,
        Cmd::Copy {
            source,
            name,
            instance_only,
        } => instance::copy(&c, &source, &name, instance_only)?,
        Cmd::List {
            filter,
            format,
            columns,
        } => instance::list(&c, filter.as_deref(), format, &columns)?,
        Cmd::Info { name } => instance::info(&c, &name)?,
        Cmd::Exec(a) => return exec::exec(&c, &a),
        Cmd::Console {
            name,
            show_log: true,
        } => exec::console_log(&c, &name)?,
        Cmd::Console {
            name,
            show_log: false,
        } => exec::console_attach(&c, &name)?,
        Cmd::File(FileCmd::Push {
            mut paths,
            recursive,
            create_dirs,
            uid,
            gid,
            mode,
        }) => {
            let dest = paths.pop().expect("clap requires two paths");
            let mode = mode
                .map(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8))
                .transpose()
                .map_err(|_| anyhow::anyhow!("--mode must be octal"))?;
            if recursive && (uid.is_some() || gid.is_some() || mode.is_some()) {
                anyhow::bail!("--uid, --gid and --mode cannot be used with -r");
            }
            let sources: Vec<PathBuf> = paths.into_iter().map(PathBuf::from).collect();
            file::push(
                &c,
                &sources,
                &dest,
                &file::PushOptions {
                    recursive,
                    create_dirs,
                    uid,
                    gid,
                    mode,
                },
            )?
        }
        Cmd::File(FileCmd::Pull {
            mut paths,
            recursive,
        }) => {
            let dest = PathBuf::from(paths.pop().expect("clap requires two paths"));
            file::pull(&c, &paths, &dest, recursive)?
        }
        Cmd::File(FileCmd::Delete { targets }) => file::delete(&c, &targets)?,
        Cmd::Config(cmd) => match cmd {
            ConfigCmd::Get { name, key } => config::get(&c, &name, &key)?,
            ConfigCmd::Set { name, pairs } => config::set(&c, &name, &pairs)?,
            ConfigCmd::Unset { name, key } => config::unset(&c, &name, &key)?,
            ConfigCmd::Show { name, expanded } => config::show(&c, &name, expanded)?,
            ConfigCmd::Edit { name } => config::edit(&c, &name)?,
            ConfigCmd::Device(DeviceCmd::Add {
                name,
                device,
                kind,
                props,
            }) => config::device_add(&c, &name, &device, &kind, &props)?,
            ConfigCmd::Device(DeviceCmd::Remove { name, device }) => {
                config::device_remove(&c, &name, &device)?
            }
            ConfigCmd::Device(DeviceCmd::List { name }) => config::device_list(&c, &name)?,
            ConfigCmd::Device(DeviceCmd::Set {
                name,
                device,
                props,
            }) => config::device_set(&c, &name, &device, &props)?,
        },
        Cmd::Network(cmd) => match cmd {
            NetworkCmd::List { format } => network::list(&c, format)?,
            NetworkCmd::Show { name } => network::show(&c, &name)?,
            NetworkCmd::Create { name, config } => network::create(&c, &name, &config)?,
            NetworkCmd::Delete { name } => network::delete(&c, &name)?,
            NetworkCmd::Get { name, key } => network::get(&c, &name, &key)?,
            NetworkCmd::Set { name, config } => network::set(&c, &name, &config)?,
            NetworkCmd::Unset { name, key } => network::unset(&c, &name, &key)?,
            NetworkCmd::Rename { name, new } => network::rename(&c, &name, &new)?,
            NetworkCmd::Edit { name } => network::edit(&c, &name)?,
            NetworkCmd::Info { name } => network::info(&c, &name)?,
            NetworkCmd::ListLeases { name, format } => network::list_leases(&c, &name, format)?,
            NetworkCmd::Attach {
                network: n,
                instance: i,
                device,
                interface,
            } => network::attach(&c, &n, &i, device.as_deref(), interface.as_deref())?,
            NetworkCmd::Detach {
                network: n,
                instance: i,
            } => network::detach(&c, &n, &i)?,
        },
        Cmd::Profile(cmd) => match cmd {
            ProfileCmd::List { format } => profile::list(&c, format)?,
            ProfileCmd::Show { name } => profile::show(&c, &name)?,
            ProfileCmd::Create { name } => profile::create(&c, &name)?,
            ProfileCmd::Delete { name } => profile::delete(&c, &name)?,
            ProfileCmd::Get { name, key } => profile::get(&c, &name, &key)?,
            ProfileCmd::Set { name, key, value } => profile::set(&c, &name, &key, &value)?,
            ProfileCmd::Unset { name, key } => profile::unset(&c, &name, &key)?,
            ProfileCmd::Rename { name, new } => profile::rename(&c, &name, &new)?,
            ProfileCmd::Edit { name } => profile::edit(&c, &name)?,
        },
        Cmd::Image(cmd) => match cmd {
            ImageCmd::Import {
                file,
                aliases,
                public,
            } => image::import(&c, &file, &aliases, public)?,
            ImageCmd::List { format } => image::list(&c, format)?,
            ImageCmd::Info { name } => image::info(&c, &name)?,
            ImageCmd::Delete { names } => image::delete(&c, &names)?,
            ImageCmd::Export { name, dest } => image::export(&c, &name, &dest)?,
            ImageCmd::Alias(AliasCmd::Create { alias, target }) => {
                image::alias_create(&c, &alias, &target)?
            }
            ImageCmd::Alias(AliasCmd::Delete { alias }) => image::alias_delete(&c, &alias)?,
            ImageCmd::Alias(AliasCmd::List { format }) => image::alias_list(&c, format)?,
        },
        Cmd::Operation(OperationCmd::List { format }) => operation::list(&c, format)?,
        Cmd::Storage(cmd) => match cmd {
            StorageCmd::List => storage::list(&c)?,
            StorageCmd::Info { pool } => storage::info(&c, &pool)?,
            StorageCmd::Create {
                pool,
                driver,
                config,
            } => storage::create_pool(&c, &pool, &driver, &config)?,
            StorageCmd::Delete { pool } => storage::delete_pool(&c, &pool)?,
            StorageCmd::Volume(VolumeCmd::Info { pool, name }) => {
                storage::volume_info(&c, &pool, &name)?
            }
            StorageCmd::Volume(VolumeCmd::Create { pool, name, config }) => {
                storage::create(&c, &pool, &name, &config)?
            }
            StorageCmd::Volume(VolumeCmd::List { pool }) => storage::list_volumes(&c, &pool)?,
            StorageCmd::Volume(VolumeCmd::Show { pool, name }) => storage::show(&c, &pool, &name)?,
            StorageCmd::Volume(VolumeCmd::Delete { pool, name }) => {
                storage::delete(&c, &pool, &name)?
            }
            StorageCmd::Volume(VolumeCmd::Attach {
                pool,
                name,
                instance,
                path,
            }) => config::device_add(
                &c,
                &instance,
                &name,
                "disk",
                &[
                    format!("pool={pool}"),
                    format!("source={name}"),
                    format!("path={path}"),
                ],
            )?,
            StorageCmd::Volume(VolumeCmd::Detach { name, instance, .. }) => {
                config::device_remove(&c, &instance, &name)?
            }
            StorageCmd::Volume(VolumeCmd::Snapshot {
                pool,
                name,
                snapshot,
            }) => storage::snapshot(&c, &pool, &name, snapshot.as_deref())?,
            StorageCmd::Volume(VolumeCmd::Copy {
                source,
                target,
                volume_only,
            }) => storage::copy(&c, &source, &target, volume_only)?,
            StorageCmd::Volume(VolumeCmd::Move { source, target }) => {
                storage::move_volume(&c, &source, &target)?
            }
            StorageCmd::Volume(VolumeCmd::Set { pool, name, config }) => {
                storage::set(&c, &pool, &name, &config)?
            }
        },
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
