//! The real [`Netlink`]: one worker thread for the life of the process, owning a
//! single-threaded runtime and one rtnetlink connection in the host's namespace. Callers
//! (blocking code) send it jobs over a channel and wait for the answer; jobs run one after
//! the other, since one socket serves one dump at a time.
//! Work inside another namespace runs on a short thread that joins it.

use std::fs::File;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures_util::FutureExt;
use nix::sched::{setns, CloneFlags};
use rtnetlink::Handle;
use tokio::sync::mpsc;

use super::{ops, Address, Interfaces, Link, Netlink, PeerSpec};
use crate::addr::{Ipv4Net, Ipv6Net};
use crate::error::{NetworkError, Result};

type Job = Box<dyn FnOnce(Handle) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The worker's mailbox. Dropping the last clone ends the worker thread.
#[derive(Debug, Clone)]
pub struct SystemNetlink {
    jobs: mpsc::UnboundedSender<Job>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetworkError::Spawn {
            program: "the netlink runtime".into(),
            source: e,
        })
}

/// A connection in the calling thread's namespace (a netlink socket belongs for good to the
/// namespace it was made in); its driver runs as a task of the current runtime.
fn connect() -> Result<Handle> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetworkError::Spawn {
        program: "a netlink socket".into(),
        source: e,
    })?;
    tokio::spawn(conn);
    Ok(handle)
}

fn join_netns(path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| NetworkError::io("open", path, e))?;
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::Sys {
        action: format!("join the network namespace {}", path.display()),
        source: e,
    })
}

/// Runs `f` on a fresh thread inside each namespace of `netns` in turn, with one runtime
/// and one connection per namespace; the thread ends with the call.
fn in_each_netns<T, F, Fut>(netns: &[PathBuf], f: F) -> Vec<Result<T>>
where
    T: Send,
    F: Fn(Handle) -> Fut + Send + Sync,
    Fut: Future<Output = Result<T>>,
{
    let gone = || {
        netns
            .iter()
            .map(|_| Err(NetworkError::WorkerGone))
            .collect()
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    let mut first = Some(e);
                    return netns
                        .iter()
                        .map(|_| Err(first.take().unwrap_or(NetworkError::WorkerGone)))
                        .collect();
                }
            };
            netns
                .iter()
                .map(|path| {
                    join_netns(path)?;
                    rt.block_on(async { f(connect()?).await })
                })
                .collect()
        })
        .join()
        .unwrap_or_else(|_| gone())
    })
}

fn in_netns<T, F, Fut>(netns: &Path, f: F) -> Result<T>
where
    T: Send,
    F: Fn(Handle) -> Fut + Send + Sync,
    Fut: Future<Output = Result<T>>,
{
    in_each_netns(&[netns.to_path_buf()], f)
        .pop()
        .unwrap_or(Err(NetworkError::WorkerGone))
}

/// The worker's loop: one connection, jobs one at a time (the kernel runs one dump per
/// netlink socket and answers a second with EBUSY; a job takes microseconds).
fn serve(mut rx: mpsc::UnboundedReceiver<Job>) {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %crate::error::chain(&e), "start the netlink worker");
            return;
        }
    };
    rt.block_on(async move {
        let handle = match connect() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %crate::error::chain(&e), "open the netlink socket");
                return;
            }
        };
        // A job that panics drops its answer's sender (its caller hears that the worker
        // is gone) and the worker goes on with the next.
        while let Some(job) = rx.recv().await {
            let _ = AssertUnwindSafe(job(handle.clone())).catch_unwind().await;
        }
    });
}

impl Default for SystemNetlink {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemNetlink {
    /// Starts the worker, which opens its connection. Should the thread or the socket
    /// fail, the worker is gone, and every call says so.
    pub fn new() -> Self {
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("netlink".into())
            .spawn(move || serve(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "start the netlink worker");
        }
        SystemNetlink { jobs }
    }

