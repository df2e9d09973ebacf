//! `hutch operation list`.

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use crate::http::Client;
use crate::output::{self, Format};

/// `hutch operation ...`.
#[derive(Subcommand)]
pub enum Cmd {
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// Runs one `hutch operation` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::List { format } => list(c, format),
    }
}

pub fn list(client: &Client, format: Format) -> Result<()> {
    let all = client.get("/1.0/operations?recursion=1")?;
    let mut items = Vec::new();
    for (_, ops) in all.as_object().into_iter().flatten() {
        items.extend(ops.as_array().cloned().unwrap_or_default());
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|o| {
            ["id", "class", "description", "status", "created_at"]
                .iter()
                .map(|k| o[*k].as_str().unwrap_or("").to_string())
                .collect()
        })
        .collect();
    let headers = ["ID", "TYPE", "DESCRIPTION", "STATUS", "CREATED"].map(String::from);
    print!(
        "{}",
        output::render(format, &headers, &rows, &Value::Array(items))?
    );
    Ok(())
}
