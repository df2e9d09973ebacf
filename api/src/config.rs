//! The table of instance config keys (name, validator, whether it applies live, doc) and
//! the parsers for their values. Validation, help and docs all come from this one table.

use std::collections::BTreeMap;

/// A refused config key, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for config key {key:?}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

/// One known key.
#[derive(Debug)]
pub struct ConfigKey {
    pub name: &'static str,
    /// Default, as LXD documents it ("" when none).
    pub default: &'static str,
    /// Applies to a running instance without a restart.
    pub live: bool,
    pub doc: &'static str,
    validate: fn(&str) -> Result<(), String>,
}

/// Instance config keys with exact names.
pub static INSTANCE_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "boot.autostart",
        default: "",
        live: true,
        doc: "start at daemon start (unset: restore last state)",
        validate: is_bool,
    },
    ConfigKey {
        name: "boot.autostart.delay",
        default: "0",
        live: true,
        doc: "seconds to wait after starting this instance",
        validate: is_uint,
    },
    ConfigKey {
        name: "boot.autostart.priority",
        default: "0",
        live: true,
        doc: "higher starts first",
        validate: is_int,
    },
    ConfigKey {
        name: "boot.host_shutdown_timeout",
        default: "30",
        live: true,
        doc: "seconds to wait for a clean stop at host shutdown",
        validate: is_uint,
    },
    ConfigKey {
        name: "boot.stop.priority",
        default: "0",
        live: true,
        doc: "higher stops first",
        validate: is_int,
    },
    ConfigKey {
        name: "limits.memory",
        default: "",
        live: true,
        doc: "memory limit (512MiB, 1GB, 50%)",
        validate: |v| parse_memory(v, 1 << 30).map(|_| ()),
    },
    ConfigKey {
        name: "limits.memory.swap",
        default: "true",
        live: true,
        doc: "allow swapping",
        validate: is_bool,
    },
    ConfigKey {
        name: "limits.cpu",
        default: "",
        live: true,
        doc: "CPU count (2) or set (0-3,5)",
        validate: |v| parse_cpu(v).map(|_| ()),
    },
    ConfigKey {
        name: "limits.cpu.allowance",
        default: "",
        live: true,
        doc: "CPU time (50% or 25ms/100ms)",
        validate: |v| parse_cpu_allowance(v, 1).map(|_| ()),
    },
    ConfigKey {
        name: "limits.processes",
        default: "",
        live: true,
        doc: "maximum number of processes",
        validate: is_positive,
    },
    ConfigKey {
        name: "security.privileged",
        default: "false",
        live: false,
        doc: "run without a user namespace",
        validate: is_bool,
    },
    ConfigKey {
        name: "security.nesting",
        default: "false",
        live: false,
        doc: "allow nested containers",
        validate: is_bool,
    },
    ConfigKey {
        name: "security.protection.delete",
        default: "false",
        live: true,
        doc: "refuse deletion",
        validate: is_bool,
    },
    ConfigKey {
        name: "snapshots.schedule",
        default: "",
        live: true,
        doc: "automatic snapshots (cron, or @hourly, @daily, @weekly, @monthly)",
        validate: |v| crate::schedule::Schedule::parse(v).map(|_| ()),
    },
    ConfigKey {
        name: "snapshots.schedule.stopped",
        default: "false",
        live: true,
        doc: "also take scheduled snapshots while stopped",
        validate: is_bool,
    },
    ConfigKey {
        name: "snapshots.pattern",
        default: "snap%d",
        live: true,
        doc: "names of snapshots taken without a name (%d: lowest free number)",
        validate: |v| {
            if v.contains('/') {
                Err("must not contain '/'".into())
            } else {
                Ok(())
            }
        },
    },
    ConfigKey {
        name: "snapshots.expiry",
        default: "",
        live: true,
        doc: "how long snapshots are kept (1M 2H 3d 4w 5m 6y)",
        validate: |v| crate::schedule::parse_expiry(v).map(|_| ()),
    },
];

/// Keys matched by prefix: free-form values.
pub static INSTANCE_KEY_PREFIXES: &[(&str, &str)] = &[
    ("environment.", "environment variable for exec"),
    ("user.", "free-form user data"),
    ("image.", "copied from the image's properties"),
    ("volatile.", "kept by the daemon"),
];

/// The table entry of `key`, if it has an exact entry.
pub fn instance_key(key: &str) -> Option<&'static ConfigKey> {
    INSTANCE_KEYS.iter().find(|k| k.name == key)
}

/// Checks every key and value; the error names the first bad key.
pub fn validate_instance_config(config: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (key, value) in config {
        let err = |reason: String| ConfigError {
            key: key.clone(),
            reason,
        };
        if let Some(k) = instance_key(key) {
            if !value.is_empty() {
                (k.validate)(value).map_err(err)?;
            }
        } else if let Some((prefix, _)) = INSTANCE_KEY_PREFIXES
            .iter()
            .find(|(p, _)| key.starts_with(p))
        {
            if key.len() == prefix.len() {
                return Err(err("needs a name after the prefix".into()));
            }
        } else {
            return Err(err("unknown config key".into()));
        }
    }
    Ok(())
}

fn is_bool(v: &str) -> Result<(), String> {
    parse_bool(v).map(|_| ())
}

/// LXD's booleans.
pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("{v:?} is not a boolean")),
    }
}

