//! `hutch query [-X METHOD] [-d DATA] [--wait] [--raw] PATH`: a raw request to hutchd,
//! printed as lxc/query.go prints it (JSON indented with tabs; `--raw` the whole response
//! in the order of LXD's api.Response).

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::Value;

use crate::http::Client;

#[derive(Args)]
pub struct QueryArgs {
    /// API path, starting with / (e.g. /1.0/instances).
    pub path: String,
    /// Action (defaults to GET).
    #[arg(short = 'X', long = "request", default_value = "GET")]
    pub method: String,
    /// Input data (JSON, or sent as a JSON string when it is not JSON).
    #[arg(short, long, default_value = "")]
    pub data: String,
    /// Wait for the operation to complete.
    #[arg(long)]
    pub wait: bool,
    /// Print the raw response.
    #[arg(long)]
    pub raw: bool,
}

pub fn query(client: &Client, args: &QueryArgs) -> Result<()> {
    let remote_client;
    let (client, path) = match args.path.split_once(':') {
        Some((remote, _)) if !remote.starts_with('/') => {
            let (c, path) = super::remote::split(client, &args.path)?;
            remote_client = (c, path);
            (&remote_client.0, remote_client.1.as_str())
        }
        _ => (client, args.path.as_str()),
    };
    if !path.starts_with('/') {
        bail!("Query path must start with /");
    }
    // As lxc: JSON data goes as it is, anything else as a JSON string.
    let body = if args.data.is_empty() {
        Vec::new()
    } else if serde_json::from_str::<Value>(&args.data).is_ok() {
        args.data.clone().into_bytes()
    } else {
        serde_json::to_vec(&Value::String(args.data.clone()))?
    };
    let method = args.method.to_uppercase();
    let raw = client.raw(
        &method,
        path,
        &[("Content-Type", "application/json".into())],
        &body,
    )?;
    let text = String::from_utf8_lossy(&raw.body).into_owned();
    let Ok(envelope) = serde_json::from_str::<Value>(&text) else {
        // Not JSON (a log file, an export): printed as it came, as lxc does.
        if raw.status != 200 {
            bail!("unexpected response from hutchd (HTTP {})", raw.status);
        }
        print!("{text}");
        return Ok(());
    };
    if envelope["type"] == "error" {
        bail!("{}", envelope["error"].as_str().unwrap_or("error"));
    }
    let mut text = text;
    let op = envelope["operation"].as_str().unwrap_or("").to_string();
    if args.wait && !op.is_empty() {
        let (op_path, query) = op.split_once('?').unwrap_or((&op, ""));
        let waited = client.raw("GET", &format!("{op_path}/wait?{query}"), &[], b"")?;
        text = String::from_utf8_lossy(&waited.body).into_owned();
        let v: Value = serde_json::from_str(&text)
            .map_err(|_| anyhow!("unexpected response from hutchd (HTTP {})", waited.status))?;
        if v["type"] == "error" {
            bail!("{}", v["error"].as_str().unwrap_or("error"));
        }
        if let Some(e) = v["metadata"]["err"].as_str().filter(|e| !e.is_empty()) {
            bail!("{e}");
        }
    }
    if args.raw {
        // Go's encoder ends the JSON with a newline, and lxc prints it with another.
        println!("{}\n", raw_response(&text)?);
        return Ok(());
    }
    let fields = top_level_fields(&text)?;
    let metadata = fields
        .iter()
        .find(|(k, _)| k == "metadata")
        .map(|(_, v)| *v)
        .unwrap_or("null");
    if metadata != "{}" {
        let content: Value = serde_json::from_str(metadata)?;
        if !content.is_null() {
            // Go re-encodes the decoded metadata: object keys in sorted order.
            println!("{}\n", go_indent(&serde_json::to_string(&content)?));
        }
    }
    Ok(())
}

