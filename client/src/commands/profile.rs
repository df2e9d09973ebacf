//! `hutch profile ...`: lxc's profile commands, their arguments, messages and output.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::device::{self, get_config, instance_writable};
use super::{edit as editor, lxc_format};
use crate::http::{encode, Client};
use crate::output::{self, Format};

/// `hutch profile ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// Add a profile to an instance: INSTANCE PROFILE.
    Add { instance: String, profile: String },
    /// Set an instance's profiles: INSTANCE PROFILE[,PROFILE...] ("" for none).
    #[command(alias = "apply")]
    Assign { instance: String, profiles: String },
    /// Copy a profile: PROFILE NEW.
    #[command(alias = "cp")]
    Copy { name: String, new: String },
    /// Create a profile.
    Create { name: String },
    /// Delete a profile.
    #[command(alias = "rm")]
    Delete { name: String },
    /// Manage profile devices.
    #[command(subcommand)]
    Device(device::ProfileDeviceCmd),
    /// Edit a profile as YAML ($VISUAL/$EDITOR on a terminal, else stdin).
    Edit { name: String },
    /// Get a profile config key: PROFILE KEY.
    Get { name: String, key: String },
    /// List profiles.
    #[command(alias = "ls")]
    List {
        /// `[REMOTE:]`.
        remote: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Remove a profile from an instance: INSTANCE PROFILE.
    Remove { instance: String, profile: String },
    /// Rename a profile: PROFILE NEW.
    #[command(alias = "mv")]
    Rename { name: String, new: String },
    /// Set profile config keys: PROFILE KEY VALUE, or PROFILE KEY=VALUE...
    Set {
        name: String,
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Show a profile as YAML.
    Show { name: String },
    /// Unset a profile config key: PROFILE KEY.
    Unset { name: String, key: String },
}

/// Runs one `hutch profile` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Add { instance, profile } => add(c, &instance, &profile),
        Cmd::Assign { instance, profiles } => assign(c, &instance, &profiles),
        Cmd::Copy { name, new } => copy(c, &name, &new),
        Cmd::Create { name } => create(c, &name),
        Cmd::Delete { name } => delete(c, &name),
        Cmd::Device(cmd) => device::run_profile(c, cmd),
        Cmd::Edit { name } => edit(c, &name),
        Cmd::Get { name, key } => get(c, &name, &key),
        Cmd::List { remote, format } => {
            let (c, _) = super::remote::split(c, remote.as_deref().unwrap_or(""))?;
            list(&c, format)
        }
        Cmd::Remove { instance, profile } => remove(c, &instance, &profile),
        Cmd::Rename { name, new } => rename(c, &name, &new),
        Cmd::Set { name, args } => set(c, &name, &args),
        Cmd::Show { name } => show(c, &name),
        Cmd::Unset { name, key } => unset(c, &name, &key),
    }
}

fn url(name: &str) -> String {
    format!("/1.0/profiles/{}", encode(name))
}

fn instance_url(name: &str) -> String {
    format!("/1.0/instances/{}", encode(name))
}

fn writable(p: &Value) -> Value {
    json!({"config": p["config"], "description": p["description"], "devices": p["devices"]})
}

/// Replaces an instance's profile list (a full PUT of its writable part, as lxc does).
fn set_profiles(
    c: &Client,
    instance: &str,
    edit: impl FnOnce(Vec<Value>) -> Result<Vec<Value>>,
) -> Result<()> {
    let v = c.get(&instance_url(instance))?;
    let mut put = instance_writable(&v);
    let profiles = put["profiles"].as_array().cloned().unwrap_or_default();
    put["profiles"] = Value::Array(edit(profiles)?);
    c.run("PUT", &instance_url(instance), Some(&put))?;
    Ok(())
}

pub fn add(c: &Client, instance: &str, profile: &str) -> Result<()> {
    set_profiles(c, instance, |mut p| {
        p.push(profile.into());
        Ok(p)
    })?;
    println!("Profile {profile} added to {instance}");
    Ok(())
}

pub fn assign(c: &Client, instance: &str, profiles: &str) -> Result<()> {
    set_profiles(c, instance, |_| {
        Ok(if profiles.is_empty() {
            Vec::new()
        } else {
            profiles.split(',').map(Value::from).collect()
        })
    })?;
    let shown = if profiles.is_empty() {
        "(none)"
    } else {
        profiles
    };
    println!("Profiles {shown} applied to {instance}");
    Ok(())
}

