//! End-to-end networking: managed bridges with real dnsmasq and nftables, NICs plugged
//! into busybox containers, proxies, and macvlan. Traffic goes only to loopback and to
//! addresses on bridges and namespaces these tests make. Needs root; each test has its own
//! daemon and unique names, and removes everything it made.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hutch_tests::daemon::cgroup_prefix;
use hutch_tests::network::{
    assert_no_network_leftovers, link_exists, nft_prefix, nft_table, nft_tables, TestLink,
    TestNetns,
};
use hutch_tests::{assert_no_leftovers, require_root, unique_name, wait_until, TestDaemon, Via};
use serde_json::Value;

/// A daemon (no network of its own) with the busybox image imported as `bb`.
fn daemon_with_image(init: &[&str]) -> TestDaemon {
    let d = TestDaemon::start_with(init);
    d.import_busybox(Via::Lxc);
    d
}

fn json(d: &TestDaemon, path: &str) -> Value {
    let (code, body) = d.http("GET", path, b"");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str::<Value>(&body).expect("json")["metadata"].clone()
}

/// The instance's first IPv4 address, as `lxc list` shows it.
fn ipv4_of(d: &TestDaemon, name: &str) -> Option<String> {
    let out = d.lxc_ok(&["list", name, "--format", "csv", "-c", "4"]);
    out.split_whitespace()
        .next()
        .map(str::to_string)
        .filter(|s| s.contains('.'))
}

fn wait_for_ipv4(d: &TestDaemon, name: &str) -> String {
    wait_until(
        &format!("an IPv4 address on {name}"),
        Duration::from_secs(20),
        || ipv4_of(d, name).is_some(),
    );
    ipv4_of(d, name).unwrap()
}

