//! `hutch profile list|show|create|delete|set|unset|get|rename|edit`.

use std::io::Read;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::http::{encode, Client};
use crate::output::{self, Format};

/// `hutch profile ...`.
#[derive(Subcommand)]
pub enum Cmd {
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

/// Runs one `hutch profile` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::List { format } => list(c, format),
        Cmd::Show { name } => show(c, &name),
        Cmd::Create { name } => create(c, &name),
        Cmd::Delete { name } => delete(c, &name),
        Cmd::Get { name, key } => get(c, &name, &key),
        Cmd::Set { name, key, value } => set(c, &name, &key, &value),
        Cmd::Unset { name, key } => unset(c, &name, &key),
        Cmd::Rename { name, new } => rename(c, &name, &new),
        Cmd::Edit { name } => edit(c, &name),
    }
}

fn url(name: &str) -> String {
    format!("/1.0/profiles/{}", encode(name))
}

pub fn list(client: &Client, format: Format) -> Result<()> {
    let all = client.get("/1.0/profiles?recursion=1")?;
    let items = all.as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
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
    print!(
        "{}",
        output::render(
            format,
            &["NAME".into(), "DESCRIPTION".into(), "USED BY".into()],
            &rows,
            &Value::Array(items)
        )?
    );
    Ok(())
}

pub fn show(client: &Client, name: &str) -> Result<()> {
    print!("{}", serde_yaml::to_string(&client.get(&url(name))?)?);
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

pub fn set(client: &Client, name: &str, key: &str, value: &str) -> Result<()> {
    client.request("PATCH", &url(name), Some(&json!({"config": {key: value}})))?;
    Ok(())
}

pub fn unset(client: &Client, name: &str, key: &str) -> Result<()> {
    let mut p = client.get(&url(name))?;
    if let Some(c) = p["config"].as_object_mut() {
        c.remove(key);
    }
    client.request("PUT", &url(name), Some(&json!({"config": p["config"], "devices": p["devices"], "description": p["description"]})))?;
    Ok(())
}

pub fn rename(client: &Client, name: &str, new: &str) -> Result<()> {
    client.request("POST", &url(name), Some(&json!({"name": new})))?;
    Ok(())
}

pub fn edit(client: &Client, name: &str) -> Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let put: Value = serde_yaml::from_str(&text)?;
    client.request("PUT", &url(name), Some(&put))?;
    Ok(())
}
