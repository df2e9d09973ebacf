//! `hutch config metadata show|edit` and `hutch config template list|show|create|edit|delete`:
//! the image metadata.yaml and template files an instance carries, as `lxc config metadata`
//! and `lxc config template` handle them.

use std::io::Read;

use anyhow::{bail, Result};
use clap::Subcommand;

use super::edit as editor;
use crate::http::{encode, parse_envelope, Client};

/// `hutch config metadata ...`.
#[derive(Subcommand)]
pub enum MetadataCmd {
    /// Show an instance's metadata.yaml.
    Show { name: String },
    /// Edit an instance's metadata.yaml: in $VISUAL/$EDITOR on a terminal, else from stdin.
    Edit { name: String },
}

/// `hutch config template ...`.
#[derive(Subcommand)]
pub enum TemplateCmd {
    /// List an instance's template files.
    #[command(visible_alias = "ls")]
    List { name: String },
    /// Print a template file.
    Show { name: String, template: String },
    /// Create an empty template file (or one read from stdin when it is not a terminal).
    Create { name: String, template: String },
    /// Edit a template file: in $VISUAL/$EDITOR on a terminal, else from stdin.
    Edit { name: String, template: String },
    /// Delete a template file.
    #[command(visible_alias = "rm")]
    Delete { name: String, template: String },
}

fn metadata_url(name: &str) -> String {
    format!("/1.0/instances/{}/metadata", encode(name))
}

fn template_url(name: &str, template: &str) -> String {
    format!(
        "/1.0/instances/{}/metadata/templates?path={}",
        encode(name),
        encode(template).replace('/', "%2F")
    )
}

pub fn run_metadata(c: &Client, cmd: MetadataCmd) -> Result<()> {
    match cmd {
        MetadataCmd::Show { name } => {
            let meta = c.get(&metadata_url(&name))?;
            print!("{}", serde_yaml::to_string(&meta)?);
            Ok(())
        }
        MetadataCmd::Edit { name } => {
            let current = serde_yaml::to_string(&c.get(&metadata_url(&name))?)?;
            editor::edit("", &current, |text| {
                let new = editor::parse_yaml(text)?;
                c.request("PUT", &metadata_url(&name), Some(&new))?;
                Ok(())
            })
        }
    }
}

pub fn run_template(c: &Client, cmd: TemplateCmd) -> Result<()> {
    match cmd {
        TemplateCmd::List { name } => {
            let list = c.get(&format!("{}/templates", metadata_url(&name)))?;
            for t in list.as_array().into_iter().flatten() {
                println!("{}", t.as_str().unwrap_or(""));
            }
            Ok(())
        }
        TemplateCmd::Show { name, template } => {
            print!("{}", String::from_utf8_lossy(&read(c, &name, &template)?));
            Ok(())
        }
        TemplateCmd::Create { name, template } => {
            let mut text = Vec::new();
            if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                std::io::stdin().read_to_end(&mut text)?;
            }
            write(c, "POST", &name, &template, &text)
        }
        TemplateCmd::Edit { name, template } => {
            let current = String::from_utf8_lossy(&read(c, &name, &template)?).into_owned();
            editor::edit("", &current, |text| {
                write(c, "PUT", &name, &template, text.as_bytes())
            })
        }
        TemplateCmd::Delete { name, template } => {
            c.request("DELETE", &template_url(&name, &template), None)?;
            Ok(())
        }
    }
}

/// A template file's bytes (the answer is the raw file, or an error envelope).
fn read(c: &Client, name: &str, template: &str) -> Result<Vec<u8>> {
    let raw = c.raw("GET", &template_url(name, template), &[], b"")?;
    if raw.status != 200 {
        parse_envelope(&raw)?;
        bail!("unexpected response from hutchd (HTTP {})", raw.status);
    }
    Ok(raw.body)
}

fn write(c: &Client, method: &str, name: &str, template: &str, text: &[u8]) -> Result<()> {
    let raw = c.raw(
        method,
        &template_url(name, template),
        &[("Content-Type", "application/octet-stream".into())],
        text,
    )?;
    parse_envelope(&raw)?;
    Ok(())
}
