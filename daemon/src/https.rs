//! The HTTPS listener (`core.https_address`): the same router as the unix socket, over
//! TLS 1.2/1.3, each request carrying the peer's address and client certificate as its
//! [`Caller`]. Started at daemon start when the key is set, and started, moved or
//! stopped live when it changes; a change that cannot bind is refused and the listener
//! stays as it was.

use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::auth::Caller;
use crate::error::{DaemonError, Result};
use crate::listener::{LiveListener, OnConnection};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What is read from a client's socket at once, under TLS.
const SOCKET_READ: usize = 256 << 10;

/// TLS sessions kept for resumption (clients reconnect for every `lxc` command).
const SESSION_CACHE: usize = 4096;

/// The HTTPS listener of one daemon: TLS over a [`LiveListener`].
pub struct HttpsListener {
    tls: Arc<rustls::ServerConfig>,
    router: std::sync::OnceLock<Router>,
    live: LiveListener,
}

impl std::fmt::Debug for HttpsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsListener").finish_non_exhaustive()
    }
}

impl HttpsListener {
    /// A listener presenting `tls` (resumable sessions added), serving nothing yet. Call
    /// inside the runtime.
    pub fn new(tls: Arc<rustls::ServerConfig>) -> Arc<HttpsListener> {
        let mut tls = (*tls).clone();
        tls.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
            tls.ticketer = ticketer;
        }
        Arc::new(HttpsListener {
            tls: Arc::new(tls),
            router: std::sync::OnceLock::new(),
            live: LiveListener::new("HTTPS listener", bind),
        })
    }

    /// The router every connection is served with (set once, before the first `listen`).
    pub fn set_router(&self, router: Router) {
        let _ = self.router.set(router);
    }

    /// Serves on `address` (`core.https_address`; "" stops serving), as
    /// [`LiveListener::listen`] does. Blocks while the old loop closes: call off the async
    /// workers.
    pub fn listen(&self, address: &str) -> Result<()> {
        let router =
            self.router.get().cloned().ok_or_else(|| {
                DaemonError::BadRequest("The HTTPS listener has no API yet".into())
            })?;
        let acceptor = TlsAcceptor::from(self.tls.clone());
        let on_connection: OnConnection =
            Arc::new(move |stream, peer| accept_tls(stream, peer, &acceptor, &router));
        self.live.listen(address, on_connection)
    }
}

/// Serves one accepted connection: the TLS handshake, then HTTP with the peer as caller.
fn accept_tls(stream: TcpStream, address: SocketAddr, acceptor: &TlsAcceptor, router: &Router) {
    // rustls reads 4 KiB at a time: one system call per 4 KiB of an upload (a pushed
    // file, a migration pushed to us) without a buffer under it.
    let stream = tokio::io::BufReader::with_capacity(SOCKET_READ, stream);
    let acceptor = acceptor.clone();
    let router = router.clone();
    tokio::spawn(async move {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(peer = %address, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|der| Arc::new(der.to_vec()));
        let caller = Caller::Tls {
            address,
            certificate,
        };
        serve_connection(ClosingTls(tls), router, caller).await;
    });
}

/// A TLS connection that says goodbye: when it is dropped (a websocket's end, a closed
/// keep-alive connection) it sends TLS `close_notify`, best effort, as Go's `tls.Conn.Close`
/// does for LXD. Without it, clients such as Python's `ssl` (pylxd's websockets) take the
/// bare TCP close as an error: "EOF occurred in violation of protocol".
struct ClosingTls(tokio_rustls::server::TlsStream<tokio::io::BufReader<tokio::net::TcpStream>>);

impl Drop for ClosingTls {
    fn drop(&mut self) {
        let (tcp, conn) = self.0.get_mut();
        conn.send_close_notify();
        let mut out = Vec::new();
        while conn.wants_write() {
            if conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        let _ = tcp.get_ref().try_write(&out);
    }
}

impl tokio::io::AsyncRead for ClosingTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ClosingTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Serves HTTP/1.1 (with upgrades: exec, console, events and migration websockets) on
/// one connection, every request carrying `caller`.
pub async fn serve_connection<S>(stream: S, router: Router, caller: Caller)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let service = router.map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(caller.clone());
        req
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let io = hyper_util::rt::TokioIo::new(stream);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A listening socket on `address` as LXD reads it: `host`, `host:port`, `[v6]:port`,
/// `:port` (every address, IPv4 and IPv6); port 8443 when none is given.
fn bind(address: &str) -> Result<StdListener> {
    let (host, port) = crate::engine::split_listen_address(address);
    let fail = |e: std::io::Error| {
        DaemonError::BadRequest(format!(
            "Cannot listen on network HTTPS socket {address:?}: {e}"
        ))
    };
    let candidates: Vec<SocketAddr> = if host.is_empty() {
        // `[::]` takes IPv4 too (Linux's default bindv6only=0); `0.0.0.0` when IPv6 is off.
        vec![
            SocketAddr::from(([0u16; 8], port)),
            SocketAddr::from(([0u8; 4], port)),
        ]
    } else {
        (host.as_str(), port)
            .to_socket_addrs()
            .map_err(fail)?
            .collect()
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for candidate in candidates {
        match StdListener::bind(candidate) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}
