//! A TCP listener whose address a server config key sets and moves live
//! (`core.https_address`, `core.ui_address`): none, or one accept loop on one address. A
//! change to an address that cannot be bound is refused, and the previous one is served
//! again. What a connection gets is the owner's: [`OnConnection`].

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::error::{DaemonError, Result};

/// Takes one accepted connection (and spawns what serves it).
pub type OnConnection = Arc<dyn Fn(TcpStream, SocketAddr) + Send + Sync>;

/// Binds a socket for an address as its key reads it.
pub type Bind = fn(&str) -> Result<StdListener>;

pub struct LiveListener {
    /// For the logs: `HTTPS listener`, `web UI listener`.
    what: &'static str,
    bind: Bind,
    runtime: tokio::runtime::Handle,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for LiveListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveListener")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

/// An accept loop and how to stop it.
struct Running {
    /// The address as configured.
    address: String,
    bound: SocketAddr,
    on_connection: OnConnection,
    stop: oneshot::Sender<()>,
    /// Closed once the loop has closed its socket, so the port is free again.
    stopped: mpsc::Receiver<()>,
}

impl Running {
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.stopped.recv();
    }
}

impl LiveListener {
    /// Serving nothing yet. Call inside the runtime.
    pub fn new(what: &'static str, bind: Bind) -> Self {
        LiveListener {
            what,
            bind,
            runtime: tokio::runtime::Handle::current(),
            running: Mutex::new(None),
        }
    }

    /// Where the loop is bound, if one runs.
    pub fn bound(&self) -> Option<SocketAddr> {
        self.lock().as_ref().map(|r| r.bound)
    }

    /// Serves `address` ("" stops serving) with `on_connection`. Same address: nothing to
    /// do. Otherwise the current loop stops and a socket is bound on the new address; if
    /// that fails, the old address is served again and the error returned. Blocks while
    /// the old loop closes: call off the async workers.
    pub fn listen(&self, address: &str, on_connection: OnConnection) -> Result<()> {
        let mut running = self.lock();
        let current = running.as_ref().map(|r| r.address.clone());
        if current.as_deref().unwrap_or_default() == address {
            return Ok(());
        }
        let previous = running.take().map(|old| {
            let again = (old.address.clone(), old.on_connection.clone());
            old.stop();
            again
        });
        if address.is_empty() {
            tracing::info!("{} stopped", self.what);
            return Ok(());
        }
        match (self.bind)(address).and_then(|s| self.serve(address, s, on_connection)) {
            Ok(r) => {
                *running = Some(r);
                Ok(())
            }
            Err(e) => {
                if let Some((old, on_connection)) = previous {
                    match (self.bind)(&old).and_then(|s| self.serve(&old, s, on_connection)) {
                        Ok(r) => *running = Some(r),
                        Err(e) => tracing::error!(
                            error = %e.chain(),
                            "{} cannot serve its previous address again",
                            self.what
                        ),
                    }
                }
                Err(e)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn serve(
        &self,
        address: &str,
        socket: StdListener,
        on_connection: OnConnection,
    ) -> Result<Running> {
        let _guard = self.runtime.enter();
        let io = |e| DaemonError::io("listen on", address, e);
        socket.set_nonblocking(true).map_err(io)?;
        let bound = socket.local_addr().map_err(io)?;
        let listener = TcpListener::from_std(socket).map_err(io)?;
        tracing::info!(address = %bound, "{} started", self.what);
        let (stop, stop_rx) = oneshot::channel();
        let (stopped_tx, stopped) = mpsc::channel();
        let what = self.what;
        let on = on_connection.clone();
        self.runtime.spawn(async move {
            accept_loop(listener, what, on, stop_rx).await;
            // The socket is closed (dropped with the loop): the port is free.
            drop(stopped_tx);
        });
        Ok(Running {
            address: address.to_string(),
            bound,
            on_connection,
            stop,
            stopped,
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    what: &'static str,
    on_connection: OnConnection,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: accept failed");
                    // Out of descriptors and the like: let it pass rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        on_connection(stream, peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(address: &str) -> Result<StdListener> {
        StdListener::bind(address).map_err(|e| DaemonError::io("bind", address, e))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_move_that_cannot_bind_keeps_the_old_address() {
        let l = Arc::new(LiveListener::new("test listener", loopback));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        let on: OnConnection = Arc::new(move |_s, _p| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let l2 = l.clone();
        let on2 = on.clone();
        tokio::task::spawn_blocking(move || l2.listen("127.0.0.1:0", on2))
            .await
            .unwrap()
            .unwrap();
        let first = l.bound().unwrap();
        // A port already taken: refused, and the first address still served.
        let taken = StdListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap().to_string();
        let l2 = l.clone();
        let err = tokio::task::spawn_blocking(move || l2.listen(&busy, on))
            .await
            .unwrap();
        assert!(err.is_err());
        assert_eq!(l.bound().map(|a| a.ip()), Some(first.ip()));
        let again = l.bound().unwrap();
        tokio::net::TcpStream::connect(again).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while accepted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "nothing accepted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let l2 = l.clone();
        let on: OnConnection = Arc::new(|_s, _p| {});
        tokio::task::spawn_blocking(move || l2.listen("", on))
            .await
            .unwrap()
            .unwrap();
        assert!(l.bound().is_none());
    }
}