/// The network's subnet prefix, `10.1.2.` of `10.1.2.1/24`, and the host's address.
fn subnet_of(d: &TestDaemon, net: &str) -> (String, String) {
    let cidr = json(d, &format!("/1.0/networks/{net}"))["config"]["ipv4.address"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = cidr.split('/').next().unwrap().to_string();
    assert!(cidr.ends_with("/24"), "{cidr}");
    (addr.rsplit_once('.').unwrap().0.to_string() + ".", addr)
}

/// GET / over HTTP/1.0 to `addr`, returning the body.
fn http_get(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve_http(d: &TestDaemon, name: &str, body: &str) {
    d.lxc_ok(&[
        "exec",
        name,
        "--",
        "sh",
        "-c",
        &format!("mkdir -p /www && echo {body} > /www/index.html && httpd -p 80 -h /www"),
    ]);
}

#[test]
fn containers_on_a_bridge_get_leases_resolve_and_ping_each_other() {
    if !require_root("containers_on_a_bridge_get_leases_resolve_and_ping_each_other") {
        return;
    }
    let d = daemon_with_image(&[]);
    let prefix = cgroup_prefix(d.path());
    let (net, net2) = (unique_name("hbr"), unique_name("hbs"));
    // NAT stays off here: it would turn on the host's forwarding (the NAT test covers it).
    d.lxc_ok(&["network", "create", &net, "ipv4.nat=false"]);
    assert!(link_exists(&net));
    let (subnet, gateway) = subnet_of(&d, &net);
    assert!(nft_table(&format!(
        "{}net_{}",
        nft_prefix(&prefix),
        net.replace('-', "_")
    ))
    .contains("udp dport { 53, 67, 547 } accept"));

    for c in ["c1", "c2"] {
        d.lxc_ok(&["init", "bb", c]);
        d.lxc_ok(&[
            "config",
            "device",
            "add",
            c,
            "eth0",
            "nic",
            &format!("network={net}"),
            "name=eth0",
        ]);
        d.lxc_ok(&["start", c]);
    }
    let ip1 = wait_for_ipv4(&d, "c1");
    let ip2 = wait_for_ipv4(&d, "c2");
    assert!(
        ip1.starts_with(&subnet) && ip2.starts_with(&subnet),
        "{ip1} {ip2} in {subnet}0/24"
    );
    assert_ne!(ip1, ip2);

    // dnsmasq answers for both names, and the containers reach each other by name.
    let look = d.lxc_ok(&[
        "exec", "c1", "--", "nslookup", "-type=a", "c2.hutch", &gateway,
    ]);
    assert!(look.contains(&ip2), "{look}");
    let ping = d.lxc_ok(&["exec", "c1", "--", "ping", "-c", "1", "-W", "5", "c2"]);
    assert!(ping.contains("1 packets received"), "{ping}");
    let ping = d.lxc_ok(&["exec", "c2", "--", "ping", "-c", "1", "-W", "5", &ip1]);
    assert!(ping.contains("1 packets received"), "{ping}");

    // Leases, and the instance state with the host side of the veth on the bridge.
    let leases = d.lxc_ok(&["network", "list-leases", &net, "--format", "csv"]);
    assert!(leases.contains("c1,") && leases.contains(&ip1), "{leases}");
    assert!(leases.contains(&ip2), "{leases}");
    let state = json(&d, "/1.0/instances/c1/state");
    let eth0 = &state["network"]["eth0"];
    assert_eq!(eth0["addresses"][0]["address"], ip1.as_str(), "{state}");
    assert_eq!(eth0["addresses"][0]["netmask"], "24");
    assert!(eth0["counters"]["packets_received"].as_u64().unwrap() > 0);
    let host_name = eth0["host_name"].as_str().unwrap().to_string();
    assert!(
        std::fs::read_link(format!("/sys/class/net/{host_name}/master"))
            .unwrap()
            .ends_with(&net)
    );
    let hwaddr = eth0["hwaddr"].as_str().unwrap().to_string();
    let volatile = d.lxc_ok(&["config", "get", "c1", "volatile.eth0.hwaddr"]);
    assert_eq!(volatile.trim(), hwaddr, "the MAC is kept in volatile");

    // A static address, honoured after a restart and listed as a static lease.
    let fixed = format!("{subnet}50");
    d.lxc_ok(&[
        "config",
        "device",
        "set",
        "c2",
        "eth0",
        &format!("ipv4.address={fixed}"),
    ]);
    d.lxc_ok(&["restart", "c2", "--force"]);
    wait_until("c2's static address", Duration::from_secs(20), || {
        ipv4_of(&d, "c2").as_deref() == Some(fixed.as_str())
    });
    let leases = d.lxc_ok(&["network", "list-leases", &net, "--format", "csv"]);
    assert!(leases.contains(&format!("{fixed},STATIC")), "{leases}");
    let bad = d.lxc(&[
        "config",
        "device",
        "set",
        "c2",
        "eth0",
        "ipv4.address=192.0.2.9",
    ]);
    assert!(
        !bad.status.success(),
        "an address outside the subnet is refused"
    );
    // The static address is c2's: another instance asking for it does not start, and
    // leaves nothing behind.
    d.lxc_ok(&["init", "bb", "c3"]);
    d.lxc_ok(&[
        "config",
        "device",
        "add",
        "c3",
        "eth0",
        "nic",
        &format!("network={net}"),
        &format!("ipv4.address={fixed}"),
    ]);
    let dup = d.lxc(&["start", "c3"]);
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("already in use"),
        "{dup:?}"
    );
    assert_eq!(
        d.lxc_ok(&["list", "c3", "--format", "csv", "-c", "s"])
            .trim(),
        "STOPPED"
    );
    d.lxc_ok(&["delete", "c3"]);

    // Hot-plug a NIC on a second network into running c1, then unplug it.
    d.hutch_ok(&["network", "create", &net2, "ipv4.nat=false"]);
    let (subnet2, _) = subnet_of(&d, &net2);
    d.hutch_ok(&["network", "attach", &net2, "c1", "eth1", "eth1"]);
    let lease = d.lxc_ok(&[
        "exec",
        "c1",
        "--",
        "sh",
        "-c",
        "udhcpc -i eth1 -q -n -t 10 -T 1 -s /etc/udhcpc.script 2>&1",
    ]);
    assert!(lease.contains("obtained"), "{lease}");
    let addrs = d.lxc_ok(&["exec", "c1", "--", "ip", "-4", "addr", "show", "eth1"]);
    assert!(addrs.contains(&subnet2), "{addrs}");
    d.hutch_ok(&["network", "detach", &net2, "c1"]);
    let links = d.lxc_ok(&["exec", "c1", "--", "ip", "link"]);
    assert!(!links.contains("eth1"), "{links}");

    // Refusals: a network in use, an overlapping subnet, a bad address, a missing network.
    let busy = d.lxc(&["network", "delete", &net]);
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use"),
        "{busy:?}"
    );
    let overlap = d.lxc(&[
        "network",
        "create",
        &unique_name("hbo"),
        &format!("ipv4.address={subnet}77/24"),
    ]);
    assert!(
        String::from_utf8_lossy(&overlap.stderr).contains("overlaps"),
        "{overlap:?}"
    );
    let (code, body) = d.http(
        "POST",
        "/1.0/networks",
        br#"{"name":"hbadnet","config":{"ipv4.address":"10.1.2.3"}}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(!link_exists("hbadnet"));
    // A missing network; options hutch does not implement, refused by name rather than
    // silently ignored; unknown options.
    let on_net = format!("network={net}");
    for (options, says) in [
        (["network=no-such-net", "name=eth9"], "not found"),
        ([on_net.as_str(), "limits.ingress=10Mbit"], "not supported"),
        (
            [on_net.as_str(), "security.mac_filtering=true"],
            "not supported",
        ),
        (
            [on_net.as_str(), "no.such.option=1"],
            "Invalid device option",
        ),
    ] {
        let mut args = vec!["config", "device", "add", "c1", "eth9", "nic"];
        args.extend(options);
        let out = d.lxc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{options:?}: {err}"
        );
    }

    // Everything goes: instances, then networks (bridge, dnsmasq, nft table).
    d.lxc_ok(&["delete", "--force", "c1", "c2"]);
    assert!(
        !link_exists(&host_name),
        "the host end of the veth went with the container"
    );
    // c1's lease is released to dnsmasq (which rewrites its lease file), not kept for
    // its hour: churn would otherwise run the range dry.
    wait_until("c1's lease released", Duration::from_secs(10), || {
        !d.lxc_ok(&["network", "list-leases", &net, "--format", "csv"])
            .contains(&ip1)
    });
    d.lxc_ok(&["network", "delete", &net]);
    d.hutch_ok(&["network", "delete", &net2]);
    assert_no_network_leftovers(&prefix, &[&net, &net2]);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}

