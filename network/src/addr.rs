//! Addresses: IPv4/IPv6 prefixes, MAC addresses, and picking a free subnet.

use std::fmt;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::{NetworkError, Result};

/// An IPv4 address with its prefix length, as in `10.1.2.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if prefix > 32 {
            return Err(NetworkError::invalid(format!(
                "invalid prefix length /{prefix}"
            )));
        }
        Ok(Ipv4Net { addr, prefix })
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The dotted netmask, as dnsmasq wants it.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    /// The default DHCP range: every host address after this one, up to the broadcast.
    pub fn default_dhcp_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let first = u32::from(self.network()) + 1;
        let last = u32::from(self.broadcast()).saturating_sub(1);
        let start = if u32::from(self.addr) == first {
            first + 1
        } else {
            first
        };
        (Ipv4Addr::from(start), Ipv4Addr::from(last))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || NetworkError::invalid(format!("invalid IPv4 CIDR address {s:?}"));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Ipv4Net::new(addr, prefix).map_err(|_| bad())
    }
}

/// An IPv6 address with its prefix length, as in `fd42:1:2:3::1/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Net {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Ipv6Net {
    fn mask(&self) -> u128 {
        if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix)
        }
    }

    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & self.mask())
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.network())
    }

    pub fn overlaps(&self, other: &Ipv6Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv6Net {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || NetworkError::invalid(format!("invalid IPv6 CIDR address {s:?}"));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 128 {
            return Err(bad());
        }
        Ok(Ipv6Net { addr, prefix })
    }
}

/// Random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    buf
}

/// A MAC address, parsed from `aa:bb:cc:dd:ee:ff`.
pub fn parse_hwaddr(s: &str) -> Result<[u8; 6]> {
    let bad = || NetworkError::invalid(format!("invalid MAC address {s:?}"));
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if out[0] & 1 == 1 {
        return Err(NetworkError::invalid(format!(
            "MAC address {s:?} is a multicast address"
        )));
    }
    Ok(out)
}

pub fn format_hwaddr(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A new MAC address in LXD's range, `00:16:3e:xx:xx:xx`.
pub fn random_hwaddr() -> String {
    let r: [u8; 3] = random_bytes();
    format_hwaddr(&[0x00, 0x16, 0x3e, r[0], r[1], r[2]])
}

/// A host-side veth name, `veth` and eight hex digits (15 bytes is the kernel's limit).
pub fn random_veth_name() -> String {
    let r: [u8; 4] = random_bytes();
    format!("veth{:08x}", u32::from_be_bytes(r))
}

/// Picks `10.X.Y.1/24` that overlaps none of `used`, trying random candidates first and
/// then scanning, so a crowded host still finds one. `None` when all of 10/8 is taken.
pub fn pick_free_ipv4(used: &[Ipv4Net], mut random: impl FnMut() -> u16) -> Option<Ipv4Net> {
    let candidate = |n: u16| Ipv4Net {
        addr: Ipv4Addr::new(10, (n >> 8) as u8, n as u8, 1),
        prefix: 24,
    };
    let free = |net: &Ipv4Net| !used.iter().any(|u| u.overlaps(net));
    for _ in 0..64 {
        let net = candidate(random());
        if free(&net) {
            return Some(net);
        }
    }
    (0..=u16::MAX).map(candidate).find(free)
}

/// Picks a random unique-local `/64` (`fd42:xxxx:xxxx:xxxx::1/64`) that overlaps none of `used`.
pub fn pick_free_ipv6(used: &[Ipv6Net]) -> Option<Ipv6Net> {
    for _ in 0..64 {
        let r: [u8; 6] = random_bytes();
        let seg = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
        let net = Ipv6Net {
            addr: Ipv6Addr::new(0xfd42, seg(0), seg(2), seg(4), 0, 0, 0, 1),
            prefix: 64,
        };
        if !used.iter().any(|u| u.overlaps(&net)) {
            return Some(net);
        }
    }
    None
}

/// Whether `name` can be a Linux interface name: 1 to 15 bytes, no `/`, space or `:`.
pub fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_prefix_arithmetic() {
        let n = net("10.1.2.1/24");
        assert_eq!(n.network(), Ipv4Addr::new(10, 1, 2, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert!(n.contains(Ipv4Addr::new(10, 1, 2, 77)));
        assert!(!n.contains(Ipv4Addr::new(10, 1, 3, 1)));
        assert_eq!(
            n.default_dhcp_range(),
            (Ipv4Addr::new(10, 1, 2, 2), Ipv4Addr::new(10, 1, 2, 254))
        );
        assert!(n.overlaps(&net("10.0.0.0/8")));
        assert!(net("10.0.0.0/8").overlaps(&n));
        assert!(!n.overlaps(&net("10.1.3.0/24")));
        assert_eq!(n.to_string(), "10.1.2.1/24");
    }

    #[test]
    fn bad_addresses_are_invalid() {
        for s in ["10.1.2.1", "10.1.2.1/33", "10.1.2/24", "x/24", ""] {
            assert!(s.parse::<Ipv4Net>().unwrap_err().is_invalid(), "{s}");
        }
        assert!("fd42::1/129".parse::<Ipv6Net>().is_err());
        assert!("fd42::1/64".parse::<Ipv6Net>().is_ok());
    }

    #[test]
    fn hwaddr_round_trip_and_range() {
        let mac = random_hwaddr();
        assert!(mac.starts_with("00:16:3e:"), "{mac}");
        assert_eq!(format_hwaddr(&parse_hwaddr(&mac).unwrap()), mac);
        assert!(parse_hwaddr("01:00:00:00:00:01").is_err(), "multicast");
        assert!(parse_hwaddr("00:16:3e:00:00").is_err());
        assert!(parse_hwaddr("00:16:3e:00:00:zz").is_err());
    }

    #[test]
    fn free_subnet_avoids_used_prefixes() {
        let used = vec![net("10.0.0.0/9"), net("10.200.0.0/16")];
        // A random source that always proposes taken subnets forces the scan.
        let mut n = 0u16;
        let picked = pick_free_ipv4(&used, || {
            n = n.wrapping_add(1);
            n % 100
        })
        .unwrap();
        assert!(!used.iter().any(|u| u.overlaps(&picked)), "{picked}");
        assert_eq!(picked, net("10.128.0.1/24"));
        assert!(pick_free_ipv4(&[net("10.0.0.0/8")], || 0).is_none());
    }

    #[test]
    fn free_ipv6_is_unique_local() {
        let n = pick_free_ipv6(&[]).unwrap();
        assert_eq!(n.prefix, 64);
        assert_eq!(n.addr.segments()[0], 0xfd42);
    }

    #[test]
    fn veth_names_fit_the_kernel_limit() {
        let n = random_veth_name();
        assert_eq!(n.len(), 12);
        assert!(valid_interface_name(&n));
        assert!(!valid_interface_name("a-very-long-interface"));
        assert!(!valid_interface_name("eth/0"));
    }
}
