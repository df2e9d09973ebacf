//! Device nodes: `unix-char` and `unix-block` devices, and the nodes `gpu` devices find.
//! As LXD does, each node is made on the host (in the instance's runtime directory, owned
//! by the container's ids and with the device's mode), bind-mounted into the container,
//! and allowed in its devices cgroup (the v1 controller, or the cgroup2 BPF filter); a
//! container root that makes a node of its own with mknod still cannot open it.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hutch_api::config::parse_bool;
use hutch_runtime::{BindMount, ContainerSpec, DeviceNode, HotplugOp, IdMap};

use super::validate::{invalid, opt as o, Kind, Opt};
use super::{gpu, hotplug_ops, opt, Options};
use crate::daemon::Daemon;
use crate::db::instances::InstanceRow;
use crate::engine::spec::{flag, Expanded};
use crate::engine::{blocking, Engine};
use crate::error::{DaemonError, Result};

/// The options of `unix-char` and `unix-block` devices.
pub(super) const OPTIONS: &[Opt] = &[
    o("type", Kind::Any),
    o("source", Kind::AbsolutePath),
    o("path", Kind::AbsolutePath),
    o("major", Kind::Number),
    o("minor", Kind::Number),
    o("uid", Kind::Number),
    o("gid", Kind::Number),
    o("mode", Kind::Mode),
    o("required", Kind::Bool),
];

/// Options LXD knows for unix devices that hutch does not implement.
pub(super) const UNSUPPORTED: &[&str] = &[];

/// One device node the container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    /// Its path inside the container.
    pub target: PathBuf,
    pub block: bool,
    pub major: u32,
    pub minor: u32,
    /// Owner and mode inside the container.
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Node {
    /// Its devices cgroup rule.
    fn rule(&self) -> String {
        let kind = if self.block { 'b' } else { 'c' };
        format!("{kind} {}:{} rwm", self.major, self.minor)
    }

    /// Its file in the instance's devices directory, named as LXD names it
    /// (`unix.<device>.<path with / as ->`).
    fn host_path(&self, dir: &Path, devname: &str) -> PathBuf {
        let flat = self.target.display().to_string();
        dir.join(format!(
            "unix.{devname}.{}",
            flat.trim_start_matches('/').replace('/', "-")
        ))
    }
}

/// The rules a unix device keeps alone: a source or a path, and major with minor.
pub(super) fn check(devname: &str, dev: &Options) -> Result<()> {
    if opt(dev, "source").is_none() && opt(dev, "path").is_none() {
        return Err(invalid(
            devname,
            "a unix device needs a source or a path".into(),
        ));
    }
    if opt(dev, "major").is_some() != opt(dev, "minor").is_some() {
        return Err(invalid(devname, "major and minor are set together".into()));
    }
    Ok(())
}

/// A number option of `dev` (`key` unset: `default`), in base `radix`.
pub(super) fn number(
    devname: &str,
    dev: &Options,
    key: &str,
    default: u32,
    radix: u32,
) -> Result<u32> {
    match opt(dev, key) {
        None => Ok(default),
        Some(v) => u32::from_str_radix(v, radix)
            .map_err(|_| invalid(devname, format!("{key}: {v:?} is not a valid number"))),
    }
}

/// Owner and mode of the nodes of `dev`: `uid`, `gid` (0) and `mode` (0660, as in LXD).
pub(super) fn owner(devname: &str, dev: &Options) -> Result<(u32, u32, u32)> {
    Ok((
        number(devname, dev, "uid", 0, 10)?,
        number(devname, dev, "gid", 0, 10)?,
        number(devname, dev, "mode", 0o660, 8)?,
    ))
}

