//! `hutch config get|set|unset|show|edit`, on an instance or, without an instance name, on
//! the server (as `lxc config` does), and `hutch config device ...` (in `device`).

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::device::{self, get_config, instance_writable};
use super::{edit as editor, lxc_format, template};
use crate::http::{encode, Client};

/// `hutch config ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Print a key: `[INSTANCE] KEY` (the server's without an instance).
    Get {
        first: String,
        second: Option<String>,
        /// The instance's key after profiles are applied.
        #[arg(short, long)]
        expanded: bool,
    },
    /// Set keys: `[INSTANCE] KEY=VALUE...` or `[INSTANCE] KEY VALUE` (the server's without
    /// an instance).
    #[command(after_long_help = server_keys_help())]
    Set {
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Unset a key: `[INSTANCE] KEY` (the server's without an instance).
    Unset {
        first: String,
        second: Option<String>,
    },
    /// Show the config of an instance, or of the server without one.
    Show {
        name: Option<String>,
        /// With the profiles' config and devices applied.
        #[arg(short, long)]
        expanded: bool,
    },
    /// Edit the config of an instance (or of the server) as YAML: in $VISUAL/$EDITOR on a
    /// terminal, else read from stdin.
    Edit { name: Option<String> },
    /// Manage instance devices.
    #[command(subcommand)]
    Device(device::InstanceDeviceCmd),
    /// Show or edit the image metadata of an instance.
    #[command(subcommand)]
    Metadata(template::MetadataCmd),
    /// Manage the file templates of an instance.
    #[command(subcommand)]
    Template(template::TemplateCmd),
    /// Manage trusted clients.
    #[command(subcommand)]
    Trust(super::trust::Cmd),
}

/// Runs one `hutch config` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    use super::remote::split;
    match cmd {
        Cmd::Get {
            first,
            second: None,
            expanded,
        } => {
            if expanded {
                bail!("--expanded cannot be used with a server");
            }
            server::get(c, &first)
        }
        Cmd::Get {
            first,
            second: Some(key),
            expanded,
        } => {
            let (c, name) = split(c, &first)?;
            if name.is_empty() {
                return server::get(&c, &key);
            }
            get(&c, &name, &key, expanded)
        }
        Cmd::Set { args } => match set_target(&args) {
            SetTarget::Server(pairs) => server::set(c, &pairs),
            SetTarget::Instance(name, pairs) => {
                let (c, name) = split(c, &name)?;
                if name.is_empty() {
                    return server::set(&c, &pairs);
                }
                set(&c, &name, &pairs)
            }
        },
        Cmd::Unset {
            first,
            second: None,
        } => server::unset(c, &first),
        Cmd::Unset {
            first,
            second: Some(key),
        } => {
            let (c, name) = split(c, &first)?;
            if name.is_empty() {
                return server::unset(&c, &key);
            }
            unset(&c, &name, &key)
        }
        Cmd::Show {
            name: None,
            expanded,
        } => {
            if expanded {
                bail!("--expanded cannot be used with a server");
            }
            server::show(c)
        }
        Cmd::Show {
            name: Some(name),
            expanded,
        } => {
            let (c, name) = split(c, &name)?;
            if name.is_empty() {
                return server::show(&c);
            }
            show(&c, &name, expanded)
        }
        Cmd::Edit { name: None } => server::edit(c),
        Cmd::Edit { name: Some(name) } => {
            let (c, name) = split(c, &name)?;
            if name.is_empty() {
                return server::edit(&c);
            }
            edit(&c, &name)
        }
        Cmd::Device(cmd) => device::run_instance(c, cmd),
        Cmd::Metadata(cmd) => template::run_metadata(c, cmd),
        Cmd::Template(cmd) => template::run_template(c, cmd),
        Cmd::Trust(cmd) => super::trust::run(c, cmd),
    }
}

/// The server keys, from the api crate's table, for `hutch config set --help`.
fn server_keys_help() -> String {
    let mut out = String::from("Server keys:\n");
    for k in hutch_api::server_config::SERVER_KEYS {
        let default = if k.default.is_empty() {
            String::new()
        } else {
            format!(" (default {})", k.default)
        };
        out.push_str(&format!("  {}{default}\n      {}\n", k.name, k.doc));
    }
    for (prefix, doc) in hutch_api::server_config::SERVER_KEY_PREFIXES {
        out.push_str(&format!("  {prefix}*\n      {doc}\n"));
    }
    out
}

/// What `config set` acts on, and its `KEY=VALUE` or `KEY VALUE` arguments.
#[derive(Debug, PartialEq, Eq)]
enum SetTarget {
    Server(Vec<String>),
    Instance(String, Vec<String>),
}

