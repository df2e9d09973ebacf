//! End-to-end: what a container sees of its host. With lxcfs (a test-owned instance on a
//! private mount point, named to hutchd by `HUTCH_LXCFS_DIR`), `free`, `nproc` and /proc
//! show the container's limits; without it the container starts as before and its state
//! says the view is the host's. And names on a managed network: peers by bare name and in
//! the network's domain, NODATA (never REFUSED) for a type a name lacks, queried from the
//! containers and, on the wire, from the host to the test's own bridge.
//! Needs root; each test has its own daemon, network and lxcfs, and removes them.

use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hutch_tests::daemon::cgroup_prefix;
use hutch_tests::network::assert_no_network_leftovers;
use hutch_tests::{
    assert_no_leftovers, require_root, unique_name, wait_until, TestDaemon, TestDir, Via,
};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A daemon (no network of its own) with `env`, and the busybox image imported as `bb`.
fn daemon_with_image(env: &[(&str, &str)]) -> TestDaemon {
    let d = TestDaemon::start_with_env(&[], env);
    d.import_busybox(Via::Lxc);
    d
}

fn state(d: &TestDaemon, name: &str) -> Value {
    let (code, body) = d.http("GET", &format!("/1.0/instances/{name}/state"), b"");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).expect("json")["metadata"].clone()
}

/// Whether a test that needs `what` may be skipped: only outside CI, saying so by name.
fn skip(test: &str, why: &str) -> bool {
    if std::env::var("HUTCH_REQUIRED_TESTS").as_deref() == Ok("1") {
        panic!("{test}: {why}, and HUTCH_REQUIRED_TESTS=1 forbids skipping it");
    }
    hutch_tests::skipped(test, why);
    true
}

/// An lxcfs of the test's own, mounted in a fresh directory. On drop, even after a panic,
/// it stops lxcfs (which unmounts itself), detaches a mount it left, and the directory goes.
struct TestLxcfs {
    child: Child,
    mount: PathBuf,
    _dir: TestDir,
}

/// Why lxcfs cannot run here, if it cannot.
fn lxcfs_missing() -> Option<String> {
    let installed = Command::new("lxcfs")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !installed {
        return Some("lxcfs is not installed (apt-get install lxcfs)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    None
}

impl TestLxcfs {
    /// lxcfs on `dir`/lxcfs (made when missing); `Err` with the reason when lxcfs cannot
    /// run here.
    fn start_in(dir: TestDir) -> Result<Self, String> {
        if let Some(why) = lxcfs_missing() {
            return Err(why);
        }
        let mount = dir.path().join("lxcfs");
        std::fs::create_dir_all(&mount).expect("lxcfs mount point");
        let log = std::fs::File::create(dir.path().join("lxcfs.log")).expect("lxcfs log");
        let child = Command::new("lxcfs")
            .arg("-f")
            .arg("-p")
            .arg(dir.path().join("lxcfs.pid"))
            .arg(&mount)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("lxcfs does not start: {e}"))?;
        let l = TestLxcfs {
            child,
            mount,
            _dir: dir,
        };
        wait_until("lxcfs's mount", Duration::from_secs(10), || {
            hutch_runtime::rootfs::lxcfs::available(&l.mount)
        });
        Ok(l)
    }
}

impl Drop for TestLxcfs {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
        let _ = umount2(&self.mount, MntFlags::MNT_DETACH);
    }
}

/// The "available" column (the last) of `free -m`'s Mem line.
fn free_available_mib(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("Mem:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Mem line in {out:?}"))
}

fn meminfo_total_kib(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {text:?}"))
}

fn first_field(text: &str) -> f64 {
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {text:?}"))
}

/// Whether `mountinfo` (a container's /proc/self/mountinfo) has lxcfs's FUSE mount at `path`.
fn lxcfs_bound(mountinfo: &str, path: &str) -> bool {
    mountinfo.lines().any(|l| {
        let Some((mount, fs)) = l.split_once(" - ") else {
            return false;
        };
        mount.split(' ').nth(4) == Some(path) && fs.starts_with("fuse.lxcfs ")
    })
}

