//! `hutch image import|list|info|show|edit|delete|export|copy|refresh|alias`, shaped as
//! `lxc image` (LXD 5.0: lxc/image.go, lxc/image_alias.go). Sizes print as `1.00MB`, as
//! the `lxc` of Debian 12 (5.0.2) prints them; later 5.0 releases print `MiB`.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::http::{encode, parse_envelope, Client};
use crate::output::{self, Format};

/// `hutch image ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Import an image: a unified tarball, or a split image's metadata tarball and root
    /// filesystem (a tarball or a squashfs).
    Import {
        /// The tarball, then the root filesystem of a split image; `local:` and
        /// `key=value` properties may follow.
        #[arg(required = true)]
        files: Vec<String>,
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(long)]
        public: bool,
        /// `oci`: the file is an OCI archive or a `docker save` tarball, flattened into
        /// an application-container image by the daemon (it also recognises one unasked).
        #[arg(long, value_parser = ["lxd", "oci"])]
        format: Option<String>,
    },
    /// List images (`-c` columns: l L f F p d a s u t, as lxc).
    #[command(alias = "ls")]
    List {
        /// `local:`, then filters: a fingerprint or alias part, or `key=value` properties.
        filters: Vec<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
        #[arg(short, long, default_value = "lfpdatsu")]
        columns: String,
    },
    /// Show useful information about an image.
    Info { name: String },
    /// Show an image's writable properties (YAML).
    Show { name: String },
    /// Edit an image's writable properties: `$EDITOR` on a terminal, else YAML on stdin.
    Edit { name: String },
    /// Delete images.
    #[command(alias = "rm")]
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Export an image: one file, or a split image's two.
    Export {
        name: String,
        target: Option<PathBuf>,
    },
    /// Copy an image to a remote: from a simplestreams remote (`images:alpine/edge local:`)
    /// the daemon pulls it; an image already local only gets the aliases and flags.
    #[command(alias = "cp")]
    Copy {
        name: String,
        remote: String,
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[arg(long)]
        copy_aliases: bool,
        #[arg(long)]
        public: bool,
        #[arg(long)]
        auto_update: bool,
    },
    /// Print one property of an image.
    GetProperty { name: String, key: String },
    /// Set one property of an image.
    SetProperty {
        name: String,
        key: String,
        value: String,
    },
    /// Unset one property of an image (as lxc 5.0 does, it is set to "").
    UnsetProperty { name: String, key: String },
    /// Refresh images from their source.
    Refresh {
        #[arg(required = true)]
        names: Vec<String>,
    },
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Write local images as a static simplestreams tree (DIR [ALIAS...]).
    ExportStreams(super::image_streams::ExportStreamsArgs),
    /// Build an image offline (busybox, debian/12) into the local store.
    Build(super::image_build::BuildArgs),
}

#[derive(Subcommand)]
pub enum AliasCmd {
    Create {
        alias: String,
        target: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    #[command(alias = "rm")]
    Delete { alias: String },
    #[command(alias = "ls")]
    List {
        /// `local:`, then filters: a part of the alias or of its target.
        filters: Vec<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    #[command(alias = "mv")]
    Rename { old: String, new: String },
}

/// Runs one `hutch image` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Import {
            files,
            aliases,
            public,
            format,
        } => match format.as_deref() {
            Some("oci") => import_oci(c, &files, &aliases, public),
            _ => import_cmd(c, &files, &aliases, public),
        },
        Cmd::List {
            filters,
            format,
            columns,
        } => list(c, &filters, format, &columns),
        Cmd::Info { name } => info(c, &name),
        Cmd::Show { name } => show(c, &name),
        Cmd::Edit { name } => edit(c, &name),
        Cmd::Delete { names } => delete(c, &names),
        Cmd::Export { name, target } => export(c, &name, target.as_deref()),
        Cmd::Copy {
            name,
            remote,
            aliases,
            copy_aliases,
            public,
            auto_update,
        } => match registry_or_streams(&name)? {
            Some((url, name, registry)) => {
                local(&remote)?;
                let opts = super::image_remote::CopyOptions {
                    aliases,
                    copy_aliases,
                    public,
                    auto_update,
                    registry,
                };
                super::image_remote::copy(c, &url, &name, &remote, &opts)
            }
            None => {
                let opts = super::image_remote::CopyOptions {
                    aliases,
                    copy_aliases,
                    public,
                    auto_update,
                    registry: false,
                };
                copy_lxd(c, &name, &remote, &opts)
            }
        },
        Cmd::Refresh { names } => refresh(c, &names),
        Cmd::GetProperty { name, key } => get_property(c, &name, &key),
        Cmd::SetProperty { name, key, value } => set_property(c, &name, &key, &value),
        Cmd::UnsetProperty { name, key } => set_property(c, &name, &key, ""),
        Cmd::Alias(AliasCmd::Create {
            alias,
            target,
            description,
        }) => alias_create(c, &alias, &target, &description),
        Cmd::Alias(AliasCmd::Delete { alias }) => alias_delete(c, &alias),
        Cmd::Alias(AliasCmd::List { filters, format }) => alias_list(c, &filters, format),
        Cmd::Alias(AliasCmd::Rename { old, new }) => alias_rename(c, &old, &new),
        Cmd::ExportStreams(args) => super::image_streams::run(c, args),
        Cmd::Build(args) => super::image_build::run(c, args),
    }
}

