//! The `edit` flow `lxc` shares between instances, the server, profiles, networks, pools
//! and volumes: YAML from stdin when stdin is not a terminal, else the YAML in a text editor
//! ($VISUAL, $EDITOR, then `editor`, `vi`, `emacs` or `nano`, as lxc picks it), reopened
//! after a parse or API error until it applies or the user gives up.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

/// Runs the edit flow: `current` (YAML, after `help`) is what the editor opens; `apply`
/// parses and sends what the user wrote.
pub fn edit(help: &str, current: &str, mut apply: impl FnMut(&str) -> Result<()>) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        return apply(&text);
    }
    let initial = if help.is_empty() {
        current.to_string()
    } else {
        format!("{help}\n\n{current}")
    };
    let mut content = text_editor(&initial)?;
    loop {
        match apply(&content) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                eprintln!("Config parsing error: {}", msg.join(": "));
                println!("Press enter to open the editor again or ctrl+c to abort change");
                let mut byte = [0u8; 1];
                if std::io::stdin().read(&mut byte)? == 0 {
                    bail!("EOF");
                }
                content = text_editor(&content)?;
            }
        }
    }
}

/// The editor command, as lxc's `shared.TextEditor` chooses it.
fn editor_command() -> Result<String> {
    for var in ["VISUAL", "EDITOR"] {
        if let Some(e) = std::env::var(var).ok().filter(|e| !e.trim().is_empty()) {
            return Ok(e);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["editor", "vi", "emacs", "nano"] {
        if std::env::split_paths(&path).any(|d| d.join(name).is_file()) {
            return Ok(name.to_string());
        }
    }
    bail!("No text editor found, please set the EDITOR environment variable")
}

/// Writes `content` to a private temporary `.yaml` file, runs the editor on it and returns
/// what it holds afterwards; the file is removed either way.
fn text_editor(content: &str) -> Result<String> {
    let editor = editor_command()?;
    let file = EditFile::create(content)?;
    let mut parts = editor.split_whitespace();
    let program = parts
        .next()
        .ok_or_else(|| anyhow!("empty editor command"))?;
    let status = Command::new(program)
        .args(parts)
        .arg(&file.0)
        .status()
        .with_context(|| format!("run the editor {program:?}"))?;
    if !status.success() {
        bail!("the editor {program:?} failed ({status})");
    }
    std::fs::read_to_string(&file.0).context("read the edited file")
}

/// The temporary file the editor works on, removed when dropped.
struct EditFile(PathBuf);

impl EditFile {
    fn create(content: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("hutch_editor_{}_{nanos}.yaml", std::process::id()));
        // create_new: never through a file or link someone else put there.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        let file = EditFile(path);
        f.write_all(content.as_bytes())?;
        Ok(file)
    }
}

impl Drop for EditFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Parses YAML that the user wrote (comments allowed). An empty document is refused: lxc
/// would apply it as an empty configuration, wiping the object's config and devices.
pub fn parse_yaml(text: &str) -> Result<Value> {
    let v: Value = serde_yaml::from_str(text)?;
    match v {
        Value::Null => bail!("no YAML given (an empty document would clear everything)"),
        Value::Object(_) => Ok(v),
        _ => bail!("the YAML must be a mapping"),
    }
}

/// A `map[string]string` field of what the user wrote: scalars become strings as Go's yaml
/// decoding makes them (`10` is "10", `true` is "true"), a missing or null map is empty.
pub fn string_map(v: &Value) -> Result<Value> {
    let mut out = Map::new();
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, x) in m {
                out.insert(k.clone(), Value::String(scalar(x)?));
            }
        }
        _ => bail!("expected a mapping of keys to values"),
    }
    Ok(Value::Object(out))
}

/// A `map[string]map[string]string` (devices) of what the user wrote.
pub fn devices_map(v: &Value) -> Result<Value> {
    let mut out = Map::new();
    match v {
        Value::Null => {}
        Value::Object(m) => {
            for (k, d) in m {
                out.insert(k.clone(), string_map(d)?);
            }
        }
        _ => bail!("expected a mapping of devices"),
    }
    Ok(Value::Object(out))
}

/// A string field (empty when missing).
pub fn string_field(v: &Value) -> Result<Value> {
    Ok(Value::String(match v {
        Value::Null => String::new(),
        other => scalar(other)?,
    }))
}

fn scalar(v: &Value) -> Result<String> {
    Ok(match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => bail!("expected a value, got {v}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_yaml_becomes_go_shaped_maps() {
        let v = parse_yaml("### a comment\nconfig:\n  user.n: 10\n  user.b: true\n  user.s: x\ndevices:\n  d:\n    type: disk\n    readonly: true\n").unwrap();
        assert_eq!(
            string_map(&v["config"]).unwrap(),
            json!({"user.n": "10", "user.b": "true", "user.s": "x"})
        );
        assert_eq!(
            devices_map(&v["devices"]).unwrap(),
            json!({"d": {"type": "disk", "readonly": "true"}})
        );
        assert_eq!(string_map(&Value::Null).unwrap(), json!({}));
        assert!(parse_yaml("").is_err());
        assert!(parse_yaml("### only a comment\n").is_err());
        assert!(parse_yaml("- a").is_err());
        assert!(parse_yaml("config: [").is_err());
        assert!(string_map(&json!({"a": {"b": 1}})).is_err());
        assert_eq!(string_field(&Value::Null).unwrap(), json!(""));
    }
}
