//! The table of server config keys (`GET/PUT/PATCH /1.0`): for each its type, default,
//! validator, whether it is write-only and whether it applies live, and the pure rules of
//! LXD's config map (replace, merge, render). No I/O: the daemon stores the result.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// The type of a key's value, as LXD's config schema types them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    String,
    /// Stored as `true` or `false` whatever spelling was given (`yes`, `on`, `1`...).
    Bool,
    /// A signed 64-bit integer.
    Int,
}

/// One known server key.
#[derive(Debug)]
pub struct ServerKey {
    pub name: &'static str,
    pub kind: KeyKind,
    /// Default, as LXD 5.0 documents it ("" when none). A key at its default is not stored.
    pub default: &'static str,
    /// Write-only: `GET /1.0` shows `true` when it is set, never the value.
    pub hidden: bool,
    /// Takes effect without a daemon restart. Keys whose effect is not built yet are
    /// stored and marked not live: they act from the restart after their feature lands.
    pub live: bool,
    pub doc: &'static str,
    validate: fn(&str) -> Result<(), String>,
}

/// Server keys with exact names (LXD 5.0's node and cluster schemas, the part hutch's
/// roadmap needs). Keys marked not `live` are stored without an effect yet; see each `doc`.
pub static SERVER_KEYS: &[ServerKey] = &[
    ServerKey {
        name: "backups.compression_algorithm",
        kind: KeyKind::String,
        default: "gzip",
        hidden: false,
        live: true,
        doc: "compression of instance backups (none, gzip, xz, zstd) when a backup names none",
        validate: is_compression,
    },
    ServerKey {
        name: "cluster.etcd_endpoints",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: true,
        doc: "hutch's own: the etcd client URLs (comma-separated http:// or https://) the \
              cluster's shared state lives in; `PUT /1.0/cluster` enables a cluster on them",
        validate: is_etcd_endpoints,
    },
    ServerKey {
        name: "cluster.https_address",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: false,
        doc: "address for cluster traffic; stored, hutch does not cluster yet",
        validate: is_listen_address,
    },
    ServerKey {
        name: "cluster.offline_threshold",
        kind: KeyKind::Int,
        default: "20",
        hidden: false,
        live: false,
        doc: "seconds without a heartbeat before a member shows Offline (3 or more); read \
              when the member's heartbeat starts (enable, join, daemon start)",
        validate: is_offline_threshold,
    },
    ServerKey {
        name: "core.debug_address",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: false,
        doc: "address of the debug (pprof-like) server; stored, not served yet",
        validate: is_listen_address,
    },
    ServerKey {
        name: "core.https_address",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: true,
        doc: "address to serve the API on over HTTPS (host, host:port, [v6]:port, :port; port 8443 when none); started, moved and stopped live",
        validate: is_listen_address,
    },
    ServerKey {
        name: "core.metrics_address",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: false,
        doc: "address of the metrics server; stored, metrics are not served yet",
        validate: is_listen_address,
    },
    ServerKey {
        name: "core.proxy_http",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: false,
        doc: "HTTP proxy for image downloads; stored, remote images are not fetched yet",
        validate: any,
    },
    ServerKey {
        name: "core.proxy_https",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: false,
        doc: "HTTPS proxy for image downloads; stored, remote images are not fetched yet",
        validate: any,
    },
    ServerKey {
        name: "core.proxy_ignore_hosts",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: false,
        doc: "hosts that bypass the proxy (comma separated); stored, not used yet",
        validate: any,
    },
    ServerKey {
        name: "core.remote_token_expiry",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: true,
        doc: "how long a certificate add token lives (LXD's expiry: `30M`, `1H`, `2d`, `1H 30M`; S M H d w m y); none: forever",
        validate: is_expiry,
    },
    ServerKey {
        name: "core.trust_password",
        kind: KeyKind::String,
        default: "",
        hidden: true,
        live: false,
        doc: "password remote clients give to get trusted (write-only, stored hashed)",
        validate: any,
    },
    ServerKey {
        name: "core.ui_address",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: true,
        doc: "loopback address (127.0.0.1:port, [::1]:port, localhost:port; port 8444 when none) of the web UI's plain-HTTP listener, for a browser on this host logging in with `hutch ui`; started, moved and stopped live",
        validate: is_loopback_address,
    },
    ServerKey {
        name: "images.auto_update_cached",
        kind: KeyKind::Bool,
        default: "true",
        hidden: false,
        live: true,
        doc: "images cached from remotes (at instance creation) get auto_update",
        validate: any,
    },
    ServerKey {
        name: "images.auto_update_interval",
        kind: KeyKind::Int,
        default: "6",
        hidden: false,
        live: true,
        doc: "hours between refreshes of images pulled by alias with auto_update (0 disables)",
        validate: is_not_negative,
    },
    ServerKey {
        name: "images.compression_algorithm",
        kind: KeyKind::String,
        default: "gzip",
        hidden: false,
        live: true,
        doc: "default compression of published images (none, gzip, xz, zstd)",
        validate: is_compression,
    },
    ServerKey {
        name: "images.remote_cache_expiry",
        kind: KeyKind::Int,
        default: "10",
        hidden: false,
        live: true,
        doc: "days an unused cached remote image is kept (0: forever)",
        validate: is_not_negative,
    },
    ServerKey {
        name: "storage.backups_volume",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: false,
        doc: "custom volume (POOL/VOLUME) to keep backups on; stored, backups are not built yet",
        validate: is_pool_volume,
    },
    ServerKey {
        name: "storage.images_volume",
        kind: KeyKind::String,
        default: "",
        hidden: false,
        live: false,
        doc: "custom volume (POOL/VOLUME) to keep images on; stored, not used yet",
        validate: is_pool_volume,
    },
];

