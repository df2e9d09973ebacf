//! `hutch remote add|list|remove|rename|set-url|switch|get-default`, as lxc/remote.go of
//! LXD 5.0, and the connections a remote name leads to: a hutchd over a unix socket, or a
//! simplestreams image server.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;

use crate::config::{ClientConfig, Remote};
use crate::http::{socket_path, Client};
use crate::output::{self, Format};

/// `hutch remote ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Add new remote servers (`--protocol simplestreams` for image servers; the URL must
    /// be HTTPS).
    Add {
        /// The remote's name (the URL when alone).
        name: String,
        /// IP, FQDN or URL.
        url: Option<String>,
        /// Accept certificate.
        #[arg(long)]
        accept_certificate: bool,
        /// Server authentication type (tls or candid).
        #[arg(long, default_value = "")]
        auth_type: String,
        /// Candid domain to use.
        #[arg(long, default_value = "")]
        domain: String,
        /// Remote admin password.
        #[arg(long, default_value = "")]
        password: String,
        /// Project to use for the remote.
        #[arg(long, default_value = "")]
        project: String,
        /// Server protocol (lxd or simplestreams).
        #[arg(long, default_value = "")]
        protocol: String,
        /// Public image server.
        #[arg(long)]
        public: bool,
    },
    /// Show the default remote.
    GetDefault,
    /// List the available remotes.
    #[command(visible_alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Remove remotes.
    #[command(visible_alias = "rm")]
    Remove { name: String },
    /// Rename remotes.
    #[command(visible_alias = "mv")]
    Rename { old: String, new: String },
    /// Set the URL for the remote.
    SetUrl { name: String, url: String },
    /// Switch the default remote.
    Switch { name: String },
}

/// Runs one `hutch remote` command.
pub fn run(cmd: Cmd) -> Result<()> {
    let mut conf = ClientConfig::load()?;
    match cmd {
        Cmd::Add {
            name,
            url,
            auth_type,
            domain,
            project,
            protocol,
            public,
            ..
        } => {
            let url = url.unwrap_or_else(|| name.clone());
            let args = AddArgs {
                auth_type,
                domain,
                project,
                protocol,
                public,
            };
            let remote = add(&mut conf, &name, &url, args)?;
            if remote.is_unix() {
                // As lxc: a socket remote must answer before it is kept, and with a
                // single project that one is recorded.
                let client = client_of(&remote)?;
                client.get("/1.0")?;
                if remote.project.is_empty() {
                    let projects = client.get("/1.0/projects").unwrap_or_default();
                    if let [only] = projects.as_array().map(Vec::as_slice).unwrap_or_default() {
                        let project = only.as_str().unwrap_or_default().rsplit('/').next();
                        if let (Some(p), Some(r)) = (project, conf.remotes.get_mut(&name)) {
                            r.project = p.to_string();
                        }
                    }
                }
            } else if !remote.is_simplestreams() {
                eprintln!("Note: remote \"{name}\" is stored, but hutch cannot talk to LXD-protocol HTTPS remotes yet");
            }
            conf.save()
        }
        Cmd::GetDefault => {
            println!("{}", conf.default_remote);
            Ok(())
        }
        Cmd::List { format } => {
            print!("{}", list(&conf, format)?);
            Ok(())
        }
        Cmd::Remove { name } => {
            remove(&mut conf, &name)?;
            conf.save()
        }
        Cmd::Rename { old, new } => {
            rename(&mut conf, &old, &new)?;
            conf.save()
        }
        Cmd::SetUrl { name, url } => {
            changeable(&conf, &name)?;
            if let Some(r) = conf.remotes.get_mut(&name) {
                r.addr = url;
            }
            conf.save()
        }
        Cmd::Switch { name } => {
            conf.remote(&name)
                .map_err(|_| anyhow::anyhow!("Remote {name} doesn't exist"))?;
            conf.default_remote = name;
            conf.save()
        }
    }
}

/// The options of `remote add` that end up in the config.
#[derive(Default)]
pub struct AddArgs {
    pub auth_type: String,
    pub domain: String,
    pub project: String,
    pub protocol: String,
    pub public: bool,
}