#[test]
fn lxcfs_shows_containers_their_memory_and_cpu_limits() {
    let test = "lxcfs_shows_containers_their_memory_and_cpu_limits";
    if !require_root(test) {
        return;
    }
    // Declared first, dropped last: after the daemon and its containers are gone.
    let lxcfs = match TestLxcfs::start_in(TestDir::new()) {
        Ok(l) => l,
        Err(why) => {
            skip(test, &why);
            return;
        }
    };
    let d = daemon_with_image(&[("HUTCH_LXCFS_DIR", lxcfs.mount.to_str().unwrap())]);
    let prefix = cgroup_prefix(d.path());
    let host_uptime = first_field(&std::fs::read_to_string("/proc/uptime").unwrap());
    let host_cpus = Command::new("nproc").output().expect("nproc on the host");
    let host_cpus = String::from_utf8_lossy(&host_cpus.stdout)
        .trim()
        .to_string();

    // Unprivileged and privileged alike.
    for (name, privileged) in [("unpriv", "false"), ("priv", "true")] {
        d.lxc_ok(&[
            "launch",
            "bb",
            name,
            "-c",
            "limits.memory=256MiB",
            "-c",
            "limits.cpu=1",
            "-c",
            &format!("security.privileged={privileged}"),
        ]);
        assert_eq!(state(&d, name)["resource_view"], "lxcfs", "{name}");
        let exec = |cmd: &str| d.lxc_ok(&["exec", name, "--", "sh", "-c", cmd]);

        let meminfo = exec("cat /proc/meminfo");
        assert_eq!(meminfo_total_kib(&meminfo), 256 * 1024, "{name}: {meminfo}");
        // busybox's free takes its total from sysinfo(2), which lxcfs cannot reach (as
        // under LXD); what it reads from /proc/meminfo, the available memory, is within
        // the limit. procps's free reads all of it from /proc/meminfo.
        let free = exec("free -m");
        assert!(free_available_mib(&free) <= 256, "{name}: {free}");
        assert_eq!(exec("nproc").trim(), "1", "{name}");
        let cpuinfo = exec("grep -c ^processor /proc/cpuinfo");
        assert_eq!(cpuinfo.trim(), "1", "{name}: lxcfs's cpuinfo has one CPU");
        let online = exec("cat /sys/devices/system/cpu/online");
        assert_eq!(online.trim(), "0", "{name}: the first CPU only");
        // The container's own uptime, not the host's (it started after the host did).
        let uptime = first_field(&exec("cat /proc/uptime"));
        assert!(
            uptime < host_uptime,
            "{name}: {uptime} vs host {host_uptime}"
        );
        // /proc/stat's per-CPU lines follow limits.cpu too.
        let stat_cpus = exec("grep -c '^cpu[0-9]' /proc/stat");
        assert_eq!(stat_cpus.trim(), "1", "{name}: lxcfs's stat has one CPU");
        // Each of these is lxcfs's file bound over the kernel's, and reads.
        let mountinfo = exec("cat /proc/self/mountinfo");
        for file in [
            "stat",
            "loadavg",
            "swaps",
            "diskstats",
            "meminfo",
            "cpuinfo",
        ] {
            let path = format!("/proc/{file}");
            assert!(
                lxcfs_bound(&mountinfo, &path),
                "{name}: {path} is not lxcfs's: {mountinfo}"
            );
            exec(&format!("cat {path} >/dev/null"));
        }
        assert_eq!(
            exec("cat /proc/loadavg").split_whitespace().count(),
            5,
            "{name}"
        );
        assert!(exec("cat /proc/swaps").starts_with("Filename"), "{name}");
        // Files lxcfs does not serve are the kernel's as before.
        assert!(exec("cat /proc/version").contains("Linux"));
        assert!(!lxcfs_bound(&mountinfo, "/proc/version"));
    }
    if host_cpus != "1" {
        // Without limits.cpu it sees every CPU: the view follows the limits, not a constant.
        d.lxc_ok(&["config", "unset", "unpriv", "limits.cpu"]);
        d.lxc_ok(&["restart", "unpriv", "--force"]);
        let n = d.lxc_ok(&["exec", "unpriv", "--", "nproc"]);
        assert_eq!(n.trim(), host_cpus);
        let stat_cpus = d.lxc_ok(&[
            "exec",
            "unpriv",
            "--",
            "grep",
            "-c",
            "^cpu[0-9]",
            "/proc/stat",
        ]);
        assert_eq!(stat_cpus.trim(), host_cpus);
    }

    d.lxc_ok(&["delete", "--force", "unpriv", "priv"]);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
    drop(d);
    drop(lxcfs);
}

