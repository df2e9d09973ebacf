//! Instances' devices, one module per type: their options checked against one table
//! (`validate`), disks (`disk`), NICs (`nic`: plugged at start by the runtime's hook,
//! hot-plugged while running) and proxies (`proxy`: kernel DNAT, or forwarder processes
//! that outlive daemon restarts). What a device needs of a network it asks the engine for.

mod disk;
mod nic;
mod proxy;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::BTreeMap;

use hutch_api::profile::Devices;

pub use nic::{
    forget_host_names, forget_instance, instance_network, interfaces_of_many, nic_plug_main,
    start_hook,
};
pub use proxy::{restore_proxies, start_proxies, stop_proxies, Proxies};
pub use validate::validate_devices;

use super::spec::Expanded;
use super::Engine;
use crate::db::instances::InstanceRow;
use crate::error::Result;

/// A device's options.
type Options = BTreeMap<String, String>;

/// The devices of `devices` of type `kind`.
fn of_type<'a>(
    devices: &'a Devices,
    kind: &'a str,
) -> impl Iterator<Item = (&'a String, &'a Options)> {
    devices
        .iter()
        .filter(move |(_, dev)| dev.get("type").map(String::as_str) == Some(kind))
}

/// Option `key` of `dev`, unless unset or empty.
fn opt<'a>(dev: &'a Options, key: &str) -> Option<&'a str> {
    dev.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// Hot-plug: applies changed `nic` and `proxy` devices to a running instance whose init is
/// `pid`.
pub async fn apply_device_changes(
    e: &Engine,
    row: &InstanceRow,
    pid: i32,
    old: &Expanded,
    new: &Expanded,
) -> Result<()> {
    nic::apply_changes(e, row, pid, old, new).await?;
    proxy::sync_proxies(e, &row.name, pid, new).await
}
