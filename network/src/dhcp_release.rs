//! DHCPRELEASE on behalf of a NIC that is gone: dnsmasq keeps a lease until it expires (an
//! hour) and reads its lease file only when it starts, so without a release every deleted
//! instance would hold an address that long, and churn would empty a /24 within the hour.
//! LXD sends the same packet when it deletes a NIC. It goes to the bridge's own address,
//! sent through the bridge (`SO_BINDTODEVICE`) so that dnsmasq, whose DHCP socket is bound
//! to the bridge, takes it as coming from there: dnsmasq-utils' `dhcp_release` does the same.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;

use crate::error::{NetworkError, Result};

const BOOTREQUEST: u8 = 1;
const HTYPE_ETHERNET: u8 = 1;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const OPTION_MESSAGE_TYPE: u8 = 53;
const OPTION_SERVER_ID: u8 = 54;
const OPTION_CLIENT_ID: u8 = 61;
const OPTION_END: u8 = 255;
const DHCPRELEASE: u8 = 7;

/// The DHCPRELEASE of `client` (the leased address) held by `hwaddr` with `client_id`
/// (the bytes the lease file shows after the MAC, when the client sent one), for `server`.
pub fn release_packet(
    server: Ipv4Addr,
    client: Ipv4Addr,
    hwaddr: [u8; 6],
    client_id: Option<&[u8]>,
    xid: u32,
) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = BOOTREQUEST;
    p[1] = HTYPE_ETHERNET;
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[12..16].copy_from_slice(&client.octets()); // ciaddr
    p[28..34].copy_from_slice(&hwaddr); // chaddr
    p.extend_from_slice(&MAGIC_COOKIE);
    p.extend_from_slice(&[OPTION_MESSAGE_TYPE, 1, DHCPRELEASE]);
    p.extend_from_slice(&[OPTION_SERVER_ID, 4]);
    p.extend_from_slice(&server.octets());
    if let Some(id) = client_id.filter(|id| !id.is_empty() && id.len() <= 255) {
        p.extend_from_slice(&[OPTION_CLIENT_ID, id.len() as u8]);
        p.extend_from_slice(id);
    }
    p.push(OPTION_END);
    p
}

/// `aa:bb:...` as bytes; `None` for anything else.
pub fn parse_hex_colon(text: &str) -> Option<Vec<u8>> {
    text.split(':')
        .map(|b| {
            (b.len() == 2)
                .then(|| u8::from_str_radix(b, 16).ok())
                .flatten()
        })
        .collect()
}

/// Sends the release of `client` (held by `hwaddr`, `client_id` as the lease file shows it)
/// to the dnsmasq serving `bridge` at `server`.
pub fn release(
    bridge: &str,
    server: Ipv4Addr,
    client: Ipv4Addr,
    hwaddr: &str,
    client_id: Option<&str>,
) -> Result<()> {
    let mac: [u8; 6] = parse_hex_colon(hwaddr)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| NetworkError::Invalid(format!("{hwaddr:?} is not a MAC address")))?;
    let id = client_id.and_then(parse_hex_colon);
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| NetworkError::io("bind", "a UDP socket", e))?;
    nix::sys::socket::setsockopt(
        &sock.as_fd(),
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(bridge),
    )
    .map_err(|e| NetworkError::Sys {
        action: format!("bind a UDP socket to {bridge}"),
        source: e,
    })?;
    let xid = u32::from_be_bytes(crate::addr::random_bytes());
    let packet = release_packet(server, client, mac, id.as_deref(), xid);
    sock.send_to(&packet, SocketAddrV4::new(server, 67))
        .map_err(|e| NetworkError::io("send a DHCP release to", server.to_string(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_is_a_bootrequest_with_the_lease_and_the_server() {
        let server: Ipv4Addr = "10.9.8.1".parse().unwrap();
        let client: Ipv4Addr = "10.9.8.57".parse().unwrap();
        let mac = [0, 0x16, 0x3e, 0xaa, 0xbb, 0xcc];
        let id = parse_hex_colon("01:00:16:3e:aa:bb:cc").unwrap();
        let p = release_packet(server, client, mac, Some(&id), 0x01020304);
        assert_eq!(&p[..4], &[1, 1, 6, 0]);
        assert_eq!(&p[4..8], &[1, 2, 3, 4]);
        assert_eq!(&p[12..16], &[10, 9, 8, 57]);
        assert_eq!(&p[16..28], &[0; 12], "yiaddr, siaddr, giaddr are zero");
        assert_eq!(&p[28..34], &mac);
        assert_eq!(&p[236..240], &MAGIC_COOKIE);
        assert_eq!(
            &p[240..],
            &[53, 1, 7, 54, 4, 10, 9, 8, 1, 61, 7, 1, 0, 0x16, 0x3e, 0xaa, 0xbb, 0xcc, 255]
        );
        let without = release_packet(server, client, mac, None, 1);
        assert_eq!(&without[240..], &[53, 1, 7, 54, 4, 10, 9, 8, 1, 255]);
    }

    #[test]
    fn only_colon_separated_hex_bytes_parse() {
        assert_eq!(
            parse_hex_colon("00:16:3e:0a"),
            Some(vec![0, 0x16, 0x3e, 0x0a])
        );
        assert_eq!(parse_hex_colon("0:16"), None);
        assert_eq!(parse_hex_colon("zz:16"), None);
        assert_eq!(parse_hex_colon(""), None);
    }
}
