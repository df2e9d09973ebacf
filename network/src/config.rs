//! A managed bridge's configuration: LXD's keys, validated and typed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::addr::{pick_free_ipv4, pick_free_ipv6, random_bytes, Ipv4Net, Ipv6Net};
use crate::error::{NetworkError, Result};

/// The default DNS domain of a managed network (LXD's is `lxd`).
pub const DEFAULT_DNS_DOMAIN: &str = "hutch";

/// Whose names dnsmasq answers for (LXD's `dns.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsMode {
    /// Each NIC under its instance's name, bare and in `dns.domain` (the default).
    #[default]
    Managed,
    /// Under the host name each client sends in its DHCP request.
    Dynamic,
    /// No domain: dnsmasq neither hands one out nor answers for it.
    None,
}

impl DnsMode {
    fn parse(v: &str) -> Result<Self> {
        match v {
            "" | "managed" => Ok(DnsMode::Managed),
            "dynamic" => Ok(DnsMode::Dynamic),
            "none" => Ok(DnsMode::None),
            _ => Err(NetworkError::invalid(format!(
                "Invalid value for network \"dns.mode\" option: {v:?} is not one of managed, dynamic, none"
            ))),
        }
    }
}

/// Whether `v` is a DNS name: dot-separated labels of letters, digits and `-`.
fn is_domain_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A managed bridge's configuration, with `auto` already resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The host's address on the bridge, with the subnet's prefix.
    pub ipv4: Option<Ipv4Net>,
    pub ipv4_nat: bool,
    pub ipv4_dhcp: bool,
    /// DHCP ranges; empty means the whole subnet but the host's address.
    pub ipv4_dhcp_ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub ipv6: Option<Ipv6Net>,
    pub ipv6_nat: bool,
    pub dns_domain: String,
    pub dns_mode: DnsMode,
    /// The search list handed out by DHCP (option 119); empty: none is sent.
    pub dns_search: Vec<String>,
    pub mtu: Option<u32>,
    /// Extra lines for dnsmasq's configuration file.
    pub raw_dnsmasq: String,
}

fn bool_value(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(NetworkError::invalid(format!(
            "Invalid value for network {key:?} option: {v:?} is not a boolean"
        ))),
    }
}

fn parse_ranges(v: &str, subnet: Option<Ipv4Net>) -> Result<Vec<(Ipv4Addr, Ipv4Addr)>> {
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            NetworkError::invalid(format!(
                "Invalid value for network \"ipv4.dhcp.ranges\" option: {part:?} is not a start-end range"
            ))
        };
        let (a, b) = part.split_once('-').ok_or_else(bad)?;
        let (a, b): (Ipv4Addr, Ipv4Addr) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if u32::from(a) > u32::from(b) {
            return Err(bad());
        }
        if let Some(net) = subnet {
            if !net.contains(a) || !net.contains(b) {
                return Err(NetworkError::invalid(format!(
                    "DHCP range {part:?} is outside the network's subnet {}/{}",
                    net.network(),
                    net.prefix
                )));
            }
        }
        out.push((a, b));
    }
    Ok(out)
}

