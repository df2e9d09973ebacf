//! Network pieces of the harness: removal of a daemon's bridges, dnsmasq and nftables
//! tables (even when a test panics), test-made namespaces and veth pairs, and checks that
//! nothing of a network is left.

use std::path::Path;
use std::process::Command;

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether host interface `name` exists.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// `nft list tables` names starting with `prefix`.
pub fn nft_tables(prefix: &str) -> Vec<String> {
    let out = Command::new("nft").args(["list", "tables"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .filter(|t| t.starts_with(prefix))
        .collect()
}

/// The full text of nftables table `inet <name>`.
pub fn nft_table(name: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", name])
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The nftables prefix of a daemon whose cgroup prefix is `hutch-xxxxxxxx`.
pub fn nft_prefix(cgroup_prefix: &str) -> String {
    format!("{}_", cgroup_prefix.replace('-', "_"))
}

/// Removes what the daemon in `dir` made for its networks: each dnsmasq (by its pid file),
/// each bridge (named after its directory), and the daemon's nftables tables.
pub fn remove_daemon_networks(dir: &Path, cgroup_prefix: &str) {
    if let Ok(rd) = std::fs::read_dir(dir.join("networks")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(pid) = std::fs::read_to_string(e.path().join("dnsmasq.pid")) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if link_exists(&name) {
                let _ = Command::new("ip").args(["link", "del", &name]).status();
            }
        }
    }
    for t in nft_tables(&nft_prefix(cgroup_prefix)) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &t])
            .status();
    }
}

/// Panics if the daemon's bridges `bridges` or any of its nftables tables remain.
pub fn assert_no_network_leftovers(cgroup_prefix: &str, bridges: &[&str]) {
    let mut left: Vec<String> = bridges
        .iter()
        .filter(|b| link_exists(b))
        .map(|b| b.to_string())
        .collect();
    left.extend(nft_tables(&nft_prefix(cgroup_prefix)));
    assert!(left.is_empty(), "network leftovers: {left:?}");
}

/// A network namespace made by the test (`ip netns add`), deleted on drop with whatever
/// runs in it.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(name: &str) -> Self {
        ip(&["netns", "add", name]);
        TestNetns {
            name: name.to_string(),
        }
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Processes in it first, so the namespace and its links really go.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A host link made by the test, deleted on drop.
pub struct TestLink {
    pub name: String,
}

impl TestLink {
    /// A veth pair: `name` on the host, up, and `peer` in namespace `netns`.
    pub fn veth_into(name: &str, peer: &str, netns: &TestNetns) -> Self {
        ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            &netns.name,
        ]);
        let link = TestLink {
            name: name.to_string(),
        };
        ip(&["link", "set", name, "up"]);
        link
    }
}

impl Drop for TestLink {
    fn drop(&mut self) {
        if link_exists(&self.name) {
            let _ = Command::new("ip")
                .args(["link", "del", &self.name])
                .status();
        }
    }
}

/// A network of the test's own: a bridge with the host's address `.1` of a free /24, and
/// `n` network namespaces each joined to it by a veth with address `.11`, `.12`, …; all
/// removed when dropped (the namespaces with whatever still runs in them). Cluster members
/// live apart in it as on separate hosts.
pub struct TestNet {
    /// `10.X.Y` of the /24.
    prefix: String,
    pub bridge: String,
    // Dropped before the bridge: the namespaces take their veths with them.
    pub namespaces: Vec<TestNetns>,
}

impl TestNet {
    pub fn new(n: usize) -> TestNet {
        let base = crate::unique_name("htn");
        let unique = base
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let routes = Command::new("ip")
            .args(["-4", "route", "show", "table", "all"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let prefix = (0..250u32)
            .map(|i| format!("10.{}.{}", 150 + (unique + i) % 50, (unique / 50 + i) % 250))
            .find(|p| !routes.contains(&format!("{p}.")))
            .expect("a free 10.X.Y.0/24");
        let bridge = base.clone();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let net = TestNet {
            prefix,
            bridge,
            namespaces: Vec::new(),
        };
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.host_address()),
            "dev",
            &net.bridge,
        ]);
        ip(&["link", "set", &net.bridge, "up"]);
        let mut net = net;
        for i in 0..n {
            let ns = TestNetns::new(&format!("{base}n{i}"));
            let host_end = format!("{base}v{i}");
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
            ]);
            ip(&["link", "set", &host_end, "master", &net.bridge, "up"]);
            let inside = |args: &[&str]| {
                let mut full = vec!["-n", ns.name.as_str()];
                full.extend_from_slice(args);
                ip(&full);
            };
            inside(&[
                "addr",
                "add",
                &format!("{}/24", net.address(i)),
                "dev",
                "eth0",
            ]);
            inside(&["link", "set", "eth0", "up"]);
            inside(&["link", "set", "lo", "up"]);
            net.namespaces.push(ns);
        }
        net
    }

    /// The host's address on the bridge.
    pub fn host_address(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Namespace `i`'s address.
    pub fn address(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 11 + i)
    }

    /// Namespace `i`'s name.
    pub fn netns(&self, i: usize) -> &str {
        &self.namespaces[i].name
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // The namespaces (and the veths in them) first, then the bridge.
        self.namespaces.clear();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}