fn is_uint(v: &str) -> Result<(), String> {
    v.parse::<u64>()
        .map(|_| ())
        .map_err(|_| format!("{v:?} is not a non-negative integer"))
}

fn is_int(v: &str) -> Result<(), String> {
    v.parse::<i64>()
        .map(|_| ())
        .map_err(|_| format!("{v:?} is not an integer"))
}

fn is_positive(v: &str) -> Result<(), String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!("{v:?} is not a positive integer")),
    }
}

/// Parses a size with LXD's units (B, kB/KB, MB, GB, TB, KiB, MiB, GiB, TiB) or a
/// percentage of `total`.
pub fn parse_memory(v: &str, total: u64) -> Result<u64, String> {
    let v = v.trim();
    if let Some(pct) = v.strip_suffix('%') {
        let p: f64 = pct
            .parse()
            .map_err(|_| format!("{v:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&p) || p == 0.0 {
            return Err(format!("{v:?} is not between 0% and 100%"));
        }
        return Ok((total as f64 * p / 100.0) as u64);
    }
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{v:?} is not a size"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "kB" | "KB" => 1000,
        "MB" => 1000u64.pow(2),
        "GB" => 1000u64.pow(3),
        "TB" => 1000u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(format!("{v:?} has an unknown unit {unit:?}")),
    };
    let bytes = (n * mult as f64) as u64;
    if bytes == 0 {
        return Err(format!("{v:?} is zero"));
    }
    Ok(bytes)
}

/// `limits.cpu`: a count, or an explicit set of CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuLimit {
    Count(u32),
    Set(String),
}

pub fn parse_cpu(v: &str) -> Result<CpuLimit, String> {
    if let Ok(n) = v.parse::<u32>() {
        return if n == 0 {
            Err("0 CPUs".into())
        } else {
            Ok(CpuLimit::Count(n))
        };
    }
    let valid = !v.is_empty()
        && v.split(',').all(|part| {
            let mut ends = part.splitn(2, '-').map(|x| x.parse::<u32>());
            match (ends.next(), ends.next()) {
                (Some(Ok(_)), None) => true,
                (Some(Ok(a)), Some(Ok(b))) => a <= b,
                _ => false,
            }
        });
    if valid {
        Ok(CpuLimit::Set(v.to_string()))
    } else {
        Err(format!("{v:?} is neither a CPU count nor a CPU set"))
    }
}

/// `limits.cpu.allowance`: `50%` (of `cpus` CPUs) or `25ms/100ms`; returns (quota, period) in µs.
pub fn parse_cpu_allowance(v: &str, cpus: u32) -> Result<(u64, u64), String> {
    if let Some(pct) = v.strip_suffix('%') {
        let p: u64 = pct
            .parse()
            .map_err(|_| format!("{v:?} is not a percentage"))?;
        if p == 0 {
            return Err(format!("{v:?} is zero"));
        }
        let period = 100_000;
        return Ok((period * p * cpus.max(1) as u64 / 100, period));
    }
    let (q, p) = v
        .split_once('/')
        .ok_or_else(|| format!("{v:?} is neither N% nor Nms/Nms"))?;
    let ms = |s: &str| {
        s.strip_suffix("ms")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
    };
    match (ms(q), ms(p)) {
        (Some(q), Some(p)) => Ok((q * 1000, p * 1000)),
        _ => Err(format!("{v:?} is not Nms/Nms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn known_and_prefixed_keys_pass() {
        validate_instance_config(&cfg(&[
            ("boot.autostart", "true"),
            ("limits.memory", "512MiB"),
            ("limits.cpu", "0-1"),
            ("environment.FOO", "bar"),
            ("user.note", "x"),
            ("volatile.base_image", "abc"),
        ]))
        .unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let e = validate_instance_config(&cfg(&[("limits.memory", "lots")])).unwrap_err();
        assert_eq!(e.key, "limits.memory");
        let e = validate_instance_config(&cfg(&[("bogus.key", "1")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value for config key \"bogus.key\": unknown config key"
        );
        assert!(validate_instance_config(&cfg(&[("environment.", "x")])).is_err());
        assert!(validate_instance_config(&cfg(&[("boot.autostart", "maybe")])).is_err());
    }

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("512MiB", 0).unwrap(), 512 << 20);
        assert_eq!(parse_memory("1GB", 0).unwrap(), 1_000_000_000);
        assert_eq!(parse_memory("50%", 1000).unwrap(), 500);
        assert_eq!(parse_memory("4096", 0).unwrap(), 4096);
        assert!(parse_memory("1XB", 0).is_err());
        assert!(parse_memory("0", 0).is_err());
    }

    #[test]
    fn cpu_limits_parse() {
        assert_eq!(parse_cpu("2").unwrap(), CpuLimit::Count(2));
        assert_eq!(parse_cpu("0-3,5").unwrap(), CpuLimit::Set("0-3,5".into()));
        assert!(parse_cpu("3-1").is_err());
        assert!(parse_cpu("0").is_err());
        assert_eq!(parse_cpu_allowance("50%", 2).unwrap(), (100_000, 100_000));
        assert_eq!(
            parse_cpu_allowance("25ms/100ms", 1).unwrap(),
            (25_000, 100_000)
        );
        assert!(parse_cpu_allowance("fast", 1).is_err());
    }
}
