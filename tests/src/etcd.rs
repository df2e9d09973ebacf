//! etcd on loopback for the cluster tests: Debian's `etcd-server`, one member or a cluster
//! of several, each on free client and peer ports with its data under a given directory;
//! stopped (killed and reaped) when dropped, and restartable on the same data and ports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

const ETCD: &str = "/usr/bin/etcd";

pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    name: String,
    /// etcd's `--initial-cluster`: every member's name and peer URL.
    initial_cluster: String,
    /// The address it listens on (loopback, or a test bridge's).
    host: String,
    /// Clients over TLS only, each with a certificate `client_ca` admits.
    tls: Option<EtcdTls>,
}

/// The files of an etcd that speaks TLS to its clients.
#[derive(Clone)]
pub struct EtcdTls {
    /// Its certificate and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificates a client must chain to (`--trusted-ca-file`).
    pub client_ca: PathBuf,
    /// Where `/health` is served over plain HTTP (`--listen-metrics-urls`).
    metrics_port: u16,
}

impl Etcd {
    /// Why etcd cannot run here, if it cannot.
    pub fn missing() -> Option<&'static str> {
        (!Path::new(ETCD).exists()).then_some("etcd is not installed (package etcd-server)")
    }

    /// Starts a one-member etcd with its data and log under `dir`.
    pub fn start(dir: &Path) -> Etcd {
        Self::start_one(dir, None)
    }

    /// A one-member etcd on loopback whose clients speak TLS: it presents `cert` (with
    /// `key`) and admits only clients whose certificate `client_ca` vouches for.
    pub fn start_tls(dir: &Path, cert: &Path, key: &Path, client_ca: &Path) -> Etcd {
        let tls = EtcdTls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            client_ca: client_ca.to_path_buf(),
            metrics_port: free_port(),
        };
        Self::start_one(dir, Some(tls))
    }

    /// A one-member etcd on loopback, on free ports, healthy when returned.
    fn start_one(dir: &Path, tls: Option<EtcdTls>) -> Etcd {
        let peer_port = free_port();
        let mut etcd = Etcd {
            child: None,
            client_port: free_port(),
            peer_port,
            dir: dir.join("etcd"),
            name: "e1".into(),
            initial_cluster: format!("e1=http://127.0.0.1:{peer_port}"),
            host: "127.0.0.1".into(),
            tls,
        };
        etcd.spawn();
        etcd.wait_healthy();
        etcd
    }

    /// Starts an etcd cluster of `n` members (`e1`…), their data under `dir`; returns once
    /// it has a quorum.
    pub fn start_cluster(dir: &Path, n: usize) -> Vec<Etcd> {
        Self::start_cluster_on(dir, n, "127.0.0.1")
    }

    /// [`start_cluster`](Self::start_cluster) listening on `host` (a test bridge's
    /// address, for members in network namespaces of their own).
    pub fn start_cluster_on(dir: &Path, n: usize, host: &str) -> Vec<Etcd> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{}=http://{host}:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Etcd> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| Etcd {
                child: None,
                client_port: *client,
                peer_port: *peer,
                dir: dir.join(format!("etcd{}", i + 1)),
                name: format!("e{}", i + 1),
                initial_cluster: initial_cluster.clone(),
                host: host.to_string(),
                tls: None,
            })
            .collect();
        // All at once: a member is healthy only once a quorum runs.
        for m in &mut members {
            m.spawn();
        }
        for m in &members {
            m.wait_healthy();
        }
        members
    }

    /// The client URLs of `members`, comma-separated (`cluster.etcd_endpoints`).
    pub fn urls(members: &[Etcd]) -> String {
        members.iter().map(Etcd::url).collect::<Vec<_>>().join(",")
    }

    /// The client URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("etcd dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log");
        let peer = format!("http://{}:{}", self.host, self.peer_port);
        let mut cmd = Command::new(ETCD);
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg("--client-cert-auth")
                .arg(format!("--trusted-ca-file={}", tls.client_ca.display()))
                .arg(format!(
                    "--listen-metrics-urls=http://127.0.0.1:{}",
                    tls.metrics_port
                ));
        }
        let child = cmd
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-token=hutch-test")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// Waits until it answers its health endpoint (etcd's own gateway) well: it has a
    /// quorum.
    fn wait_healthy(&self) {
        let port = self
            .tls
            .as_ref()
            .map_or(self.client_port, |t| t.metrics_port);
        wait_until("etcd answers", Duration::from_secs(60), || {
            http_get(&self.host, port, "/health").is_some_and(|b| b.contains("\"health\":\"true\""))
        });
    }

    /// Kills it (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and ports (and waits for its health when it is
    /// alone: a member of a cluster may have to wait for the others).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        if !self.initial_cluster.contains(',') {
            self.wait_healthy();
        }
    }

    /// The keys under `prefix`, through etcd's JSON gateway (`POST /v3/kv/range`).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({
            "key": b64.encode(prefix),
            "range_end": b64.encode(&end),
            "keys_only": true,
        })
        .to_string();
        let answer =
            http_post(&self.host, self.client_port, "/v3/kv/range", &body).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        v["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| kv["key"].as_str())
            .filter_map(|k| b64.decode(k).ok())
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http(host: &str, port: u16, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect((host, port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    conn.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

fn http_get(host: &str, port: u16, path: &str) -> Option<String> {
    http(
        host,
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
}

fn http_post(host: &str, port: u16, path: &str, body: &str) -> Option<String> {
    http(
        host,
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}