/// Strips a leading `REMOTE:` naming the hutchd this client talks to; any other remote
/// is refused.
fn local(name: &str) -> Result<&str> {
    match name.split_once(':') {
        None => Ok(name),
        Some((remote, rest)) => {
            super::image_remote::require_current(remote)?;
            Ok(rest)
        }
    }
}

/// Local filters: `local:` alone is the remote, dropped.
fn filters_of(args: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if i == 0 && a.ends_with(':') && !a.contains('=') {
            local(a)?;
            continue;
        }
        out.push(local(a)?.to_string());
    }
    Ok(out)
}

fn resolve(client: &Client, name: &str) -> Result<String> {
    super::resolve_image(client, local(name)?)
}

/// `key=value` pairs as a URL query (`X-LXD-properties`), as Go's `url.Values` encodes.
fn query_encode(pairs: &[(String, String)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut sorted = pairs.to_vec();
    sorted.sort();
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// As lxc: an argument with `=` that is not an existing file is a property; `REMOTE:` is
/// the target.
pub fn import_cmd(
    client: &Client,
    files: &[String],
    aliases: &[String],
    public: bool,
) -> Result<()> {
    let mut paths = Vec::new();
    let mut properties = Vec::new();
    for arg in files {
        match arg.split_once('=') {
            Some((k, v)) if !Path::new(arg).exists() => {
                properties.push((k.to_string(), v.to_string()))
            }
            _ if arg.ends_with(':') && !Path::new(arg).exists() => {
                local(arg)?;
            }
            _ => paths.push(arg.as_str()),
        }
    }
    let props = query_encode(&properties);
    let fp = match paths[..] {
        [file] => import(client, Path::new(file), public, &props)?,
        [meta, rootfs] => import_split(client, Path::new(meta), Path::new(rootfs), public, &props)?,
        _ => bail!("Invalid number of arguments"),
    };
    point_aliases(client, aliases, &fp)?;
    println!("Image imported with fingerprint: {fp}");
    Ok(())
}

/// `hutch image import --format oci FILE`: one archive, uploaded as it is, with the
/// header that makes the daemon refuse anything but an OCI or docker-save archive.
fn import_oci(client: &Client, files: &[String], aliases: &[String], public: bool) -> Result<()> {
    let paths: Vec<&String> = files
        .iter()
        .filter(|f| !f.ends_with(':') || Path::new(f).exists())
        .collect();
    let [file] = paths[..] else {
        bail!("--format oci takes one archive (an OCI archive or a docker save tarball)");
    };
    for f in files.iter().filter(|f| f.ends_with(':')) {
        local(f)?;
    }
    let path = Path::new(file);
    let (mut f, len) = open(path)?;
    let headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("X-LXD-filename", file_name(path)),
        ("X-LXD-public", public.to_string()),
        ("X-Hutch-Image-Format", "oci".to_string()),
    ];
    let resp = client.send("POST", "/1.0/images", &headers, &mut f, len)?;
    let fp = finish_upload(client, resp)?;
    point_aliases(client, aliases, &fp)?;
    println!("Image imported with fingerprint: {fp}");
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn open(path: &Path) -> Result<(std::fs::File, u64)> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    if f.metadata()?.is_dir() {
        bail!(
            "{}: importing an image from a directory is not supported; give its tarballs",
            path.display()
        );
    }
    let len = f.metadata()?.len();
    Ok((f, len))
}

/// Waits for an image upload's operation; returns the fingerprint.
fn finish_upload(client: &Client, resp: crate::http::Streamed) -> Result<String> {
    let env = parse_envelope(&resp.into_raw()?)?;
    let op = client.wait_op(&env)?;
    Ok(op["metadata"]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// Uploads a unified tarball, streamed from the file.
pub fn import(client: &Client, file: &Path, public: bool, properties: &str) -> Result<String> {
    let (mut f, len) = open(file)?;
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("X-LXD-filename", file_name(file)),
        ("X-LXD-public", public.to_string()),
    ];
    if !properties.is_empty() {
        headers.push(("X-LXD-properties", properties.to_string()));
    }
    let resp = client.send("POST", "/1.0/images", &headers, &mut f, len)?;
    finish_upload(client, resp)
}

/// The framing of a two-part multipart/form-data body as Go's multipart writer (and
/// so `lxc image import META ROOTFS`) writes it: before, between and after the files.
fn multipart_frame(boundary: &str, meta_name: &str, rootfs_name: &str) -> [String; 3] {
    let part = |name: &str, file: &str| {
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
    };
    [
        part("metadata", meta_name),
        format!("\r\n{}", part("rootfs", rootfs_name)),
        format!("\r\n--{boundary}--\r\n"),
    ]
}

/// Uploads a split image as multipart/form-data (parts `metadata` and `rootfs`), both
/// files streamed.
fn import_split(
    client: &Client,
    meta: &Path,
    rootfs: &Path,
    public: bool,
    properties: &str,
) -> Result<String> {
    let (m, mlen) = open(meta)?;
    let (r, rlen) = open(rootfs)?;
    let boundary = format!("hutch{:032x}", rand_u128());
    let [a, b, c] = multipart_frame(
        &boundary,
        &file_name(meta).replace('"', ""),
        &file_name(rootfs).replace('"', ""),
    );
    let len = (a.len() + b.len() + c.len()) as u64 + mlen + rlen;
    let mut body = std::io::Cursor::new(a.into_bytes())
        .chain(m.take(mlen))
        .chain(std::io::Cursor::new(b.into_bytes()))
        .chain(r.take(rlen))
        .chain(std::io::Cursor::new(c.into_bytes()));
    let mut headers = vec![
        (
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        ),
        ("X-LXD-public", public.to_string()),
    ];
    if !properties.is_empty() {
        headers.push(("X-LXD-properties", properties.to_string()));
    }
    let resp = client.send("POST", "/1.0/images", &headers, &mut body, len)?;
    finish_upload(client, resp)
}

/// A boundary that the files are most unlikely to contain.
fn rand_u128() -> u128 {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u128::from_ne_bytes(b) ^ std::process::id() as u128
}

/// Points each of `aliases` at image `fp`: as lxc does, an alias of that name is replaced.
pub(super) fn point_aliases(client: &Client, aliases: &[String], fp: &str) -> Result<()> {
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

/// An RFC 3339 UTC time as lxc's image list shows it: `Jan 2, 2006 at 3:04pm (UTC)`.
fn upload_date(t: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|s| s.parse::<u32>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi)) =
        (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16))
    else {
        return t.to_string();
    };
    let month = MONTHS.get(mo.saturating_sub(1) as usize).unwrap_or(&"?");
    let (h12, ampm) = match h {
        0 => (12, "am"),
        1..=11 => (h, "am"),
        12 => (12, "pm"),
        _ => (h - 12, "pm"),
    };
    format!("{month} {d}, {y} at {h12}:{mi:02}{ampm} (UTC)")
}