/// Adds a remote to `conf` as lxc 5.0 does (without contacting it); returns what was added.
pub fn add(conf: &mut ClientConfig, name: &str, addr: &str, args: AddArgs) -> Result<Remote> {
    if name.contains(':') {
        bail!("Remote names may not contain colons");
    }
    if let Some(r) = conf.remotes.get(name) {
        bail!("Remote {name} exists as <{}>", r.addr);
    }
    let protocol = if args.protocol.is_empty() {
        "lxd".to_string()
    } else {
        args.protocol
    };
    let remote = if protocol == "simplestreams" {
        if url_scheme(addr) != Some("https") {
            bail!("Only https URLs are supported for simplestreams");
        }
        Remote {
            addr: addr.to_string(),
            protocol,
            public: true,
            ..Remote::default()
        }
    } else if protocol != "lxd" {
        bail!("Invalid protocol: {protocol}");
    } else {
        Remote {
            addr: normalize_lxd_addr(addr),
            protocol,
            auth_type: if args.auth_type.is_empty() {
                "tls".into()
            } else {
                args.auth_type
            },
            domain: args.domain,
            project: args.project,
            public: args.public,
            is_static: false,
        }
    };
    conf.remotes.insert(name.to_string(), remote.clone());
    Ok(remote)
}

/// The scheme of a URL (`https` of `https://host`), as Go's url.Parse reads one.
fn url_scheme(addr: &str) -> Option<&str> {
    let (scheme, _) = addr.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
        .then_some(scheme)
}

/// An LXD-protocol address as lxc stores it: `unix://PATH`, or `https://HOST:PORT` with
/// port 8443 when none is given.
fn normalize_lxd_addr(addr: &str) -> String {
    if addr.starts_with("unix:") || addr.starts_with('/') {
        let path = addr.trim_start_matches("unix:").trim_start_matches("//");
        return format!("unix://{path}");
    }
    let (scheme, rest) = match addr.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("https", addr),
    };
    let host_port = rest.split('/').next().unwrap_or(rest);
    let has_port = match host_port.rsplit_once(':') {
        Some((h, p)) => !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':'),
        None => false,
    } && (!host_port.contains('[') || host_port.contains("]:"));
    let bare_v6 = !host_port.starts_with('[') && host_port.matches(':').count() > 1;
    if bare_v6 {
        format!("{scheme}://[{host_port}]:8443")
    } else if has_port {
        format!("{scheme}://{host_port}")
    } else {
        format!("{scheme}://{host_port}:8443")
    }
}

/// lxc refuses to change the static remotes.
fn changeable(conf: &ClientConfig, name: &str) -> Result<()> {
    match conf.remotes.get(name) {
        None => bail!("Remote {name} doesn't exist"),
        Some(r) if r.is_static => bail!("Remote {name} is static and cannot be modified"),
        Some(_) => Ok(()),
    }
}

/// `remote remove`: not a static remote, nor the default one.
pub fn remove(conf: &mut ClientConfig, name: &str) -> Result<()> {
    changeable(conf, name)?;
    if conf.default_remote == name {
        bail!("Can't remove the default remote");
    }
    conf.remotes.remove(name);
    Ok(())
}

/// `remote rename`; the default remote follows its new name.
pub fn rename(conf: &mut ClientConfig, old: &str, new: &str) -> Result<()> {
    changeable(conf, old)?;
    if conf.remotes.contains_key(new) {
        bail!("Remote {new} already exists");
    }
    if let Some(r) = conf.remotes.remove(old) {
        conf.remotes.insert(new.to_string(), r);
    }
    if conf.default_remote == old {
        conf.default_remote = new.to_string();
    }
    Ok(())
}

