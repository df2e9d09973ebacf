//! `hutch version`, `hutch warning list|show`, `hutch project list|show` (hutchd has the
//! default project alone), as lxc/version.go, lxc/warning.go and lxc/project.go.

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::Value;

use crate::http::{encode, Client};
use crate::output::{self, Format};

/// `hutch version`: the client's version and the server's, `unreachable` without one.
pub fn version(client: &Client) -> Result<()> {
    println!("Client version: {}", env!("CARGO_PKG_VERSION"));
    let server = client
        .get("/1.0")
        .ok()
        .and_then(|v| {
            v["environment"]["server_version"]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_else(|| "unreachable".into());
    println!("Server version: {server}");
    Ok(())
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

#[derive(Subcommand)]
pub enum WarningCmd {
    /// List warnings (acknowledged and resolved ones with --all).
    #[command(visible_alias = "ls")]
    List {
        /// List all warnings.
        #[arg(short, long)]
        all: bool,
        /// Columns: c count, f first seen, l last seen, p project, s severity, S status,
        /// t type, u UUID.
        #[arg(short, long, default_value = "utSscpLl")]
        columns: String,
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show warning.
    Show { uuid: String },
}

/// Warnings' times: `Jan 2, 2006 at 3:04pm (MST)` in UTC.
fn seen(t: &str) -> String {
    let Ok(t) = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
    else {
        return String::new();
    };
    let t = t.to_offset(time::UtcOffset::UTC);
    let (h, pm) = match t.hour() {
        0 => (12, "am"),
        h if h < 12 => (h, "am"),
        12 => (12, "pm"),
        h => (h - 12, "pm"),
    };
    let month = format!("{:?}", t.month());
    format!(
        "{} {}, {} at {h}:{:02}{pm} (UTC)",
        &month[..3],
        t.day(),
        t.year(),
        t.minute()
    )
}

fn warning_cell(w: &Value, c: char) -> String {
    match c {
        'c' => w["count"].as_i64().unwrap_or(0).to_string(),
        'f' => seen(&s(&w["first_seen_at"])),
        'l' => seen(&s(&w["last_seen_at"])),
        'p' => s(&w["project"]),
        's' => s(&w["severity"]).to_uppercase(),
        'S' => s(&w["status"]).to_uppercase(),
        't' => s(&w["type"]),
        'u' => s(&w["uuid"]),
        _ => s(&w["location"]),
    }
}

fn warning_header(c: char, clustered: bool) -> Option<&'static str> {
    Some(match c {
        'c' => "COUNT",
        'f' => "FIRST SEEN",
        'l' => "LAST SEEN",
        'p' => "PROJECT",
        's' => "SEVERITY",
        'S' => "STATUS",
        't' => "TYPE",
        'u' => "UUID",
        'L' if clustered => "LOCATION",
        _ => return None,
    })
}

fn warning_columns(spec: &str, clustered: bool) -> Result<Vec<char>> {
    let mut spec = spec.to_string();
    if !clustered {
        if spec != "utSscpLl" && spec.contains('L') {
            bail!("Can't specify column L when not clustered");
        }
        spec = spec.replace('L', "");
    }
    let mut out = Vec::new();
    for entry in spec.split(',') {
        if entry.is_empty() {
            bail!("Empty column entry (redundant, leading or trailing command) in '{spec}'");
        }
        for c in entry.chars() {
            if warning_header(c, clustered).is_none() {
                bail!("Unknown column shorthand char '{c}' in '{entry}'");
            }
            out.push(c);
        }
    }
    Ok(out)
}

pub fn warning(client: &Client, cmd: WarningCmd) -> Result<()> {
    match cmd {
        WarningCmd::List {
            all,
            columns,
            format,
        } => {
            let clustered = client.get("/1.0")?["environment"]["server_clustered"]
                .as_bool()
                .unwrap_or(false);
            let cols = warning_columns(&columns, clustered)?;
            let warnings: Vec<Value> = client
                .get("/1.0/warnings?recursion=1")?
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|w| {
                    all || !matches!(w["status"].as_str(), Some("acknowledged" | "resolved"))
                })
                .collect();
            let mut rows: Vec<Vec<String>> = warnings
                .iter()
                .map(|w| cols.iter().map(|c| warning_cell(w, *c)).collect())
                .collect();
            output::sort_rows(&mut rows);
            let headers: Vec<String> = cols
                .iter()
                .map(|c| warning_header(*c, clustered).unwrap_or("").to_string())
                .collect();
            print!(
                "{}",
                output::render(format, &headers, &rows, &Value::Array(warnings))?
            );
        }
        WarningCmd::Show { uuid } => {
            let w = client.get(&format!("/1.0/warnings/{}", encode(&uuid)))?;
            print!("{}", serde_yaml::to_string(&w)?);
        }
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ProjectCmd {
    /// List projects.
    #[command(visible_alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show project options.
    Show { name: String },
}

fn yes_no(v: &Value) -> String {
    let on = v
        .as_str()
        .is_some_and(|x| matches!(x.to_lowercase().as_str(), "true" | "1" | "yes" | "on"));
    if on { "YES" } else { "NO" }.to_string()
}

fn project_row(p: &Value) -> Vec<String> {
    let c = &p["config"];
    let mut name = s(&p["name"]);
    // hutch has no project switching: the default project is the current one.
    if name == "default" {
        name = "default (current)".into();
    }
    vec![
        name,
        yes_no(&c["features.images"]),
        yes_no(&c["features.profiles"]),
        yes_no(&c["features.storage.volumes"]),
        yes_no(&c["features.networks"]),
        s(&p["description"]),
        p["used_by"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0)
            .to_string(),
    ]
}

pub fn project(client: &Client, cmd: ProjectCmd) -> Result<()> {
    match cmd {
        ProjectCmd::List { format } => {
            let projects = client.get("/1.0/projects?recursion=1")?;
            let mut rows: Vec<Vec<String>> = projects
                .as_array()
                .into_iter()
                .flatten()
                .map(project_row)
                .collect();
            output::sort_rows(&mut rows);
            let headers = [
                "NAME",
                "IMAGES",
                "PROFILES",
                "STORAGE VOLUMES",
                "NETWORKS",
                "DESCRIPTION",
                "USED BY",
            ]
            .map(String::from);
            print!("{}", output::render(format, &headers, &rows, &projects)?);
        }
        ProjectCmd::Show { name } => {
            let p = client.get(&format!("/1.0/projects/{}", encode(&name)))?;
            print!("{}", serde_yaml::to_string(&p)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn warning_columns_and_times() {
        assert_eq!(
            warning_columns("utSscpLl", false).unwrap(),
            ['u', 't', 'S', 's', 'c', 'p', 'l']
        );
        assert!(warning_columns("uL", false).is_err());
        assert_eq!(seen("2026-12-02T16:05:00Z"), "Dec 2, 2026 at 4:05pm (UTC)");
        assert_eq!(seen("2026-01-09T00:30:00Z"), "Jan 9, 2026 at 12:30am (UTC)");
    }

    #[test]
    fn project_rows() {
        let p = json!({"name": "default", "description": "Default LXD project",
            "config": {"features.images": "true", "features.profiles": "true"},
            "used_by": ["/1.0/profiles/default", "/1.0/instances/c1"]});
        assert_eq!(
            project_row(&p),
            [
                "default (current)",
                "YES",
                "YES",
                "NO",
                "NO",
                "Default LXD project",
                "2"
            ]
        );
    }
}
