//! Disk devices: their options, and hot-plug. Mounting them at start is part of building
//! an instance's spec; while it runs, a disk added is mounted into its mount namespace, a
//! disk removed unmounted, and a disk whose options changed unmounted and mounted again.

use std::collections::BTreeMap;

use hutch_runtime::{BindMount, HotplugOp};

use super::validate::{opt, Kind, Opt};
use super::{hotplug_ops, of_type};
use crate::db::instances::InstanceRow;
use crate::engine::spec::{disk_mount, Expanded};
use crate::engine::Engine;
use crate::error::Result;

/// The options of `disk` devices that hutch implements.
pub(super) const OPTIONS: &[Opt] = &[
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
pub(super) const UNSUPPORTED: &[&str] = &[
    "propagation",
    "raw.mount.options",
    "size.state",
    "limits.",
    "io.",
    "ceph.",
    "initial.",
];

/// The mounts of the disks of `x`, by device name; `lenient`: a disk that no longer
/// resolves (its volume deleted since) is left out instead of failing.
fn mounts(e: &Engine, x: &Expanded, lenient: bool) -> Result<BTreeMap<String, BindMount>> {
    let mut out = BTreeMap::new();
    for (name, dev) in of_type(&x.devices, "disk") {
        match disk_mount(&e.d, name, dev) {
            Ok(Some(m)) => {
                out.insert(name.clone(), m);
            }
            Ok(None) => {}
            Err(_) if lenient => {}
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// Hot-plug: unmounts the disks that went or changed, then mounts the new and changed
/// ones. One that fails undoes the others.
pub(super) async fn apply_changes(
    e: &Engine,
    row: &InstanceRow,
    old: &Expanded,
    new: &Expanded,
) -> Result<()> {
    let old_m = mounts(e, old, true)?;
    let new_m = mounts(e, new, false)?;
    let mut ops = Vec::new();
    let mut undo = Vec::new();
    for (name, m) in &old_m {
        if new_m.get(name) != Some(m) {
            ops.push(HotplugOp::Unplug {
                target: m.target.clone(),
                remove: false,
            });
            undo.push(HotplugOp::Plug(m.clone()));
        }
    }
    for (name, m) in &new_m {
        if old_m.get(name) != Some(m) {
            ops.push(HotplugOp::Plug(m.clone()));
            undo.push(HotplugOp::Unplug {
                target: m.target.clone(),
                remove: false,
            });
        }
    }
    hotplug_ops(e, &row.name, ops, undo).await
}