impl BridgeConfig {
    /// Parses and validates `config`. `auto` must have been resolved (see [`resolve_auto`]).
    pub fn parse(config: &BTreeMap<String, String>) -> Result<Self> {
        let mut cfg = BridgeConfig {
            ipv4: None,
            ipv4_nat: false,
            ipv4_dhcp: true,
            ipv4_dhcp_ranges: Vec::new(),
            ipv6: None,
            ipv6_nat: false,
            dns_domain: DEFAULT_DNS_DOMAIN.into(),
            dns_mode: DnsMode::Managed,
            dns_search: Vec::new(),
            mtu: None,
            raw_dnsmasq: String::new(),
        };
        for (k, v) in config {
            match k.as_str() {
                "ipv4.address" => {
                    cfg.ipv4 = match v.as_str() {
                        "none" | "" => None,
                        "auto" => {
                            return Err(NetworkError::invalid(
                                "ipv4.address \"auto\" is unresolved",
                            ))
                        }
                        s => {
                            let net: Ipv4Net = s.parse()?;
                            if net.prefix > 30
                                || net.addr == net.network()
                                || net.addr == net.broadcast()
                            {
                                return Err(NetworkError::invalid(format!(
                                    "Invalid value for network \"ipv4.address\" option: {s:?} is not a host address in a subnet of /30 or larger"
                                )));
                            }
                            Some(net)
                        }
                    }
                }
                "ipv6.address" => {
                    cfg.ipv6 = match v.as_str() {
                        "none" | "" => None,
                        "auto" => {
                            return Err(NetworkError::invalid(
                                "ipv6.address \"auto\" is unresolved",
                            ))
                        }
                        s => Some(s.parse()?),
                    }
                }
                "ipv4.nat" => cfg.ipv4_nat = bool_value(k, v)?,
                "ipv6.nat" => cfg.ipv6_nat = bool_value(k, v)?,
                "ipv4.dhcp" => cfg.ipv4_dhcp = v.is_empty() || bool_value(k, v)?,
                "ipv6.dhcp" => {
                    bool_value(k, v)?;
                }
                "ipv4.dhcp.ranges" => {} // checked below, once the subnet is known
                "dns.domain" => {
                    if !is_domain_name(v) {
                        return Err(NetworkError::invalid(format!(
                            "Invalid value for network \"dns.domain\" option: {v:?} is not a domain name"
                        )));
                    }
                    cfg.dns_domain = v.clone();
                }
                "bridge.mtu" => {
                    if !v.is_empty() {
                        let mtu: u32 = v.parse().ok().filter(|m| (1280..=9000).contains(m)).ok_or_else(|| {
                            NetworkError::invalid(format!(
                                "Invalid value for network \"bridge.mtu\" option: {v:?} is not a number from 1280 to 9000"
                            ))
                        })?;
                        cfg.mtu = Some(mtu);
                    }
                }
                "bridge.driver" => {
                    if !matches!(v.as_str(), "" | "native") {
                        return Err(NetworkError::invalid(format!(
                            "Invalid value for network \"bridge.driver\" option: only \"native\" is supported, not {v:?}"
                        )));
                    }
                }
                "dns.mode" => cfg.dns_mode = DnsMode::parse(v)?,
                // A comma-separated list, as LXD takes it; each entry ends up in a dnsmasq
                // option, so each must be a plain domain name.
                "dns.search" => {
                    for domain in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                        if !is_domain_name(domain) {
                            return Err(NetworkError::invalid(format!(
                                "Invalid value for network \"dns.search\" option: {domain:?} is not a domain name"
                            )));
                        }
                        cfg.dns_search.push(domain.to_string());
                    }
                }
                // The admin's own lines for dnsmasq's configuration file, as LXD takes them;
                // a NUL byte would cut the file short where dnsmasq reads it.
                "raw.dnsmasq" => {
                    if v.contains('\0') {
                        return Err(NetworkError::invalid(
                            "Invalid value for network \"raw.dnsmasq\" option: it contains a NUL byte",
                        ));
                    }
                    cfg.raw_dnsmasq = v.clone();
                }
                k if k.starts_with("user.") => {}
                k => {
                    return Err(NetworkError::invalid(format!(
                        "Invalid network configuration key: {k:?}"
                    )))
                }
            }
        }
        if let Some(v) = config.get("ipv4.dhcp.ranges") {
            cfg.ipv4_dhcp_ranges = parse_ranges(v, cfg.ipv4)?;
        }
        if cfg.ipv4.is_none() && cfg.ipv4_nat {
            return Err(NetworkError::invalid(
                "ipv4.nat needs an ipv4.address".to_string(),
            ));
        }
        if cfg.ipv6.is_none() && cfg.ipv6_nat {
            return Err(NetworkError::invalid(
                "ipv6.nat needs an ipv6.address".to_string(),
            ));
        }
        Ok(cfg)
    }

    /// The DHCP ranges dnsmasq serves: the configured ones, or the whole subnet.
    pub fn dhcp_ranges(&self) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        match (self.ipv4, self.ipv4_dhcp_ranges.is_empty()) {
            (None, _) => Vec::new(),
            (Some(net), true) => vec![net.default_dhcp_range()],
            (Some(_), false) => self.ipv4_dhcp_ranges.clone(),
        }
    }
}

