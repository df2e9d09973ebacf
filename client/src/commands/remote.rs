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
use crate::tls;

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
            accept_certificate,
            auth_type,
            domain,
            password,
            project,
            protocol,
            public,
        } => {
            let url = url.unwrap_or_else(|| name.clone());
            let args = AddArgs {
                auth_type,
                domain,
                project,
                protocol,
                public,
            };
            if let Some(token) = super::trust::Token::decode(&url) {
                return add_by_token(&mut conf, &name, &token, &url, args)
                    .and_then(|()| conf.save())
                    .inspect_err(|_| forget_certificate(&name));
            }
            let remote = add(&mut conf, &name, &url, args)?;
            if remote.is_unix() {
                // As lxc: a socket remote must answer before it is kept, and with a
                // single project that one is recorded.
                let client = client_of(&name, &remote)?;
                client.get("/1.0")?;
                if remote.project.is_empty() {
                    set_project(&mut conf, &name, &client);
                }
            // Image servers and registries are not contacted when added.
            } else if !remote.is_simplestreams() && !remote.is_oci() {
                let contact = Contact {
                    accept_certificate,
                    password,
                };
                add_https(&mut conf, &name, &remote, contact)
                    .and_then(|()| conf.save())
                    .inspect_err(|_| forget_certificate(&name))?;
                return Ok(());
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
            conf.save()?;
            tls::rename_server_cert(&name, None);
            Ok(())
        }
        Cmd::Rename { old, new } => {
            rename(&mut conf, &old, &new)?;
            conf.save()?;
            tls::rename_server_cert(&old, Some(&new));
            Ok(())
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

/// A `remote add` that failed leaves no certificate behind for the name (it was no remote:
/// `add` refuses names in use).
fn forget_certificate(name: &str) {
    if !name.contains(['/', ':']) && !name.starts_with('.') {
        tls::rename_server_cert(name, None);
    }
}

/// How `remote add` gets an HTTPS server to trust this client.
struct Contact {
    accept_certificate: bool,
    password: String,
}

/// The remote's only project, recorded as lxc records it (none when several or none).
fn set_project(conf: &mut ClientConfig, name: &str, client: &Client) {
    let projects = client.get("/1.0/projects").unwrap_or_default();
    if let [only] = projects.as_array().map(Vec::as_slice).unwrap_or_default() {
        let project = only.as_str().unwrap_or_default().rsplit('/').next();
        if let (Some(p), Some(r)) = (project, conf.remotes.get_mut(name)) {
            r.project = p.to_string();
        }
    }
}

/// lxc makes the client certificate before its first HTTPS contact, and says so.
fn ensure_identity() -> Result<()> {
    if !tls::has_identity() {
        eprintln!("Generating a client certificate. This may take a minute...");
    }
    tls::identity()?;
    Ok(())
}

/// Reads one line from stdin (lxc's ReadStdin), without its line ending.
fn read_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The second half of `remote add NAME https://...`, as lxc's cmdRemoteAdd.Run: reach the
/// server (system CAs first, else the certificate it shows once the user accepts its
/// fingerprint, stored in servercerts/), then, when it does not trust this client yet,
/// send the password (asked for when not given) with the client certificate.
fn add_https(conf: &mut ClientConfig, name: &str, remote: &Remote, contact: Contact) -> Result<()> {
    if !remote.public && (remote.auth_type == "tls" || remote.auth_type.is_empty()) {
        ensure_identity()?;
    }
    if remote.auth_type == "candid" {
        bail!("Authentication type 'candid' not supported by hutch");
    }
    let mut client =
        tls::client_with(&remote.addr, hutch_tls::ServerTrust::System, !remote.public)?;
    let mut server = client.get("/1.0");
    if server.is_err() {
        let der = tls::remote_certificate(&remote.addr)?;
        if !contact.accept_certificate {
            let digest = hutch_tls::fingerprint(&der);
            println!("Certificate fingerprint: {digest}");
            print!("ok (y/n/[fingerprint])? ");
            std::io::Write::flush(&mut std::io::stdout())?;
            let line = read_line()?;
            if line != digest {
                let first = line.chars().next().map(|c| c.to_ascii_lowercase());
                match first {
                    None | Some('n') => bail!("Server certificate NACKed by user"),
                    Some('y') => {}
                    Some(_) => bail!("Please type 'y', 'n' or the fingerprint:"),
                }
            }
        }
        tls::store_server_cert(name, &der)?;
        client = tls::client_for(name, &remote.addr, remote.public)?;
        server = client.get("/1.0");
    }
    let server = server?;
    if remote.public {
        conf.remotes
            .insert(name.to_string(), public_remote(&remote.addr));
        return Ok(());
    }
    if server["public"].as_bool().unwrap_or(false) {
        conf.remotes
            .insert(name.to_string(), public_remote(&remote.addr));
        return Ok(());
    }
    let methods = server["auth_methods"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !methods.iter().any(|m| m == "tls") {
        bail!("Authentication type 'tls' not supported by server");
    }
    if server["auth"] != "trusted" {
        let mut password = contact.password;
        if password.is_empty() {
            print!("Admin password (or token) for {name}: ");
            std::io::Write::flush(&mut std::io::stdout())?;
            password = read_line()?;
            println!();
        }
        client.request(
            "POST",
            "/1.0/certificates",
            Some(&certificates_post("client", &password)),
        )?;
        if client.get("/1.0")?["auth"] != "trusted" {
            bail!("Server doesn't trust us after authentication");
        }
        println!("Client certificate now trusted by server: {name}");
    }
    if remote.project.is_empty() {
        set_project(conf, name, &client);
    }
    Ok(())
}

/// A public LXD-protocol image server, as lxc records one.
fn public_remote(addr: &str) -> Remote {
    Remote {
        addr: addr.to_string(),
        public: true,
        ..Remote::default()
    }
}

/// `POST /1.0/certificates` as lxc's api.CertificatesPost marshals it (every field).
fn certificates_post(kind: &str, password: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "", "type": kind, "restricted": false, "projects": null,
        "certificate": "", "password": password, "token": false,
    })
}

/// `remote add NAME TOKEN`, as lxc's RunToken: each address of the token in turn; one that
/// cannot be reached is skipped, one whose certificate is not the token's is refused;
/// the token itself is the password.
fn add_by_token(
    conf: &mut ClientConfig,
    name: &str,
    token: &super::trust::Token,
    raw: &str,
    args: AddArgs,
) -> Result<()> {
    if name.contains(':') {
        bail!("Remote names may not contain colons");
    }
    if let Some(r) = conf.remotes.get(name) {
        bail!("Remote {name} exists as <{}>", r.addr);
    }
    ensure_identity()?;
    for addr in &token.addresses {
        let addr = format!("https://{addr}");
        match token_contact(conf, name, token, raw, &addr, &args) {
            Err(TokenError::Unavailable(_)) => continue,
            Err(TokenError::Other(e)) => return Err(e),
            Ok(()) => return Ok(()),
        }
    }
    println!("All server addresses are unavailable");
    print!("Please provide an alternate server address (empty to abort): ");
    std::io::Write::flush(&mut std::io::stdout())?;
    let line = read_line()?;
    if line.is_empty() {
        bail!("Failed to add remote");
    }
    match token_contact(conf, name, token, raw, &line, &args) {
        Ok(()) => Ok(()),
        Err(TokenError::Unavailable(e) | TokenError::Other(e)) => Err(e),
    }
}

/// Why one address of a token did not do: unreachable (try the next) or refused.
enum TokenError {
    Unavailable(anyhow::Error),
    Other(anyhow::Error),
}

fn token_contact(
    conf: &mut ClientConfig,
    name: &str,
    token: &super::trust::Token,
    raw: &str,
    addr: &str,
    args: &AddArgs,
) -> std::result::Result<(), TokenError> {
    let unavailable = |e: anyhow::Error| {
        TokenError::Unavailable(anyhow::anyhow!("Unavailable remote server: {e:#}"))
    };
    let other = TokenError::Other;
    let client = tls::client_with(addr, hutch_tls::ServerTrust::System, true).map_err(other)?;
    let client = if client.get("/1.0").is_ok() {
        client
    } else {
        let der = tls::remote_certificate(addr).map_err(unavailable)?;
        if hutch_tls::fingerprint(&der) != token.fingerprint {
            return Err(other(anyhow::anyhow!(
                "Certificate fingerprint mismatch between certificate token and server \"{addr}\""
            )));
        }
        tls::store_server_cert(name, &der).map_err(other)?;
        let client = tls::client_for(name, addr, false).map_err(other)?;
        client.get("/1.0").map_err(unavailable)?;
        client
    };
    client
        .request(
            "POST",
            "/1.0/certificates",
            Some(&certificates_post("", raw)),
        )
        .map_err(|e| other(anyhow::anyhow!("Failed to create certificate: {e:#}")))?;
    conf.remotes.insert(
        name.to_string(),
        Remote {
            addr: addr.to_string(),
            protocol: if args.protocol.is_empty() {
                "lxd".into()
            } else {
                args.protocol.clone()
            },
            auth_type: "tls".into(),
            domain: args.domain.clone(),
            project: args.project.clone(),
            ..Remote::default()
        },
    );
    if args.project.is_empty() {
        set_project(conf, name, &client);
    }
    Ok(())
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
    let remote = if protocol == "oci" {
        // A registry: plain HTTP too, for one on a trusted network (loopback).
        if !matches!(url_scheme(addr), Some("https" | "http")) {
            bail!("Only http(s) URLs are supported for OCI registries");
        }
        Remote {
            addr: addr.trim_end_matches('/').to_string(),
            protocol,
            public: true,
            ..Remote::default()
        }
    } else if protocol == "simplestreams" {
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
        if let Some((scheme, _)) = addr.split_once("://") {
            if scheme != "unix" && scheme != "https" {
                bail!("Invalid URL scheme \"{scheme}\" in \"{addr}\"");
            }
        }
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
                "" if r.is_simplestreams() || r.is_oci() => "none",
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

/// A client for the remote `name` that runs instances: a hutchd on a unix socket, or an
/// LXD-protocol server over HTTPS (its stored certificate pinned, this client's presented).
pub fn client_of(name: &str, remote: &Remote) -> Result<Client> {
    if remote.public || remote.is_simplestreams() {
        bail!("The remote isn't a private LXD server");
    }
    server_of(name, remote)
}

/// A client for an LXD-protocol remote, public image servers included.
fn server_of(name: &str, remote: &Remote) -> Result<Client> {
    if remote.is_unix() {
        return Ok(Client::at(socket_of(remote)));
    }
    tls::client_for(name, &remote.addr, remote.public)
}

/// The client for the default remote; when that is no hutchd, one whose every request
/// fails with the reason.
pub fn default_client() -> Client {
    let conf = match ClientConfig::load() {
        Ok(c) => c,
        // The socket still works; the remote commands report the config error.
        Err(_) => return Client::new(),
    };
    match conf
        .remote(&conf.default_remote)
        .and_then(|r| client_of(&conf.default_remote, r))
    {
        Ok(c) => c,
        Err(e) => Client::unusable(&e.to_string()),
    }
}

/// `[REMOTE:]NAME` split as lxc splits it, with a client for the remote: `default` (the
/// default remote's, already made) when there is no prefix or it names the default one.
pub fn split(default: &Client, raw: &str) -> Result<(Client, String)> {
    split_in(&ClientConfig::load()?, default, raw)
}

fn split_in(conf: &ClientConfig, default: &Client, raw: &str) -> Result<(Client, String)> {
    let (remote, name) = conf.parse_remote(raw)?;
    if remote == conf.default_remote {
        return Ok((default.clone(), name));
    }
    Ok((client_of(&remote, conf.remote(&remote)?)?, name))
}

/// [`split`] of several names, which must all be on one remote (as lxc's per-name calls
/// end up when they are); the names without their prefix.
pub fn split_all(default: &Client, raws: &[String]) -> Result<(Client, Vec<String>)> {
    split_all_in(&ClientConfig::load()?, default, raws)
}

fn split_all_in(
    conf: &ClientConfig,
    default: &Client,
    raws: &[String],
) -> Result<(Client, Vec<String>)> {
    let mut client = default.clone();
    let mut names = Vec::with_capacity(raws.len());
    for (i, raw) in raws.iter().enumerate() {
        let (c, n) = split_in(conf, default, raw)?;
        if i > 0 && !c.same_server(&client) {
            bail!("Names on different remotes in one command are not supported");
        }
        client = c;
        names.push(n);
    }
    Ok((client, names))
}

/// Where a `REMOTE:` prefix leads for images.
pub enum ImageServer {
    /// A hutchd or LXD (its images API); `url` and `certificate` (PEM) say how a daemon
    /// reaches it to pull (None for a unix socket).
    Daemon {
        client: Client,
        remote: Option<LxdSource>,
    },
    /// A simplestreams server at this base URL.
    Streams { url: String },
    /// An OCI registry at this URL: only the daemon talks to it (it pulls).
    Registry { url: String },
}

/// How a daemon reaches an LXD-protocol image server to pull from it.
pub struct LxdSource {
    pub url: String,
    /// The server's certificate as stored for the remote (PEM), empty for system CAs.
    pub certificate: String,
}

/// The image server called `name`.
pub fn image_server(conf: &ClientConfig, name: &str) -> Result<ImageServer> {
    let remote = conf.remote(name)?;
    if remote.is_oci() {
        return Ok(ImageServer::Registry {
            url: remote.addr.clone(),
        });
    }
    if remote.is_simplestreams() {
        return Ok(ImageServer::Streams {
            url: remote.addr.clone(),
        });
    }
    let client = if name == conf.default_remote && !remote.public {
        default_client()
    } else {
        server_of(name, remote)?
    };
    let source = if remote.is_unix() {
        None
    } else {
        let certificate = tls::stored_server_cert(name)?
            .map(|der| hutch_tls::pem_of_der(&der))
            .unwrap_or_default();
        Some(LxdSource {
            url: remote.addr.clone(),
            certificate,
        })
    };
    Ok(ImageServer::Daemon {
        client,
        remote: source,
    })
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
        // lxc's list, and hutch's built-in registry first.
        assert_eq!(
            list(&c, Format::Csv).unwrap(),
            "docker,https://docker.io,oci,none,YES,YES,NO\n\
             images,https://images.linuxcontainers.org,simplestreams,none,YES,NO,NO\n\
             local (current),unix://,lxd,file access,NO,YES,NO\n\
             ubuntu,https://cloud-images.ubuntu.com/releases,simplestreams,none,YES,YES,NO\n\
             ubuntu-daily,https://cloud-images.ubuntu.com/daily,simplestreams,none,YES,YES,NO\n"
        );
    }

    #[test]
    fn remote_prefixes_lead_to_their_server() {
        let (_d, mut c) = conf();
        c.remotes.insert(
            "s2".into(),
            Remote {
                addr: "unix:///tmp/s2.socket".into(),
                ..Remote::default()
            },
        );
        let default = Client::at(PathBuf::from("/tmp/default.socket"));
        let s2 = Client::at(PathBuf::from("/tmp/s2.socket"));
        let (client, name) = split_in(&c, &default, "s2:c1").unwrap();
        assert!(client.same_server(&s2));
        assert_eq!(name, "c1");
        let (client, name) = split_in(&c, &default, "s2:").unwrap();
        assert!(client.same_server(&s2) && name.is_empty());
        for raw in ["c1", "local:c1", "c1/snap:1"] {
            let (client, name) = split_in(&c, &default, raw).unwrap();
            assert!(client.same_server(&default), "{raw}");
            assert_eq!(name, raw.trim_start_matches("local:"));
        }
        assert_eq!(
            err(split_in(&c, &default, "images:c1")),
            "The remote isn't a private LXD server"
        );
        assert_eq!(
            err(split_in(&c, &default, "nope:c1")),
            "The remote \"nope\" doesn't exist"
        );
        let raws = ["s2:a".to_string(), "s2:b".to_string()];
        let (client, names) = split_all_in(&c, &default, &raws).unwrap();
        assert!(client.same_server(&s2));
        assert_eq!(names, ["a", "b"]);
        let mixed = ["s2:a".to_string(), "b".to_string()];
        assert!(split_all_in(&c, &default, &mixed).is_err());
    }

    #[test]
    fn lxd_addresses_and_bad_schemes() {
        let (_d, mut c) = conf();
        assert_eq!(
            err(add(&mut c, "x", "http://127.0.0.1", AddArgs::default())),
            "Invalid URL scheme \"http\" in \"http://127.0.0.1\""
        );
        let r = add(&mut c, "y", "10.0.0.1", AddArgs::default()).unwrap();
        assert_eq!(r.addr, "https://10.0.0.1:8443");
        assert_eq!(r.auth_type, "tls");
    }

    #[test]
    fn remotes_that_are_not_a_hutchd_say_so() {
        let (_d, c) = conf();
        assert_eq!(
            err(client_of("images", &c.remotes["images"])),
            "The remote isn't a private LXD server"
        );
        assert!(matches!(
            image_server(&c, "images"),
            Ok(ImageServer::Streams { .. })
        ));
    }

    #[test]
    fn oci_remotes_are_registries_the_daemon_pulls_from() {
        let (_d, mut c) = conf();
        let oci = || AddArgs {
            protocol: "oci".into(),
            ..AddArgs::default()
        };
        let r = add(&mut c, "reg", "http://127.0.0.1:5000/", oci()).unwrap();
        assert_eq!((r.addr.as_str(), r.public), ("http://127.0.0.1:5000", true));
        assert_eq!(
            err(add(&mut c, "bad", "127.0.0.1:5000", oci())),
            "Only http(s) URLs are supported for OCI registries"
        );
        for name in ["reg", "docker"] {
            assert!(matches!(
                image_server(&c, name),
                Ok(ImageServer::Registry { .. })
            ));
        }
        assert_eq!(c.remotes["docker"].addr, "https://docker.io");
        assert!(c.remotes["docker"].is_static);
    }
}
