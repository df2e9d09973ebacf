//! `hutch operation list|show|delete`, as lxc/operation.go.

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use crate::http::{encode, Client};
use crate::output::{self, Format};

/// `hutch operation ...`.
#[derive(Subcommand)]
pub enum Cmd {
    /// List background operations.
    #[command(visible_alias = "ls")]
    List {
        /// `[REMOTE:]`.
        remote: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show details on a background operation.
    Show { id: String },
    /// Delete a background operation (will attempt to cancel).
    #[command(visible_aliases = ["cancel", "rm"])]
    Delete { id: String },
}

/// Runs one `hutch operation` command.
pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::List { remote, format } => {
            let (c, _) = super::remote::split(c, remote.as_deref().unwrap_or(""))?;
            list(&c, format)
        }
        Cmd::Show { id } => {
            let mut op = c.get(&format!("/1.0/operations/{}", encode(&id)))?;
            // LXD's struct has a map here: none shows as an empty one.
            if op["metadata"].is_null() {
                op["metadata"] = serde_json::json!({});
            }
            print!("{}", serde_yaml::to_string(&op)?);
            Ok(())
        }
        Cmd::Delete { id } => {
            c.request("DELETE", &format!("/1.0/operations/{}", encode(&id)), None)?;
            if !output::quiet() {
                println!("Operation {id} deleted");
            }
            Ok(())
        }
    }
}

/// One row of `operation list`: ID, TYPE, DESCRIPTION, STATUS, CANCELABLE, CREATED.
fn row(o: &Value) -> Vec<String> {
    let s = |k: &str| o[k].as_str().unwrap_or("").to_string();
    vec![
        s("id"),
        s("class").to_uppercase(),
        s("description"),
        s("status").to_uppercase(),
        if o["may_cancel"].as_bool().unwrap_or(false) {
            "YES".into()
        } else {
            "NO".into()
        },
        super::info::info_time(&s("created_at")).unwrap_or_default(),
    ]
}

pub fn list(client: &Client, format: Format) -> Result<()> {
    let all = client.get("/1.0/operations?recursion=1")?;
    let mut items = Vec::new();
    for (_, ops) in all.as_object().into_iter().flatten() {
        items.extend(ops.as_array().cloned().unwrap_or_default());
    }
    let mut rows: Vec<Vec<String>> = items.iter().map(row).collect();
    output::sort_rows(&mut rows);
    let headers = [
        "ID",
        "TYPE",
        "DESCRIPTION",
        "STATUS",
        "CANCELABLE",
        "CREATED",
    ]
    .map(String::from);
    print!(
        "{}",
        output::render(format, &headers, &rows, &Value::Array(items))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_read_as_lxc_lists_them() {
        let op = json!({"id": "abc", "class": "task", "description": "Creating instance",
            "status": "Running", "may_cancel": false, "created_at": "2026-12-02T04:11:37.5Z"});
        assert_eq!(
            row(&op),
            [
                "abc",
                "TASK",
                "Creating instance",
                "RUNNING",
                "NO",
                "2026/12/02 04:11 UTC"
            ]
        );
    }
}