/// Fills what LXD fills at create: `ipv4.address` unset or `auto` gets a free `/24`
/// (with `ipv4.nat=true` unless set), `ipv6.address=auto` a free ULA `/64`. `used4`/`used6`
/// are the prefixes already routed on the host or held by other networks.
pub fn resolve_auto(
    config: &mut BTreeMap<String, String>,
    used4: &[Ipv4Net],
    used6: &[Ipv6Net],
) -> Result<()> {
    let v4 = config.get("ipv4.address").map(String::as_str);
    if matches!(v4, None | Some("auto")) {
        let net = pick_free_ipv4(used4, || u16::from_be_bytes(random_bytes()))
            .ok_or(NetworkError::NoFreeSubnet { family: "IPv4" })?;
        config.insert("ipv4.address".into(), net.to_string());
        config.entry("ipv4.nat".into()).or_insert("true".into());
    }
    match config.get("ipv6.address").map(String::as_str) {
        None => {
            config.insert("ipv6.address".into(), "none".into());
        }
        Some("auto") => {
            let net = pick_free_ipv6(used6).ok_or(NetworkError::NoFreeSubnet { family: "IPv6" })?;
            config.insert("ipv6.address".into(), net.to_string());
            config.entry("ipv6.nat".into()).or_insert("true".into());
        }
        Some(_) => {}
    }
    Ok(())
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
    fn parses_lxd_keys() {
        let c = BridgeConfig::parse(&cfg(&[
            ("ipv4.address", "10.5.6.1/24"),
            ("ipv4.nat", "true"),
            (
                "ipv4.dhcp.ranges",
                "10.5.6.10-10.5.6.20,10.5.6.30-10.5.6.40",
            ),
            ("dns.domain", "example.lan"),
            ("bridge.mtu", "1400"),
            ("ipv6.address", "none"),
            ("user.note", "x"),
        ]))
        .unwrap();
        assert_eq!(c.ipv4.unwrap().to_string(), "10.5.6.1/24");
        assert!(c.ipv4_nat && c.ipv4_dhcp);
        assert_eq!(c.dhcp_ranges().len(), 2);
        assert_eq!(c.dns_domain, "example.lan");
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.ipv6, None);
    }

    #[test]
    fn bad_values_are_invalid_with_a_reason() {
        for pairs in [
            vec![("ipv4.address", "10.5.6.0/24")],
            vec![("ipv4.address", "10.5.6.1/31")],
            vec![("ipv4.address", "300.1.1.1/24")],
            vec![("ipv4.nat", "maybe")],
            vec![("bridge.mtu", "100")],
            vec![("dns.domain", "bad domain")],
            vec![("dns.domain", "-lead.example")],
            vec![("dns.mode", "static")],
            vec![("dns.search", "ok.example,not ok")],
            vec![("dns.search", "a.example,--conf-file=/etc/shadow")],
            vec![("raw.dnsmasq", "log-queries\0conf-file=/x")],
            vec![
                ("ipv4.address", "10.5.6.1/24"),
                ("ipv4.dhcp.ranges", "10.9.9.1-10.9.9.5"),
            ],
            vec![
                ("ipv4.address", "10.5.6.1/24"),
                ("ipv4.dhcp.ranges", "10.5.6.9-10.5.6.5"),
            ],
            vec![("ipv4.address", "none"), ("ipv4.nat", "true")],
            vec![("bogus.key", "1")],
        ] {
            let err = BridgeConfig::parse(&cfg(&pairs)).unwrap_err();
            assert!(err.is_invalid(), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn dns_keys_as_lxd_has_them() {
        let c = BridgeConfig::parse(&cfg(&[])).unwrap();
        assert_eq!(c.dns_mode, DnsMode::Managed);
        assert!(c.dns_search.is_empty());
        let c = BridgeConfig::parse(&cfg(&[
            ("dns.mode", "dynamic"),
            ("dns.search", " lan.example , hutch,"),
            ("raw.dnsmasq", "log-queries\naddress=/x.example/10.0.0.9"),
        ]))
        .unwrap();
        assert_eq!(c.dns_mode, DnsMode::Dynamic);
        assert_eq!(c.dns_search, ["lan.example", "hutch"]);
        assert!(c.raw_dnsmasq.contains('\n'));
        let none = BridgeConfig::parse(&cfg(&[("dns.mode", "none")])).unwrap();
        assert_eq!(none.dns_mode, DnsMode::None);
    }

    #[test]
    fn auto_picks_a_free_subnet_and_turns_nat_on() {
        let mut c = cfg(&[("ipv4.address", "auto")]);
        let used: Vec<Ipv4Net> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(resolve_auto(&mut c, &used, &[]).is_err(), "10/8 taken");
        resolve_auto(&mut c, &[], &[]).unwrap();
        let net: Ipv4Net = c["ipv4.address"].parse().unwrap();
        assert_eq!(net.prefix, 24);
        assert_eq!(c["ipv4.nat"], "true");
        assert_eq!(c["ipv6.address"], "none");
        BridgeConfig::parse(&c).unwrap();

        let mut c = cfg(&[("ipv4.address", "10.7.7.1/24"), ("ipv6.address", "auto")]);
        resolve_auto(&mut c, &[], &[]).unwrap();
        assert_eq!(c["ipv4.address"], "10.7.7.1/24");
        assert!(
            !c.contains_key("ipv4.nat"),
            "an explicit address keeps nat unset"
        );
        assert!(c["ipv6.address"].starts_with("fd42:"));
    }
}
