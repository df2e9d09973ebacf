//! Proxy devices: their `listen`/`connect` addresses, and a userspace forwarder that
//! listens in one network namespace and connects in another.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio::task::JoinSet;

use crate::error::{NetworkError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `tcp:<addr>:<port>[-<port>]` or `udp:...`; IPv6 addresses in brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAddr {
    pub protocol: Protocol,
    pub addr: IpAddr,
    pub ports: (u16, u16),
}

impl ProxyAddr {
    pub fn port_count(&self) -> u32 {
        (self.ports.1 - self.ports.0) as u32 + 1
    }

    /// The socket address of the `i`th port of the range.
    pub fn socket(&self, i: u32) -> SocketAddr {
        SocketAddr::new(self.addr, self.ports.0 + i as u16)
    }
}

impl FromStr for ProxyAddr {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| NetworkError::invalid(format!("Invalid proxy address {s:?}: {why}"));
        let (proto, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected <tcp|udp>:<address>:<port>"))?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "unix" => return Err(bad("unix sockets are not supported")),
            _ => return Err(bad("the protocol must be tcp or udp")),
        };
        let (addr, ports) = if let Some(r) = rest.strip_prefix('[') {
            let (a, p) = r
                .split_once("]:")
                .ok_or_else(|| bad("expected [<IPv6>]:<port>"))?;
            (a, p)
        } else {
            rest.rsplit_once(':')
                .ok_or_else(|| bad("expected <address>:<port>"))?
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let port = |p: &str| -> Result<u16> {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("ports are numbers from 1 to 65535"))
        };
        let ports = match ports.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(ports)?, port(ports)?),
        };
        if ports.0 > ports.1 {
            return Err(bad("the port range is reversed"));
        }
        Ok(ProxyAddr {
            protocol,
            addr,
            ports,
        })
    }
}

/// Checks a listen/connect pair: same protocol, and the connect side is one port or a range
/// as long as the listen side.
pub fn check_pair(listen: &ProxyAddr, connect: &ProxyAddr) -> Result<()> {
    if listen.protocol != connect.protocol {
        return Err(NetworkError::invalid(
            "Proxy listen and connect protocols differ",
        ));
    }
    if connect.port_count() != 1 && connect.port_count() != listen.port_count() {
        return Err(NetworkError::invalid(
            "Proxy connect must be one port or a range as long as the listen range",
        ));
    }
    Ok(())
}

/// Where sockets of one side are made: the host's namespace, or a process's.
#[derive(Debug, Clone)]
pub enum Netns {
    Host,
    /// The namespace of this pid (the instance's init), opened afresh for every socket so
    /// a forwarder never pins the namespace of a stopped instance.
    Pid(i32),
}

impl Netns {
    fn path(&self) -> Option<PathBuf> {
        match self {
            Netns::Host => None,
            Netns::Pid(pid) => Some(PathBuf::from(format!("/proc/{pid}/ns/net"))),
        }
    }
}

/// Runs `f` on a thread that has joined `ns`; a socket made there belongs to `ns` for good.
pub fn in_netns<T: Send>(
    ns: &Netns,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    let Some(path) = ns.path() else {
        return f();
    };
    let file = File::open(&path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
    })
}

fn raw_socket(addr: &SocketAddr, ty: SockType) -> std::io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    socket(
        family,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(Into::into)
}

async fn tcp_listener(ns: &Netns, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let std_listener = in_netns(ns, || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    TcpListener::from_std(std_listener)
}

async fn tcp_connect(ns: &Netns, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let fd = in_netns(ns, || raw_socket(&addr, SockType::Stream))?;
    // SAFETY: fd is a fresh, owned, non-blocking TCP socket; TcpSocket takes ownership.
    let sock = unsafe { TcpSocket::from_raw_fd(fd.into_raw_fd()) };
    sock.connect(addr).await
}

async fn udp_socket(
    ns: &Netns,
    bind: Option<SocketAddr>,
    like: SocketAddr,
) -> std::io::Result<UdpSocket> {
    let std_sock = in_netns(ns, || {
        let s = match bind {
            Some(b) => std::net::UdpSocket::bind(b)?,
            None => {
                let any: SocketAddr = if like.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap()
                } else {
                    "[::]:0".parse().unwrap()
                };
                std::net::UdpSocket::bind(any)?
            }
        };
        s.set_nonblocking(true)?;
        Ok(s)
    })?;
    UdpSocket::from_std(std_sock)
}

