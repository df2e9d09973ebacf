//! A managed bridge as a whole: the link and its addresses, its nftables table, and the
//! kernel's forwarding switch; set up idempotently and torn down completely.

use std::net::IpAddr;

use crate::config::BridgeConfig;
use crate::error::Result;
use crate::netlink::{ipv4, ipv6, Link, Netlink};
use crate::nft::{delete_table_script, network_ruleset, Nft};

/// Brings bridge `name` to `cfg`: creates it if missing, sets its MTU, makes its addresses
/// exactly the configured ones, and rewrites its nftables table `table`. Safe to run again.
pub fn apply(
    nl: &dyn Netlink,
    nft: &dyn Nft,
    name: &str,
    cfg: &BridgeConfig,
    table: &str,
) -> Result<Link> {
    let mut wanted: Vec<(IpAddr, u8)> = Vec::new();
    wanted.extend(cfg.ipv4.as_ref().map(ipv4));
    wanted.extend(cfg.ipv6.as_ref().map(ipv6));
    let link = nl.ensure_bridge(name, cfg.mtu)?;
    nl.sync_addresses(link.index, &wanted)?;
    nft.apply(&network_ruleset(table, name, cfg))?;
    // NAT needs the kernel to route between interfaces, as LXD's does; it is never turned
    // off again, since other software on the host may rely on it by then.
    if cfg.ipv4_nat {
        nl.enable_forwarding(false)?;
    }
    if cfg.ipv6_nat {
        nl.enable_forwarding(true)?;
    }
    Ok(link)
}

/// Removes bridge `name` and its nftables table; what is already gone is fine.
pub fn remove(nl: &dyn Netlink, nft: &dyn Nft, name: &str, table: &str) -> Result<()> {
    nft.apply(&delete_table_script(table))?;
    nl.delete_link(name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::netlink::{FakeNetlink, NetlinkCall};
    use crate::nft::FakeNft;

    fn cfg() -> BridgeConfig {
        let c: BTreeMap<String, String> = [("ipv4.address", "10.9.8.1/24"), ("ipv4.nat", "true")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        BridgeConfig::parse(&c).unwrap()
    }

    #[test]
    fn apply_then_remove_leaves_nothing() {
        let (nl, nft) = (FakeNetlink::new(), FakeNft::default());
        apply(&nl, &nft, "br0", &cfg(), "t_br0").unwrap();
        assert_eq!(
            nl.host_addresses("br0"),
            [("10.9.8.1".parse().unwrap(), 24)]
        );
        assert_eq!(nft.table_names(), ["t_br0"]);
        assert!(nl
            .calls()
            .contains(&NetlinkCall::EnableForwarding { ipv6: false }));
        // Again: nothing new is made.
        apply(&nl, &nft, "br0", &cfg(), "t_br0").unwrap();
        assert_eq!(nl.host_links(), ["br0", "lo"]);
        remove(&nl, &nft, "br0", "t_br0").unwrap();
        assert_eq!(nl.host_links(), ["lo"]);
        assert!(nft.table_names().is_empty());
        // What is gone already is fine.
        remove(&nl, &nft, "br0", "t_br0").unwrap();
    }
}