/// lxc's `image list` filter: `key=value` against properties (or top-level fields),
/// else a part of an alias or of the fingerprint; all filters must match.
fn image_matches(image: &Value, filters: &[String]) -> bool {
    filters.iter().all(|f| match f.split_once('=') {
        Some((k, v)) => {
            let prop = image["properties"][k].as_str();
            let field = match &image[k] {
                Value::String(s) => Some(s.clone()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            prop == Some(v) || field.as_deref() == Some(v)
        }
        None => {
            image["fingerprint"]
                .as_str()
                .is_some_and(|fp| fp.contains(f.as_str()))
                || image["aliases"].as_array().is_some_and(|a| {
                    a.iter()
                        .filter_map(|x| x["name"].as_str())
                        .any(|n| n.contains(f.as_str()))
                })
        }
    })
}

/// One cell of `image list` for column letter `col`.
fn image_cell(i: &Value, col: char) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut aliases: Vec<String> = i["aliases"]
        .as_array()
        .map(|a| a.iter().map(|x| s(&x["name"])).collect())
        .unwrap_or_default();
    let fp = s(&i["fingerprint"]);
    match col {
        'l' => {
            let mut shortest = String::new();
            for a in &aliases {
                if shortest.is_empty() || (!a.is_empty() && a.len() < shortest.len()) {
                    shortest = a.clone();
                }
            }
            if aliases.len() > 1 {
                shortest = format!("{shortest} ({} more)", aliases.len() - 1);
            }
            shortest
        }
        'L' => {
            aliases.sort();
            aliases.join("\n")
        }
        'f' => fp.chars().take(12).collect(),
        'F' => fp,
        'p' => if i["public"].as_bool().unwrap_or(false) {
            "yes"
        } else {
            "no"
        }
        .into(),
        'd' => s(&i["properties"]["description"]),
        'a' => s(&i["architecture"]),
        's' => format!("{:.2}MB", i["size"].as_f64().unwrap_or(0.0) / 1048576.0),
        'u' => upload_date(&s(&i["uploaded_at"])),
        't' => match s(&i["type"]) {
            t if t.is_empty() => "CONTAINER".into(),
            t => t.to_uppercase(),
        },
        _ => String::new(),
    }
}

fn column_header(col: char) -> Result<&'static str> {
    Ok(match col {
        'l' => "ALIAS",
        'L' => "ALIASES",
        'f' | 'F' => "FINGERPRINT",
        'p' => "PUBLIC",
        'd' => "DESCRIPTION",
        'a' => "ARCHITECTURE",
        's' => "SIZE",
        'u' => "UPLOAD DATE",
        't' => "TYPE",
        c => bail!("Unknown column shorthand char '{c}'"),
    })
}

