//! Device types and their options, each type's from one table: a misspelt key
//! (`readonly=ture`, `bogus=1`) or a type hutch does not implement is refused by name with
//! a 400, never stored and silently not applied. The rules that relate options to each
//! other or to the daemon's state (networks, proxies' addresses) live with each type.

use hutch_api::config::{parse_bool, parse_memory};
use hutch_api::profile::Devices;

use super::{disk, gpu, nic, proxy, unix, Options};
use crate::engine::Engine;
use crate::error::{DaemonError, Result};

/// What an option's value must be.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Bool,
    /// A boolean that hutch implements only as `true` (its behaviour today).
    OnlyTrue,
    Size,
    AbsolutePath,
    /// An absolute host path, or the name of a custom volume.
    DiskSource,
    Name,
    /// A decimal number (`uid`, `major`).
    Number,
    /// An octal file mode (`0660`).
    Mode,
    /// A 4-digit hex PCI id (`10de`).
    Hex,
    /// `physical`, the one GPU type hutch implements.
    GpuType,
    /// Checked by the device's own rules.
    Any,
}

/// One option of a device type: its key and what its value must be.
pub(super) struct Opt {
    key: &'static str,
    kind: Kind,
}

pub(super) const fn opt(key: &'static str, kind: Kind) -> Opt {
    Opt { key, kind }
}

/// Options LXD knows for NICs and proxies that hutch does not implement: refused by name,
/// so that a limit or a filter is never silently not applied.
const NET_UNSUPPORTED: &[&str] = &[
    "limits.",
    "security.",
    "vlan",
    "ipv6.",
    "ipv4.routes",
    "queue.",
    "maas.",
    "gvrp",
    "acceleration",
    "proxy_protocol",
    "uid",
    "gid",
    "mode",
];

/// Device types LXD has that hutch does not implement yet.
const UNSUPPORTED_TYPES: &[&str] = &["unix-hotplug", "usb", "infiniband", "tpm", "pci"];

/// Checks the devices of an instance or profile: each of a known type, with every option
/// known and well-formed, and the rules of its type kept.
pub fn validate_devices(e: &Engine, devices: &Devices) -> Result<()> {
    for (devname, dev) in devices {
        check_device(devname, dev)?;
    }
    for (devname, dev) in devices {
        match dev.get("type").map(String::as_str) {
            Some("nic") => nic::validate(e, devname, dev)?,
            Some("proxy") => proxy::validate(devname, dev)?,
            _ => {}
        }
    }
    Ok(())
}

/// The checks every device passes alone: a known type, every option in its type's table
/// and well-formed.
fn check_device(devname: &str, dev: &Options) -> Result<()> {
    let kind = dev
        .get("type")
        .map(String::as_str)
        .ok_or_else(|| invalid(devname, "no type".into()))?;
    match kind {
        "disk" => check_table(devname, dev, disk::OPTIONS, disk::UNSUPPORTED),
        "nic" => check_table(devname, dev, nic::OPTIONS, NET_UNSUPPORTED),
        "proxy" => check_table(devname, dev, proxy::OPTIONS, NET_UNSUPPORTED),
        "unix-char" | "unix-block" => {
            check_table(devname, dev, unix::OPTIONS, unix::UNSUPPORTED)?;
            unix::check(devname, dev)
        }
        "gpu" => check_table(devname, dev, gpu::OPTIONS, gpu::UNSUPPORTED),
        "none" => match dev.keys().find(|k| *k != "type") {
            Some(k) => Err(invalid(devname, format!("Invalid device option {k:?}"))),
            None => Ok(()),
        },
        t if UNSUPPORTED_TYPES.contains(&t) => Err(invalid(
            devname,
            format!("device type {t:?} is not supported by hutch yet"),
        )),
        t => Err(invalid(devname, format!("unknown device type {t:?}"))),
    }
}

/// LXD's 400 for a device that breaks a rule: `Invalid device "<name>": <why>`.
pub(super) fn invalid(devname: &str, why: String) -> DaemonError {
    DaemonError::BadRequest(format!("Invalid device {devname:?}: {why}"))
}

