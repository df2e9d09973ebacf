//! `hutch list`: instances filtered and shown in columns as `lxc list` (LXD 5.0,
//! lxc/list.go) does it.

use std::net::IpAddr;

use anyhow::{bail, Result};
use clap::Args;
use regex::Regex;
use serde_json::Value;

use crate::http::Client;
use crate::output::{self, Format};

/// lxc's default columns; `L` only shows on a cluster.
const DEFAULT_COLUMNS: &str = "ns46tSL";
const DEFAULT_COLUMNS_ALL_PROJECTS: &str = "ens46tSL";

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Filters: a name prefix or regular expression, KEY=VALUE on config keys (the
    /// namespace may be shortened: `s.privileged=true`), or the shorthands type=, status=,
    /// architecture=, location=, ipv4=, ipv6= (several values separated by commas).
    pub filters: Vec<String>,
    /// Columns: shorthand letters (4 6 a b c d D e f F l m M n N p P s S t u L) or
    /// `[config:|devices:]KEY[:NAME][:MAXWIDTH]`, comma separated.
    #[arg(short, long, default_value = DEFAULT_COLUMNS)]
    pub columns: String,
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
    /// Fast mode (same as --columns=nsacPt).
    #[arg(long)]
    pub fast: bool,
    /// Display instances from all projects (hutchd has the default project only).
    #[arg(long)]
    pub all_projects: bool,
}

/// Where a column's cell comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Letter(char),
    Config { key: String, max: Option<usize> },
    Device { key: String, max: Option<usize> },
}

#[derive(Debug, Clone, PartialEq)]
struct Column {
    name: String,
    source: Source,
}

impl Column {
    /// Whether the cell needs the instance's state or snapshots (`recursion=2`).
    fn needs_data(&self) -> bool {
        matches!(self.source, Source::Letter(c) if "46DmMNpuS".contains(c))
    }
}

fn letter_header(c: char, clustered: bool) -> Option<&'static str> {
    Some(match c {
        '4' => "IPV4",
        '6' => "IPV6",
        'a' => "ARCHITECTURE",
        'b' => "STORAGE POOL",
        'c' => "CREATED AT",
        'd' => "DESCRIPTION",
        'D' => "DISK USAGE",
        'e' => "PROJECT",
        'f' | 'F' => "BASE IMAGE",
        'l' => "LAST USED AT",
        'm' => "MEMORY USAGE",
        'M' => "MEMORY USAGE%",
        'n' => "NAME",
        'N' => "PROCESSES",
        'p' => "PID",
        'P' => "PROFILES",
        'S' => "SNAPSHOTS",
        's' => "STATE",
        't' => "TYPE",
        'u' => "CPU USAGE",
        'L' if clustered => "LOCATION",
        _ => return None,
    })
}