    /// Runs `f` on the worker's connection and waits for its answer.
    fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |h| {
            Box::pin(async move {
                let _ = tx.send(f(h).await);
            })
        });
        self.jobs.send(job).map_err(|_| NetworkError::WorkerGone)?;
        rx.recv().map_err(|_| NetworkError::WorkerGone)?
    }
}

impl Netlink for SystemNetlink {
    fn link(&self, name: &str) -> Result<Option<Link>> {
        let name = name.to_string();
        self.call(move |h| async move { ops::link(&h, &name).await })
    }

    fn links(&self) -> Result<Vec<Link>> {
        self.call(|h| async move { ops::links(&h).await })
    }

    fn addresses(&self) -> Result<Vec<Address>> {
        self.call(|h| async move { ops::addresses(&h).await })
    }

    fn used_prefixes(&self) -> Result<(Vec<Ipv4Net>, Vec<Ipv6Net>)> {
        self.call(|h| async move { ops::used_prefixes(&h).await })
    }

    fn ensure_bridge(&self, name: &str, mtu: Option<u32>) -> Result<Link> {
        let name = name.to_string();
        self.call(move |h| async move { ops::ensure_bridge(&h, &name, mtu).await })
    }

    fn sync_addresses(&self, index: u32, wanted: &[(IpAddr, u8)]) -> Result<()> {
        let wanted = wanted.to_vec();
        self.call(move |h| async move { ops::sync_addresses(&h, index, &wanted).await })
    }

    fn enable_forwarding(&self, ipv6: bool) -> Result<()> {
        let path = if ipv6 {
            "/proc/sys/net/ipv6/conf/all/forwarding"
        } else {
            "/proc/sys/net/ipv4/ip_forward"
        };
        if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
            return Ok(());
        }
        std::fs::write(path, "1").map_err(|e| NetworkError::io("write", path, e))
    }

    fn delete_link(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.call(move |h| async move { ops::delete_link(&h, &name).await })
    }

    fn add_veth(&self, host_name: &str, master: Option<u32>, peer: &PeerSpec) -> Result<()> {
        let (host_name, peer) = (host_name.to_string(), peer.clone());
        self.call(move |h| async move { ops::add_veth(&h, &host_name, master, &peer).await })
    }

    fn add_macvlan(&self, parent: &str, peer: &PeerSpec) -> Result<()> {
        let (parent, peer) = (parent.to_string(), peer.clone());
        self.call(move |h| async move { ops::add_macvlan(&h, &parent, &peer).await })
    }

    fn set_up_in(&self, netns: &Path, names: &[String]) -> Result<()> {
        in_netns(netns, |h| async move {
            for n in names {
                ops::set_up(&h, n).await?;
            }
            Ok(())
        })
    }

    fn delete_link_in(&self, netns: &Path, name: &str) -> Result<()> {
        in_netns(netns, |h| async move { ops::delete_link(&h, name).await })
    }

    fn interfaces_in(&self, netns: &[PathBuf]) -> Vec<Result<Interfaces>> {
        // A plain blocking dump per namespace, on one thread that joins each in turn: a
        // listing reads hundreds, and needs no runtime or async connection for it.
        std::thread::scope(|s| {
            s.spawn(|| {
                netns
                    .iter()
                    .map(|path| {
                        join_netns(path)?;
                        super::dump::interfaces()
                    })
                    .collect()
            })
            .join()
            .unwrap_or_else(|_| {
                netns
                    .iter()
                    .map(|_| Err(NetworkError::WorkerGone))
                    .collect()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs no privilege: reading links works for anyone.
    #[test]
    fn the_worker_answers_many_callers_and_ends_with_its_handles() {
        let nl = SystemNetlink::new();
        let lo = nl.link("lo").unwrap().expect("loopback");
        assert_eq!(lo.link_type, "loopback");
        assert!(nl.link("hutch-nonesuch").unwrap().is_none());
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        assert!(nl.links().unwrap().iter().any(|l| l.name == "lo"));
                    }
                });
            }
        });
    }
}