pub fn list(client: &Client, filters: &[String], format: Format, columns: &str) -> Result<()> {
    if let Some((url, filters)) = super::image_remote::streams_filters(filters)? {
        return super::image_remote::list(&url, &filters, format, columns);
    }
    // `REMOTE:[filter]` first: that server's images (another hutchd, an LXD).
    let names_remote = |a: &String| {
        a.find(':')
            .is_some_and(|c| a.find('=').is_none_or(|eq| c < eq))
    };
    let (client, filters) = match filters.first().filter(|a| names_remote(a)) {
        Some(first) => {
            let conf = crate::config::ClientConfig::load()?;
            let (remote, rest) = conf.parse_remote(first)?;
            let client = match super::remote::image_server(&conf, &remote)? {
                super::remote::ImageServer::Daemon { client, .. } => client,
                super::remote::ImageServer::Streams { .. }
                | super::remote::ImageServer::Registry { .. } => client.clone(),
            };
            let mut f: Vec<String> = Vec::new();
            if !rest.is_empty() {
                f.push(rest);
            }
            f.extend(filters[1..].iter().cloned());
            (client, f)
        }
        None => (client.clone(), filters.to_vec()),
    };
    let client = &client;
    let all = client.get("/1.0/images?recursion=1")?;
    print_list(
        all.as_array().cloned().unwrap_or_default(),
        &filters,
        format,
        columns,
    )
}

/// Prints the images that match `filters` as `image list` does.
pub(super) fn print_list(
    images: Vec<Value>,
    filters: &[String],
    format: Format,
    columns: &str,
) -> Result<()> {
    let cols: Vec<char> = columns.chars().filter(|c| *c != ',').collect();
    let headers = cols
        .iter()
        .map(|c| column_header(*c).map(String::from))
        .collect::<Result<Vec<_>>>()?;
    let items: Vec<Value> = images
        .into_iter()
        .filter(|i| image_matches(i, filters))
        .collect();
    let mut rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| cols.iter().map(|c| image_cell(i, *c)).collect())
        .collect();
    rows.sort();
    print!(
        "{}",
        output::render(format, &headers, &rows, &Value::Array(items))?
    );
    Ok(())
}

/// lxc's time layout for `image info`: `2006/01/02 15:04 UTC`; None for the zero time.
fn info_time(t: &str) -> Option<String> {
    if t.is_empty() || t.starts_with("0001-01-01") {
        return None;
    }
    Some(format!(
        "{}/{}/{} {} UTC",
        t.get(0..4)?,
        t.get(5..7)?,
        t.get(8..10)?,
        t.get(11..16)?
    ))
}

/// `REMOTE:NAME` on an OCI registry (`true`) or a simplestreams server: its URL and name.
fn registry_or_streams(raw: &str) -> Result<Option<(String, String, bool)>> {
    if let Some((url, name)) = super::image_remote::registry_name(raw)? {
        return Ok(Some((url, name, true)));
    }
    Ok(super::image_remote::streams_name(raw)?.map(|(url, name)| (url, name, false)))
}

/// `image info`: lxc's text (properties sorted; lxc prints them in map order).
pub fn info(client: &Client, name: &str) -> Result<()> {
    if let Some((url, name)) = super::image_remote::streams_name(name)? {
        return super::image_remote::info(&url, &name);
    }
    let fp = resolve(client, name)?;
    let i = client.get(&format!("/1.0/images/{fp}"))?;
    print!("{}", info_text(&i));
    Ok(())
}

pub(super) fn info_text(i: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let yes_no = |v: &Value| {
        if v.as_bool().unwrap_or(false) {
            "yes"
        } else {
            "no"
        }
    };
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!("Fingerprint: {}", s(&i["fingerprint"])));
    line(format!(
        "Size: {:.2}MB",
        i["size"].as_f64().unwrap_or(0.0) / 1048576.0
    ));
    line(format!("Architecture: {}", s(&i["architecture"])));
    let kind = s(&i["type"]);
    line(format!(
        "Type: {}",
        if kind.is_empty() { "container" } else { &kind }
    ));
    line(format!("Public: {}", yes_no(&i["public"])));
    line("Timestamps:".into());
    if let Some(t) = info_time(&s(&i["created_at"])) {
        line(format!("    Created: {t}"));
    }
    line(format!(
        "    Uploaded: {}",
        info_time(&s(&i["uploaded_at"])).unwrap_or_default()
    ));
    line(format!(
        "    Expires: {}",
        info_time(&s(&i["expires_at"])).unwrap_or_else(|| "never".into())
    ));
    line(format!(
        "    Last used: {}",
        info_time(&s(&i["last_used_at"])).unwrap_or_else(|| "never".into())
    ));
    line("Properties:".into());
    if let Some(props) = i["properties"].as_object() {
        let mut props: Vec<_> = props.iter().collect();
        props.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in props {
            line(format!("    {k}: {}", v.as_str().unwrap_or_default()));
        }
    }
    line("Aliases:".into());
    for a in i["aliases"].as_array().into_iter().flatten() {
        let d = s(&a["description"]);
        if d.is_empty() {
            line(format!("    - {}", s(&a["name"])));
        } else {
            line(format!("    - {} ({d})", s(&a["name"])));
        }
    }
    line(format!("Cached: {}", yes_no(&i["cached"])));
    line(format!(
        "Auto update: {}",
        if i["auto_update"].as_bool().unwrap_or(false) {
            "enabled"
        } else {
            "disabled"
        }
    ));
    let profiles: Vec<String> = i["profiles"]
        .as_array()
        .map(|p| p.iter().map(s).collect())
        .unwrap_or_default();
    if profiles.is_empty() {
        line("Profiles: []".into());
    } else {
        line("Profiles:".into());
        for p in profiles {
            line(format!("    - {p}"));
        }
    }
    out
}