/// Restores `net.ipv4.ip_forward` on drop: NAT turns it on, as LXD does.
struct ForwardingGuard(String);

impl ForwardingGuard {
    fn new() -> Self {
        ForwardingGuard(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap())
    }
}

impl Drop for ForwardingGuard {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", self.0.trim());
    }
}

#[test]
fn init_network_nat_and_port_forwarding_survive_a_daemon_restart() {
    if !require_root("init_network_nat_and_port_forwarding_survive_a_daemon_restart") {
        return;
    }
    let _forwarding = ForwardingGuard::new();
    let net = unique_name("hbn");
    let mut d = daemon_with_image(&["--network-bridge", &net]);
    let prefix = cgroup_prefix(d.path());
    let table = format!("{}net_{}", nft_prefix(&prefix), net.replace('-', "_"));

    // init --auto made the bridge with NAT, and put eth0 on it in the default profile.
    let (subnet, gateway) = subnet_of(&d, &net);
    let rules = nft_table(&table);
    assert!(
        rules.contains(&format!(
            "ip saddr {subnet}0/24 ip daddr != {subnet}0/24 masquerade"
        )),
        "{rules}"
    );
    let profile = d.lxc_ok(&["profile", "show", "default"]);
    assert!(profile.contains(&format!("network: {net}")), "{profile}");

    let fixed = format!("{subnet}60");
    d.lxc_ok(&["init", "bb", "web"]);
    d.lxc_ok(&[
        "config",
        "device",
        "override",
        "web",
        "eth0",
        &format!("ipv4.address={fixed}"),
    ]);
    d.lxc_ok(&["start", "web"]);
    wait_until("web's address", Duration::from_secs(20), || {
        ipv4_of(&d, "web").as_deref() == Some(fixed.as_str())
    });
    serve_http(&d, "web", "hello-from-web");

    // A userspace proxy from host loopback into the container's loopback...
    let port = free_port();
    d.lxc_ok(&[
        "config",
        "device",
        "add",
        "web",
        "site",
        "proxy",
        &format!("listen=tcp:127.0.0.1:{port}"),
        "connect=tcp:127.0.0.1:80",
    ]);
    assert_eq!(
        http_get(&format!("127.0.0.1:{port}")).trim(),
        "hello-from-web"
    );
    // ...and a kernel one (DNAT) from the bridge's address to the static one.
    let nat_port = free_port();
    d.lxc_ok(&[
        "config",
        "device",
        "add",
        "web",
        "fast",
        "proxy",
        &format!("listen=tcp:{gateway}:{nat_port}"),
        "connect=tcp:0.0.0.0:80",
        "nat=true",
    ]);
    let proxy_table = format!("{}proxy_web", nft_prefix(&prefix));
    let rules = nft_table(&proxy_table);
    assert!(rules.contains(&format!("dnat ip to {fixed}:80")), "{rules}");
    assert_eq!(
        http_get(&format!("{gateway}:{nat_port}")).trim(),
        "hello-from-web"
    );
    let bad = d.lxc(&[
        "config",
        "device",
        "add",
        "web",
        "bad",
        "proxy",
        "listen=tcp:127.0.0.1:x",
        "connect=tcp:127.0.0.1:80",
    ]);
    assert!(!bad.status.success());
    // The other way round: a port inside the container forwarded to a server on the host.
    let host_server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host_server.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = host_server.accept().unwrap();
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nhello-from-host")
            .unwrap();
    });
    d.lxc_ok(&[
        "config",
        "device",
        "add",
        "web",
        "back",
        "proxy",
        "bind=instance",
        "listen=tcp:127.0.0.1:8081",
        &format!("connect=tcp:127.0.0.1:{host_port}"),
    ]);
    let got = d.lxc_ok(&[
        "exec",
        "web",
        "--",
        "wget",
        "-qO-",
        "http://127.0.0.1:8081/",
    ]);
    assert_eq!(got, "hello-from-host");
    server.join().unwrap();
    d.lxc_ok(&["config", "device", "remove", "web", "back"]);

    // kill -9 of the daemon: dnsmasq, the container's address and the proxies stay (the
    // forwarders are processes of their own, adopted by the next daemon).
    let dnsmasq_pid =
        std::fs::read_to_string(d.path().join(format!("networks/{net}/dnsmasq.pid"))).unwrap();
    let proxies_before = std::fs::read_to_string(d.path().join("containers/web/proxies.json"))
        .expect("the forwarders are recorded");
    d.kill();
    assert_eq!(
        http_get(&format!("127.0.0.1:{port}")).trim(),
        "hello-from-web",
        "the proxy forwards while the daemon is down"
    );
    // A table of this daemon that nothing owns (as a crash could leave) is reconciled away.
    let stale = format!("{}net_gone", nft_prefix(&prefix));
    assert!(Command::new("nft")
        .args(["add", "table", "inet", &stale])
        .status()
        .unwrap()
        .success());
    d.spawn();
    assert!(
        nft_tables(&stale).is_empty(),
        "the stale table {stale} is left"
    );
    let after =
        std::fs::read_to_string(d.path().join(format!("networks/{net}/dnsmasq.pid"))).unwrap();
    assert_eq!(dnsmasq_pid, after, "dnsmasq was adopted, not restarted");
    assert_eq!(ipv4_of(&d, "web").as_deref(), Some(fixed.as_str()));
    assert_eq!(
        std::fs::read_to_string(d.path().join("containers/web/proxies.json")).unwrap(),
        proxies_before,
        "the same forwarders were adopted, not restarted"
    );
    assert_eq!(
        http_get(&format!("127.0.0.1:{port}")).trim(),
        "hello-from-web"
    );
    assert_eq!(
        http_get(&format!("{gateway}:{nat_port}")).trim(),
        "hello-from-web"
    );

    // A dead dnsmasq is restarted by the supervisor.
    let pid: i32 = after.trim().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("dnsmasq restarted", Duration::from_secs(10), || {
        std::fs::read_to_string(d.path().join(format!("networks/{net}/dnsmasq.pid")))
            .is_ok_and(|p| p.trim() != pid.to_string() && !p.trim().is_empty())
    });

    // Stopping removes the proxies; deleting the network removes its table.
    d.lxc_ok(&["stop", "web", "--force"]);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(nft_tables(&proxy_table).is_empty());
    d.lxc_ok(&["delete", "web"]);
    d.lxc_ok(&["profile", "device", "remove", "default", "eth0"]);
    d.lxc_ok(&["network", "delete", &net]);
    assert_no_network_leftovers(&prefix, &[&net]);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}