/// Keys matched by prefix: free-form values (LXD's `user.*`).
pub const SERVER_KEY_PREFIXES: &[(&str, &str)] = &[("user.", "free-form user data")];

/// The table entry of `key`.
/// Whether server key `key` is each cluster member's own (where it listens, its etcd
/// endpoints, its volumes), as LXD's node config is; every other key is the cluster's.
pub fn is_member_key(key: &str) -> bool {
    matches!(
        key,
        "cluster.etcd_endpoints"
            | "cluster.https_address"
            | "core.debug_address"
            | "core.https_address"
            | "core.metrics_address"
            | "core.ui_address"
            | "storage.backups_volume"
            | "storage.images_volume"
    )
}

pub fn server_key(key: &str) -> Option<&'static ServerKey> {
    SERVER_KEYS.iter().find(|k| k.name == key)
}

fn is_free_form(key: &str) -> bool {
    SERVER_KEY_PREFIXES
        .iter()
        .any(|(p, _)| key.len() > p.len() && key.starts_with(p))
}

/// One refused key, in LXD's words: `cannot set 'KEY' to 'VALUE': REASON`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub key: String,
    /// The value refused; `None` when it was not a string at all.
    pub value: Option<String>,
    pub reason: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot set '{}'", self.key)?;
        if let Some(v) = &self.value {
            write!(f, " to '{v}'")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every refused key of one change, sorted by key; shown as LXD's `ErrorList`: the first,
/// then how many more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfigError(pub Vec<KeyError>);

impl fmt::Display for ServerConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => write!(f, "no errors"),
            [one] => write!(f, "{one}"),
            [first, rest @ ..] => write!(f, "{first} (and {} more errors)", rest.len()),
        }
    }
}

impl std::error::Error for ServerConfigError {}

/// The outcome of a change: the config to store, and the keys whose stored value changed
/// (hidden ones carry the new clear text: the daemon hashes them before storing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerConfigChange {
    pub config: BTreeMap<String, String>,
    pub changed: Vec<String>,
}

