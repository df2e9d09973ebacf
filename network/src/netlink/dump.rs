//! A direct rtnetlink dump of the calling thread's namespace: its links and addresses, read
//! over a plain blocking socket with a parser of only the attributes hutch shows. A listing
//! reads the interfaces of every running instance; per namespace this costs a fraction of
//! an async connection and a full decode of each message (the kernel's link messages carry
//! dozens of attributes hutch never looks at).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{pair_up, Address, Interfaces, Link};
use crate::error::{NetworkError, Result};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
/// Attribute types carry two flag bits (nested, byte order) above the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_STATS64: u16 = 23;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const IFF_UP: u32 = libc::IFF_UP as u32;

/// Every link of the calling thread's network namespace with its addresses.
pub(super) fn interfaces() -> Result<Interfaces> {
    let sock = Socket::open()?;
    let mut links = Vec::new();
    sock.dump(RTM_GETLINK, RTM_NEWLINK, 16, "list links", |body| {
        if let Some(l) = parse_link(body) {
            links.push(l);
        }
    })?;
    let mut addresses = Vec::new();
    sock.dump(RTM_GETADDR, RTM_NEWADDR, 8, "list addresses", |body| {
        if let Some(a) = parse_address(body) {
            addresses.push(a);
        }
    })?;
    Ok(pair_up(links, addresses))
}

/// A `NETLINK_ROUTE` socket in the namespace it was made in.
struct Socket(OwnedFd);

impl Socket {
    fn open() -> Result<Self> {
        // SAFETY: plain integer arguments; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(sys_err("open a netlink socket"));
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends a dump request of `request` type with a zeroed family header of `header_len`
    /// bytes (any family), and hands each answering message's body to `each`.
    fn dump(
        &self,
        request: u16,
        answer: u16,
        header_len: usize,
        action: &str,
        mut each: impl FnMut(&[u8]),
    ) -> Result<()> {
        let len = NLMSG_HDRLEN + header_len;
        let mut msg = vec![0u8; len];
        msg[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        msg[4..6].copy_from_slice(&request.to_ne_bytes());
        msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
        // SAFETY: `msg` is a live buffer of `len` bytes; the kernel is the destination
        // (a zeroed sockaddr is not needed for an unconnected netlink send with no address).
        let sent = unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.0.as_raw_fd(),
                msg.as_ptr().cast(),
                len,
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(sys_err(action));
        }
        // The kernel fills each read with whole messages, up to the buffer's size.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is a live buffer of its length. MSG_TRUNC returns the datagram's
            // real length, to refuse one the buffer cut short.
            let n = unsafe {
                libc::recv(
                    self.0.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                if nix::Error::last() == nix::Error::EINTR {
                    continue;
                }
                return Err(sys_err(action));
            }
            if n as usize > buf.len() {
                return Err(malformed(action));
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let msg_len =
                    u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap_or_default());
                if msg_len < NLMSG_HDRLEN || msg_len > rest.len() {
                    return Err(malformed(action));
                }
                let body = &rest[NLMSG_HDRLEN..msg_len];
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = body
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().unwrap_or_default()))
                            .unwrap_or(-libc::EIO);
                        if code == 0 {
                            return Ok(());
                        }
                        return Err(NetworkError::Sys {
                            action: action.into(),
                            source: nix::Error::from_raw(-code),
                        });
                    }
                    k if k == answer => each(body),
                    _ => {}
                }
                rest = &rest[align(msg_len).min(rest.len())..];
            }
        }
    }
}

fn sys_err(action: &str) -> NetworkError {
    NetworkError::Sys {
        action: action.into(),
        source: nix::Error::last(),
    }
}

fn malformed(action: &str) -> NetworkError {
    NetworkError::Sys {
        action: format!("{action} (a malformed answer)"),
        source: nix::Error::EBADMSG,
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The attributes after a fixed header: (type without flags, payload).
fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[align(len).min(data.len())..];
        Some((kind, payload))
    })
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(0..4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    b.get(i * 8..i * 8 + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0)
}

