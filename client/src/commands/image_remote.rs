//! Images on simplestreams remotes: `image list REMOTE:`, `image info REMOTE:ALIAS` read
//! the server from the client (hutch_images::simplestreams), and `image copy REMOTE:ALIAS
//! local:` asks the daemon to pull, as lxc 5.0 does.

use anyhow::{bail, Context, Result};
use hutch_images::simplestreams::{RemoteImage, SimpleStreams};
use serde_json::{json, Value};

use super::image::{info_text, point_aliases, print_list};
use super::remote::{image_server, ImageServer, LxdSource};
use crate::config::ClientConfig;
use crate::http::{encode, Client};
use crate::output::{self, Format};
use crate::progress::Progress;

/// Refuses a `REMOTE:` that is not the hutchd this client talks to (the default remote).
pub fn require_current(remote: &str) -> Result<()> {
    let conf = ClientConfig::load()?;
    if remote == conf.default_remote {
        return Ok(());
    }
    match image_server(&conf, remote)? {
        ImageServer::Streams { .. } | ImageServer::Registry { .. } => {
            bail!("The remote isn't a private LXD server")
        }
        ImageServer::Daemon { client: c, .. } => {
            let current = image_server(&conf, &conf.default_remote)?;
            if matches!(&current, ImageServer::Daemon { client: d, .. } if d.same_server(&c)) {
                return Ok(());
            }
            bail!(
                "The remote \"{remote}\" is not the current one; `hutch remote switch {remote}` first"
            )
        }
    }
}

/// `REMOTE:NAME` where the remote (or, without one, the default remote) is a
/// simplestreams server: its URL and the name.
pub fn streams_name(raw: &str) -> Result<Option<(String, String)>> {
    let conf = ClientConfig::load()?;
    let (remote, name) = conf.parse_remote(raw)?;
    Ok(match image_server(&conf, &remote)? {
        ImageServer::Streams { url, .. } => Some((url, name)),
        ImageServer::Registry { .. } => bail!(
            "The remote {remote:?} is an OCI registry: its images are only pulled (launch, image copy)"
        ),
        ImageServer::Daemon { .. } => None,
    })
}

/// `REMOTE:IMAGE[:TAG|@DIGEST]` where the remote is an OCI registry: its URL and the name.
pub fn registry_name(raw: &str) -> Result<Option<(String, String)>> {
    let conf = ClientConfig::load()?;
    let (remote, name) = conf.parse_remote(raw)?;
    Ok(match image_server(&conf, &remote)? {
        ImageServer::Registry { url } => Some((url, name)),
        _ => None,
    })
}

/// `image list` arguments whose first names a simplestreams remote: its URL and the
/// filters (the text after the colon is one when not empty).
pub fn streams_filters(args: &[String]) -> Result<Option<(String, Vec<String>)>> {
    // `key=value` filters may hold a colon; a remote comes before any `=`.
    let names_remote = |a: &String| {
        a.find(':')
            .is_some_and(|c| a.find('=').is_none_or(|eq| c < eq))
    };
    let Some(first) = args.first().filter(|a| names_remote(a)) else {
        // No remote named: the default one, which may be an image server.
        let conf = ClientConfig::load()?;
        return Ok(match image_server(&conf, &conf.default_remote)? {
            ImageServer::Streams { url } => Some((url, args.to_vec())),
            ImageServer::Daemon { .. } | ImageServer::Registry { .. } => None,
        });
    };
    let Some((url, rest)) = streams_name(first)? else {
        return Ok(None);
    };
    let mut filters: Vec<String> = Vec::new();
    if !rest.is_empty() {
        filters.push(rest);
    }
    filters.extend(args[1..].iter().cloned());
    Ok(Some((url, filters)))
}

fn server(url: &str) -> Result<SimpleStreams> {
    SimpleStreams::new(url).with_context(|| format!("image server {url}"))
}

/// A remote image in the shape of LXD's `api.Image`, as lxc sees simplestreams images.
pub fn api_image(i: &RemoteImage) -> Value {
    json!({
        "aliases": i.aliases.iter().map(|a| json!({"name": a, "description": ""})).collect::<Vec<_>>(),
        "architecture": i.architecture,
        "auto_update": false,
        "cached": false,
        "created_at": i.created_at,
        "expires_at": "0001-01-01T00:00:00Z",
        "filename": i.filename,
        "fingerprint": i.fingerprint,
        "last_used_at": "0001-01-01T00:00:00Z",
        "profiles": [],
        "properties": i.properties,
        "public": true,
        "size": i.size,
        "type": i.kind,
        "uploaded_at": i.created_at,
    })
}

/// `image list REMOTE:[filter...]` of a simplestreams remote.
pub fn list(url: &str, filters: &[String], format: Format, columns: &str) -> Result<()> {
    let images = server(url)?.images()?;
    print_list(
        images.iter().map(api_image).collect(),
        filters,
        format,
        columns,
    )
}

/// `image info REMOTE:ALIAS` of a simplestreams remote.
pub fn info(url: &str, name: &str) -> Result<()> {
    let image = server(url)?.resolve(name)?;
    print!("{}", info_text(&api_image(&image)));
    Ok(())
}

/// The `source` of a pull from a simplestreams server. As lxc's launch sends it, the name
/// goes as `alias`: the server tries it as an alias, then as a fingerprint prefix.
pub fn pull_source(url: &str, name: &str) -> Value {
    json!({"type": "image", "mode": "pull", "server": url, "protocol": "simplestreams",
        "alias": name})
}