fn check_table(devname: &str, dev: &Options, table: &[Opt], unsupported: &[&str]) -> Result<()> {
    let bad = |why: String| invalid(devname, why);
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
        Kind::DiskSource => crate::engine::volumes::validate_volume_name(v).map_err(|_| {
            format!("{v:?} is neither an absolute host path nor a storage volume name")
        }),
        Kind::Name => crate::engine::pools::validate_pool_name(v).map_err(|e| e.to_string()),
        Kind::Number => match v.parse::<u32>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("{v:?} is not a number")),
        },
        Kind::Mode => match u32::from_str_radix(v, 8) {
            Ok(m) if m <= 0o7777 => Ok(()),
            _ => Err(format!("{v:?} is not an octal file mode")),
        },
        Kind::Hex if v.len() == 4 && v.chars().all(|c| c.is_ascii_hexdigit()) => Ok(()),
        Kind::Hex => Err(format!("{v:?} is not a 4-digit hex id")),
        Kind::GpuType if v == "physical" => Ok(()),
        Kind::GpuType => Err(format!("{v:?} is not supported by hutch (only physical)")),
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

    fn dev(pairs: &[(&str, &str)]) -> Options {
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
            &[("type", "nic"), ("network", "n"), ("boot.priority", "1")],
        ] {
            check_device("d", &dev(ok)).unwrap();
        }
    }

    #[test]
    fn unix_and_gpu_devices_pass_their_tables() {
        for ok in [
            &[("type", "unix-char"), ("source", "/dev/fuse")][..],
            &[
                ("type", "unix-block"),
                ("path", "/dev/sdz"),
                ("major", "8"),
                ("minor", "0"),
                ("uid", "1000"),
                ("gid", "1000"),
                ("mode", "0640"),
                ("required", "false"),
            ],
            &[("type", "gpu")],
            &[
                ("type", "gpu"),
                ("gputype", "physical"),
                ("id", "0"),
                ("pci", "0000:01:00.0"),
                ("vendorid", "10DE"),
                ("productid", "2335"),
                ("mode", "0666"),
            ],
        ] {
            check_device("d", &dev(ok)).unwrap();
        }
    }

    #[test]
    fn bad_unix_and_gpu_options_are_refused_by_name() {
        let unix = |extra: &[(&'static str, &'static str)]| {
            let mut p = vec![("type", "unix-char"), ("path", "/dev/x")];
            p.extend_from_slice(extra);
            refused(&p)
        };
        assert!(unix(&[("mode", "999")]).contains("mode"));
        assert!(unix(&[("mode", "rw")]).contains("octal"));
        assert!(unix(&[("uid", "-1")]).contains("uid"));
        assert!(unix(&[("major", "1")]).contains("major and minor"));
        assert!(unix(&[("required", "maybe")]).contains("required"));
        assert!(unix(&[("bogus", "1")]).contains("\"bogus\""));
        assert!(refused(&[("type", "unix-char")]).contains("source or a path"));
        assert!(refused(&[("type", "unix-block"), ("path", "dev/x")]).contains("absolute"));
        assert!(refused(&[("type", "gpu"), ("gputype", "mig")]).contains("only physical"));
        assert!(refused(&[("type", "gpu"), ("vendorid", "nvidia")]).contains("vendorid"));
        assert!(refused(&[("type", "gpu"), ("id", "card0")]).contains("id"));
        assert!(refused(&[("type", "gpu"), ("mig.uuid", "x")]).contains("not supported"));
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
        assert!(refused(&[("type", "unix-hotplug")]).contains("not supported"));
        assert!(refused(&[("type", "floppy")]).contains("unknown device type"));
        assert!(refused(&[("path", "/x")]).contains("no type"));
        assert!(refused(&[("type", "nic"), ("limits.ingress", "1M")]).contains("not supported"));
        assert!(refused(&[("type", "proxy"), ("nat", "maybe")]).contains("nat"));
        assert!(refused(&[("type", "proxy"), ("bogus", "1")]).contains("\"bogus\""));
    }
}
