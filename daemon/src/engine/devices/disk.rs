//! Disk devices: their options. Mounting them is part of building an instance's spec.

use super::validate::{opt, Kind, Opt};

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