#[test]
fn without_lxcfs_containers_start_and_say_they_see_the_host() {
    let test = "without_lxcfs_containers_start_and_say_they_see_the_host";
    if !require_root(test) {
        return;
    }
    // A directory where no lxcfs is mounted, whatever the host runs at /var/lib/lxcfs.
    let empty = TestDir::new();
    std::fs::create_dir_all(empty.path().join("proc")).unwrap();
    std::fs::write(empty.path().join("proc/meminfo"), "MemTotal: 1 kB\n").unwrap();
    let d = daemon_with_image(&[("HUTCH_LXCFS_DIR", empty.path().to_str().unwrap())]);
    let prefix = cgroup_prefix(d.path());
    d.lxc_ok(&["launch", "bb", "c1", "-c", "limits.memory=256MiB"]);
    assert_eq!(state(&d, "c1")["resource_view"], "host");
    // Where `hutch info` reads it: the instance with its state.
    let (code, body) = d.http("GET", "/1.0/instances/c1?recursion=1", b"");
    assert_eq!(code, 200, "{body}");
    let full: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(full["metadata"]["state"]["resource_view"], "host", "{body}");
    let info = d.hutch_ok(&["info", "c1"]);
    assert!(info.contains("  View of /proc: host"), "{info}");
    let host = meminfo_total_kib(&std::fs::read_to_string("/proc/meminfo").unwrap());
    let inside = d.lxc_ok(&["exec", "c1", "--", "cat", "/proc/meminfo"]);
    assert_eq!(meminfo_total_kib(&inside), host, "the host's /proc/meminfo");
    // Stopped, there is no view to tell of.
    d.lxc_ok(&["stop", "c1", "--force"]);
    assert!(state(&d, "c1").get("resource_view").is_none());
    d.lxc_ok(&["delete", "c1"]);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}

#[test]
fn an_lxcfs_started_or_stopped_later_counts_from_the_next_start() {
    let test = "an_lxcfs_started_or_stopped_later_counts_from_the_next_start";
    if !require_root(test) {
        return;
    }
    if let Some(why) = lxcfs_missing() {
        skip(test, &why);
        return;
    }
    let dir = TestDir::new();
    let mount = dir.path().join("lxcfs");
    std::fs::create_dir(&mount).unwrap();
    let d = daemon_with_image(&[("HUTCH_LXCFS_DIR", mount.to_str().unwrap())]);
    let prefix = cgroup_prefix(d.path());
    d.lxc_ok(&["launch", "bb", "c1", "-c", "limits.memory=128MiB"]);
    assert_eq!(state(&d, "c1")["resource_view"], "host");
    let total = || meminfo_total_kib(&d.lxc_ok(&["exec", "c1", "--", "cat", "/proc/meminfo"]));

    // lxcfs comes after the daemon: the next start gets it.
    let lxcfs = TestLxcfs::start_in(dir).expect("lxcfs");
    assert_eq!(
        state(&d, "c1")["resource_view"],
        "host",
        "until it restarts"
    );
    d.lxc_ok(&["restart", "c1", "--force"]);
    assert_eq!(state(&d, "c1")["resource_view"], "lxcfs");
    assert_eq!(total(), 128 * 1024);

    // lxcfs goes: the next start is the host's view again, and starts all the same.
    drop(lxcfs);
    d.lxc_ok(&["restart", "c1", "--force"]);
    assert_eq!(state(&d, "c1")["resource_view"], "host");
    assert!(total() > 128 * 1024);
    d.lxc_ok(&["delete", "--force", "c1"]);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}

/// The network's host address, from its `ipv4.address`.
fn gateway_of(d: &TestDaemon, net: &str) -> String {
    let (code, body) = d.http("GET", &format!("/1.0/networks/{net}"), b"");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let cidr = v["metadata"]["config"]["ipv4.address"].as_str().unwrap();
    cidr.split('/').next().unwrap().to_string()
}

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

/// One DNS answer, as far as these tests read it.
#[derive(Debug)]
struct Reply {
    rcode: u8,
    a: Vec<Ipv4Addr>,
    answers: u16,
}

const RCODE_NOERROR: u8 = 0;
const RCODE_NXDOMAIN: u8 = 3;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_MX: u16 = 15;