/// The writable part of an image (LXD's `ImagePut`), in its field order.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct ImagePut {
    #[serde(default)]
    auto_update: bool,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    expires_at: String,
    #[serde(default)]
    profiles: Vec<String>,
}

fn writable(image: &Value) -> Result<ImagePut> {
    Ok(serde_json::from_value(json!({
        "auto_update": image["auto_update"],
        "properties": image["properties"],
        "public": image["public"],
        "expires_at": image["expires_at"],
        "profiles": image["profiles"],
    }))?)
}

/// `image show`: the writable properties as YAML, as lxc prints them.
pub fn show(client: &Client, name: &str) -> Result<()> {
    let fp = resolve(client, name)?;
    let image = client.get(&format!("/1.0/images/{fp}"))?;
    print!("{}", serde_yaml::to_string(&writable(&image)?)?);
    Ok(())
}

const EDIT_HELP: &str = "### This is a YAML representation of the image properties.
### Any line starting with a '# will be ignored.
###
### Each property is represented by a single line:
### An example would be:
###  description: My custom image";

/// `image edit`: YAML from stdin when it is not a terminal; else `$EDITOR` (or `$VISUAL`,
/// or `vi`) on the current properties, opened again while what comes back is refused.
pub fn edit(client: &Client, name: &str) -> Result<()> {
    let fp = resolve(client, name)?;
    let url = format!("/1.0/images/{fp}");
    let put = |text: &str| -> Result<()> {
        let new: ImagePut = serde_yaml::from_str(text)?;
        client.request("PUT", &url, Some(&serde_json::to_value(new)?))?;
        Ok(())
    };
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return put(&text);
    }
    let image = client.get(&url)?;
    let mut text = format!(
        "{EDIT_HELP}\n\n{}",
        serde_yaml::to_string(&writable(&image)?)?
    );
    loop {
        text = text_editor(&text)?;
        match put(&text) {
            Ok(()) => return Ok(()),
            Err(e) => {
                eprintln!("Config parsing error: {e}");
                println!("Press enter to open the editor again or ctrl+c to abort change");
                let mut b = [0u8; 1];
                std::io::stdin().read_exact(&mut b)?;
            }
        }
    }
}

/// Opens `$VISUAL`/`$EDITOR` (else `vi`) on `text` in a temporary file; what it saved.
fn text_editor(text: &str) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!("hutch_editor_{:x}.yaml", rand_u128()));
    let mut f = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    drop(f);
    let edited = run_editor(&path);
    let _ = std::fs::remove_file(&path);
    edited
}

fn run_editor(path: &Path) -> Result<String> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path)
        .status()
        .with_context(|| format!("run the editor {editor:?}"))?;
    if !status.success() {
        bail!("The editor {editor:?} failed ({status})");
    }
    Ok(std::fs::read_to_string(path)?)
}

pub fn delete(client: &Client, names: &[String]) -> Result<()> {
    for n in names {
        let fp = resolve(client, n)?;
        client.run("DELETE", &format!("/1.0/images/{fp}"), None)?;
    }
    Ok(())
}

/// The `filename` of a Content-Disposition value.
fn disposition_name(v: &str) -> Option<String> {
    let i = v.find("filename=")?;
    let name = v[i + "filename=".len()..]
        .split(';')
        .next()?
        .trim()
        .trim_matches('"');
    let name = Path::new(name).file_name()?.to_string_lossy().into_owned();
    Some(name)
}

/// `image export NAME [TARGET]` as lxc: a unified image goes to `TARGET` (with the
/// server's extension appended when TARGET is a file name) or into directory `TARGET`
/// (default `.`) under the server's name; a split image's two files go to the directory
/// under their part names, or to `TARGET` and `TARGET.root`.
pub fn export(client: &Client, name: &str, target: Option<&Path>) -> Result<()> {
    let fp = resolve(client, name)?;
    let mut resp = client.send(
        "GET",
        &format!("/1.0/images/{fp}/export"),
        &[],
        &mut std::io::empty(),
        0,
    )?;
    if resp.status != 200 {
        parse_envelope(&resp.into_raw()?)?;
        bail!("export failed");
    }
    let dir = match target {
        None => Some(PathBuf::from(".")),
        Some(t) if t.is_dir() => Some(t.to_path_buf()),
        Some(_) => None,
    };
    let ctype = resp.header("content-type").unwrap_or_default().to_string();
    if let Some(boundary) = ctype
        .strip_prefix("multipart/form-data")
        .and_then(|rest| rest.split("boundary=").nth(1))
    {
        let boundary = boundary.trim().trim_matches('"').to_string();
        let fallback = match &dir {
            Some(d) => d.join(&fp),
            None => target.unwrap_or(Path::new(".")).to_path_buf(),
        };
        return export_split(&mut resp, &boundary, &fp, dir.as_deref(), &fallback);
    }
    let served = resp
        .header("content-disposition")
        .and_then(disposition_name)
        .unwrap_or_else(|| format!("{fp}.tar.gz"));
    let to = match (&dir, target) {
        (Some(d), _) => d.join(&served),
        (None, Some(t)) => match served.split_once('.') {
            Some((_, ext)) => PathBuf::from(format!("{}.{ext}", t.display())),
            None => t.to_path_buf(),
        },
        (None, None) => unreachable!("no target means the current directory"),
    };
    write_stream(&mut resp, &to)?;
    println!("Image exported successfully!");
    Ok(())
}

