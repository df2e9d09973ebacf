//! Members reaching each other: a request for an instance (or an operation) that lives on
//! another member is sent on to it over HTTPS, answered by it and streamed back, websocket
//! upgrades included (exec, console, migration); each member relays the others' events to
//! its own listeners. Members present their own certificates both ways and accept only
//! the one the other published in etcd.
//!
//! A forwarded request says who forwarded it (`x-hutch-forwarded`) and how far the client
//! behind it was trusted (`x-hutch-trust`): the member that answers trusts it no further.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::membership::{Link, Membership};
use crate::auth::Trust;
use crate::engine::Engine;
use crate::error::{DaemonError, Result};

/// The member that forwarded a request (its name).
pub const FORWARDED: HeaderName = HeaderName::from_static("x-hutch-forwarded");
/// How far the client behind a forwarded request was trusted.
pub const TRUST: HeaderName = HeaderName::from_static("x-hutch-trust");

/// How long reaching a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of a refused request's body read before the answer.
const REFUSED_BODY_READ: usize = 16 << 20;

/// Forwarded operations remembered (their ids lead later requests to their member).
const OPERATIONS_KEPT: usize = 10_000;

/// What forwarding keeps between requests.
#[derive(Debug, Default)]
pub struct Forwarding {
    /// TLS to each member, by its certificate's fingerprint (sessions resume).
    configs: Mutex<HashMap<String, Arc<rustls::ClientConfig>>>,
    /// The member of each operation a forwarded request started.
    operations: Mutex<(HashMap<String, String>, VecDeque<String>)>,
}

impl Forwarding {
    fn remember_operation(&self, id: &str, member: &str) {
        let mut ops = self.operations.lock().unwrap_or_else(|e| e.into_inner());
        let (by_id, order) = &mut *ops;
        if by_id.insert(id.to_string(), member.to_string()).is_none() {
            order.push_back(id.to_string());
        }
        while order.len() > OPERATIONS_KEPT {
            if let Some(old) = order.pop_front() {
                by_id.remove(&old);
            }
        }
    }

    /// The member an operation forwarded from here lives on.
    pub fn operation_member(&self, id: &str) -> Option<String> {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(id)
            .cloned()
    }
}

/// `x-hutch-trust`'s words.
pub fn trust_word(trust: Trust) -> &'static str {
    match trust {
        Trust::Admin => "admin",
        Trust::ReadOnly => "restricted",
        Trust::Metrics => "metrics",
        Trust::Untrusted => "untrusted",
    }
}

/// The trust `x-hutch-trust` names (anything else: untrusted).
pub fn trust_of_word(word: &str) -> Trust {
    match word {
        "admin" => Trust::Admin,
        "restricted" => Trust::ReadOnly,
        "metrics" => Trust::Metrics,
        _ => Trust::Untrusted,
    }
}

/// Host and port of a member's `https://host:port` URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (rest, 8443),
    };
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    ))
}

/// Hop-by-hop headers: the connection's own, never passed on (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
    )
}

fn offline(member: &str) -> DaemonError {
    DaemonError::Unavailable(format!("Cluster member {member:?} is offline"))
}