/// Parses `-c` (and `--fast`) as lxc's parseColumns does, with its error messages.
fn parse_columns(
    spec: &str,
    fast: bool,
    all_projects: bool,
    clustered: bool,
) -> Result<Vec<Column>> {
    let mut spec = spec.to_string();
    if all_projects && spec == DEFAULT_COLUMNS {
        spec = DEFAULT_COLUMNS_ALL_PROJECTS.into();
    }
    if fast {
        if spec != DEFAULT_COLUMNS && spec != DEFAULT_COLUMNS_ALL_PROJECTS {
            bail!("Can't specify --fast with --columns");
        }
        spec = if spec == DEFAULT_COLUMNS_ALL_PROJECTS {
            "ensacPt".into()
        } else {
            "nsacPt".into()
        };
    }
    if !clustered {
        if spec != DEFAULT_COLUMNS && spec != DEFAULT_COLUMNS_ALL_PROJECTS && spec.contains('L') {
            bail!("Can't specify column L when not clustered");
        }
        spec = spec.replace('L', "");
    }
    let mut columns = Vec::new();
    for entry in spec.split(',') {
        if entry.is_empty() {
            bail!("Empty column entry (redundant, leading or trailing command) in '{spec}'");
        }
        // Config keys always have a dot; anything else is a run of letters.
        if !entry.contains('.') {
            for c in entry.chars() {
                let Some(name) = letter_header(c, clustered) else {
                    bail!("Unknown column shorthand char '{c}' in '{entry}'");
                };
                columns.push(Column {
                    name: name.into(),
                    source: Source::Letter(c),
                });
            }
            continue;
        }
        let mut cc: Vec<&str> = entry.split(':').collect();
        let mut device = false;
        if (cc[0] == "config" || cc[0] == "devices") && cc.len() > 1 {
            device = cc[0] == "devices";
            cc.remove(0);
        }
        if cc.len() > 3 {
            bail!("Invalid config key column format (too many fields): '{entry}'");
        }
        let key = cc[0].to_string();
        let mut name = key.clone();
        if cc.len() > 1 {
            if cc[1].is_empty() && cc.len() != 3 {
                bail!("Invalid name in '{entry}', empty string is only allowed when defining maxWidth");
            }
            name = cc[1].to_string();
        }
        let mut max = None;
        if cc.len() > 2 {
            let w: i64 = cc[2].parse().map_err(|_| {
                anyhow::anyhow!(
                    "Invalid max width (must be an integer) '{}' in '{entry}'",
                    cc[2]
                )
            })?;
            if w < -1 {
                bail!(
                    "Invalid max width (must -1, 0 or a positive integer) '{}' in '{entry}'",
                    cc[2]
                );
            }
            max = match w {
                0 => Some(name.len()),
                w if w > 0 => Some(w as usize),
                _ => None,
            };
        }
        let source = if device {
            Source::Device { key, max }
        } else {
            Source::Config { key, max }
        };
        columns.push(Column { name, source });
    }
    Ok(columns)
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn is_active(v: &Value) -> bool {
    // LXD's IsActive: anything but stopped (code 102) and error (112).
    !matches!(v["status_code"].as_i64(), Some(102) | Some(112))
        && !matches!(s(&v["status"]).as_str(), "Stopped" | "Error")
}

/// LXD's `2006/01/02 15:04 UTC`, empty for an unset time.
fn list_time(t: &str) -> String {
    super::info::info_time(t).unwrap_or_default()
}

/// `ADDR (DEV)` of each global address of `family`, in reverse order as lxc sorts them.
fn addresses(v: &Value, family: &str) -> String {
    if !is_active(v) {
        return String::new();
    }
    let mut out = Vec::new();
    for (dev, n) in v["state"]["network"].as_object().into_iter().flatten() {
        if n["type"] == "loopback" {
            continue;
        }
        for a in n["addresses"].as_array().into_iter().flatten() {
            if a["scope"] == "link" || a["scope"] == "local" {
                continue;
            }
            if a["family"] == family {
                out.push(format!("{} ({dev})", s(&a["address"])));
            }
        }
    }
    out.sort();
    out.reverse();
    out.join("\n")
}

/// The root disk device (`path` = `/`) among the expanded devices.
fn root_disk(v: &Value) -> Option<(&String, &Value)> {
    v["expanded_devices"]
        .as_object()?
        .iter()
        .find(|(_, d)| d["type"] == "disk" && d["path"] == "/")
}

/// LXD's `units.ParseByteSizeString` for the suffixes limits use.
fn parse_bytes(v: &str) -> Option<i64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, suffix) = v.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult: i64 = match suffix {
        "" | "B" => 1,
        "kB" => 1000,
        "MB" => 1000_i64.pow(2),
        "GB" => 1000_i64.pow(3),
        "TB" => 1000_i64.pow(4),
        "PB" => 1000_i64.pow(5),
        "EB" => 1000_i64.pow(6),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "PiB" => 1 << 50,
        "EiB" => 1 << 60,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn truncate(v: String, max: Option<usize>) -> String {
    match max {
        Some(m) if m > 0 && v.len() > m => v.chars().take(m).collect(),
        _ => v,
    }
}

/// One cell, as lxc's column functions compute it.
fn cell(v: &Value, col: &Column) -> String {
    let st = &v["state"];
    let active = is_active(v) && st.is_object();
    match &col.source {
        Source::Config { key, max } => {
            let x = v["config"]
                .get(key)
                .or_else(|| v["expanded_config"].get(key));
            truncate(x.map(s).unwrap_or_default(), *max)
        }
        Source::Device { key, max } => {
            let Some((dev, k)) = key.split_once('.') else {
                return String::new();
            };
            if k.contains('.') {
                return String::new();
            }
            let x = v["devices"][dev]
                .get(k)
                .or_else(|| v["expanded_devices"][dev].get(k));
            truncate(x.map(s).unwrap_or_default(), *max)
        }
        Source::Letter(c) => match c {
            'n' => s(&v["name"]),
            'd' => s(&v["description"]),
            's' => s(&v["status"]).to_uppercase(),
            '4' => addresses(v, "inet"),
            '6' => addresses(v, "inet6"),
            'e' => s(&v["project"]),
            'm' => match st["memory"]["usage"].as_i64() {
                Some(u) if active && u > 0 => output::iec(u),
                _ => String::new(),
            },
            'M' => {
                let usage = st["memory"]["usage"].as_i64().unwrap_or(0);
                let limit = s(&v["expanded_config"]["limits.memory"]);
                if !active || usage <= 0 || limit.is_empty() || limit.contains('%') {
                    return String::new();
                }
                match parse_bytes(&limit) {
                    Some(l) if l > 0 => format!("{:.1}%", usage as f64 / l as f64 * 100.0),
                    _ => String::new(),
                }
            }
            'u' => match st["cpu"]["usage"].as_i64() {
                Some(u) if active && u > 0 => format!("{}s", u / 1_000_000_000),
                _ => String::new(),
            },
            'D' => {
                let Some((root, _)) = root_disk(v) else {
                    return String::new();
                };
                match st["disk"][root]["usage"].as_i64() {
                    Some(u) if u > 0 => output::iec(u),
                    _ => String::new(),
                }
            }
            't' => {
                let t = match s(&v["type"]) {
                    t if t.is_empty() => "container".to_string(),
                    t => t,
                };
                if v["ephemeral"].as_bool().unwrap_or(false) {
                    format!("{} (EPHEMERAL)", t.to_uppercase())
                } else {
                    t.to_uppercase()
                }
            }
            'S' => v["snapshots"]
                .as_array()
                .map(|a| a.len())
                .unwrap_or(0)
                .to_string(),
            'p' if active => st["pid"].as_i64().unwrap_or(0).to_string(),
            'N' if active => st["processes"].as_i64().unwrap_or(0).to_string(),
            'a' => s(&v["architecture"]),
            'b' => root_disk(v).map(|(_, d)| s(&d["pool"])).unwrap_or_default(),
            'P' => v["profiles"]
                .as_array()
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default(),
            'c' => list_time(&s(&v["created_at"])),
            'l' => list_time(&s(&v["last_used_at"])),
            'f' => s(&v["config"]["volatile.base_image"])
                .chars()
                .take(12)
                .collect(),
            'F' => s(&v["config"]["volatile.base_image"]),
            'L' => s(&v["location"]),
            _ => String::new(),
        },
    }
}

/// Each short member of `short` a prefix of the matching member of `full`
/// (`s.privileged` matches `security.privileged`).
fn dot_prefix_match(short: &str, full: &str) -> bool {
    let f: Vec<&str> = full.split('.').collect();
    let s: Vec<&str> = short.split('.').collect();
    f.len() == s.len() && f.iter().zip(&s).all(|(f, s)| f.starts_with(s))
}

/// `^VALUE$` unless the value anchors itself.
fn anchored(value: &str) -> Option<Regex> {
    let re = if value.contains('^') || value.contains('$') {
        value.to_string()
    } else {
        format!("^{value}$")
    };
    Regex::new(&re).ok()
}

/// Fields of the instance object that lxc hands to the server as `filter=` (one value, no
/// dot in the key); hutchd compares them case-insensitively.
const SERVER_FIELDS: &[&str] = &[
    "architecture",
    "config",
    "devices",
    "ephemeral",
    "profiles",
    "stateful",
    "description",
    "created_at",
    "expanded_config",
    "expanded_devices",
    "name",
    "status",
    "status_code",
    "last_used_at",
    "location",
    "type",
    "project",
    "backups",
    "state",
    "snapshots",
];

fn server_filter_matches(v: &Value, key: &str, value: &str) -> bool {
    let have = match &v[key] {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    have.eq_ignore_ascii_case(value)
}

fn net_matches(v: &Value, query: &str, family: &str) -> bool {
    let subnet = parse_cidr(query);
    for n in v["state"]["network"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|x| x.1)
    {
        for a in n["addresses"].as_array().into_iter().flatten() {
            if a["family"] != family {
                continue;
            }
            let addr = s(&a["address"]);
            if addr == query {
                return true;
            }
            if let (Some((net, bits)), Ok(ip)) = (subnet, addr.parse::<IpAddr>()) {
                if in_subnet(ip, net, bits) {
                    return true;
                }
            }
        }
    }
    false
}

fn parse_cidr(q: &str) -> Option<(IpAddr, u32)> {
    let (ip, bits) = q.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn in_subnet(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let m = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & m == u32::from(b) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let m = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & m == u128::from(b) & m
        }
        _ => false,
    }
}

/// A shorthand filter (`type=`, `status=`...): `None` when `key` is none.
fn shorthand(v: &Value, key: &str, value: &str) -> Option<bool> {
    let one = |val: &str| -> bool {
        match key.to_lowercase().as_str() {
            "type" => s(&v["type"]).eq_ignore_ascii_case(val),
            "status" => s(&v["status"]).eq_ignore_ascii_case(val),
            "architecture" => s(&v["architecture"]).eq_ignore_ascii_case(val),
            "location" => s(&v["location"]).eq_ignore_ascii_case(val),
            "ipv4" => net_matches(v, val, "inet"),
            "ipv6" => net_matches(v, val, "inet6"),
            _ => false,
        }
    };
    if !["type", "status", "architecture", "location", "ipv4", "ipv6"]
        .contains(&key.to_lowercase().as_str())
    {
        return None;
    }
    Some(value.split(',').any(one))
}

/// Whether instance `v` passes every filter, as lxc's shouldShow (with the filters lxc
/// sends to the server applied here the way hutchd applies them).
fn should_show(filters: &[String], v: &Value) -> bool {
    for filter in filters {
        if let Some((key, value)) = filter.split_once('=') {
            if !value.contains(',') && !key.contains('.') && SERVER_FIELDS.contains(&key) {
                if !server_filter_matches(v, key, value) {
                    return false;
                }
                continue;
            }
            if shorthand(v, key, value) == Some(true) {
                continue;
            }
            let config = v["expanded_config"].as_object();
            let mut found = false;
            for (ck, cv) in config.into_iter().flatten() {
                if !dot_prefix_match(key, ck) {
                    continue;
                }
                let cv = s(cv);
                match anchored(value) {
                    None if value == cv => {
                        found = true;
                        break;
                    }
                    // The property was found but did not match.
                    None => return false,
                    Some(r) if r.is_match(&cv) => {
                        found = true;
                        break;
                    }
                    Some(_) => {}
                }
            }
            if v["expanded_config"].get(key).map(s).as_deref() == Some(value) {
                continue;
            }
            if !found {
                return false;
            }
        } else {
            let name = s(&v["name"]);
            if anchored(filter).is_some_and(|r| r.is_match(&name)) {
                continue;
            }
            if !name.starts_with(filter.as_str()) {
                return false;
            }
        }
    }
    true
}

/// `hutch list`.
pub fn list(client: &Client, args: &ListArgs) -> Result<()> {
    let mut filters = args.filters.clone();
    let mut remote_client = None;
    if let Some(first) = filters.first() {
        if first.contains(':') && !first.contains('=') {
            let (c, name) = super::remote::split(client, first)?;
            remote_client = Some(c);
            filters.remove(0);
            if !name.is_empty() {
                filters.push(name);
            }
        }
    }
    let client = remote_client.as_ref().unwrap_or(client);
    let server = client.get("/1.0")?;
    let clustered = server["environment"]["server_clustered"]
        .as_bool()
        .unwrap_or(false);
    let columns = parse_columns(&args.columns, args.fast, args.all_projects, clustered)?;
    let has = |ext: &str| {
        server["api_extensions"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x == ext))
    };
    if args.all_projects && !has("instance_all_projects") {
        bail!("The server is missing the required \"instance_all_projects\" API extension");
    }
    let recursion = if columns.iter().any(Column::needs_data) {
        2
    } else {
        1
    };
    let all_projects = if args.all_projects {
        "&all-projects=true"
    } else {
        ""
    };
    let all = client.get(&format!(
        "/1.0/instances?recursion={recursion}{all_projects}"
    ))?;
    let items: Vec<Value> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| should_show(&filters, v))
        .cloned()
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
    let mut rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| columns.iter().map(|c| cell(v, c)).collect())
        .collect();
    output::sort_rows(&mut rows);
    print!(
        "{}",
        output::render(args.format, &headers, &rows, &Value::Array(items))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn names(cols: &[Column]) -> Vec<&str> {
        cols.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn columns_parse_as_lxc_parses_them() {
        let cols = parse_columns(DEFAULT_COLUMNS, false, false, false).unwrap();
        assert_eq!(
            names(&cols),
            ["NAME", "STATE", "IPV4", "IPV6", "TYPE", "SNAPSHOTS"]
        );
        let fast = parse_columns(DEFAULT_COLUMNS, true, false, false).unwrap();
        assert_eq!(
            names(&fast),
            [
                "NAME",
                "STATE",
                "ARCHITECTURE",
                "CREATED AT",
                "PROFILES",
                "TYPE"
            ]
        );
        let all = parse_columns("nsN46tSpPlmMucaDbefF", false, false, false).unwrap();
        assert_eq!(all.len(), 20);
        let custom = parse_columns(
            "n,user.comment:COMMENT:3,devices:eth0.parent:ETHP",
            false,
            false,
            false,
        )
        .unwrap();
        assert_eq!(names(&custom), ["NAME", "COMMENT", "ETHP"]);
        assert_eq!(
            custom[1].source,
            Source::Config {
                key: "user.comment".into(),
                max: Some(3)
            }
        );
        for (spec, fast, err) in [
            ("nL", false, "Can't specify column L when not clustered"),
            ("nz", false, "Unknown column shorthand char 'z' in 'nz'"),
            ("nB", false, "Unknown column shorthand char 'B' in 'nB'"),
            (
                "n,",
                false,
                "Empty column entry (redundant, leading or trailing command) in 'n,'",
            ),
            ("ns", true, "Can't specify --fast with --columns"),
            (
                "a.b:c:d:e",
                false,
                "Invalid config key column format (too many fields): 'a.b:c:d:e'",
            ),
            (
                "a.b:N:x",
                false,
                "Invalid max width (must be an integer) 'x' in 'a.b:N:x'",
            ),
        ] {
            let e = parse_columns(spec, fast, false, false).unwrap_err();
            assert_eq!(e.to_string(), err, "{spec}");
        }
    }

    fn inst() -> Value {
        json!({
            "name": "web1", "status": "Running", "status_code": 103, "type": "container",
            "ephemeral": false, "architecture": "x86_64", "profiles": ["default", "extra"],
            "created_at": "2026-12-02T04:11:37.123456789Z",
            "last_used_at": "1970-01-01T00:00:00Z",
            "config": {"volatile.base_image": "0123456789abcdef"},
            "expanded_config": {"security.privileged": "true", "user.tier": "front",
                                "limits.memory": "100MiB"},
            "expanded_devices": {"root": {"type": "disk", "path": "/", "pool": "default"}},
            "snapshots": [{"name": "snap0"}],
            "state": {"pid": 42, "processes": 3, "cpu": {"usage": 2_500_000_000_i64},
                      "memory": {"usage": 10_485_760},
                      "disk": {"root": {"usage": 2048}},
                      "network": {
                "lo": {"type": "loopback", "addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}]},
                "eth0": {"type": "broadcast", "addresses": [
                    {"family": "inet", "address": "10.1.2.3", "scope": "global"},
                    {"family": "inet6", "address": "fd42::3", "scope": "global"},
                    {"family": "inet6", "address": "fe80::1", "scope": "link"}]}}}
        })
    }

    #[test]
    fn cells_are_formatted_as_lxc_formats_them() {
        let v = inst();
        let cols = parse_columns("n4s6tSpNmMuDbPcalfF", false, false, false).unwrap();
        let cells: Vec<String> = cols.iter().map(|c| cell(&v, c)).collect();
        assert_eq!(
            cells,
            [
                "web1",
                "10.1.2.3 (eth0)",
                "RUNNING",
                "fd42::3 (eth0)",
                "CONTAINER",
                "1",
                "42",
                "3",
                "10.00MiB",
                "10.0%",
                "2s",
                "2.00KiB",
                "default",
                "default\nextra",
                "2026/12/02 04:11 UTC",
                "x86_64",
                "",
                "0123456789ab",
                "0123456789abcdef",
            ]
        );
        let mut stopped = v.clone();
        stopped["status"] = json!("Stopped");
        stopped["status_code"] = json!(102);
        let cols = parse_columns("4pNmu", false, false, false).unwrap();
        assert!(cols.iter().all(|c| cell(&stopped, c).is_empty()));
        let mut eph = v;
        eph["ephemeral"] = json!(true);
        assert_eq!(
            cell(&eph, &parse_columns("t", false, false, false).unwrap()[0]),
            "CONTAINER (EPHEMERAL)"
        );
    }

    #[test]
    fn filters_select_as_lxc_selects() {
        let v = inst();
        let yes =
            |f: &[&str]| should_show(&f.iter().map(|x| x.to_string()).collect::<Vec<_>>(), &v);
        assert!(yes(&[]));
        assert!(yes(&["web"]));
        assert!(yes(&["w.*1$"]));
        assert!(yes(&[".*eb.*"]));
        assert!(!yes(&["db"]));
        assert!(yes(&["status=running", "type=container"]));
        assert!(yes(&["status=RUNNING"]));
        assert!(!yes(&["status=stopped"]));
        assert!(yes(&["status=stopped,running"]));
        assert!(yes(&["s.privileged=true"]));
        assert!(yes(&["security.privileged=true"]));
        assert!(!yes(&["security.privileged=false"]));
        assert!(yes(&["user.tier=fr.*"]));
        assert!(!yes(&["user.nothere=x"]));
        assert!(yes(&["ipv4=10.1.2.3"]));
        assert!(yes(&["ipv4=10.1.0.0/16"]));
        assert!(!yes(&["ipv4=10.2.0.0/16"]));
        assert!(yes(&["ipv6=fd42::/64"]));
        assert!(yes(&["name=WEB1"]));
    }
}