/// `remote list` in one of lxc's formats.
pub fn list(conf: &ClientConfig, format: Format) -> Result<String> {
    let yes_no = |b: bool| if b { "YES" } else { "NO" }.to_string();
    let mut rows: Vec<Vec<String>> = conf
        .remotes
        .iter()
        .map(|(name, r)| {
            let shown = if *name == conf.default_remote {
                format!("{name} (current)")
            } else {
                name.clone()
            };
            let protocol = if r.protocol.is_empty() {
                "lxd"
            } else {
                &r.protocol
            };
            let auth = match r.auth_type.as_str() {
                "" if r.is_unix() => "file access",
                "" if r.is_simplestreams() => "none",
                "" => "tls",
                a => a,
            };
            vec![
                shown,
                r.addr.clone(),
                protocol.to_string(),
                auth.to_string(),
                yes_no(r.public),
                yes_no(r.is_static),
                yes_no(false),
            ]
        })
        .collect();
    rows.sort();
    if format == Format::Json {
        // lxc marshals its Go structs: JSON has their field names in their order.
        let go: BTreeMap<&String, GoRemote> = conf
            .remotes
            .iter()
            .map(|(n, r)| (n, GoRemote::from(r)))
            .collect();
        // Go escapes these three; outside strings JSON has none of them.
        let text = serde_json::to_string(&go)?
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        return Ok(format!("{text}\n"));
    }
    // YAML has the config file's keys.
    let raw = serde_json::to_value(&conf.remotes)?;
    let headers = [
        "NAME",
        "URL",
        "PROTOCOL",
        "AUTH TYPE",
        "PUBLIC",
        "STATIC",
        "GLOBAL",
    ]
    .map(String::from);
    output::render(format, &headers, &rows, &raw)
}

/// A remote as lxc's JSON output spells it (Go's field names and order).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct GoRemote<'a> {
    addr: &'a str,
    auth_type: &'a str,
    domain: &'a str,
    project: &'a str,
    protocol: &'a str,
    public: bool,
    global: bool,
    #[serde(rename = "Static")]
    is_static: bool,
}

impl<'a> From<&'a Remote> for GoRemote<'a> {
    fn from(r: &'a Remote) -> Self {
        GoRemote {
            addr: &r.addr,
            auth_type: &r.auth_type,
            domain: &r.domain,
            project: &r.project,
            protocol: &r.protocol,
            public: r.public,
            global: false,
            is_static: r.is_static,
        }
    }
}

/// The socket of a unix remote: `unix://` is hutchd's own.
fn socket_of(remote: &Remote) -> PathBuf {
    match remote
        .addr
        .trim_start_matches("unix:")
        .trim_start_matches("//")
    {
        "" => socket_path(),
        path => PathBuf::from(path),
    }
}

/// A client for a remote that runs instances (a hutchd on a unix socket).
pub fn client_of(remote: &Remote) -> Result<Client> {
    if remote.public || remote.is_simplestreams() {
        bail!("The remote isn't a private LXD server");
    }
    if !remote.is_unix() {
        bail!(
            "The remote at {} speaks the LXD protocol over HTTPS, which hutch does not support yet",
            remote.addr
        );
    }
    Ok(Client::at(socket_of(remote)))
}

/// The client for the default remote; when that is no hutchd, one whose every request
/// fails with the reason.
pub fn default_client() -> Client {
    let conf = match ClientConfig::load() {
        Ok(c) => c,
        // The socket still works; the remote commands report the config error.
        Err(_) => return Client::new(),
    };
    match conf.remote(&conf.default_remote).and_then(client_of) {
        Ok(c) => c,
        Err(e) => Client::unusable(&e.to_string()),
    }
}

/// Where a `REMOTE:` prefix leads for images.
pub enum ImageServer {
    /// A hutchd (its images API).
    Daemon(Client),
    /// A simplestreams server at this base URL.
    Streams { url: String },
}