/// Applies `changes` to the stored `current` config as LXD does: `merge` (PATCH) keeps
/// the keys not named, otherwise (PUT) they return to their defaults. `null` or `""`
/// unsets a key; `true` for a hidden key keeps its current value (what `GET` showed);
/// booleans are normalised; a value equal to its default is not stored.
pub fn change_server_config(
    current: &BTreeMap<String, String>,
    changes: &BTreeMap<String, Value>,
    merge: bool,
) -> Result<ServerConfigChange, ServerConfigError> {
    let mut errors = Vec::new();
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (key, change) in changes {
        let hidden = server_key(key).is_some_and(|k| k.hidden);
        let value = match change {
            Value::Bool(true) if hidden => current.get(key).cloned().unwrap_or_default(),
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => {
                errors.push(KeyError {
                    key: key.clone(),
                    value: None,
                    reason: format!("invalid type {}", json_kind(other)),
                });
                continue;
            }
        };
        wanted.insert(key.clone(), value);
    }
    if !errors.is_empty() {
        return Err(ServerConfigError(errors));
    }

    let mut config = if merge {
        current.clone()
    } else {
        BTreeMap::new()
    };
    for (key, value) in wanted {
        if let Some(hidden) = current.get(&key).filter(|v| **v == value) {
            // Unchanged (a hidden key kept with `true`): already valid, stored as it is.
            config.insert(key, hidden.clone());
            continue;
        }
        match check_value(&key, &value) {
            Ok(Some(v)) => {
                config.insert(key, v);
            }
            Ok(None) => {
                config.remove(&key);
            }
            Err(reason) => errors.push(KeyError {
                key,
                value: Some(value),
                reason,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ServerConfigError(errors));
    }
    let mut changed: Vec<String> = config
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(current.keys().filter(|k| !config.contains_key(*k)).cloned())
        .collect();
    changed.sort();
    Ok(ServerConfigChange { config, changed })
}

/// Checks one key and value; the value to store, or `None` when the key returns to its
/// default.
fn check_value(key: &str, value: &str) -> Result<Option<String>, String> {
    if is_free_form(key) {
        return Ok((!value.is_empty()).then(|| value.to_string()));
    }
    let Some(k) = server_key(key) else {
        return Err("unknown key".into());
    };
    if value.is_empty() {
        return Ok(None);
    }
    let value = match k.kind {
        KeyKind::String => value.to_string(),
        KeyKind::Bool => parse_bool(value).ok_or("invalid boolean")?.to_string(),
        KeyKind::Int => {
            value
                .parse::<i64>()
                .map_err(|_| "invalid integer".to_string())?;
            value.to_string()
        }
    };
    (k.validate)(&value)?;
    Ok((value != k.default).then_some(value))
}

/// The config as `GET /1.0` shows it: stored keys only (defaults are not stored), a set
/// hidden key as `true`.
pub fn render_server_config(stored: &BTreeMap<String, String>) -> BTreeMap<String, Value> {
    stored
        .iter()
        .map(|(k, v)| {
            let shown = match server_key(k) {
                Some(key) if key.hidden => Value::Bool(true),
                _ => Value::String(v.clone()),
            };
            (k.clone(), shown)
        })
        .collect()
}

/// The value in effect for a known `key`: the stored one, else its default.
pub fn server_config_value<'a>(stored: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    match stored.get(key) {
        Some(v) => v,
        None => server_key(key).map_or("", |k| k.default),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "slice",
        Value::Object(_) => "map",
    }
}

/// LXD's spellings of a boolean.
fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn any(_: &str) -> Result<(), String> {
    Ok(())
}

fn is_not_negative(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        _ => Err("must be zero or more".into()),
    }
}

fn is_offline_threshold(v: &str) -> Result<(), String> {
    match v.parse::<i64>() {
        Ok(n) if n >= 3 => Ok(()),
        _ => Err("must be 3 or more (seconds)".into()),
    }
}

/// A comma-separated list of http:// or https:// URLs with a host.
fn is_etcd_endpoints(v: &str) -> Result<(), String> {
    for url in v.split(',').map(str::trim) {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
        if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
            return Err(format!(
                "{url:?} is not an etcd client URL (scheme://host:port)"
            ));
        }
    }
    Ok(())
}

/// What hutch can compress images and backups with.
fn is_compression(v: &str) -> Result<(), String> {
    match v {
        "none" | "gzip" | "xz" | "zstd" => Ok(()),
        _ => Err("unsupported compression algorithm (none, gzip, xz or zstd)".into()),
    }
}

/// LXD's expiry expression (`shared.GetExpiry`).
fn is_expiry(v: &str) -> Result<(), String> {
    expiry_seconds(v).map(|_| ())
}