/// dnsmasq serving DHCP on `iface` inside `ns`, its files in `dir`.
fn dhcp_server(ns: &TestNetns, iface: &str, range: &str, dir: &std::path::Path) -> Child {
    ns.command("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--except-interface=lo",
            "--conf-file=/dev/null",
        ])
        .arg(format!("--interface={iface}"))
        .arg(format!("--dhcp-range={range}"))
        .arg(format!(
            "--pid-file={}",
            dir.join("test-dhcp.pid").display()
        ))
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.join("test-dhcp.leases").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq")
}

#[test]
fn macvlan_nic_gets_its_address_from_the_parent_network() {
    if !require_root("macvlan_nic_gets_its_address_from_the_parent_network") {
        return;
    }
    let d = daemon_with_image(&[]);
    let prefix = cgroup_prefix(d.path());
    // A "physical network": a namespace behind a veth, with its own DHCP server.
    let ns = TestNetns::new(&unique_name("hns"));
    let parent = TestLink::veth_into(&unique_name("hmv"), "lan0", &ns);
    for args in [
        &["addr", "add", "172.31.250.1/24", "dev", "lan0"][..],
        &["link", "set", "lan0", "up"],
    ] {
        let st = ns.command("ip").args(args).status().unwrap();
        assert!(st.success());
    }
    let mut server = dhcp_server(&ns, "lan0", "172.31.250.100,172.31.250.150,1h", d.path());

    d.lxc_ok(&["init", "bb", "m1"]);
    d.lxc_ok(&[
        "config",
        "device",
        "add",
        "m1",
        "eth0",
        "nic",
        "nictype=macvlan",
        &format!("parent={}", parent.name),
    ]);
    d.lxc_ok(&["start", "m1"]);
    let ip = wait_for_ipv4(&d, "m1");
    assert!(ip.starts_with("172.31.250."), "{ip}");
    let ping = d.lxc_ok(&[
        "exec",
        "m1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "172.31.250.1",
    ]);
    assert!(ping.contains("1 packets received"), "{ping}");
    let bad = d.lxc(&[
        "config",
        "device",
        "add",
        "m1",
        "eth1",
        "nic",
        "nictype=macvlan",
    ]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("parent"),
        "{bad:?}"
    );

    d.lxc_ok(&["delete", "--force", "m1"]);
    let _ = server.kill();
    let _ = server.wait();
    drop(parent);
    drop(ns);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}