pub fn remove(c: &Client, instance: &str, profile: &str) -> Result<()> {
    set_profiles(c, instance, |p| {
        if !p.iter().any(|x| x == profile) {
            bail!("Profile {profile} isn't currently applied to {instance}");
        }
        Ok(p.into_iter().filter(|x| x != profile).collect())
    })?;
    println!("Profile {profile} removed from {instance}");
    Ok(())
}

pub fn copy(c: &Client, name: &str, new: &str) -> Result<()> {
    let p = c.get(&url(name))?;
    let mut post = writable(&p);
    post["name"] = new.into();
    c.request("POST", "/1.0/profiles", Some(&post))?;
    Ok(())
}

pub fn list(client: &Client, format: Format) -> Result<()> {
    let all = client.get("/1.0/profiles?recursion=1")?;
    let mut rows: Vec<Vec<String>> = all
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                p["name"].as_str().unwrap_or("").into(),
                p["description"].as_str().unwrap_or("").into(),
                p["used_by"]
                    .as_array()
                    .map(|a| a.len())
                    .unwrap_or(0)
                    .to_string(),
            ]
        })
        .collect();
    rows.sort_by(|a, b| lxc_format::natural_cmp(&a[0], &b[0]));
    let raw = lxc_format::decode_list(&all, &lxc_format::PROFILE);
    match format {
        Format::Json => print!("{}", lxc_format::to_json(&raw)),
        Format::Yaml => print!("{}", lxc_format::to_yaml(&raw)),
        _ => print!(
            "{}",
            output::render(
                format,
                &["NAME".into(), "DESCRIPTION".into(), "USED BY".into()],
                &rows,
                &Value::Null
            )?
        ),
    }
    Ok(())
}

pub fn show(client: &Client, name: &str) -> Result<()> {
    let p = client.get(&url(name))?;
    print!(
        "{}",
        lxc_format::to_yaml(&lxc_format::decode(&p, &lxc_format::PROFILE))
    );
    Ok(())
}

pub fn create(client: &Client, name: &str) -> Result<()> {
    client.request(
        "POST",
        "/1.0/profiles",
        Some(&json!({"name": name, "config": {}, "devices": {}, "description": ""})),
    )?;
    println!("Profile {name} created");
    Ok(())
}

pub fn delete(client: &Client, name: &str) -> Result<()> {
    client.request("DELETE", &url(name), None)?;
    println!("Profile {name} deleted");
    Ok(())
}

pub fn get(client: &Client, name: &str, key: &str) -> Result<()> {
    println!(
        "{}",
        client.get(&url(name))?["config"][key]
            .as_str()
            .unwrap_or("")
    );
    Ok(())
}

/// Sets keys with a PUT of the profile's writable part, as lxc does.
pub fn set(client: &Client, name: &str, args: &[String]) -> Result<()> {
    let keys = get_config(args)?;
    let p = client.get(&url(name))?;
    let mut put = writable(&p);
    if !put["config"].is_object() {
        put["config"] = json!({});
    }
    for (k, v) in keys {
        put["config"][k] = v;
    }
    client.request("PUT", &url(name), Some(&put))?;
    Ok(())
}

pub fn unset(client: &Client, name: &str, key: &str) -> Result<()> {
    let p = client.get(&url(name))?;
    let mut put = writable(&p);
    if let Some(c) = put["config"].as_object_mut() {
        c.remove(key);
    }
    client.request("PUT", &url(name), Some(&put))?;
    Ok(())
}

pub fn rename(client: &Client, name: &str, new: &str) -> Result<()> {
    client.request("POST", &url(name), Some(&json!({"name": new})))?;
    println!("Profile {name} renamed to {new}");
    Ok(())
}

const PROFILE_HELP: &str = "### This is a YAML representation of the profile.
### Any line starting with a '# will be ignored.
###
### A profile consists of a set of configuration items followed by a set of
### devices.
###
### An example would look like:
### name: onenic
### config:
###   raw.lxc: lxc.aa_profile=unconfined
### devices:
###   eth0:
###     nictype: bridged
###     parent: lxdbr0
###     type: nic
###
### Note that the name is shown but cannot be changed";

pub fn edit(client: &Client, name: &str) -> Result<()> {
    let p = client.get(&url(name))?;
    let current = lxc_format::to_yaml(&lxc_format::decode(&p, &lxc_format::PROFILE));
    editor::edit(PROFILE_HELP, &current, |text| {
        let new = editor::parse_yaml(text)?;
        let put = json!({
            "config": editor::string_map(&new["config"])?,
            "description": editor::string_field(&new["description"])?,
            "devices": editor::devices_map(&new["devices"])?,
        });
        client.request("PUT", &url(name), Some(&put))?;
        Ok(())
    })
}
