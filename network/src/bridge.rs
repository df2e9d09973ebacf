//! A managed bridge as a whole: the link and its addresses, its nftables table, and the
//! kernel's forwarding switch; set up idempotently and torn down completely.

use std::net::IpAddr;

use crate::addr::{Ipv4Net, Ipv6Net};
use crate::config::BridgeConfig;
use crate::error::{NetworkError, Result};
use crate::netlink::{ipv4, ipv6, with_netlink, Link};
use crate::nft::{delete_table_script, network_ruleset, Nft};

/// Brings bridge `name` to `cfg`: creates it if missing, sets its MTU, makes its addresses
/// exactly the configured ones, and rewrites its nftables table `table`. Safe to run again.
pub fn apply(name: &str, cfg: &BridgeConfig, nft: &dyn Nft, table: &str) -> Result<Link> {
    let mut wanted: Vec<(IpAddr, u8)> = Vec::new();
    wanted.extend(cfg.ipv4.as_ref().map(ipv4));
    wanted.extend(cfg.ipv6.as_ref().map(ipv6));
    let link = with_netlink(None, |nl| {
        let link = nl.ensure_bridge(name, cfg.mtu)?;
        nl.sync_addresses(link.index, &wanted)?;
        Ok(link)
    })?;
    nft.apply(&network_ruleset(table, name, cfg))?;
    if cfg.ipv4_nat {
        enable_forwarding("/proc/sys/net/ipv4/ip_forward")?;
    }
    if cfg.ipv6_nat {
        enable_forwarding("/proc/sys/net/ipv6/conf/all/forwarding")?;
    }
    Ok(link)
}

/// NAT needs the kernel to route between interfaces, as LXD's does; it is never turned off
/// again, since other software on the host may rely on it by then.
fn enable_forwarding(path: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| NetworkError::io("write", path, e))
}

/// Removes bridge `name` and its nftables table; what is already gone is fine.
pub fn remove(name: &str, nft: &dyn Nft, table: &str) -> Result<()> {
    nft.apply(&delete_table_script(table))?;
    with_netlink(None, |nl| nl.delete_link(name))
}

/// The host's bridge link `name`, if it exists.
pub fn link(name: &str) -> Result<Option<Link>> {
    with_netlink(None, |nl| nl.link(name))
}

/// Every link of the host (for listing unmanaged interfaces).
pub fn host_links() -> Result<Vec<Link>> {
    with_netlink(None, |nl| nl.links())
}

/// The prefixes routed or addressed on the host, which a new subnet must avoid.
pub fn host_used_prefixes() -> Result<(Vec<Ipv4Net>, Vec<Ipv6Net>)> {
    with_netlink(None, |nl| Ok((nl.used_ipv4()?, nl.used_ipv6()?)))
}