fn string_of(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// A link from an `RTM_NEWLINK` body (`ifinfomsg`, then attributes).
fn parse_link(body: &[u8]) -> Option<Link> {
    let header = body.get(0..16)?;
    let link_layer = u16::from_ne_bytes([header[2], header[3]]);
    let index = u32_of(&header[4..8])?;
    let flags = u32_of(&header[8..12])?;
    let mut l = Link {
        index,
        up: flags & IFF_UP != 0,
        link_type: super::link_type_name(link_layer, flags).into(),
        ..Link::default()
    };
    for (kind, payload) in attributes(&body[16..]) {
        match kind {
            IFLA_IFNAME => l.name = string_of(payload),
            IFLA_ADDRESS => l.hwaddr = payload.to_vec(),
            IFLA_MTU => l.mtu = u32_of(payload).unwrap_or(0),
            IFLA_MASTER => l.master = u32_of(payload),
            IFLA_STATS64 => {
                // struct rtnl_link_stats64: rx_packets, tx_packets, rx_bytes, tx_bytes, ...
                l.rx_packets = u64_at(payload, 0);
                l.tx_packets = u64_at(payload, 1);
                l.rx_bytes = u64_at(payload, 2);
                l.tx_bytes = u64_at(payload, 3);
            }
            IFLA_LINKINFO => {
                if let Some((_, k)) = attributes(payload).find(|(k, _)| *k == IFLA_INFO_KIND) {
                    l.kind = string_of(k);
                }
            }
            _ => {}
        }
    }
    Some(l)
}

/// An address from an `RTM_NEWADDR` body (`ifaddrmsg`, then attributes): the local address
/// where there is one (the other end's on a point-to-point link otherwise).
fn parse_address(body: &[u8]) -> Option<Address> {
    let header = body.get(0..8)?;
    let (family, prefix, scope) = (header[0], header[1], header[3]);
    let index = u32_of(&header[4..8])?;
    let ip = |b: &[u8]| -> Option<IpAddr> {
        match family as i32 {
            libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
            libc::AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
            _ => None,
        }
    };
    let (mut local, mut address) = (None, None);
    for (kind, payload) in attributes(&body[8..]) {
        match kind {
            IFA_LOCAL => local = ip(payload),
            IFA_ADDRESS => address = ip(payload),
            _ => {}
        }
    }
    let addr = local.or(address)?;
    Some(Address {
        index,
        addr,
        prefix,
        scope: super::scope_name(&addr, scope).into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both readers of the calling thread's namespace, counters zeroed (traffic may pass
    /// between the two reads).
    fn both_readers() -> (Interfaces, Interfaces) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let by_rtnetlink = rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().unwrap();
            tokio::spawn(conn);
            use super::super::ops::{addresses, links};
            pair_up(
                links(&handle).await.unwrap(),
                addresses(&handle).await.unwrap(),
            )
        });
        let strip = |ifs: Interfaces| -> Interfaces {
            ifs.into_iter()
                .map(|(mut l, a)| {
                    (l.rx_bytes, l.tx_bytes, l.rx_packets, l.tx_packets) = (0, 0, 0, 0);
                    (l, a)
                })
                .collect()
        };
        (strip(interfaces().unwrap()), strip(by_rtnetlink))
    }

    /// The two readers agree on everything but the counters. As root (CI) in a namespace of
    /// the test's own with a bridge, a veth pair on it and addresses of both families (the
    /// host's links change under concurrent tests); without privilege on the host's, read
    /// until two reads fall between changes.
    #[test]
    fn the_direct_dump_reads_what_rtnetlink_reads() {
        std::thread::spawn(|| {
            let private = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok();
            if private {
                // Children forked from this thread start in its namespace.
                for args in [
                    "link set lo up",
                    "link add hbr0 type bridge",
                    "link add hv0 type veth peer name hv1",
                    "link set hv1 master hbr0",
                    "addr add 10.99.0.1/24 dev hv0",
                    "addr add fd42::1/64 dev hv0",
                    "link set hv0 up",
                    "link set hv1 up",
                    "link set hbr0 up",
                ] {
                    let ok = std::process::Command::new("ip")
                        .args(args.split(' '))
                        .status()
                        .unwrap()
                        .success();
                    assert!(ok, "ip {args}");
                }
                let (direct, expected) = both_readers();
                let hv0 = direct.iter().find(|(l, _)| l.name == "hv0").expect("hv0");
                assert_eq!(hv0.0.kind, "veth");
                assert!(hv0.1.iter().any(|a| a.addr.to_string() == "10.99.0.1"
                    && a.prefix == 24
                    && a.scope == "global"));
                let hbr0 = direct.iter().find(|(l, _)| l.name == "hbr0").expect("hbr0");
                let hv1 = direct.iter().find(|(l, _)| l.name == "hv1").expect("hv1");
                assert_eq!(hv1.0.master, Some(hbr0.0.index));
                assert_eq!(direct, expected);
            } else {
                let agreed = (0..50).any(|_| {
                    let (direct, expected) = both_readers();
                    direct == expected
                });
                assert!(agreed, "the readers never agreed on the host's links");
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn truncated_or_garbage_messages_are_skipped_not_trusted() {
        assert!(parse_link(&[0u8; 8]).is_none());
        assert!(parse_address(&[2u8, 24]).is_none());
        // An attribute claiming more than there is ends the walk.
        let mut body = vec![0u8; 16];
        body.extend_from_slice(&[200, 0, 3, 0, b'e', b't', b'h', b'0']);
        let l = parse_link(&body).expect("a header alone is a link");
        assert_eq!(l.name, "");
        // A well-formed name is read, flags above the type are ignored.
        let mut body = vec![0u8; 16];
        body.extend_from_slice(&[9, 0, 3, 0, b'e', b't', b'h', b'0', 0, 0, 0, 0]);
        body.extend_from_slice(&[8, 0, 4, 0x80, 0xdc, 0x05, 0, 0]);
        let l = parse_link(&body).unwrap();
        assert_eq!((l.name.as_str(), l.mtu), ("eth0", 1500));
    }
}