/// A running forwarder; dropping it closes its listeners and connections.
#[derive(Debug)]
pub struct Forwarder {
    tasks: JoinSet<()>,
}

impl Forwarder {
    /// Binds every listen port in `listen_ns` (so errors such as a taken port come back
    /// now) and forwards each connection or datagram flow to `connect` in `connect_ns`.
    pub async fn start(
        listen_ns: Netns,
        listen: ProxyAddr,
        connect_ns: Netns,
        connect: ProxyAddr,
    ) -> Result<Self> {
        check_pair(&listen, &connect)?;
        let mut tasks = JoinSet::new();
        let connect_ns = Arc::new(connect_ns);
        for i in 0..listen.port_count() {
            let target = connect.socket(if connect.port_count() == 1 { 0 } else { i });
            let at = listen.socket(i);
            let bind_err =
                |e: std::io::Error| NetworkError::invalid(format!("Failed to listen on {at}: {e}"));
            match listen.protocol {
                Protocol::Tcp => {
                    let l = tcp_listener(&listen_ns, at).await.map_err(bind_err)?;
                    tasks.spawn(serve_tcp(l, connect_ns.clone(), target));
                }
                Protocol::Udp => {
                    let s = udp_socket(&listen_ns, Some(at), at)
                        .await
                        .map_err(bind_err)?;
                    tasks.spawn(serve_udp(Arc::new(s), connect_ns.clone(), target));
                }
            }
        }
        Ok(Forwarder { tasks })
    }

    /// Stops forwarding; the listeners close soon after.
    pub fn stop(mut self) {
        self.tasks.abort_all();
    }

    /// Stops forwarding and waits until the listeners are closed (so their ports can be
    /// bound again at once).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn serve_tcp(listener: TcpListener, ns: Arc<Netns>, target: SocketAddr) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut inbound, _)) = accepted else { continue };
                let ns = ns.clone();
                conns.spawn(async move {
                    match tcp_connect(&ns, target).await {
                        Ok(mut outbound) => {
                            let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(e) => tracing::debug!("proxy connect to {target}: {e}"),
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// UDP: one connected socket on the target side per client, idle ones closed after a minute.
async fn serve_udp(sock: Arc<UdpSocket>, ns: Arc<Netns>, target: SocketAddr) {
    use std::collections::HashMap;
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, client)) = r else { continue };
                let flow = match flows.get(&client) {
                    Some(f) => f.clone(),
                    None => {
                        let Ok(out) = udp_socket(&ns, None, target).await else { continue };
                        if out.connect(target).await.is_err() { continue }
                        let out = Arc::new(out);
                        flows.insert(client, out.clone());
                        let (back, out2) = (sock.clone(), out.clone());
                        replies.spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(60), out2.recv(&mut buf)).await {
                                let _ = back.send_to(&buf[..n], client).await;
                            }
                            client
                        });
                        out
                    }
                };
                let _ = flow.send(&buf[..n]).await;
            }
            Some(Ok(client)) = replies.join_next(), if !replies.is_empty() => {
                flows.remove(&client);
            }
        }
    }
}

/// What one proxy process serves (`hutchd-helper __proxy <spec file>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxySpec {
    pub listen: String,
    pub connect: String,
    /// Listen inside the instance and connect on the host (`bind=instance`), instead of
    /// the other way round.
    pub bind_instance: bool,
    /// The instance's init: whose network namespace it crosses into, and whose end is the
    /// proxy's end.
    pub instance_pid: i32,
}

/// The first line a proxy process writes on stdout once its ports are bound.
pub const PROXY_READY: &str = "ready";

