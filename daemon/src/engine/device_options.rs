//! Device types and their options, from one table: a misspelt key (`readonly=ture`,
//! `bogus=1`) or a type hutch does not implement is refused by name with a 400, never
//! stored and silently not applied. The per-type rules that need the daemon's state
//! (networks, proxies' addresses) live with those devices; this is what every device
//! must pass first.

use std::collections::BTreeMap;

use hutch_api::config::{parse_bool, parse_memory};

use crate::error::{DaemonError, Result};

/// What an option's value must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    /// A boolean that hutch implements only as `true` (its behaviour today).
    OnlyTrue,
    Size,
    AbsolutePath,
    /// An absolute host path, or the name of a custom volume.
    DiskSource,
    Name,
    /// Checked by the device's own rules.
    Any,
}

struct Opt {
    key: &'static str,
    kind: Kind,
}

const fn opt(key: &'static str, kind: Kind) -> Opt {
    Opt { key, kind }
}

const DISK: &[Opt] = &[
    opt("type", Kind::Any),
    opt("path", Kind::AbsolutePath),
    opt("source", Kind::DiskSource),
    opt("pool", Kind::Name),
    opt("readonly", Kind::Bool),
    opt("shift", Kind::Bool),
    opt("size", Kind::Size),
    opt("required", Kind::OnlyTrue),
    opt("recursive", Kind::OnlyTrue),
    opt("boot.priority", Kind::Any),
];

/// Options LXD knows for disks that hutch does not implement.
const DISK_UNSUPPORTED: &[&str] = &[
    "propagation",
    "raw.mount.options",
    "size.state",
    "limits.",
    "io.",
    "ceph.",
    "initial.",
];

/// Device types LXD has that hutch does not implement yet.
const UNSUPPORTED_TYPES: &[&str] = &[
    "unix-char",
    "unix-block",
    "unix-hotplug",
    "gpu",
    "usb",
    "infiniband",
    "tpm",
    "pci",
];

/// The checks every device passes: a known type, and for disks every option known and
/// well-formed. `nic` and `proxy` options are checked by their own tables.
pub fn check_device(devname: &str, dev: &BTreeMap<String, String>) -> Result<()> {
    let bad = |why: String| DaemonError::BadRequest(format!("Invalid device {devname:?}: {why}"));
    let kind = dev
        .get("type")
        .map(String::as_str)
        .ok_or_else(|| bad("no type".into()))?;
    match kind {
        "disk" => check_table(devname, dev, DISK, DISK_UNSUPPORTED),
        "nic" | "proxy" => Ok(()),
        "none" => match dev.keys().find(|k| *k != "type") {
            Some(k) => Err(bad(format!("Invalid device option {k:?}"))),
            None => Ok(()),
        },
        t if UNSUPPORTED_TYPES.contains(&t) => Err(bad(format!(
            "device type {t:?} is not supported by hutch yet"
        ))),
        t => Err(bad(format!("unknown device type {t:?}"))),
    }
}

fn check_table(
    devname: &str,
    dev: &BTreeMap<String, String>,
    table: &[Opt],
    unsupported: &[&str],
) -> Result<()> {
    let bad = |why: String| DaemonError::BadRequest(format!("Invalid device {devname:?}: {why}"));
    for (key, value) in dev {
        let Some(o) = table.iter().find(|o| o.key == key) else {
            return Err(bad(if unsupported.iter().any(|p| key.starts_with(p)) {
                format!("Device option {key:?} is not supported by hutch")
            } else {
                format!("Invalid device option {key:?}")
            }));
        };
        check_value(o.kind, value).map_err(|why| bad(format!("{key}: {why}")))?;
    }
    Ok(())
}

fn check_value(kind: Kind, v: &str) -> std::result::Result<(), String> {
    match kind {
        Kind::Bool => parse_bool(v).map(|_| ()),
        Kind::OnlyTrue => match parse_bool(v)? {
            true => Ok(()),
            false => Err(format!("{v:?} is not supported by hutch (only true)")),
        },
        Kind::Size => parse_memory(v, 0).map(|_| ()),
        Kind::AbsolutePath => absolute_path(v),
        Kind::DiskSource if v.starts_with('/') => absolute_path(v),
        Kind::DiskSource => super::volumes::validate_volume_name(v).map_err(|_| {
            format!("{v:?} is neither an absolute host path nor a storage volume name")
        }),
        Kind::Name => super::pools::validate_pool_name(v).map_err(|e| e.to_string()),
        Kind::Any => Ok(()),
    }
}

/// An absolute path with no `..` component and no NUL.
fn absolute_path(v: &str) -> std::result::Result<(), String> {
    if !v.starts_with('/') {
        return Err(format!("{v:?} is not an absolute path"));
    }
    if v.contains('\0') || v.split('/').any(|c| c == "..") {
        return Err(format!("{v:?} must not contain '..'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        match check_device("d", &dev(pairs)) {
            Err(e) => e.to_string(),
            Ok(()) => panic!("{pairs:?} accepted"),
        }
    }

    #[test]
    fn good_disks_pass() {
        for ok in [
            &[
                ("type", "disk"),
                ("path", "/"),
                ("pool", "default"),
                ("size", "1GiB"),
            ][..],
            &[
                ("type", "disk"),
                ("path", "/mnt/d"),
                ("source", "/srv/d"),
                ("readonly", "true"),
            ],
            &[
                ("type", "disk"),
                ("path", "/data"),
                ("source", "shared"),
                ("shift", "no"),
            ],
            &[("type", "none")],
            &[("type", "nic"), ("whatever", "x")],
        ] {
            check_device("d", &dev(ok)).unwrap();
        }
    }

    #[test]
    fn misspelt_and_unknown_are_refused_by_name() {
        let base = [("type", "disk"), ("path", "/mnt")];
        let with = |k, v| {
            let mut p = base.to_vec();
            p.push((k, v));
            refused(&p)
        };
        assert!(with("readonly", "ture").contains("readonly"));
        assert!(with("shift", "maybe").contains("shift"));
        assert!(with("bogus", "1").contains("\"bogus\""));
        assert!(with("propagation", "shared").contains("not supported"));
        assert!(with("recursive", "false").contains("not supported"));
        assert!(with("source", "../../../../tmp/v").contains("neither"));
        assert!(with("source", "/srv/../etc").contains(".."));
        assert!(refused(&[("type", "disk"), ("path", "rel")]).contains("absolute"));
        assert!(refused(&[("type", "unix-char"), ("path", "/dev/x")]).contains("not supported"));
        assert!(refused(&[("type", "gpu")]).contains("not supported"));
        assert!(refused(&[("type", "floppy")]).contains("unknown device type"));
        assert!(refused(&[("path", "/x")]).contains("no type"));
    }
}
