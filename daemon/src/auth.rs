#![allow(dead_code)] // Used by the HTTPS listener.
//! Who sent a request. Each listener puts a [`Caller`] in every request's extensions: the
//! unix socket's peers are admins; a TLS peer is known by its client certificate, if it
//! showed one, and is trusted only when the trust store holds that certificate.

use std::net::SocketAddr;
use std::sync::Arc;

/// The peer of one connection, as its listener saw it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A peer on `unix.socket`: a trusted admin (requestor protocol `unix`).
    Unix,
    /// A peer on the HTTPS listener.
    Tls {
        address: SocketAddr,
        /// The client certificate (DER) the peer proved it holds, if it showed one.
        certificate: Option<Arc<Vec<u8>>>,
    },
}

impl Caller {
    /// sha256 of the client certificate, hex; None without one (or on the socket).
    pub fn fingerprint(&self) -> Option<String> {
        match self {
            Caller::Unix => None,
            Caller::Tls { certificate, .. } => {
                certificate.as_ref().map(|der| hutch_tls::fingerprint(der))
            }
        }
    }
}
