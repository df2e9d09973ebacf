//! `hutch image import|list|info|delete|export|alias`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::http::{encode, parse_envelope, Client};
use crate::output::{self, Format};

/// `hutch image ...`.
#[derive(Subcommand)]
pub enum Cmd {
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
pub enum AliasCmd {
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

/// Runs one `hutch image` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Import {
            file,
            aliases,
            public,
        } => import(c, &file, &aliases, public),
        Cmd::List { format } => list(c, format),
        Cmd::Info { name } => info(c, &name),
        Cmd::Delete { names } => delete(c, &names),
        Cmd::Export { name, dest } => export(c, &name, &dest),
        Cmd::Alias(AliasCmd::Create { alias, target }) => alias_create(c, &alias, &target),
        Cmd::Alias(AliasCmd::Delete { alias }) => alias_delete(c, &alias),
        Cmd::Alias(AliasCmd::List { format }) => alias_list(c, format),
    }
}

pub fn import(client: &Client, file: &Path, aliases: &[String], public: bool) -> Result<()> {
    let data = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let filename = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let headers = [
        ("Content-Type", "application/octet-stream".to_string()),
        ("X-LXD-filename", filename),
        ("X-LXD-public", if public { "1" } else { "0" }.to_string()),
    ];
    let raw = client.raw("POST", "/1.0/images", &headers, &data)?;
    let env = parse_envelope(&raw)?;
    let op = client.wait_op(&env)?;
    let fp = op["metadata"]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    point_aliases(client, aliases, &fp)?;
    println!("Image imported with fingerprint: {fp}");
    Ok(())
}

/// Points each of `aliases` at image `fp`: as lxc does, an alias of that name is replaced.
fn point_aliases(client: &Client, aliases: &[String], fp: &str) -> Result<()> {
    for a in aliases {
        let _ = client.request(
            "DELETE",
            &format!("/1.0/images/aliases/{}", encode(a)),
            None,
        );
        client.request(
            "POST",
            "/1.0/images/aliases",
            Some(&json!({"name": a, "target": fp, "description": ""})),
        )?;
    }
    Ok(())
}

/// `hutch publish`: make an image of an instance or of a snapshot (NAME[/SNAPSHOT]), with
/// properties given as key=value.
#[derive(Args)]
pub struct PublishArgs {
    pub source: String,
    pub properties: Vec<String>,
    /// Alias of the new image (repeatable); an alias of that name moves to it.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Make the image public.
    #[arg(long)]
    pub public: bool,
    /// Stop a running instance for the time of publishing.
    #[arg(short, long)]
    pub force: bool,
    /// none, gzip (the default), xz or zstd.
    #[arg(long)]
    pub compression: Option<String>,
}

/// `hutch publish NAME[/SNAPSHOT]`: as `lxc publish` does, a running instance is refused
/// unless `--force` stops it for the time of publishing.
pub fn publish(client: &Client, args: &PublishArgs) -> Result<()> {
    let mut properties = serde_json::Map::new();
    for p in &args.properties {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad key=value pair: {p}"))?;
        properties.insert(k.to_string(), v.into());
    }
    let snapshot = args.source.contains('/');
    let was_running = !snapshot && super::instance::status_of(client, &args.source)? != "Stopped";
    if was_running {
        if !args.force {
            anyhow::bail!(
                "The instance is currently running. Use --force to have it stopped and restarted"
            );
        }
        super::instance::state(client, &args.source, "stop", -1, true)?;
    }
    let req = json!({
        "source": {"type": if snapshot { "snapshot" } else { "instance" }, "name": args.source},
        "properties": properties,
        "public": args.public,
        "compression_algorithm": args.compression.as_deref().unwrap_or(""),
    });
    let published = client
        .request("POST", "/1.0/images", Some(&req))
        .and_then(|env| client.wait_op(&env));
    if was_running {
        super::instance::state(client, &args.source, "start", -1, false)?;
    }
    let fp = published?["metadata"]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    point_aliases(client, &args.aliases, &fp)?;
    println!("Instance published with fingerprint: {fp}");
    Ok(())
}

pub fn list(client: &Client, format: Format) -> Result<()> {
    let all = client.get("/1.0/images?recursion=1")?;
    let items = all.as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let aliases = i["aliases"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["name"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            vec![
                aliases,
                i["fingerprint"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(12)
                    .collect(),
                if i["public"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                }
                .into(),
                i["properties"]["description"].as_str().unwrap_or("").into(),
                i["architecture"].as_str().unwrap_or("").into(),
                format!("{:.2}MiB", i["size"].as_f64().unwrap_or(0.0) / 1048576.0),
            ]
        })
        .collect();
    let headers = [
        "ALIAS",
        "FINGERPRINT",
        "PUBLIC",
        "DESCRIPTION",
        "ARCHITECTURE",
        "SIZE",
    ]
    .map(String::from);
    print!(
        "{}",
        output::render(format, &headers, &rows, &Value::Array(items))?
    );
    Ok(())
}

pub fn info(client: &Client, name: &str) -> Result<()> {
    let fp = super::resolve_image(client, name)?;
    print!(
        "{}",
        serde_yaml::to_string(&client.get(&format!("/1.0/images/{fp}"))?)?
    );
    Ok(())
}

pub fn delete(client: &Client, names: &[String]) -> Result<()> {
    for n in names {
        let fp = super::resolve_image(client, n)?;
        client.run("DELETE", &format!("/1.0/images/{fp}"), None)?;
    }
    Ok(())
}

pub fn export(client: &Client, name: &str, dest: &Path) -> Result<()> {
    let fp = super::resolve_image(client, name)?;
    let raw = client.raw("GET", &format!("/1.0/images/{fp}/export"), &[], b"")?;
    if raw.status != 200 {
        parse_envelope(&raw)?;
    }
    let to = if dest.is_dir() {
        dest.join(format!("{fp}.tar.gz"))
    } else {
        dest.to_path_buf()
    };
    std::fs::write(&to, &raw.body)?;
    println!("Image exported to {}", to.display());
    Ok(())
}

pub fn alias_create(client: &Client, alias: &str, target: &str) -> Result<()> {
    let fp = super::resolve_image(client, target)?;
    client.request(
        "POST",
        "/1.0/images/aliases",
        Some(&json!({"name": alias, "target": fp, "description": ""})),
    )?;
    Ok(())
}

pub fn alias_delete(client: &Client, alias: &str) -> Result<()> {
    client.request(
        "DELETE",
        &format!("/1.0/images/aliases/{}", encode(alias)),
        None,
    )?;
    Ok(())
}

pub fn alias_list(client: &Client, format: Format) -> Result<()> {
    let all = client.get("/1.0/images/aliases?recursion=1")?;
    let items = all.as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|a| {
            vec![
                a["name"].as_str().unwrap_or("").into(),
                a["target"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(12)
                    .collect(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::render(
            format,
            &["ALIAS".into(), "FINGERPRINT".into()],
            &rows,
            &Value::Array(items)
        )?
    );
    Ok(())
}