/// The node of unix device `devname`: its numbers from `major`/`minor`, else from the host
/// node at `source` (or `path`). `None` when that node is missing and not `required`.
pub(super) fn unix_node(devname: &str, dev: &Options) -> Result<Option<Node>> {
    let bad = |why: String| invalid(devname, why);
    let block = dev.get("type").map(String::as_str) == Some("unix-block");
    let kind = if block { "block" } else { "character" };
    let host = opt(dev, "source").or(opt(dev, "path"));
    let target = opt(dev, "path")
        .or(host)
        .ok_or_else(|| bad("a unix device needs a source or a path".into()))?;
    let (major, minor) = match (opt(dev, "major"), opt(dev, "minor")) {
        (Some(_), Some(_)) => (
            number(devname, dev, "major", 0, 10)?,
            number(devname, dev, "minor", 0, 10)?,
        ),
        (None, None) => {
            let host = host.expect("a target implies a host path here");
            match std::fs::metadata(host) {
                Ok(m)
                    if (block && m.file_type().is_block_device())
                        || (!block && m.file_type().is_char_device()) =>
                {
                    let rdev = m.rdev();
                    (libc::major(rdev), libc::minor(rdev))
                }
                Ok(_) => return Err(bad(format!("{host} is not a {kind} device"))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if opt(dev, "required").is_some_and(|v| parse_bool(v) == Ok(false)) {
                        return Ok(None);
                    }
                    return Err(bad(format!("{host} does not exist on the host")));
                }
                Err(e) => return Err(bad(format!("{host}: {e}"))),
            }
        }
        _ => return Err(bad("major and minor are set together".into())),
    };
    let (uid, gid, mode) = owner(devname, dev)?;
    Ok(Some(Node {
        target: PathBuf::from(target),
        block,
        major,
        minor,
        uid,
        gid,
        mode,
    }))
}

/// The nodes of the devices of `x`, by device name and target. `plugged`: `x` is what is
/// plugged now, its nodes made in that directory; a unix device whose host source went
/// since is told from the node made for it there, and a GPU no longer found is left out.
fn nodes(x: &Expanded, plugged: Option<&Path>) -> Result<BTreeMap<(String, PathBuf), Node>> {
    let mut out = BTreeMap::new();
    for (name, dev) in &x.devices {
        let unix = matches!(
            dev.get("type").map(String::as_str),
            Some("unix-char" | "unix-block")
        );
        let found = match dev.get("type").map(String::as_str) {
            _ if unix => unix_node(name, dev).map(|n| n.into_iter().collect()),
            Some("gpu") => gpu::nodes(&gpu::SysHost, name, dev),
            _ => Ok(Vec::new()),
        };
        let found = match (found, plugged) {
            (Ok(f), _) => f,
            (Err(_), Some(dir)) if unix => made_node(dir, name, dev).into_iter().collect(),
            (Err(_), Some(_)) => continue,
            (Err(err), None) => return Err(err),
        };
        for n in found {
            out.insert((name.clone(), n.target.clone()), n);
        }
    }
    Ok(out)
}

/// The node made in `dir` for unix device `devname`, when there is one.
fn made_node(dir: &Path, devname: &str, dev: &Options) -> Option<Node> {
    let target = opt(dev, "path").or(opt(dev, "source"))?;
    let (uid, gid, mode) = owner(devname, dev).ok()?;
    let mut node = Node {
        target: PathBuf::from(target),
        block: dev.get("type").map(String::as_str) == Some("unix-block"),
        major: 0,
        minor: 0,
        uid,
        gid,
        mode,
    };
    let rdev = std::fs::symlink_metadata(node.host_path(dir, devname))
        .ok()?
        .rdev();
    (node.major, node.minor) = (libc::major(rdev), libc::minor(rdev));
    Some(node)
}

fn rules<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<String> {
    let set: BTreeSet<String> = nodes.map(Node::rule).collect();
    set.into_iter().collect()
}

/// Makes `node`'s file on the host at `path`, owned by the host ids that `idmap` gives
/// its owner (privileged: the ids themselves).
fn make_host_node(path: &Path, node: &Node, idmap: Option<&IdMap>) -> Result<()> {
    let (uid, gid) = match idmap {
        None => (node.uid, node.gid),
        Some(map) => match (map.host_uid(node.uid), map.host_gid(node.gid)) {
            (Some(u), Some(g)) => (u, g),
            _ => {
                return Err(DaemonError::BadRequest(format!(
                    "uid {} or gid {} of {} is outside the container's id map",
                    node.uid,
                    node.gid,
                    node.target.display()
                )))
            }
        },
    };
    let _ = std::fs::remove_file(path);
    let kind = if node.block {
        nix::sys::stat::SFlag::S_IFBLK
    } else {
        nix::sys::stat::SFlag::S_IFCHR
    };
    let perm = nix::sys::stat::Mode::from_bits_truncate(node.mode & 0o777);
    let dev = nix::sys::stat::makedev(node.major.into(), node.minor.into());
    nix::sys::stat::mknod(path, kind, perm, dev)
        .map_err(|e| DaemonError::io("create device node", path, std::io::Error::from(e)))?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| DaemonError::io("chown", path, e))?;
    // The umask took bits off.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(node.mode & 0o777))
        .map_err(|e| DaemonError::io("chmod", path, e))
}