/// The length of an expiry expression as LXD writes them: space-separated `<n><unit>`,
/// each unit once, units `S` `M` `H` `d` `w` `m` (30 days) `y` (365 days).
pub fn expiry_seconds(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let mut seen = Vec::new();
    let mut total: u64 = 0;
    for part in v.split(' ') {
        let bad = || "Invalid expiry expression".to_string();
        let unit = part.chars().last().ok_or_else(bad)?;
        let digits = &part[..part.len() - unit.len_utf8()];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || seen.contains(&unit)
        {
            return Err(bad());
        }
        seen.push(unit);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let unit_seconds: u64 = match unit {
            'S' => 1,
            'M' => 60,
            'H' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'm' => 30 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(unit_seconds));
    }
    Ok(total)
}

/// `POOL/VOLUME`, naming a custom volume.
fn is_pool_volume(v: &str) -> Result<(), String> {
    match v.split_once('/') {
        Some((pool, volume)) if !pool.is_empty() && !volume.is_empty() && !volume.contains('/') => {
            Ok(())
        }
        _ => Err("must be POOL/VOLUME".into()),
    }
}

/// A listen address as LXD takes it: `host`, `host:port`, `[v6]:port` or `:port`, the host
/// an IP address, a wildcard (`0.0.0.0`, `[::]`) or a DNS name (not resolved here).
fn is_listen_address(v: &str) -> Result<(), String> {
    let (host, port) = match split_host_port(v) {
        Some((h, p)) => (h, Some(p)),
        None => (v, None),
    };
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| format!("Invalid port number {p:?}"))?;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let dns_name = bare.len() <= 253
        && bare.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if dns_name {
        Ok(())
    } else {
        Err(format!("Invalid address {v:?}"))
    }
}

/// A listen address on the loopback interface only: the web UI's plain-HTTP listener
/// must not be reachable from another host.
fn is_loopback_address(v: &str) -> Result<(), String> {
    is_listen_address(v)?;
    let host = split_host_port(v).map_or(v, |(h, _)| h);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "{v:?} is not a loopback address (127.0.0.1:PORT, [::1]:PORT or localhost:PORT): the web UI listener serves plain HTTP, for this host only"
        ))
    }
}