/// Copies a stream into a new file; a failure removes it.
fn write_stream(from: &mut dyn Read, to: &Path) -> Result<()> {
    let mut f = std::fs::File::create(to).with_context(|| format!("create {}", to.display()))?;
    if let Err(e) = std::io::copy(from, &mut f) {
        let _ = std::fs::remove_file(to);
        return Err(e).with_context(|| format!("write {}", to.display()));
    }
    Ok(())
}

/// Reads a two-part multipart export (metadata, rootfs), streaming each part to its
/// file: in `dir` under the part's file name, else `base` and `base.root`.
fn export_split(
    body: &mut dyn Read,
    boundary: &str,
    fp: &str,
    dir: Option<&Path>,
    base: &Path,
) -> Result<()> {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, body);
    let mut parts = MultipartReader::new(&mut reader, boundary);
    let mut written = Vec::new();
    let result = (|| -> Result<()> {
        for (want, fallback) in [
            ("metadata", base.to_path_buf()),
            ("rootfs", PathBuf::from(format!("{}.root", base.display()))),
        ] {
            let (name, file) = parts
                .next_part()?
                .ok_or_else(|| anyhow!("Invalid multipart image"))?;
            if name != want && !(want == "rootfs" && name == "rootfs.img") {
                bail!("Invalid multipart image");
            }
            let to = match (dir, file) {
                (Some(d), Some(f)) => d.join(f),
                _ => fallback,
            };
            written.push(to.clone());
            write_stream(&mut parts.part(), &to)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        for p in written {
            let _ = std::fs::remove_file(p);
        }
        return Err(e).with_context(|| format!("export image {fp}"));
    }
    println!("Image exported successfully!");
    Ok(())
}

/// A small streaming reader of multipart/form-data: headers of each part, then its body
/// up to the next boundary.
struct MultipartReader<'a, R: std::io::BufRead> {
    inner: &'a mut R,
    delimiter: Vec<u8>,
    /// Bytes read past the current part's data, not yet handed out.
    pending: Vec<u8>,
    part_done: bool,
    started: bool,
}

impl<'a, R: std::io::BufRead> MultipartReader<'a, R> {
    fn new(inner: &'a mut R, boundary: &str) -> Self {
        MultipartReader {
            inner,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            pending: Vec::new(),
            part_done: true,
            started: false,
        }
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            if !self.pending.is_empty() {
                let b = self.pending.remove(0);
                line.push(b);
                continue;
            }
            let mut b = [0u8; 1];
            if self.inner.read(&mut b)? == 0 {
                bail!("Invalid multipart image: the body ended early");
            }
            line.push(b[0]);
        }
        Ok(String::from_utf8_lossy(&line).trim_end().to_string())
    }

    /// Moves to the next part: its form name and file name, or None after the last.
    fn next_part(&mut self) -> Result<Option<(String, Option<String>)>> {
        if !self.part_done {
            std::io::copy(&mut self.part(), &mut std::io::sink())?;
        }
        let boundary = String::from_utf8_lossy(&self.delimiter[2..]).into_owned();
        if !self.started {
            // The first boundary has no CRLF before it.
            let line = self.read_line()?;
            if line != boundary {
                bail!("Invalid multipart image");
            }
            self.started = true;
        } else {
            // After a part's delimiter: `--` ends the body, CRLF starts a part.
            let rest = self.read_line()?;
            if rest == "--" {
                return Ok(None);
            }
            if !rest.is_empty() {
                bail!("Invalid multipart image");
            }
        }
        let (mut name, mut file) = (String::new(), None);
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if k.eq_ignore_ascii_case("content-disposition") {
                for param in v.split(';').map(str::trim) {
                    if let Some(n) = param.strip_prefix("name=") {
                        name = n.trim_matches('"').to_string();
                    } else if let Some(f) = param.strip_prefix("filename=") {
                        file = Path::new(f.trim_matches('"'))
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned());
                    }
                }
            }
        }
        self.part_done = false;
        Ok(Some((name, file)))
    }

    /// The current part's data.
    fn part(&mut self) -> PartReader<'_, 'a, R> {
        PartReader { mp: self }
    }
}

struct PartReader<'b, 'a, R: std::io::BufRead> {
    mp: &'b mut MultipartReader<'a, R>,
}