/// The instance's devices directory, where its nodes are made.
fn devices_dir(d: &Daemon, name: &str) -> PathBuf {
    d.runtime_dir(name).join("devices")
}

/// At start: the nodes of the instance's unix and gpu devices made and put in `spec`
/// (bind-mounted, allowed in the devices cgroup), and with `nvidia.runtime` the host's
/// NVIDIA driver files mounted read-only.
pub fn prepare_start(
    d: &Daemon,
    row: &InstanceRow,
    x: &Expanded,
    spec: &mut ContainerSpec,
) -> Result<()> {
    let dir = devices_dir(d, &row.name);
    let _ = std::fs::remove_dir_all(&dir);
    let found = nodes(x, None)?;
    if !found.is_empty() {
        std::fs::create_dir_all(&dir).map_err(|e| DaemonError::io("create", &dir, e))?;
    }
    for ((devname, _), node) in &found {
        let host = node.host_path(&dir, devname);
        make_host_node(&host, node, spec.idmap.as_ref())?;
        spec.devices.push(DeviceNode {
            source: host,
            target: node.target.clone(),
        });
    }
    spec.device_rules = rules(found.values());
    if flag(&x.config, "nvidia.runtime") {
        spec.mounts
            .extend(gpu::nvidia_runtime_mounts(&gpu::SysHost)?);
    }
    Ok(())
}

/// Hot-plug: nodes that went or changed are unmounted, removed and denied; new ones made,
/// allowed and mounted.
pub(super) async fn apply_changes(
    e: &Engine,
    row: &InstanceRow,
    old: &Expanded,
    new: &Expanded,
) -> Result<()> {
    let d = &e.d;
    let dir = devices_dir(d, &row.name);
    let old_n = nodes(old, Some(&dir))?;
    let new_n = nodes(new, None)?;
    if old_n == new_n {
        return Ok(());
    }
    let idmap = crate::engine::idmaps::instance_idmap(d, row, new)?;
    let (mut ops, mut undo) = (Vec::new(), Vec::new());
    let mut gone_files = Vec::new();
    for (key, n) in &old_n {
        if new_n.get(key) != Some(n) {
            ops.push(HotplugOp::Unplug {
                target: n.target.clone(),
                remove: true,
            });
            undo.push(plug(&n.host_path(&dir, &key.0), n));
            gone_files.push(n.host_path(&dir, &key.0));
        }
    }
    hotplug_ops(e, &row.name, ops, undo).await?;
    for f in gone_files {
        let _ = std::fs::remove_file(f);
    }
    let (old_rules, new_rules) = (rules(old_n.values()), rules(new_n.values()));
    let rd = d.runtime_dir(&row.name);
    let (o, n) = (old_rules.clone(), new_rules.clone());
    blocking(move || Ok(hutch_runtime::container::set_device_rules(&rd, &o, &n)?)).await?;
    let (mut ops, mut undo) = (Vec::new(), Vec::new());
    for (key, n) in &new_n {
        if old_n.get(key) != Some(n) {
            std::fs::create_dir_all(&dir).map_err(|e| DaemonError::io("create", &dir, e))?;
            let host = n.host_path(&dir, &key.0);
            make_host_node(&host, n, idmap.as_ref())?;
            ops.push(plug(&host, n));
            undo.push(HotplugOp::Unplug {
                target: n.target.clone(),
                remove: true,
            });
        }
    }
    if let Err(err) = hotplug_ops(e, &row.name, ops, undo).await {
        let rd = d.runtime_dir(&row.name);
        let _ = blocking(move || {
            Ok(hutch_runtime::container::set_device_rules(
                &rd, &new_rules, &old_rules,
            )?)
        })
        .await;
        return Err(err);
    }
    Ok(())
}

/// Mounting the host node `host` on the node's path.
fn plug(host: &Path, n: &Node) -> HotplugOp {
    HotplugOp::Plug(BindMount {
        source: host.to_path_buf(),
        target: n.target.clone(),
        readonly: false,
        idmapped: false,
    })
}