/// The `source` of a pull from an OCI registry (as Incus sends it): the daemon resolves
/// `IMAGE[:TAG|@DIGEST]` on the registry.
pub fn registry_pull_source(url: &str, name: &str) -> Value {
    json!({"type": "image", "mode": "pull", "server": url, "protocol": "oci", "alias": name})
}

/// Where an image on an LXD-protocol server (another hutchd, an LXD) is pulled from: the
/// `source` of the target's `POST /1.0/images` or `/1.0/instances`, and the image as the
/// source describes it. As lxc's CopyImage/CreateInstanceFromImage: an alias goes as such
/// only when the image is public, else the fingerprint, with a secret the source makes for
/// it (`POST /1.0/images/<fp>/secret`).
pub fn lxd_pull_source(source: &Client, server: &LxdSource, name: &str) -> Result<(Value, Value)> {
    let alias_target = source
        .get(&format!("/1.0/images/aliases/{}", encode(name)))
        .ok()
        .and_then(|a| a["target"].as_str().map(String::from));
    let fp = alias_target.clone().unwrap_or_else(|| name.to_string());
    let image = source
        .get(&format!("/1.0/images/{}", encode(&fp)))
        .map_err(|_| anyhow::anyhow!("Image not found"))?;
    let fp = image["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let public = image["public"].as_bool().unwrap_or(false);
    let mut src = json!({"type": "image", "mode": "pull", "server": server.url,
        "protocol": "lxd", "certificate": server.certificate});
    if alias_target.is_some() && public {
        src["alias"] = json!(name);
    } else {
        src["fingerprint"] = json!(fp);
    }
    if !public {
        let env = source.request("POST", &format!("/1.0/images/{fp}/secret"), None)?;
        let secret = env.metadata["metadata"]["secret"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("the source made no secret for the image"))?;
        src["secret"] = json!(secret);
    }
    Ok((src, image))
}

/// How a daemon reaches the server of `client` to pull from it: the remote's URL and
/// stored certificate, or for a unix socket the server's own HTTPS addresses and
/// certificate (as lxc's GetConnectionInfo gives them).
pub fn reach(client: &Client, remote: Option<LxdSource>) -> Result<LxdSource> {
    if let Some(r) = remote {
        return Ok(r);
    }
    let server = client.get("/1.0")?;
    let url = super::copy::addresses(client, &server)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("The source server isn't listening on the network"))?;
    Ok(LxdSource {
        url,
        certificate: server["environment"]["certificate"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

/// `image copy SRC:NAME DST:` between two LXD-protocol servers: `DST` pulls.
pub fn copy_between(
    source: &Client,
    server: LxdSource,
    name: &str,
    target: &Client,
    opts: &CopyOptions,
) -> Result<()> {
    let (src, image) = lxd_pull_source(source, &server, name)?;
    let mut aliases = Vec::new();
    if opts.copy_aliases && !opts.registry {
        aliases.extend(
            image["aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["name"].as_str().map(String::from)),
        );
    }
    aliases.extend(opts.aliases.iter().cloned());
    let body = json!({"source": src, "public": opts.public, "auto_update": opts.auto_update});
    let env = target.request("POST", "/1.0/images", Some(&body))?;
    let progress = Progress::new("Copying the image: %s");
    let op = target.wait_op_progress(&env, Some(&progress))?;
    let fp = op["metadata"]["fingerprint"]
        .as_str()
        .or(image["fingerprint"].as_str())
        .unwrap_or_default()
        .to_string();
    point_aliases(target, &aliases, &fp)?;
    if !output::quiet() {
        println!("Image copied successfully!");
    }
    Ok(())
}

/// `image copy`'s flags.
pub struct CopyOptions {
    pub aliases: Vec<String>,
    pub copy_aliases: bool,
    pub public: bool,
    pub auto_update: bool,
    /// The remote is an OCI registry (`protocol: oci`).
    pub registry: bool,
}

/// `image copy REMOTE:NAME local:`: the daemon pulls the image, then the aliases are
/// pointed at it as lxc does (`--copy-aliases`: every alias the server gives it).
pub fn copy(
    client: &Client,
    url: &str,
    name: &str,
    target: &str,
    opts: &CopyOptions,
) -> Result<()> {
    if target
        .split_once(':')
        .is_none_or(|(_, rest)| !rest.is_empty())
    {
        bail!("The target must be a remote (\"local:\"), not an image");
    }
    let mut aliases = Vec::new();
    if opts.copy_aliases {
        // As lxc: only then is the image looked up first (the listing costs).
        aliases = server(url)?.resolve(name)?.aliases;
    }
    aliases.extend(opts.aliases.iter().cloned());
    let source = match opts.registry {
        true => registry_pull_source(url, name),
        false => pull_source(url, name),
    };
    let body = json!({
        "source": source,
        "public": opts.public,
        "auto_update": opts.auto_update,
    });
    let env = client.request("POST", "/1.0/images", Some(&body))?;
    let progress = Progress::new("Copying the image: %s");
    let op = client.wait_op_progress(&env, Some(&progress))?;
    let fp = op["metadata"]["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if fp.is_empty() {
        bail!("the server did not say which image it pulled");
    }
    point_aliases(client, &aliases, &fp)?;
    if !output::quiet() {
        println!("Image copied successfully!");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_name_the_image_as_lxc_launch_does() {
        let s = pull_source("https://127.0.0.1:8443", "alpine/edge");
        assert_eq!(
            s,
            json!({"type": "image", "mode": "pull", "server": "https://127.0.0.1:8443",
                "protocol": "simplestreams", "alias": "alpine/edge"})
        );
    }
}
