//! Instances' devices, one module per type: their options checked against one table
//! (`validate`), disks (`disk`: mounted at start, hot-plugged into the running container's
//! mount namespace), device nodes (`unix`: unix-char, unix-block, and the nodes `gpu`
//! finds), NICs (`nic`: plugged at start by the runtime's hook, hot-plugged while running)
//! and proxies (`proxy`: kernel DNAT, or forwarder processes that outlive daemon
//! restarts). What a device needs of a network it asks the engine for.

mod disk;
mod gpu;
mod nic;
mod proxy;
#[cfg(test)]
mod tests;
mod unix;
mod validate;

use std::collections::BTreeMap;

use hutch_api::profile::Devices;
use hutch_runtime::HotplugOp;

pub use nic::{
    forget_host_names, forget_instance, host_ends, instance_network, interfaces_of_many, start_hook,
};
pub use proxy::{restore_proxies, start_proxies, stop_proxies, Proxies};
pub use unix::prepare_start;
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

/// Hot-plug: applies changed `disk`, `unix-char`, `unix-block`, `gpu`, `nic` and `proxy`
/// devices to a running instance whose init is `pid`.
pub async fn apply_device_changes(
    e: &Engine,
    row: &InstanceRow,
    pid: i32,
    old: &Expanded,
    new: &Expanded,
) -> Result<()> {
    disk::apply_changes(e, row, old, new).await?;
    unix::apply_changes(e, row, old, new).await?;
    nic::apply_changes(e, row, pid, old, new).await?;
    proxy::sync_proxies(e, &row.name, pid, new).await
}

/// Applies mount changes to running instance `name`, each through the runtime's helper;
/// when one fails, `undo[i]` (the inverse of `ops[i]`) is applied for each done before.
async fn hotplug_ops(
    e: &Engine,
    name: &str,
    ops: Vec<HotplugOp>,
    undo: Vec<HotplugOp>,
) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let (helper, rd) = (e.d.helper.clone(), e.d.runtime_dir(name));
    super::blocking(move || {
        for (i, op) in ops.iter().enumerate() {
            if let Err(err) = hutch_runtime::hotplug(&helper, &rd, std::slice::from_ref(op)) {
                for back in undo[..i].iter().rev() {
                    if let Err(e) = hutch_runtime::hotplug(&helper, &rd, std::slice::from_ref(back))
                    {
                        tracing::warn!(error = %e, "undo a device change");
                    }
                }
                return Err(err.into());
            }
        }
        Ok(())
    })
    .await
}