/// A proxy process, LXD's forkproxy in kind: it detaches (a session of its own, and a
/// parent that exits at once, so it is nobody's child), binds its ports, says
/// `ready <pid>` or `error <reason>` on stdout, then forwards until the instance's init
/// exits or it is killed. It outlives daemon restarts. Must run before any thread starts.
pub fn proxy_main(spec_file: &std::path::Path) -> ! {
    let fail = |msg: String| -> ! {
        println!("error {msg}");
        std::process::exit(1)
    };
    let spec: ProxySpec = match std::fs::read(spec_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => fail(format!("{}: {e}", spec_file.display())),
    };
    let _ = nix::unistd::setsid();
    // SAFETY: single-threaded here; the parent leaves with _exit at once.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => fail(format!("fork: {e}")),
    }
    // SAFETY: plain syscall with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, spec.instance_pid, 0) };
    if pidfd < 0 {
        fail(format!("instance init {} is gone", spec.instance_pid));
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(format!("runtime: {e}")),
    };
    let result = runtime.block_on(async move {
        let listen: ProxyAddr = spec.listen.parse()?;
        let connect: ProxyAddr = spec.connect.parse()?;
        let (lns, cns) = if spec.bind_instance {
            (Netns::Pid(spec.instance_pid), Netns::Host)
        } else {
            (Netns::Host, Netns::Pid(spec.instance_pid))
        };
        let forwarder = Forwarder::start(lns, listen, cns, connect).await?;
        println!("{PROXY_READY} {}", std::process::id());
        // Nothing more on stdout: the daemon reads up to its end.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
        }
        // Readable once the instance's init has exited.
        // SAFETY: an OwnedFd, owned by the AsyncFd from here on: valid, and the same fd
        // for its whole life.
        let ended = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
            .map_err(|e| NetworkError::invalid(format!("watch the instance: {e}")))?;
        let _ = ended.readable().await;
        forwarder.stop();
        Ok::<(), NetworkError>(())
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => fail(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        let a: ProxyAddr = "tcp:0.0.0.0:8080".parse().unwrap();
        assert_eq!(a.protocol, Protocol::Tcp);
        assert_eq!(a.ports, (8080, 8080));
        let a: ProxyAddr = "udp:[::1]:5000-5010".parse().unwrap();
        assert_eq!(a.addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(a.port_count(), 11);
        assert_eq!(a.socket(2).port(), 5002);
        for bad in [
            "tcp:1.2.3.4",
            "sctp:1.2.3.4:1",
            "tcp:host:80",
            "tcp:1.2.3.4:0",
            "tcp:1.2.3.4:9-8",
            "unix:/x",
        ] {
            assert!(bad.parse::<ProxyAddr>().unwrap_err().is_invalid(), "{bad}");
        }
    }

    #[test]
    fn pairs_must_match() {
        let p = |s: &str| s.parse::<ProxyAddr>().unwrap();
        assert!(check_pair(&p("tcp:0.0.0.0:80-81"), &p("tcp:127.0.0.1:80")).is_ok());
        assert!(check_pair(&p("tcp:0.0.0.0:80-81"), &p("tcp:127.0.0.1:90-91")).is_ok());
        assert!(check_pair(&p("tcp:0.0.0.0:80-81"), &p("tcp:127.0.0.1:90-92")).is_err());
        assert!(check_pair(&p("tcp:0.0.0.0:80"), &p("udp:127.0.0.1:80")).is_err());
    }

    #[tokio::test]
    async fn forwards_udp_both_ways_on_loopback() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            let (n, from) = echo.recv_from(&mut b).await.unwrap();
            echo.send_to(&b[..n], from).await.unwrap();
        });
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen: ProxyAddr = format!("udp:127.0.0.1:{port}").parse().unwrap();
        let connect: ProxyAddr = format!("udp:127.0.0.1:{echo_port}").parse().unwrap();
        let fwd = Forwarder::start(Netns::Host, listen, Netns::Host, connect)
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(("127.0.0.1", port)).await.unwrap();
        client.send(b"ping").await.unwrap();
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&b[..n], b"ping");
        fwd.shutdown().await;
        // The port is free again at once.
        std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
    }

    #[tokio::test]
    async fn forwards_tcp_on_loopback() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_port = echo.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        // Pick a free port for the listener.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listen: ProxyAddr = format!("tcp:127.0.0.1:{port}").parse().unwrap();
        let connect: ProxyAddr = format!("tcp:127.0.0.1:{echo_port}").parse().unwrap();
        let fwd = Forwarder::start(Netns::Host, listen, Netns::Host, connect)
            .await
            .unwrap();
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hello");
        fwd.stop();
    }
}