impl Engine {
    /// A TLS connection to `link`, presenting this server's certificate and accepting
    /// only the member's own.
    async fn connect_member(&self, member: &str, link: &Link) -> Result<TlsStream<TcpStream>> {
        let (host, port) = host_port(&link.url).ok_or_else(|| {
            DaemonError::BadRequest(format!("Cluster member {member:?} has no usable address"))
        })?;
        let fingerprint = hutch_tls::fingerprint(&link.certificate);
        let config = {
            let mut configs = self
                .d
                .cluster
                .forwarding
                .configs
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match configs.get(&fingerprint) {
                Some(c) => c.clone(),
                None => {
                    let c = hutch_tls::client_config(
                        hutch_tls::ServerTrust::Pinned(link.certificate.clone()),
                        Some(&self.d.identity()),
                    )
                    .map_err(|e| DaemonError::failed("set up", "TLS to a cluster member", e))?;
                    configs.insert(fingerprint, c.clone());
                    c
                }
            }
        };
        let unreachable = |e: &dyn std::fmt::Display| {
            DaemonError::Unavailable(format!("Failed to reach cluster member {member:?}: {e}"))
        };
        let name =
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| unreachable(&e))?;
        let connect = async {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| unreachable(&e))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(&e))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable(&"timed out"))?
    }

    /// The link to member `member`, read again from etcd when it is not known yet.
    async fn link_of(&self, m: &Membership, member: &str) -> Result<Link> {
        let link = match m.links().members.get(member) {
            Some(l) => l.clone(),
            // A member not known yet may have joined since the last beat.
            None => m
                .reload_links()
                .await
                .members
                .get(member)
                .cloned()
                .ok_or_else(|| {
                    DaemonError::NotFound(format!("Cluster member {member:?} not found"))
                })?,
        };
        if link.online {
            return Ok(link);
        }
        // Offline at the last beat: it may be back since (read again, so a request right
        // after it came back is not refused).
        match m.reload_links().await.members.get(member) {
            Some(l) if l.online => Ok(l.clone()),
            _ => Err(offline(member)),
        }
    }

    /// Sends `req` to member `member` as it is (the caller set its headers).
    pub(super) async fn send_to_member(
        &self,
        member: &str,
        req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>> {
        let sender = self.open_member(member).await?;
        send_on(sender, member, req).await
    }

    /// An HTTP connection to member `member`, ready for one request.
    async fn open_member(
        &self,
        member: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<Body>> {
        let m = self
            .membership()
            .ok_or_else(|| DaemonError::BadRequest("This server is not clustered".to_string()))?;
        let link = self.link_of(&m, member).await?;
        let stream = self.connect_member(member, &link).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                DaemonError::Unavailable(format!("Failed to reach cluster member {member:?}: {e}"))
            })?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Forwards a client's request to member `member` and gives back its answer, streamed;
    /// a websocket upgrade is spliced through; an operation it starts is remembered so
    /// that the client's next requests about it find it.
    pub async fn forward(
        &self,
        member: &str,
        mut req: Request<Body>,
        trust: Trust,
    ) -> Response<Body> {
        let me = self
            .membership()
            .map(|m| m.server_name.clone())
            .unwrap_or_default();
        // Reached first: a member offline or gone is answered after the client's body is
        // read (a client still sending would see its connection closed under it).
        let sender = match self.open_member(member).await {
            Ok(s) => s,
            Err(e) => {
                let _ = axum::body::to_bytes(req.into_body(), REFUSED_BODY_READ).await;
                return e.into_response();
            }
        };
        let upgrade = req.headers().get(header::UPGRADE).cloned().and_then(|u| {
            Some((
                u,
                req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>()?,
            ))
        });
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let (parts, body) = req.into_parts();
        let mut out = Request::builder().method(parts.method).uri(path);
        for (name, value) in &parts.headers {
            if !hop_by_hop(name) && *name != FORWARDED && *name != TRUST {
                out = out.header(name, value);
            }
        }
        let host = self
            .membership()
            .and_then(|m| m.links().members.get(member).map(|l| l.url.clone()))
            .and_then(|u| u.strip_prefix("https://").map(str::to_string))
            .unwrap_or_default();
        out = out
            .header(header::HOST, host)
            .header(FORWARDED, me)
            .header(TRUST, trust_word(trust));
        if let Some((protocol, _)) = &upgrade {
            out = out
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, protocol);
        }
        let out = match out.body(body) {
            Ok(r) => r,
            Err(e) => return DaemonError::BadRequest(e.to_string()).into_response(),
        };
        let mut resp = match send_on(sender, member, out).await {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some((_, client)) = upgrade else {
                return DaemonError::Unavailable("Unexpected upgrade from a cluster member".into())
                    .into_response();
            };
            let theirs = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(a), Ok(b)) = tokio::join!(client, theirs) {
                    let (mut a, mut b) = (TokioIo::new(a), TokioIo::new(b));
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, Body::empty());
        }
        if resp.status() == StatusCode::ACCEPTED {
            // An operation: its id leads the client's next requests to this member.
            let (parts, body) = resp.into_parts();
            let bytes = match axum::body::to_bytes(Body::new(body), 8 << 20).await {
                Ok(b) => b,
                Err(e) => {
                    return DaemonError::Unavailable(format!(
                        "Cluster member {member:?} did not answer: {e}"
                    ))
                    .into_response()
                }
            };
            let id = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["metadata"]["id"].as_str().map(str::to_string));
            if let Some(id) = id {
                self.d.cluster.forwarding.remember_operation(&id, member);
            }
            return Response::from_parts(parts, Body::from(bytes));
        }
        let (mut parts, body) = resp.into_parts();
        parts.headers.remove(header::TRANSFER_ENCODING);
        parts.headers.remove(header::CONNECTION);
        Response::from_parts(parts, Body::new(body))
    }

    /// The member whose certificate has this fingerprint (this one too: a member drives
    /// an evacuation through its own API as through the others').
    pub fn member_of_fingerprint(&self, fingerprint: &str) -> Option<String> {
        self.membership()?.member_by_fingerprint(fingerprint)
    }

    /// [`member_of_fingerprint`](Self::member_of_fingerprint), the members read again
    /// first when it is not one yet (a member that joined since the last beat).
    pub async fn member_of_fingerprint_now(&self, fingerprint: &str) -> Option<String> {
        let m = self.membership()?;
        if let Some(name) = self.member_of_fingerprint(fingerprint) {
            return Some(name);
        }
        m.refresh_links().await;
        self.member_of_fingerprint(fingerprint)
    }

    /// Whether this member has instance `name` (made, or being made).
    pub fn has_instance(&self, name: &str) -> Result<bool> {
        Ok(self.d.db.instance(name)?.is_some())
    }

    /// Member `name` is in the cluster and online.
    pub async fn check_member(&self, m: &Membership, name: &str) -> Result<()> {
        self.link_of(m, name).await.map(drop)
    }

    /// The member an operation forwarded from here lives on.
    pub fn forwarded_operation_member(&self, id: &str) -> Option<String> {
        self.d.cluster.forwarding.operation_member(id)
    }

    /// A GET of `path` on member `member`, on this server's own behalf (the cluster-wide
    /// list): its envelope's metadata.
    pub async fn get_from_member(&self, member: &str, path: &str) -> Result<serde_json::Value> {
        let me = self
            .membership()
            .map(|m| m.server_name.clone())
            .unwrap_or_default();
        let req = Request::builder()
            .uri(path)
            .header(header::HOST, member)
            .header(FORWARDED, me)
            .header(TRUST, "admin")
            .body(Body::empty())
            .map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        let resp = self.send_to_member(member, req).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 256 << 20)
            .await
            .map_err(|e| {
                DaemonError::Unavailable(format!("Cluster member {member:?} did not answer: {e}"))
            })?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            DaemonError::Unavailable(format!("Cluster member {member:?} answered badly: {e}"))
        })?;
        if !status.is_success() {
            return Err(DaemonError::Unavailable(format!(
                "Cluster member {member:?}: {}",
                v["error"].as_str().unwrap_or("failed")
            )));
        }
        Ok(v["metadata"].clone())
    }

    /// Starts the task that relays the other members' events to this one's listeners:
    /// one websocket to each online member, opened again when it closes.
    pub(super) fn start_event_relay(&self, m: &Arc<Membership>) {
        let (e, weak) = (self.clone(), Arc::downgrade(m));
        let every = m.beat_interval();
        m.spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            let connected = Arc::new(Mutex::new(BTreeSet::<String>::new()));
            loop {
                let Some(m) = weak.upgrade() else { return };
                for (name, link) in &m.links().members {
                    if *name == m.server_name || !link.online {
                        continue;
                    }
                    if !connected
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone())
                    {
                        continue;
                    }
                    let (e, name, link, me, connected) = (
                        e.clone(),
                        name.clone(),
                        link.clone(),
                        m.server_name.clone(),
                        connected.clone(),
                    );
                    relays.spawn(async move {
                        if let Err(err) = e.relay_events_of(&name, &link, &me).await {
                            tracing::debug!(member = %name, error = %crate::chain(&err), "event relay ended");
                        }
                        connected
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&name);
                    });
                }
                drop(m);
                while relays.try_join_next().is_some() {}
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Relays member `name`'s own events here until its websocket closes.
    async fn relay_events_of(&self, name: &str, link: &Link, me: &str) -> Result<()> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message;
        let stream = self.connect_member(name, link).await?;
        let url = link.url.replacen("https://", "wss://", 1) + "/1.0/events";
        let failed = |e: &dyn std::fmt::Display| {
            DaemonError::Unavailable(format!("Events of cluster member {name:?}: {e}"))
        };
        let mut request = url.into_client_request().map_err(|e| failed(&e))?;
        let value = |s: &str| HeaderValue::from_str(s).map_err(|e| failed(&e));
        request.headers_mut().insert(FORWARDED, value(me)?);
        request.headers_mut().insert(TRUST, value("admin")?);
        let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| failed(&e))?;
        while let Some(msg) = ws.next().await {
            match msg.map_err(|e| failed(&e))? {
                Message::Text(text) => self.d.events.relay(&text),
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Sends `req` on an open connection to member `member`.
async fn send_on(
    mut sender: hyper::client::conn::http1::SendRequest<Body>,
    member: &str,
    req: Request<Body>,
) -> Result<Response<hyper::body::Incoming>> {
    sender.send_request(req).await.map_err(|e| {
        DaemonError::Unavailable(format!("Cluster member {member:?} did not answer: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_urls_give_host_and_port() {
        assert_eq!(
            host_port("https://127.0.0.1:8443"),
            Some(("127.0.0.1".into(), 8443))
        );
        assert_eq!(host_port("https://[::1]:9000"), Some(("::1".into(), 9000)));
        assert_eq!(host_port("https://node1"), Some(("node1".into(), 8443)));
        assert_eq!(host_port("http://x:1"), None);
    }

    #[test]
    fn trust_words_go_both_ways() {
        for t in [
            Trust::Admin,
            Trust::ReadOnly,
            Trust::Metrics,
            Trust::Untrusted,
        ] {
            assert_eq!(trust_of_word(trust_word(t)), t);
        }
        assert_eq!(trust_of_word("root"), Trust::Untrusted);
    }
}