/// Go's `net.SplitHostPort`: `host:port` with one colon, or `[host]:port`.
pub fn split_host_port(v: &str) -> Option<(&str, &str)> {
    if let Some(rest) = v.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return Some((host, after.strip_prefix(':')?));
    }
    let (host, port) = v.rsplit_once(':')?;
    (!host.contains(':')).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn changes(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn expiry_expressions_parse_as_lxd_does() {
        assert_eq!(expiry_seconds("30M"), Ok(1800));
        assert_eq!(expiry_seconds("1H"), Ok(3600));
        assert_eq!(expiry_seconds("1d 2H"), Ok(86_400 + 7200));
        assert_eq!(expiry_seconds("5S"), Ok(5));
        for bad in ["", "1", "H", "1h", "1H 2H", "-1H", "1.5H", "1H  2M"] {
            assert!(expiry_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn table_names_are_sorted_unique_and_defaults_valid() {
        let names: Vec<&str> = SERVER_KEYS.iter().map(|k| k.name).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        for k in SERVER_KEYS {
            if !k.default.is_empty() {
                assert_eq!(check_value(k.name, k.default), Ok(None), "{}", k.name);
            }
        }
    }

    #[test]
    fn put_replaces_and_patch_merges() {
        let current = map(&[("core.https_address", ":8443"), ("user.a", "1")]);
        let put = change_server_config(
            &current,
            &changes(json!({"images.auto_update_interval": "12"})),
            false,
        )
        .unwrap();
        assert_eq!(put.config, map(&[("images.auto_update_interval", "12")]));
        assert_eq!(
            put.changed,
            [
                "core.https_address",
                "images.auto_update_interval",
                "user.a"
            ]
        );
        let patch = change_server_config(
            &current,
            &changes(json!({"images.auto_update_interval": "12", "user.a": ""})),
            true,
        )
        .unwrap();
        assert_eq!(
            patch.config,
            map(&[
                ("core.https_address", ":8443"),
                ("images.auto_update_interval", "12")
            ])
        );
        assert_eq!(patch.changed, ["images.auto_update_interval", "user.a"]);
    }

    #[test]
    fn defaults_are_not_stored_and_bools_are_normalised() {
        let c = change_server_config(
            &BTreeMap::new(),
            &changes(json!({
                "images.auto_update_cached": "on",
                "images.compression_algorithm": "gzip",
                "core.proxy_http": null,
            })),
            false,
        )
        .unwrap();
        assert!(c.config.is_empty(), "{:?}", c.config);
        let c = change_server_config(
            &BTreeMap::new(),
            &changes(json!({"images.auto_update_cached": "No"})),
            false,
        )
        .unwrap();
        assert_eq!(c.config, map(&[("images.auto_update_cached", "false")]));
    }

    #[test]
    fn hidden_keys_render_as_true_and_true_keeps_them() {
        let current = map(&[("core.trust_password", "hashed")]);
        let shown = render_server_config(&current);
        assert_eq!(shown["core.trust_password"], json!(true));
        // What `lxc config set` sends back: the rendered config plus its change.
        let mut back: BTreeMap<String, Value> = shown.into_iter().collect();
        back.insert("core.https_address".into(), json!("127.0.0.1:8443"));
        let c = change_server_config(&current, &back, false).unwrap();
        assert_eq!(c.config["core.trust_password"], "hashed");
        assert_eq!(c.changed, ["core.https_address"]);
        let c = change_server_config(
            &current,
            &changes(json!({"core.trust_password": "secret"})),
            true,
        )
        .unwrap();
        assert_eq!(c.config["core.trust_password"], "secret");
        assert_eq!(c.changed, ["core.trust_password"]);
    }

    #[test]
    fn errors_are_lxds_and_name_every_key() {
        let e = change_server_config(&BTreeMap::new(), &changes(json!({"bogus.key": "1"})), true)
            .unwrap_err();
        assert_eq!(e.to_string(), "cannot set 'bogus.key' to '1': unknown key");
        let e = change_server_config(
            &BTreeMap::new(),
            &changes(json!({
                "images.auto_update_interval": "soon",
                "images.auto_update_cached": "maybe",
                "core.https_address": "not an address",
            })),
            true,
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 3);
        assert_eq!(
            e.to_string(),
            "cannot set 'core.https_address' to 'not an address': Invalid address \"not an address\" (and 2 more errors)"
        );
        assert_eq!(e.0[1].reason, "invalid boolean");
        assert_eq!(e.0[2].reason, "invalid integer");
        let e = change_server_config(
            &BTreeMap::new(),
            &changes(json!({"core.https_address": 8443})),
            true,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot set 'core.https_address': invalid type float64"
        );
        assert!(
            change_server_config(&BTreeMap::new(), &changes(json!({"user.": "x"})), true).is_err()
        );
    }

    #[test]
    fn the_ui_address_is_loopback_only() {
        for ok in [
            "127.0.0.1:8444",
            "127.0.0.2",
            "[::1]:8444",
            "::1",
            "localhost:1",
        ] {
            assert_eq!(is_loopback_address(ok), Ok(()), "{ok}");
        }
        for bad in [
            ":8444",
            "0.0.0.0:8444",
            "[::]:1",
            "10.0.0.1:8444",
            "example.com:1",
            "x y",
        ] {
            assert!(is_loopback_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses() {
        for ok in [
            ":8443",
            "127.0.0.1:8443",
            "0.0.0.0",
            "[::]:8443",
            "[::1]:8443",
            "::1",
            "fd00::1",
            "example.com:443",
            "localhost",
        ] {
            assert_eq!(is_listen_address(ok), Ok(()), "{ok}");
        }
        for bad in [
            "1.2.3.4:99999",
            ":port",
            "bad host:1",
            "*:8443",
            "-x-:1",
            "[::1",
        ] {
            assert!(is_listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_compression_and_values_in_effect() {
        assert!(is_pool_volume("default/backups").is_ok());
        for bad in ["backups", "/v", "p/", "p/v/w"] {
            assert!(is_pool_volume(bad).is_err(), "{bad}");
        }
        assert!(check_value("images.compression_algorithm", "bzip2").is_err());
        assert!(check_value("images.auto_update_interval", "-1").is_err());
        let stored = map(&[("images.auto_update_interval", "0")]);
        assert_eq!(
            server_config_value(&stored, "images.auto_update_interval"),
            "0"
        );
        assert_eq!(
            server_config_value(&stored, "images.remote_cache_expiry"),
            "10"
        );
    }
}