/// `lxc config set`'s rule: the server when every argument is `KEY=VALUE`, when the first
/// is a key (keys have a dot, instance names cannot), or for a lone `KEY VALUE`; else the
/// first argument names the instance.
fn set_target(args: &[String]) -> SetTarget {
    let all_pairs = args.iter().all(|a| a.contains('='));
    let any_pair = args.iter().any(|a| a.contains('='));
    let first_is_key = args.first().is_some_and(|a| a.contains('.'));
    if all_pairs || first_is_key || (args.len() == 2 && !any_pair) {
        SetTarget::Server(args.to_vec())
    } else {
        SetTarget::Instance(args[0].clone(), args[1..].to_vec())
    }
}

/// The server's config (`/1.0`).
mod server {
    use super::*;

    pub fn get(client: &Client, key: &str) -> Result<()> {
        let v = client.get("/1.0")?;
        let value = match &v["config"][key] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            // A write-only key that is set shows as `true`.
            other => other.to_string(),
        };
        println!("{value}");
        Ok(())
    }

    /// Sets keys with a PATCH of just them; the daemon validates against its key table.
    pub fn set(client: &Client, pairs: &[String]) -> Result<()> {
        let config = get_config(pairs)?;
        client.request("PATCH", "/1.0", Some(&json!({ "config": config })))?;
        Ok(())
    }

    /// An empty value returns a key to its default.
    pub fn unset(client: &Client, key: &str) -> Result<()> {
        client.request("PATCH", "/1.0", Some(&json!({"config": {key: ""}})))?;
        Ok(())
    }

    pub fn show(client: &Client) -> Result<()> {
        let v = client.get("/1.0")?;
        print!(
            "{}",
            lxc_format::to_yaml(&lxc_format::decode(&v, &lxc_format::SERVER_PUT))
        );
        Ok(())
    }

    /// Replaces the server config (`api.ServerPut`) with the edited YAML.
    pub fn edit(client: &Client) -> Result<()> {
        let v = client.get("/1.0")?;
        let current = lxc_format::to_yaml(&lxc_format::decode(&v, &lxc_format::SERVER_PUT));
        editor::edit("", &current, |text| {
            let new = editor::parse_yaml(text)?;
            let mut config = serde_json::Map::new();
            for (k, x) in new["config"].as_object().into_iter().flatten() {
                // Write-only keys read back as `true`: sent back unchanged they would
                // become the password "true", so they are left out.
                if !x.is_boolean() {
                    config.insert(k.clone(), editor::string_field(x)?);
                }
            }
            client.request("PUT", "/1.0", Some(&json!({ "config": config })))?;
            Ok(())
        })
    }
}

fn url(name: &str) -> String {
    format!("/1.0/instances/{}", encode(name))
}

pub fn get(client: &Client, name: &str, key: &str, expanded: bool) -> Result<()> {
    let v = client.get(&url(name))?;
    let config = if expanded {
        "expanded_config"
    } else {
        "config"
    };
    println!("{}", v[config][key].as_str().unwrap_or(""));
    Ok(())
}

/// Sets keys with a full PUT of the instance, as lxc does.
pub fn set(client: &Client, name: &str, pairs: &[String]) -> Result<()> {
    let config = get_config(pairs)?;
    let v = client.get(&url(name))?;
    let mut put = instance_writable(&v);
    if !put["config"].is_object() {
        put["config"] = json!({});
    }
    for (k, x) in config {
        put["config"][k] = x;
    }
    client.run("PUT", &url(name), Some(&put))?;
    Ok(())
}

/// Unsets a key: a full PUT without it (lxc's error when it is not set).
pub fn unset(client: &Client, name: &str, key: &str) -> Result<()> {
    let v = client.get(&url(name))?;
    let mut put = instance_writable(&v);
    if put["config"]
        .as_object_mut()
        .and_then(|c| c.remove(key))
        .is_none()
    {
        bail!("Can't unset key '{key}', it's not currently set");
    }
    client.run("PUT", &url(name), Some(&put))?;
    Ok(())
}