impl<R: std::io::BufRead> Read for PartReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mp = &mut *self.mp;
        if mp.part_done {
            return Ok(0);
        }
        let dl = mp.delimiter.len();
        // Keep enough buffered to see a delimiter that straddles reads.
        while mp.pending.len() < dl + buf.len().min(1 << 16) {
            let chunk = mp.inner.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            mp.pending.extend_from_slice(chunk);
            mp.inner.consume(n);
        }
        if let Some(at) = mp
            .pending
            .windows(dl)
            .position(|w| w == mp.delimiter.as_slice())
        {
            let n = at.min(buf.len());
            buf[..n].copy_from_slice(&mp.pending[..n]);
            mp.pending.drain(..n);
            if n == at {
                mp.pending.drain(..dl);
                mp.part_done = true;
            }
            return Ok(n);
        }
        if mp.pending.len() <= dl {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "Invalid multipart image: the body ended early",
            ));
        }
        let n = (mp.pending.len() - dl).min(buf.len());
        buf[..n].copy_from_slice(&mp.pending[..n]);
        mp.pending.drain(..n);
        Ok(n)
    }
}

/// `image copy IMAGE local:` of an image already there: the aliases are added,
/// `--public`/`--auto-update` set on it.
/// `image copy SRC:NAME DST:` where the source is an LXD-protocol server: a copy within
/// one server, or a pull by the target from the source.
fn copy_lxd(
    c: &Client,
    name: &str,
    target: &str,
    opts: &super::image_remote::CopyOptions,
) -> Result<()> {
    use super::remote::ImageServer;
    let conf = crate::config::ClientConfig::load()?;
    let (src_remote, src_name) = conf.parse_remote(name)?;
    let ImageServer::Daemon {
        client: source,
        remote,
    } = super::remote::image_server(&conf, &src_remote)?
    else {
        bail!("The remote isn't an LXD-protocol server");
    };
    let (dest, rest) = super::remote::split(c, target)?;
    if !rest.is_empty() {
        bail!("The target must be a remote (\"local:\"), not an image");
    }
    if dest.same_server(&source) {
        let aliases = opts.aliases.clone();
        return copy(
            &dest,
            &src_name,
            "",
            &aliases,
            opts.public,
            opts.auto_update,
        );
    }
    let server = super::image_remote::reach(&source, remote)?;
    super::image_remote::copy_between(&source, server, &src_name, &dest, opts)
}

pub fn copy(
    client: &Client,
    name: &str,
    remote: &str,
    aliases: &[String],
    public: bool,
    auto_update: bool,
) -> Result<()> {
    let fp = resolve(client, name)?;
    if !local(remote)?.is_empty() {
        bail!("The target must be a remote (\"local:\"), not an image");
    }
    if public || auto_update {
        let url = format!("/1.0/images/{fp}");
        let mut put = writable(&client.get(&url)?)?;
        put.public |= public;
        put.auto_update |= auto_update;
        client.request("PUT", &url, Some(&serde_json::to_value(put)?))?;
    }
    point_aliases(client, aliases, &fp)?;
    println!("Image copied successfully!");
    Ok(())
}

pub fn get_property(client: &Client, name: &str, key: &str) -> Result<()> {
    let fp = resolve(client, name)?;
    let image = client.get(&format!("/1.0/images/{fp}"))?;
    match image["properties"][key].as_str() {
        Some(v) => println!("{v}"),
        None => bail!("Property not found"),
    }
    Ok(())
}

/// `image set-property` (and `unset-property`, which sets "" as lxc 5.0 does).
pub fn set_property(client: &Client, name: &str, key: &str, value: &str) -> Result<()> {
    let fp = resolve(client, name)?;
    let url = format!("/1.0/images/{fp}");
    let mut put = writable(&client.get(&url)?)?;
    put.properties.insert(key.to_string(), value.to_string());
    client.request("PUT", &url, Some(&serde_json::to_value(put)?))?;
    Ok(())
}

/// `image refresh`: asks the server to refresh each image from its source.
pub fn refresh(client: &Client, names: &[String]) -> Result<()> {
    for n in names {
        let fp = resolve(client, n)?;
        let env = client.request("POST", &format!("/1.0/images/{fp}/refresh"), None)?;
        let progress = crate::progress::Progress::new("Refreshing the image: %s");
        let op = client.wait_op_progress(&env, Some(&progress))?;
        // The line is cleared by the wait; lxc's last word comes on a fresh one.
        if output::quiet() {
            continue;
        }
        if op["metadata"]["refreshed"].as_bool().unwrap_or(false) {
            println!("Image refreshed successfully!");
        } else {
            println!("Image already up to date.");
        }
    }
    Ok(())
}

pub fn alias_create(client: &Client, alias: &str, target: &str, description: &str) -> Result<()> {
    let fp = resolve(client, target)?;
    client.request(
        "POST",
        "/1.0/images/aliases",
        Some(&json!({"name": local(alias)?, "target": fp, "description": description})),
    )?;
    Ok(())
}

pub fn alias_delete(client: &Client, alias: &str) -> Result<()> {
    client.request(
        "DELETE",
        &format!("/1.0/images/aliases/{}", encode(local(alias)?)),
        None,
    )?;
    Ok(())
}

pub fn alias_rename(client: &Client, old: &str, new: &str) -> Result<()> {
    client.request(
        "POST",
        &format!("/1.0/images/aliases/{}", encode(local(old)?)),
        Some(&json!({"name": new})),
    )?;
    Ok(())
}

