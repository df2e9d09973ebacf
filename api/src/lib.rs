//! The REST types shared by hutchd and hutch, in LXD's `/1.0` shapes, the response
//! envelope, and the tables of instance and server config keys. No I/O.

pub mod backup;
pub mod certificate;
pub mod cluster;
pub mod config;
pub mod image;
pub mod instance;
pub mod network;
pub mod operation;
pub mod profile;
pub mod project;
pub mod recover;
pub mod resources;
pub mod response;
pub mod schedule;
pub mod server;
pub mod server_config;
pub mod storage;
pub mod warning;

pub use response::{Response, ResponseType};

/// `s` as one URL path segment or query value: every byte but the unreserved ones
/// (RFC 3986) percent-encoded.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod percent_tests {
    #[test]
    fn names_become_one_segment() {
        assert_eq!(super::percent_encode("snap0"), "snap0");
        assert_eq!(super::percent_encode("a b?c#d%/"), "a%20b%3Fc%23d%25%2F");
    }
}
