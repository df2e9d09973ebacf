//! Who sent a request, and what they may reach. Each listener puts a [`Caller`] in every
//! request's extensions: the unix socket's peers are admins; a TLS peer is known by its
//! client certificate, if it showed one, and is trusted only when the trust store holds
//! that certificate. The [`authenticate`] layer decides, per request, from an in-memory
//! copy of the trust store, and leaves the [`Trust`] it found for the handlers that
//! answer untrusted callers differently (`GET /1.0`, images, `POST /1.0/certificates`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::daemon::AppState;
use crate::error::DaemonError;

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
    /// A browser on the web UI's loopback listener (`core.ui_address`, see `ui.rs`).
    /// `session` is set only once its cookie named a live session, which an admin's
    /// login token opened: then it is an admin.
    Ui {
        address: SocketAddr,
        session: Option<Arc<str>>,
    },
}

impl Caller {
    /// sha256 of the client certificate, hex; None without one (or on the socket).
    pub fn fingerprint(&self) -> Option<String> {
        match self {
            Caller::Unix | Caller::Ui { .. } => None,
            Caller::Tls { certificate, .. } => {
                certificate.as_ref().map(|der| hutch_tls::fingerprint(der))
            }
        }
    }
}

tokio::task_local! {
    /// Who the request being served on this task came from (events name them).
    static REQUESTOR: Requestor;
}

/// Who asked for a change, as lifecycle events name them (LXD's `requestor`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Requestor {
    /// `root` on the socket; the client certificate's fingerprint over HTTPS; `ui` in the
    /// web UI.
    pub username: String,
    /// `unix`, `tls` or `ui`.
    pub protocol: String,
    pub address: String,
}

impl Requestor {
    fn of(caller: &Caller) -> Requestor {
        match caller {
            Caller::Unix => Requestor::local(),
            Caller::Tls { address, .. } => Requestor {
                username: caller.fingerprint().unwrap_or_default(),
                protocol: "tls".into(),
                address: address.to_string(),
            },
            Caller::Ui { address, .. } => Requestor {
                username: "ui".into(),
                protocol: "ui".into(),
                address: address.to_string(),
            },
        }
    }

    /// The socket's admin, and whatever the daemon does on its own.
    pub fn local() -> Requestor {
        Requestor {
            username: "root".into(),
            protocol: "unix".into(),
            address: "@".into(),
        }
    }
}

/// The requestor of the request served on this task (or of the operation it started);
/// the local admin outside any.
pub fn requestor() -> Requestor {
    REQUESTOR
        .try_with(Clone::clone)
        .unwrap_or_else(|_| Requestor::local())
}

/// Runs `work` (an operation's body) as done for the current requestor.
pub fn on_behalf<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    REQUESTOR.scope(requestor(), work)
}

/// `work` (blocking work off the async workers) as done for the current requestor.
pub fn on_behalf_blocking<R>(work: impl FnOnce() -> R) -> impl FnOnce() -> R {
    let requestor = requestor();
    move || REQUESTOR.sync_scope(requestor, work)
}

/// How far a caller is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// The unix socket, a client certificate in the trust store, or a web UI session.
    Admin,
    /// A `restricted` client certificate: reads only.
    ReadOnly,
    /// A `metrics` certificate: `/1.0/metrics` only.
    Metrics,
    /// No certificate, or one the store does not hold.
    Untrusted,
}

impl Trust {
    /// Trusted for the API (LXD's `auth: trusted`).
    pub fn is_trusted(self) -> bool {
        matches!(self, Trust::Admin | Trust::ReadOnly)
    }
}

/// What an untrusted caller may ask (LXD's `AllowUntrusted` routes). Each of these
/// handlers checks again what the caller may see: public images only, an operation's
/// secret, its own certificate.
fn untrusted_may(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", [] | [""] | ["1.0"]) => true,
        ("POST", ["1.0", "certificates"]) => true,
        ("GET", ["1.0", "images"]) => true,
        ("GET", ["1.0", "images", "aliases"]) => false,
        ("GET", ["1.0", "images", "aliases", _, ..]) => true,
        ("GET", ["1.0", "images", _] | ["1.0", "images", _, "export"]) => true,
        ("GET", ["1.0", "operations", _, "wait" | "websocket"]) => true,
        _ => false,
    }
}