#[test]
fn network_api_objects_follow_lxd() {
    if !require_root("network_api_objects_follow_lxd") {
        return;
    }
    let d = TestDaemon::start();
    let net = unique_name("hba");
    let forwarding = |v: &str| std::fs::read_to_string(format!("/proc/sys/net/{v}")).unwrap();
    // IPv6 only: the NAT test, which may run meanwhile, turns IPv4 forwarding on for a while.
    let before = forwarding("ipv6/conf/all/forwarding");
    let (code, body) = d.http(
        "POST",
        "/1.0/networks",
        format!(r#"{{"name":"{net}","config":{{"ipv4.address":"auto","ipv4.nat":"false","dns.domain":"lan"}}}}"#).as_bytes(),
    );
    assert_eq!(code, 201, "{body}");
    let n = json(&d, &format!("/1.0/networks/{net}"));
    assert_eq!(n["managed"], true);
    assert_eq!(n["type"], "bridge");
    assert_eq!(n["status"], "Created");
    assert_eq!(n["locations"][0], "none");
    assert_eq!(n["config"]["dns.domain"], "lan");
    let all = json(&d, "/1.0/networks?recursion=1");
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["name"] == net.as_str()));
    let state = json(&d, &format!("/1.0/networks/{net}/state"));
    assert_eq!(state["state"], "up");
    assert_eq!(state["addresses"][0]["family"], "inet");
    let (code, _) = d.http("GET", "/1.0/networks/no-such-net", b"");
    assert_eq!(code, 404);
    let (code, body) = d.http(
        "POST",
        "/1.0/networks",
        format!(r#"{{"name":"{net}"}}"#).as_bytes(),
    );
    assert_eq!(code, 409, "{body}");
    // A change of address moves the bridge and restarts dnsmasq with it.
    d.hutch_ok(&["network", "set", &net, "ipv4.address=10.251.252.1/24"]);
    let state = json(&d, &format!("/1.0/networks/{net}/state"));
    assert_eq!(state["addresses"][0]["address"], "10.251.252.1");
    let bad = d.hutch(&["network", "set", &net, "bridge.mtu=12"], b"");
    assert!(!bad.status.success());
    assert_eq!(
        d.hutch_ok(&["network", "get", &net, "ipv4.address"]).trim(),
        "10.251.252.1/24"
    );
    // IPv6 with router advertisements, and the bridge's MTU.
    d.hutch_ok(&[
        "network",
        "set",
        &net,
        "ipv6.address=auto",
        "ipv6.nat=false",
        "bridge.mtu=1400",
    ]);
    let state = json(&d, &format!("/1.0/networks/{net}/state"));
    assert_eq!(state["mtu"], 1400);
    let v6: Vec<&Value> = state["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet6" && a["scope"] == "global")
        .collect();
    assert!(
        v6[0]["address"].as_str().unwrap().starts_with("fd42:"),
        "{state}"
    );
    let info = d.hutch_ok(&["network", "info", &net]);
    assert!(
        info.contains("10.251.252.1/24") && info.contains("MTU: 1400"),
        "{info}"
    );
    let list = d.hutch_ok(&["network", "list", "--format", "csv"]);
    assert!(
        list.contains(&format!("{net},bridge,YES,10.251.252.1/24")),
        "{list}"
    );

    // A network whose dnsmasq cannot start is not created, and leaves nothing behind.
    let broken = unique_name("hbx");
    let (code, body) = d.http(
        "POST",
        "/1.0/networks",
        format!(r#"{{"name":"{broken}","config":{{"ipv4.nat":"false","raw.dnsmasq":"no-such-option=1"}}}}"#)
            .as_bytes(),
    );
    assert!(code >= 400, "{code} {body}");
    assert!(body.contains("dnsmasq"), "{body}");
    assert!(!link_exists(&broken));
    assert!(nft_tables(&format!(
        "{}net_{}",
        nft_prefix(&cgroup_prefix(d.path())),
        broken.replace('-', "_")
    ))
    .is_empty());
    let (code, _) = d.http("GET", &format!("/1.0/networks/{broken}"), b"");
    assert_eq!(code, 404);

    let new = unique_name("hbb");
    d.hutch_ok(&["network", "rename", &net, &new]);
    assert!(link_exists(&new) && !link_exists(&net));
    d.hutch_ok(&["network", "delete", &new]);
    assert_no_network_leftovers(&cgroup_prefix(d.path()), &[&net, &new]);
    let after = forwarding("ipv6/conf/all/forwarding");
    assert_eq!(
        before, after,
        "a network without NAT leaves the host's forwarding alone"
    );
}

/// The supervisor (here every 10 ms) races requests that bring networks up and down: none
/// of them hangs, and no dnsmasq outlives its network. A delete once waited forever on a
/// dnsmasq that the supervisor had restarted under it.
#[test]
fn the_supervisor_never_races_network_changes() {
    if !require_root("the_supervisor_never_races_network_changes") {
        return;
    }
    let d = TestDaemon::start_with_env(&[], &[("HUTCH_SUPERVISE_MS", "10")]);
    let prefix = cgroup_prefix(d.path());
    let names: Vec<String> = (0..8).map(|_| unique_name("hbv")).collect();
    for net in &names {
        d.hutch_ok(&["network", "create", net, "ipv4.nat=false"]);
        d.hutch_ok(&["network", "set", net, "dns.domain=race.test"]);
        d.hutch_ok(&["network", "delete", net]);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_no_network_leftovers(&prefix, &refs);
    for net in &names {
        let pids = Command::new("pgrep")
            .args(["-f", &format!("dnsmasq .*--interface={net} ")])
            .output()
            .unwrap();
        assert!(
            pids.stdout.is_empty(),
            "a dnsmasq of {net} is left: {}",
            String::from_utf8_lossy(&pids.stdout)
        );
    }
}