/// Asks `server` (port 53) for `name`'s records of `qtype`, over UDP.
fn dns_query(server: &str, name: &str, qtype: u16) -> Reply {
    let id: u16 = (std::process::id() as u16) ^ qtype;
    let mut q = Vec::new();
    q.extend(id.to_be_bytes());
    q.extend([0x01, 0x00]); // recursion desired
    q.extend([0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend(label.as_bytes());
    }
    q.push(0);
    q.extend(qtype.to_be_bytes());
    q.extend(1u16.to_be_bytes()); // IN
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(&q, (server, 53)).unwrap();
    let mut buf = [0u8; 1500];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no answer from {server} for {name}: {e}"));
    let r = &buf[..n];
    assert!(
        n >= 12 && r[..2] == id.to_be_bytes(),
        "a reply to our query"
    );
    let answers = u16::from_be_bytes([r[6], r[7]]);
    // Past the header and our question (not compressed: its length is ours).
    let mut at = q.len();
    let mut a = Vec::new();
    for _ in 0..answers {
        // The owner name: a pointer, or labels.
        while r[at] != 0 && r[at] & 0xc0 != 0xc0 {
            at += 1 + r[at] as usize;
        }
        at += if r[at] == 0 { 1 } else { 2 };
        let rtype = u16::from_be_bytes([r[at], r[at + 1]]);
        let len = u16::from_be_bytes([r[at + 8], r[at + 9]]) as usize;
        at += 10;
        if rtype == TYPE_A && len == 4 {
            a.push(Ipv4Addr::new(r[at], r[at + 1], r[at + 2], r[at + 3]));
        }
        at += len;
    }
    Reply {
        rcode: r[3] & 0x0f,
        a,
        answers,
    }
}

#[test]
fn peers_resolve_by_bare_name_and_a_missing_type_is_nodata() {
    let test = "peers_resolve_by_bare_name_and_a_missing_type_is_nodata";
    if !require_root(test) {
        return;
    }
    let d = daemon_with_image(&[]);
    let prefix = cgroup_prefix(d.path());
    let net = unique_name("hdn");
    // NAT stays off: nothing of this test leaves the bridge.
    d.lxc_ok(&[
        "network",
        "create",
        &net,
        "ipv4.nat=false",
        "dns.domain=sysview.test",
    ]);
    let gw = gateway_of(&d, &net);
    for c in ["peer", "asker"] {
        d.lxc_ok(&["launch", "bb", c, "-n", &net]);
    }
    let ip = wait_for_ipv4(&d, "peer");
    wait_for_ipv4(&d, "asker");

    // busybox nslookup asks A and AAAA; the AAAA was REFUSED, and the command failed.
    for name in ["peer", "peer.sysview.test"] {
        let out = d.lxc(&["exec", "asker", "--", "nslookup", name, &gw]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "nslookup {name}: {out:?}");
        assert!(text.contains(&ip), "{name}: {text}");
        assert!(!text.contains("REFUSED"), "{name}: {text}");
    }
    // As the issue ran it: the server from the lease's resolv.conf.
    let out = d.lxc(&["exec", "asker", "--", "nslookup", "peer"]);
    assert!(out.status.success(), "nslookup peer: {out:?}");
    let unknown = d.lxc(&["exec", "asker", "--", "nslookup", "nobody-here", &gw]);
    assert!(
        !unknown.status.success(),
        "an unknown name does not resolve"
    );
    // By the resolver the lease configured, as programs ask.
    let ping = d.lxc_ok(&["exec", "asker", "--", "ping", "-c", "1", "-W", "5", "peer"]);
    assert!(ping.contains("1 packets received"), "{ping}");

    // On the wire, from the host to the test's bridge.
    for name in ["peer", "peer.sysview.test"] {
        let a = dns_query(&gw, name, TYPE_A);
        assert_eq!(a.rcode, RCODE_NOERROR, "A {name}: {a:?}");
        assert_eq!(a.a, [ip.parse::<Ipv4Addr>().unwrap()], "A {name}");
        let r = dns_query(&gw, name, TYPE_AAAA);
        assert_eq!(
            (r.rcode, r.answers),
            (RCODE_NOERROR, 0),
            "AAAA {name}: NODATA"
        );
    }
    // Any other type in the network's domain too (of a bare name, dnsmasq keeps only A and
    // AAAA local: the rest it would forward, and it has no upstream).
    let r = dns_query(&gw, "peer.sysview.test", TYPE_MX);
    assert_eq!((r.rcode, r.answers), (RCODE_NOERROR, 0), "MX: NODATA");
    for name in ["nobody-here", "nobody-here.sysview.test"] {
        for qtype in [TYPE_A, TYPE_AAAA] {
            let r = dns_query(&gw, name, qtype);
            assert_eq!(r.rcode, RCODE_NXDOMAIN, "{qtype} {name}: {r:?}");
        }
    }
    let gateway = dns_query(&gw, "_gateway.sysview.test", TYPE_A);
    assert_eq!(gateway.a, [gw.parse::<Ipv4Addr>().unwrap()]);

    // The DNS keys as LXD validates them; a refused change leaves the network as it was.
    for bad in ["dns.mode=static", "dns.search=a.example,not ok"] {
        let out = d.lxc(&["network", "set", &net, bad]);
        assert!(!out.status.success(), "{bad} is refused");
    }
    assert_eq!(dns_query(&gw, "peer", TYPE_A).a.len(), 1);
    // dns.mode=none: the network has no domain any more; the peer's bare name is the one
    // its DHCP client sends.
    d.lxc_ok(&["network", "set", &net, "dns.mode=none"]);
    let r = dns_query(&gw, "peer.sysview.test", TYPE_A);
    assert_ne!(r.a.len(), 1, "no domain with dns.mode=none: {r:?}");
    d.lxc_ok(&["network", "set", &net, "dns.mode=managed"]);
    let r = dns_query(&gw, "peer.sysview.test", TYPE_A);
    assert_eq!(r.rcode, RCODE_NOERROR, "{r:?}");

    d.lxc_ok(&["delete", "--force", "peer", "asker"]);
    d.lxc_ok(&["network", "delete", &net]);
    assert_no_network_leftovers(&prefix, &[&net]);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}

#[test]
fn debian_resolves_a_peer_by_bare_name_with_glibc() {
    let test = "debian_resolves_a_peer_by_bare_name_with_glibc";
    if !require_root(test) {
        return;
    }
    if std::env::var("HUTCH_TEST_DEBIAN").as_deref() == Ok("0")
        && std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1")
    {
        hutch_tests::skipped(test, "HUTCH_TEST_DEBIAN=0");
        return;
    }
    // The image `hutch image build debian/12` makes: networkd's DHCP, resolved's stub.
    let d = daemon_with_image(&[]);
    if let Err(e) = d.build_debian("deb") {
        skip(test, &format!("the Debian image cannot be built: {e}"));
        return;
    }
    let prefix = cgroup_prefix(d.path());
    let net = unique_name("hdg");
    d.lxc_ok(&["network", "create", &net, "ipv4.nat=false"]);
    d.lxc_ok(&["launch", "bb", "peer", "-n", &net]);
    let ip = wait_for_ipv4(&d, "peer");
    d.lxc_ok(&["launch", "deb", "deb", "-n", &net]);
    // Nothing written by hand: the lease gives the address, resolved the server and the
    // search domain, so glibc asks for `peer.hutch` on behalf of `peer`.
    wait_until(
        "a DHCP lease on the Debian container",
        Duration::from_secs(60),
        || ipv4_of(&d, "deb").is_some(),
    );
    assert_eq!(
        d.lxc_ok(&["exec", "deb", "--", "readlink", "/etc/resolv.conf"])
            .trim(),
        "../run/systemd/resolve/stub-resolv.conf"
    );
    let resolves = |name: &str| {
        let out = d.lxc(&["exec", "deb", "--", "getent", "hosts", name]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with(&ip)
    };
    // resolved learns the lease's server a moment after networkd has the address.
    wait_until(
        "the Debian container to resolve its peer",
        Duration::from_secs(30),
        || resolves("peer"),
    );
    for name in ["peer", "peer.hutch"] {
        let out = d.lxc(&["exec", "deb", "--", "getent", "hosts", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "getent hosts {name}: {out:?}");
        assert!(text.starts_with(&ip), "{name}: {text}");
    }
    let ahosts = d.lxc_ok(&["exec", "deb", "--", "getent", "ahosts", "peer"]);
    assert!(ahosts.contains(&ip), "{ahosts}");

    d.lxc_ok(&["delete", "--force", "peer", "deb"]);
    d.lxc_ok(&["network", "delete", &net]);
    assert_no_network_leftovers(&prefix, &[&net]);
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
}
