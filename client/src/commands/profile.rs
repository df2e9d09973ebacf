//! `hutch profile list|show|create|delete|set|unset|get|rename|edit`.

use std::io::Read;

use anyhow::Result;
use serde_json::{json, Value};

use crate::http::{encode, Client};
use crate::output::{self, Format};

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