pub fn alias_list(client: &Client, filters: &[String], format: Format) -> Result<()> {
    let filters = filters_of(filters)?;
    let all = client.get("/1.0/images/aliases?recursion=1")?;
    let items: Vec<Value> = all
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| {
            let (n, t) = (
                a["name"].as_str().unwrap_or_default(),
                a["target"].as_str().unwrap_or_default(),
            );
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| n.contains(f.as_str()) || t.contains(f.as_str()))
        })
        .collect();
    let mut rows: Vec<Vec<String>> = items
        .iter()
        .map(|a| {
            let kind = a["type"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or("container");
            vec![
                a["name"].as_str().unwrap_or("").into(),
                a["target"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(12)
                    .collect(),
                kind.to_uppercase(),
                a["description"].as_str().unwrap_or("").into(),
            ]
        })
        .collect();
    rows.sort();
    let headers = ["ALIAS", "FINGERPRINT", "TYPE", "DESCRIPTION"].map(String::from);
    print!(
        "{}",
        output::render(format, &headers, &rows, &Value::Array(items))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_encode_as_go_url_values() {
        let p = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            query_encode(&[p("release", "22.04 LTS"), p("os", "a&b=c")]),
            "os=a%26b%3Dc&release=22.04+LTS"
        );
        assert_eq!(query_encode(&[]), "");
    }

    #[test]
    fn upload_dates_read_as_lxc_prints_them() {
        assert_eq!(
            upload_date("2026-12-02T04:31:53.908896479Z"),
            "Dec 2, 2026 at 4:31am (UTC)"
        );
        assert_eq!(
            upload_date("2026-01-10T12:05:00Z"),
            "Jan 10, 2026 at 12:05pm (UTC)"
        );
        assert_eq!(
            upload_date("2026-01-10T00:00:00Z"),
            "Jan 10, 2026 at 12:00am (UTC)"
        );
        assert_eq!(
            upload_date("2026-01-10T23:59:00Z"),
            "Jan 10, 2026 at 11:59pm (UTC)"
        );
        assert_eq!(info_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(
            info_time("2026-01-10T23:59:00Z").as_deref(),
            Some("2026/01/10 23:59 UTC")
        );
    }

    #[test]
    fn a_multipart_body_reads_back_part_by_part() {
        let [a, b, c] = multipart_frame("bnd", "m.tar", "r.squashfs");
        let meta = b"meta\r\n--bn not a boundary".to_vec();
        let root = vec![7u8; 200_000];
        let mut body = a.into_bytes();
        body.extend_from_slice(&meta);
        body.extend_from_slice(b.as_bytes());
        body.extend_from_slice(&root);
        body.extend_from_slice(c.as_bytes());
        let mut r = std::io::BufReader::with_capacity(7, &body[..]);
        let mut mp = MultipartReader::new(&mut r, "bnd");
        let (name, file) = mp.next_part().unwrap().unwrap();
        assert_eq!(
            (name.as_str(), file.as_deref()),
            ("metadata", Some("m.tar"))
        );
        let mut got = Vec::new();
        mp.part().read_to_end(&mut got).unwrap();
        assert_eq!(got, meta);
        let (name, file) = mp.next_part().unwrap().unwrap();
        assert_eq!(
            (name.as_str(), file.as_deref()),
            ("rootfs", Some("r.squashfs"))
        );
        got.clear();
        mp.part().read_to_end(&mut got).unwrap();
        assert_eq!(got, root);
        assert!(mp.next_part().unwrap().is_none());
        // Cut short: an error, not a short file.
        let mut r = std::io::BufReader::new(&body[..body.len() / 2]);
        let mut mp = MultipartReader::new(&mut r, "bnd");
        mp.next_part().unwrap();
        mp.part().read_to_end(&mut Vec::new()).unwrap();
        mp.next_part().unwrap();
        assert!(mp.part().read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn filters_and_columns_follow_lxc() {
        let img = json!({"fingerprint": "abcdef0123456789", "aliases": [{"name": "web"}, {"name": "b"}],
            "properties": {"os": "busybox", "description": "d"}, "public": false, "size": 1048576,
            "architecture": "x86_64", "type": "container", "uploaded_at": "2026-01-10T12:05:00Z"});
        assert!(image_matches(&img, &["os=busybox".into(), "we".into()]));
        assert!(image_matches(&img, &["cdef".into()]));
        assert!(!image_matches(&img, &["os=debian".into()]));
        let cells: Vec<String> = "lLfpdast".chars().map(|c| image_cell(&img, c)).collect();
        assert_eq!(
            cells,
            [
                "b (1 more)",
                "b\nweb",
                "abcdef012345",
                "no",
                "d",
                "x86_64",
                "1.00MB",
                "CONTAINER"
            ]
        );
        assert!(column_header('z').is_err());
        assert_eq!(
            filters_of(&["local:".into(), "x".into()]).unwrap(),
            vec!["x"]
        );
        assert!(filters_of(&["images:".into()]).is_err());
        assert_eq!(
            disposition_name("attachment;filename=abc.tar.gz").as_deref(),
            Some("abc.tar.gz")
        );
        assert_eq!(
            disposition_name("attachment; filename=\"../../x\"").as_deref(),
            Some("x")
        );
    }
}