/// `api.InstancePut` as YAML; `--expanded` shows the profiles' config and devices applied.
/// `INSTANCE/SNAPSHOT` shows the snapshot (`api.InstanceSnapshot`).
pub fn show(client: &Client, name: &str, expanded: bool) -> Result<()> {
    if let Some((inst, snap)) = name.split_once('/') {
        let mut v = client.get(&format!("{}/snapshots/{}", url(inst), encode(snap)))?;
        if expanded {
            v["config"] = v["expanded_config"].clone();
            v["devices"] = v["expanded_devices"].clone();
        }
        print!(
            "{}",
            lxc_format::to_yaml(&lxc_format::decode(&v, &lxc_format::INSTANCE_SNAPSHOT))
        );
        return Ok(());
    }
    let v = client.get(&url(name))?;
    let mut out = instance_writable(&v);
    if expanded {
        out["config"] = v["expanded_config"].clone();
        out["devices"] = v["expanded_devices"].clone();
    }
    print!(
        "{}",
        lxc_format::to_yaml(&lxc_format::decode(&out, &lxc_format::INSTANCE_PUT))
    );
    Ok(())
}

/// The YAML of an instance as lxc's `config edit` opens it: `api.Instance` less the
/// expanded config and devices.
fn instance_edit_yaml(v: &Value) -> String {
    lxc_format::to_yaml(&lxc_format::decode(v, &lxc_format::INSTANCE_EDIT))
}

const INSTANCE_HELP: &str = "### This is a YAML representation of the configuration.
### Any line starting with a '# will be ignored.
###
### A sample configuration looks like:
### name: instance1
### profiles:
### - default
### config:
###   volatile.eth0.hwaddr: 00:16:3e:e9:f8:7f
### devices:
###   homedir:
###     path: /extra
###     source: /home/user
###     type: disk
### ephemeral: false
###
### Note that the name is shown but cannot be changed";

/// Edits the instance's writable config (`api.InstancePut`) as YAML.
pub fn edit(client: &Client, name: &str) -> Result<()> {
    if let Some((inst, snap)) = name.split_once('/') {
        // A snapshot's only writable field is its expiry, which lxc edits only where the
        // server has the extension for it.
        let server = client.get("/1.0")?;
        let has = server["api_extensions"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x == "snapshot_expiry"));
        if !has {
            bail!("The server is missing the required \"snapshot_expiry\" API extension");
        }
        let surl = format!("{}/snapshots/{}", url(inst), encode(snap));
        let v = client.get(&surl)?;
        let current = lxc_format::to_yaml(&lxc_format::decode(&v, &lxc_format::INSTANCE_SNAPSHOT));
        return editor::edit(INSTANCE_HELP, &current, |text| {
            let new = editor::parse_yaml(text)?;
            client.run(
                "PUT",
                &surl,
                Some(&json!({"expires_at": new["expires_at"]})),
            )?;
            Ok(())
        });
    }
    let v = client.get(&url(name))?;
    editor::edit(INSTANCE_HELP, &instance_edit_yaml(&v), |text| {
        let new = editor::parse_yaml(text)?;
        let put = json!({
            "architecture": editor::string_field(&new["architecture"])?,
            "config": editor::string_map(&new["config"])?,
            "devices": editor::devices_map(&new["devices"])?,
            "ephemeral": new["ephemeral"].as_bool().unwrap_or(false),
            "profiles": new["profiles"].as_array().cloned().unwrap_or_default(),
            "stateful": new["stateful"].as_bool().unwrap_or(false),
            "description": editor::string_field(&new["description"])?,
        });
        client.run("PUT", &url(name), Some(&put))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(args: &[&str]) -> SetTarget {
        set_target(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn set_tells_server_keys_from_instances_as_lxc_does() {
        for server in [
            &["core.https_address", ":8443"][..],
            &["core.https_address=:8443"],
            &["a=1", "b=2"],
            &["user.x", "y"],
            &["key", "value"],
        ] {
            assert_eq!(
                target(server),
                SetTarget::Server(strings(server)),
                "{server:?}"
            );
        }
        assert_eq!(
            target(&["c1", "limits.memory", "64MiB"]),
            SetTarget::Instance("c1".into(), strings(&["limits.memory", "64MiB"]))
        );
        assert_eq!(
            target(&["c1", "limits.memory=64MiB", "limits.cpu=1"]),
            SetTarget::Instance(
                "c1".into(),
                strings(&["limits.memory=64MiB", "limits.cpu=1"])
            )
        );
        assert_eq!(
            target(&["c1", "limits.memory=64MiB"]),
            SetTarget::Instance("c1".into(), strings(&["limits.memory=64MiB"]))
        );
    }

    #[test]
    fn pairs_take_both_spellings() {
        let m = get_config(&strings(&["a=1", "b=2"])).unwrap();
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "2");
        let m = get_config(&strings(&["b", "2"])).unwrap();
        assert_eq!(m["b"], "2");
        assert!(get_config(&strings(&["lonely"])).is_err());
        assert!(get_config(&strings(&["a=1", "b", "2"])).is_err());
    }
}