/// The whole response as lxc's `--raw` prints it: LXD's api.Response fields in their
/// order, missing ones as zero values, the metadata in the server's own key order.
fn raw_response(text: &str) -> Result<String> {
    let fields = top_level_fields(text)?;
    let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
    let string = |k: &str| get(k).filter(|v| v.starts_with('"')).unwrap_or("\"\"");
    let int = |k: &str| {
        get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            .to_string()
    };
    let compact = format!(
        "{{\"type\":{},\"status\":{},\"status_code\":{},\"operation\":{},\"error_code\":{},\"error\":{},\"metadata\":{}}}",
        string("type"),
        string("status"),
        int("status_code"),
        string("operation"),
        int("error_code"),
        string("error"),
        get("metadata").unwrap_or("null"),
    );
    Ok(go_indent(&compact))
}

/// Skips JSON whitespace from `i`.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The end of the string starting at `i` (a `"`), past its closing quote.
fn string_end(b: &[u8], mut i: usize) -> Result<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    bail!("unterminated string in the response")
}

/// The end of the JSON value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Result<usize> {
    let i = skip_ws(b, i);
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            bail!("unterminated value in the response")
        }
        Some(_) => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']') && !b[j].is_ascii_whitespace()
            {
                j += 1;
            }
            Ok(j)
        }
        None => bail!("empty value in the response"),
    }
}

/// The top-level members of a JSON object, each value as its text.
fn top_level_fields(text: &str) -> Result<Vec<(String, &str)>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        bail!("the response is not a JSON object");
    }
    i += 1;
    let mut out = Vec::new();
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b'}') | None => break,
            Some(b',') => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let key_end = string_end(b, i)?;
        let key: String = serde_json::from_str(&text[i..key_end])?;
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            bail!("malformed JSON object in the response");
        }
        let start = skip_ws(b, i + 1);
        let end = value_end(b, start)?;
        out.push((key, &text[start..end]));
        i = end;
    }
    Ok(out)
}

/// JSON indented as Go's json.Indent with a tab: one member per line, `"key": value`,
/// empty objects and arrays kept as `{}` and `[]`; strings copied as they are.
pub fn go_indent(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut i = 0;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"\t".repeat(depth));
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' => {
                let end = string_end(b, i).unwrap_or(b.len());
                out.push_str(&src[i..end]);
                i = end;
                continue;
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                let next = skip_ws(b, i + 1);
                if b.get(next) == Some(&close) {
                    out.push(c as char);
                    out.push(close as char);
                    i = next + 1;
                    continue;
                }
                out.push(c as char);
                depth += 1;
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c as char);
            }
            b',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            b':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            _ => {
                // Numbers, true, false, null: copied up to the next delimiter.
                let end = value_end(b, i).unwrap_or(b.len());
                out.push_str(&src[i..end]);
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_as_go() {
        assert_eq!(
            go_indent(r#"{"a":1,"b":[1, "x,{}"],"c":{},"d":[],"e":{"f":null}}"#),
            "{\n\t\"a\": 1,\n\t\"b\": [\n\t\t1,\n\t\t\"x,{}\"\n\t],\n\t\"c\": {},\n\t\"d\": [],\n\t\"e\": {\n\t\t\"f\": null\n\t}\n}"
        );
        assert_eq!(go_indent("\"s\""), "\"s\"");
    }

    #[test]
    fn raw_responses_follow_lxds_field_order() {
        let body =
            r#"{"metadata":{"z":1,"a":"q\"}"},"status_code":200,"type":"sync","status":"Success"}"#;
        assert_eq!(
            raw_response(body).unwrap(),
            "{\n\t\"type\": \"sync\",\n\t\"status\": \"Success\",\n\t\"status_code\": 200,\n\t\"operation\": \"\",\n\t\"error_code\": 0,\n\t\"error\": \"\",\n\t\"metadata\": {\n\t\t\"z\": 1,\n\t\t\"a\": \"q\\\"}\"\n\t}\n}"
        );
        let f = top_level_fields(body).unwrap();
        assert_eq!(f[0], ("metadata".to_string(), r#"{"z":1,"a":"q\"}"}"#));
    }
}