/// The image server called `name`.
pub fn image_server(conf: &ClientConfig, name: &str) -> Result<ImageServer> {
    let remote = conf.remote(name)?;
    if remote.is_simplestreams() {
        return Ok(ImageServer::Streams {
            url: remote.addr.clone(),
        });
    }
    if !remote.is_unix() {
        bail!(
            "The remote \"{name}\" ({}) speaks the LXD protocol over HTTPS, which hutch does not support yet",
            remote.addr
        );
    }
    Ok(ImageServer::Daemon(Client::at(socket_of(remote))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> (tempfile::TempDir, ClientConfig) {
        let dir = tempfile::tempdir().unwrap();
        let c = ClientConfig::load_from(&dir.path().join("config.yml")).unwrap();
        (dir, c)
    }

    fn err<T>(r: Result<T>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn add_refuses_as_lxc_refuses() {
        let (_d, mut c) = conf();
        let ss = || AddArgs {
            protocol: "simplestreams".into(),
            ..AddArgs::default()
        };
        add(&mut c, "mine", "https://127.0.0.1:9", ss()).unwrap();
        assert_eq!(
            err(add(&mut c, "mine", "https://x", ss())),
            "Remote mine exists as <https://127.0.0.1:9>"
        );
        assert_eq!(
            err(add(&mut c, "ubuntu", "https://x", ss())),
            "Remote ubuntu exists as <https://cloud-images.ubuntu.com/releases>"
        );
        for bad in ["http://127.0.0.1:9", "127.0.0.1:9", "images.example.org"] {
            assert_eq!(
                err(add(&mut c, "b", bad, ss())),
                "Only https URLs are supported for simplestreams"
            );
        }
        assert_eq!(
            err(add(&mut c, "a:b", "https://x", ss())),
            "Remote names may not contain colons"
        );
        let bogus = AddArgs {
            protocol: "bogus".into(),
            ..AddArgs::default()
        };
        assert_eq!(
            err(add(&mut c, "q", "https://x", bogus)),
            "Invalid protocol: bogus"
        );
        assert!(c.remotes["mine"].public);
    }

    #[test]
    fn lxd_addresses_normalize_as_lxc_stores_them() {
        assert_eq!(normalize_lxd_addr("10.0.0.1"), "https://10.0.0.1:8443");
        assert_eq!(normalize_lxd_addr("host:9443"), "https://host:9443");
        assert_eq!(
            normalize_lxd_addr("https://host.example"),
            "https://host.example:8443"
        );
        assert_eq!(normalize_lxd_addr("fd00::1"), "https://[fd00::1]:8443");
        assert_eq!(normalize_lxd_addr("[fd00::1]:1"), "https://[fd00::1]:1");
        assert_eq!(normalize_lxd_addr("unix:///tmp/s"), "unix:///tmp/s");
        assert_eq!(normalize_lxd_addr("/tmp/s"), "unix:///tmp/s");
    }

    #[test]
    fn static_and_default_remotes_stay() {
        let (_d, mut c) = conf();
        assert_eq!(
            err(remove(&mut c, "local")),
            "Remote local is static and cannot be modified"
        );
        assert_eq!(
            err(rename(&mut c, "ubuntu", "u")),
            "Remote ubuntu is static and cannot be modified"
        );
        assert_eq!(err(remove(&mut c, "nope")), "Remote nope doesn't exist");
        c.default_remote = "images".into();
        assert_eq!(
            err(remove(&mut c, "images")),
            "Can't remove the default remote"
        );
        rename(&mut c, "images", "lxcimages").unwrap();
        assert_eq!(c.default_remote, "lxcimages");
        assert_eq!(
            err(rename(&mut c, "lxcimages", "local")),
            "Remote local already exists"
        );
    }

    #[test]
    fn list_reads_as_lxc_prints_it() {
        let (_d, c) = conf();
        assert_eq!(
            list(&c, Format::Csv).unwrap(),
            "images,https://images.linuxcontainers.org,simplestreams,none,YES,NO,NO\n\
             local (current),unix://,lxd,file access,NO,YES,NO\n\
             ubuntu,https://cloud-images.ubuntu.com/releases,simplestreams,none,YES,YES,NO\n\
             ubuntu-daily,https://cloud-images.ubuntu.com/daily,simplestreams,none,YES,YES,NO\n"
        );
    }

    #[test]
    fn remotes_that_are_not_a_hutchd_say_so() {
        let (_d, c) = conf();
        assert_eq!(
            err(client_of(&c.remotes["images"])),
            "The remote isn't a private LXD server"
        );
        let lxd = Remote {
            addr: "https://10.0.0.1:8443".into(),
            ..Remote::default()
        };
        assert!(err(client_of(&lxd)).contains("does not support yet"));
        assert!(matches!(
            image_server(&c, "images"),
            Ok(ImageServer::Streams { .. })
        ));
    }
}
