//! `hutch monitor [--type T]... [--format yaml|json|pretty]`: events from hutchd's
//! `/1.0/events` websocket, printed as lxc/monitor.go prints them.

use anyhow::{bail, Result};
use clap::Args;
use serde_json::Value;

use crate::http::Client;

#[derive(Args)]
pub struct MonitorArgs {
    /// `[REMOTE:]`.
    pub remote: Option<String>,
    /// Event type to listen for (lifecycle, operation, logging); repeatable; all when none.
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Format (json|pretty|yaml).
    #[arg(short, long, default_value = "yaml")]
    pub format: String,
    /// Pretty rendering (short for --format=pretty).
    #[arg(long)]
    pub pretty: bool,
    /// Minimum level for log messages (only available when using pretty format).
    #[arg(long)]
    pub loglevel: Option<String>,
    /// Show events from all projects (hutchd has the default project only).
    #[arg(long)]
    pub all_projects: bool,
}

/// logrus levels, most severe first.
const LEVELS: &[&str] = &[
    "panic", "fatal", "error", "warning", "info", "debug", "trace",
];

fn level_rank(l: &str) -> Option<usize> {
    let l = match l {
        "warn" => "warning",
        "dbug" => "debug",
        "eror" => "error",
        "crit" => "fatal",
        l => l,
    };
    LEVELS.iter().position(|x| *x == l)
}

pub fn monitor(client: &Client, args: &MonitorArgs) -> Result<()> {
    if !["json", "pretty", "yaml"].contains(&args.format.as_str()) {
        bail!("Invalid format: {}", args.format);
    }
    let format = if args.pretty {
        "pretty"
    } else {
        args.format.as_str()
    };
    if format != "pretty" && args.loglevel.is_some() {
        bail!("Log level filtering can only be used with pretty formatting");
    }
    let max_level = match &args.loglevel {
        Some(l) => level_rank(&l.to_lowercase())
            .ok_or_else(|| anyhow::anyhow!("not a valid logrus Level: {l:?}"))?,
        None => level_rank("debug").unwrap_or(5),
    };
    // Types are matched here, as lxc's handlers do, so an unknown one just never shows.
    let mut ws = client.websocket("/1.0/events")?;
    loop {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::ConnectionClosed) => return Ok(()),
            Err(e) => bail!("{e}"),
        };
        let text = match msg {
            tungstenite::Message::Text(t) => t.to_string(),
            tungstenite::Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            tungstenite::Message::Close(_) => return Ok(()),
            _ => continue,
        };
        let Ok(event) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let kind = event["type"].as_str().unwrap_or("");
        if !args.types.is_empty() && !args.types.iter().any(|t| t == kind) {
            continue;
        }
        let out = match format {
            "json" => format!("{}\n", crate::output::json_line(&event)?),
            "yaml" => format!("{}\n\n", serde_yaml::to_string(&event)?),
            _ => match pretty(&event, max_level) {
                Some(line) => line,
                None => continue,
            },
        };
        print!("{out}");
        use std::io::Write;
        std::io::stdout().flush()?;
    }
}

/// A logrus-quoted value: bare when made of safe characters, else Go's `%q`.
fn logrus_value(v: &str) -> String {
    let safe = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '^' | '+'));
    if safe {
        v.to_string()
    } else {
        serde_json::to_string(v).unwrap_or_default()
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        other => other.to_string(),
    }
}

/// One event as lxc's `--pretty` line (logrus text format), or `None` when below the
/// level asked for.
pub fn pretty(event: &Value, max_level: usize) -> Option<String> {
    let m = &event["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut ctx: Vec<(String, String)> = Vec::new();
    let (level, msg) = match event["type"].as_str()? {
        "logging" => {
            for (k, v) in m["context"].as_object().into_iter().flatten() {
                ctx.push((k.clone(), text_of(v)));
            }
            (s(&m["level"]), s(&m["message"]))
        }
        "lifecycle" => {
            for (k, v) in m["context"].as_object().into_iter().flatten() {
                ctx.push((k.clone(), text_of(v)));
            }
            let r = &m["requestor"];
            let msg = if r.is_object() {
                format!(
                    "Action: {}, Source: {}, Requestor: {}/{} ({})",
                    s(&m["action"]),
                    s(&m["source"]),
                    s(&r["protocol"]),
                    s(&r["username"]),
                    s(&r["address"])
                )
            } else {
                format!("Action: {}, Source: {}", s(&m["action"]), s(&m["source"]))
            };
            ("info".to_string(), msg)
        }
        "operation" => {
            for (k, key) in [
                ("CreatedAt", "created_at"),
                ("UpdatedAt", "updated_at"),
                ("Status", "status"),
                ("StatusCode", "status_code"),
                ("Resources", "resources"),
                ("Metadata", "metadata"),
                ("MayCancel", "may_cancel"),
                ("Err", "err"),
                ("Location", "location"),
            ] {
                ctx.push((k.to_string(), text_of(&m[key])));
            }
            let msg = format!(
                "ID: {}, Class: {}, Description: {}",
                s(&m["id"]),
                s(&m["class"]),
                s(&m["description"])
            );
            ("info".to_string(), msg)
        }
        _ => return None,
    };
    let rank = level_rank(&level)?;
    if rank > max_level {
        return None;
    }
    ctx.sort();
    let mut line = format!(
        "time={} level={} msg={}",
        logrus_value(&s(&event["timestamp"])),
        LEVELS[rank],
        logrus_value(&msg)
    );
    for (k, v) in ctx {
        line.push_str(&format!(" {k}={}", logrus_value(&v)));
    }
    line.push('\n');
    Some(line)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pretty_lines_read_as_logrus_writes_them() {
        let ev = json!({"type": "lifecycle", "timestamp": "2026-12-02T04:11:37Z",
            "metadata": {"action": "instance-started", "source": "/1.0/instances/c1",
                "context": {}, "requestor": {"username": "root", "protocol": "unix", "address": "@"}}});
        assert_eq!(
            pretty(&ev, 5).unwrap(),
            "time=\"2026-12-02T04:11:37Z\" level=info msg=\"Action: instance-started, Source: /1.0/instances/c1, Requestor: unix/root (@)\"\n"
        );
        let log = json!({"type": "logging", "timestamp": "t",
            "metadata": {"level": "debug", "message": "hello", "context": {"b": "x y", "a": "1"}}});
        assert_eq!(
            pretty(&log, 5).unwrap(),
            "time=t level=debug msg=hello a=1 b=\"x y\"\n"
        );
        assert!(pretty(&log, level_rank("info").unwrap()).is_none());
    }
}