/// The cluster member a TLS caller is, if it is one (a member that joined since the
/// last read of etcd is looked for again when its certificate is not trusted otherwise).
async fn cluster_member(e: &AppState, fingerprint: Option<String>, trust: Trust) -> Option<String> {
    let fingerprint = fingerprint?;
    match e.member_of_fingerprint(&fingerprint) {
        Some(name) => Some(name),
        None if trust == Trust::Untrusted => e.member_of_fingerprint_now(&fingerprint).await,
        None => None,
    }
}

/// The authentication layer: trusted callers pass (restricted ones for reads only),
/// untrusted ones reach [`untrusted_may`]'s routes only; everything else is LXD's 403
/// `not authorized`.
pub async fn authenticate(State(e): State<AppState>, mut req: Request, next: Next) -> Response {
    let (mut trust, requestor) = match req.extensions().get::<Caller>() {
        Some(caller) => (e.trust(caller), Requestor::of(caller)),
        // A listener that names no caller: nobody is trusted by accident.
        None => (Trust::Untrusted, Requestor::local()),
    };
    // Standalone, nobody is a member: no second hash of the certificate.
    let fingerprint = match e.membership() {
        Some(_) => req
            .extensions()
            .get::<Caller>()
            .and_then(Caller::fingerprint),
        None => None,
    };
    if let Some(member) = cluster_member(&e, fingerprint, trust).await {
        // Another member: trusted as a server, and a request it forwards no further
        // than the client behind it.
        trust = Trust::Admin;
        let forwarded = req
            .headers()
            .get(&crate::engine::cluster::forward::FORWARDED)
            .is_some();
        if forwarded {
            let word = req
                .headers()
                .get(&crate::engine::cluster::forward::TRUST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            trust = crate::engine::cluster::forward::trust_of_word(word);
            req.extensions_mut()
                .insert(crate::api::forward::FromMember(member));
        }
    }
    let path = req.uri().path();
    let trust = match trust {
        Trust::Metrics if path != "/1.0/metrics" => Trust::Untrusted,
        t => t,
    };
    let allowed = match trust {
        Trust::Admin => true,
        Trust::ReadOnly => {
            matches!(*req.method(), Method::GET | Method::HEAD) || untrusted_may(req.method(), path)
        }
        Trust::Metrics => *req.method() == Method::GET,
        Trust::Untrusted => untrusted_may(req.method(), path),
    };
    if !allowed {
        if let Some(Caller::Tls { address, .. }) = req.extensions().get::<Caller>() {
            tracing::debug!(ip = %address, method = %req.method(), path, "rejecting untrusted request");
        }
        return DaemonError::Forbidden("not authorized".into()).into_response();
    }
    req.extensions_mut().insert(trust);
    REQUESTOR.scope(requestor, next.run(req)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ui_session_is_named_in_events_by_its_address() {
        let caller = Caller::Ui {
            address: "127.0.0.1:5000".parse().unwrap(),
            session: Some("abc".into()),
        };
        let r = Requestor::of(&caller);
        assert_eq!((r.username.as_str(), r.protocol.as_str()), ("ui", "ui"));
        assert_eq!(r.address, "127.0.0.1:5000");
        assert_eq!(caller.fingerprint(), None);
    }

    #[test]
    fn untrusted_routes_are_lxds() {
        for (m, p) in [
            ("GET", "/"),
            ("GET", "/1.0"),
            ("GET", "/1.0/"),
            ("POST", "/1.0/certificates"),
            ("GET", "/1.0/images"),
            ("GET", "/1.0/images/abcd"),
            ("GET", "/1.0/images/abcd/export"),
            ("GET", "/1.0/images/aliases/busybox"),
            ("GET", "/1.0/operations/x/wait"),
            ("GET", "/1.0/operations/x/websocket"),
        ] {
            assert!(untrusted_may(&m.parse().unwrap(), p), "{m} {p}");
        }
        for (m, p) in [
            ("PUT", "/1.0"),
            ("GET", "/1.0/instances"),
            ("GET", "/1.0/certificates"),
            ("GET", "/1.0/images/aliases"),
            ("POST", "/1.0/images"),
            ("DELETE", "/1.0/images/abcd"),
            ("GET", "/1.0/images/abcd/secret"),
            ("GET", "/1.0/operations"),
            ("GET", "/1.0/operations/x"),
            ("GET", "/1.0/events"),
            ("GET", "/1.0/containers/c1"),
            ("GET", "/1.1"),
        ] {
            assert!(!untrusted_may(&m.parse().unwrap(), p), "{m} {p}");
        }
    }
}
