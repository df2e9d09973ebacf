//! One dnsmasq per managed network: its command line, its per-NIC host entries, its lease
//! file, and starting the process (detached, so it outlives a daemon restart; see
//! [`crate::process`] for the seam that does it).

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{BridgeConfig, DnsMode};
use crate::error::{NetworkError, Result};
use crate::process::alive;

/// The files of one network's dnsmasq, under `networks/<name>/`.
#[derive(Debug, Clone)]
pub struct DnsmasqFiles {
    pub dir: PathBuf,
}

impl DnsmasqFiles {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DnsmasqFiles { dir: dir.into() }
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("dnsmasq.pid")
    }
    pub fn leases(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }
    /// One file per NIC (`<instance>.<device>`); dnsmasq watches the directory.
    pub fn hosts_dir(&self) -> PathBuf {
        self.dir.join("dnsmasq.hosts")
    }
    pub fn raw_conf(&self) -> PathBuf {
        self.dir.join("dnsmasq.raw")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }
}

/// dnsmasq's arguments for `bridge`, in the manner of LXD's: bound to the bridge only,
/// authoritative DHCP over the ranges, names from the hosts directory and leases.
///
/// Unlike LXD's, this dnsmasq has no upstream servers (`--no-resolv`: containers' queries
/// stay on the host unless `raw.dnsmasq` names a `server=`). Without upstream, a query that
/// dnsmasq may forward gets REFUSED; for a bare name that was also what a type the name
/// lacks got (the AAAA of `nslookup peer`), which resolvers take for a server failure.
/// `--domain-needed` keeps bare names local: NODATA for a type a known name lacks,
/// NXDOMAIN for an unknown name; `--local` does the same for the network's domain.
pub fn dnsmasq_args(bridge: &str, cfg: &BridgeConfig, files: &DnsmasqFiles) -> Vec<String> {
    let p = |p: PathBuf| p.display().to_string();
    let mut a: Vec<String> = vec![
        "--keep-in-foreground".into(),
        "--strict-order".into(),
        "--bind-interfaces".into(),
        "--except-interface=lo".into(),
        "--no-ping".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--domain-needed".into(),
        format!("--interface={bridge}"),
        "--dhcp-rapid-commit".into(),
        "--no-negcache".into(),
        "--quiet-dhcp".into(),
        "--quiet-dhcp6".into(),
        "--quiet-ra".into(),
        format!("--pid-file={}", p(files.pid_file())),
        format!("--dhcp-leasefile={}", p(files.leases())),
        format!("--dhcp-hostsdir={}", p(files.hosts_dir())),
        format!("--conf-file={}", p(files.raw_conf())),
        "--dhcp-no-override".into(),
        "--dhcp-authoritative".into(),
    ];
    // As LXD: with dns.mode=none the network has no domain.
    if cfg.dns_mode != DnsMode::None {
        a.extend([
            format!("--domain={}", cfg.dns_domain),
            format!("--local=/{}/", cfg.dns_domain),
            format!("--interface-name=_gateway.{},{bridge}", cfg.dns_domain),
            "--expand-hosts".into(),
        ]);
    }
    if let Some(v4) = cfg.ipv4 {
        a.push(format!("--listen-address={}", v4.addr));
        if cfg.ipv4_dhcp {
            if !cfg.dns_search.is_empty() {
                a.push(format!(
                    "--dhcp-option-force=119,{}",
                    cfg.dns_search.join(",")
                ));
            }
            let ranges = cfg.dhcp_ranges();
            for (start, end) in &ranges {
                a.push(format!("--dhcp-range={start},{end},{},1h", v4.netmask()));
            }
            // dnsmasq's own limit is 1,000 leases: past it, whatever the range, a client
            // is refused ("no leases left") and broadcasts again every second.
            a.push(format!("--dhcp-lease-max={}", lease_max(&ranges)));
        }
    }
    if let Some(v6) = cfg.ipv6 {
        a.push(format!("--listen-address={}", v6.addr));
        a.push("--enable-ra".into());
        a.push(format!(
            "--dhcp-range=::,constructor:{bridge},ra-stateless,ra-names"
        ));
    }
    a
}

/// The content of a NIC's host entry: its MAC, its static address if any, and the name
/// dnsmasq gives it (its instance's, with `dns.mode=managed`; none: the client's own).
pub fn host_entry(hwaddr: &str, ipv4: Option<Ipv4Addr>, name: Option<&str>) -> String {
    let mut line = hwaddr.to_string();
    if let Some(ip) = ipv4 {
        line.push_str(&format!(",{ip}"));
    }
    if let Some(name) = name {
        line.push_str(&format!(",{name}"));
    }
    line + "\n"
}

/// The instance a host entry file (`<instance>.<device>`) belongs to; instance names have
/// no dot.
fn entry_instance(file_name: &str) -> Option<&str> {
    file_name
        .split_once('.')
        .map(|(instance, _)| instance)
        .filter(|i| !i.is_empty())
}

/// Each host entry file's instance and its fields (MAC, then an address and a name when
/// present); the temporary files of a write in progress are skipped.
fn entries(files: &DnsmasqFiles) -> Vec<(PathBuf, String, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(files.hosts_dir()) else {
        return out;
    };
    for e in rd.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(instance) = entry_instance(&file) else {
            continue;
        };
        let text = fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            let fields = line.split(',').map(str::to_string).collect();
            out.push((e.path(), instance.to_string(), fields));
        }
    }
    out
}

/// The MACs in the host entries of `instance`: of its NIC `device`, or of all of them.
pub fn entry_hwaddrs(files: &DnsmasqFiles, instance: &str, device: Option<&str>) -> Vec<String> {
    let file = device.map(|dev| format!("{instance}.{dev}"));
    entries(files)
        .into_iter()
        .filter(|(path, owner, _)| {
            owner == instance
                && file
                    .as_deref()
                    .is_none_or(|f| path.file_name().is_some_and(|n| n == f))
        })
        .filter_map(|(_, _, f)| f.first().cloned())
        .collect()
}

/// The MAC of each NIC with a host entry, and its instance.
pub fn entry_instances(files: &DnsmasqFiles) -> Vec<(String, String)> {
    entries(files)
        .into_iter()
        .filter_map(|(_, instance, f)| Some((f.first()?.clone(), instance)))
        .collect()
}

/// Gives every host entry its instance's name (`named`), or none, so that entries written
/// under another `dns.mode` follow the current one; dnsmasq reads them when it starts.
pub fn name_host_entries(files: &DnsmasqFiles, named: bool) -> Result<()> {
    for (path, instance, f) in entries(files) {
        let ip = f.get(1).and_then(|ip| ip.parse().ok());
        let want = host_entry(&f[0], ip, named.then_some(instance.as_str()));
        if fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            let tmp = files.hosts_dir().join(format!(".{instance}.rename.tmp"));
            fs::write(&tmp, &want).map_err(|e| NetworkError::io("write", &tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| NetworkError::io("rename", &path, e))?;
        }
    }
    Ok(())
}

/// Writes (atomically) the host entry of `instance`'s `device`.
pub fn write_host_entry(
    files: &DnsmasqFiles,
    instance: &str,
    device: &str,
    entry: &str,
) -> Result<()> {
    let dir = files.hosts_dir();
    fs::create_dir_all(&dir).map_err(|e| NetworkError::io("create", &dir, e))?;
    let path = dir.join(format!("{instance}.{device}"));
    let tmp = dir.join(format!(".{instance}.{device}.tmp"));
    fs::write(&tmp, entry).map_err(|e| NetworkError::io("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| NetworkError::io("rename", &path, e))
}

/// Removes every host entry of `instance` (all its devices).
pub fn remove_host_entries(files: &DnsmasqFiles, instance: &str) {
    let prefix = format!("{instance}.");
    if let Ok(rd) = fs::read_dir(files.hosts_dir()) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Removes one device's host entry.
pub fn remove_host_entry(files: &DnsmasqFiles, instance: &str, device: &str) {
    let _ = fs::remove_file(files.hosts_dir().join(format!("{instance}.{device}")));
}

/// The static entries: (hwaddr, address, instance) of entries that name an address.
pub fn static_entries(files: &DnsmasqFiles) -> Vec<(String, Ipv4Addr, String)> {
    entries(files)
        .into_iter()
        .filter_map(|(_, instance, f)| Some((f[0].clone(), f.get(1)?.parse().ok()?, instance)))
        .collect()
}

/// As many leases as the ranges hold addresses (at least dnsmasq's default, 1,000).
fn lease_max(ranges: &[(Ipv4Addr, Ipv4Addr)]) -> u64 {
    let held: u64 = ranges
        .iter()
        .map(|(start, end)| {
            u64::from(u32::from(*end)).saturating_sub(u64::from(u32::from(*start))) + 1
        })
        .sum();
    held.max(1000)
}

/// One line of dnsmasq's lease file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub expiry: u64,
    pub hwaddr: String,
    pub address: String,
    pub hostname: String,
    /// The client identifier the client sent (`01:` and its MAC, from most), which
    /// dnsmasq matches on a release.
    pub client_id: Option<String>,
}

/// Parses a lease file: `<expiry> <mac> <ip> <hostname|*> <client-id|*>` per line;
/// the `duid` line of DHCPv6 and malformed lines are skipped.
pub fn parse_leases(text: &str) -> Vec<Lease> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[0] == "duid" {
                return None;
            }
            Some(Lease {
                expiry: f[0].parse().ok()?,
                hwaddr: f[1].to_string(),
                address: f[2].to_string(),
                hostname: if f[3] == "*" {
                    String::new()
                } else {
                    f[3].to_string()
                },
                client_id: f.get(4).filter(|c| **c != "*").map(|c| c.to_string()),
            })
        })
        .collect()
}

pub fn read_leases(files: &DnsmasqFiles) -> Vec<Lease> {
    parse_leases(&fs::read_to_string(files.leases()).unwrap_or_default())
}

/// The pid in the pid file, if that process is alive and is dnsmasq serving `bridge`.
pub fn running_pid(files: &DnsmasqFiles, bridge: &str) -> Option<i32> {
    let pid: i32 = fs::read_to_string(files.pid_file())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let wanted = format!("--interface={bridge}");
    let is_ours =
        args.first().is_some_and(|a| a.ends_with(b"dnsmasq")) && args.contains(&wanted.as_bytes());
    (is_ours && alive(pid)).then_some(pid)
}

/// Starts dnsmasq for `bridge` in its own session, so it outlives the daemon; returns the
/// child, which the caller reaps. The raw configuration file is rewritten first.
pub(crate) fn spawn(
    bridge: &str,
    cfg: &BridgeConfig,
    files: &DnsmasqFiles,
) -> Result<std::process::Child> {
    fs::create_dir_all(files.hosts_dir())
        .map_err(|e| NetworkError::io("create", files.hosts_dir(), e))?;
    let raw = files.raw_conf();
    fs::write(&raw, format!("{}\n", cfg.raw_dnsmasq))
        .map_err(|e| NetworkError::io("write", &raw, e))?;
    let _ = fs::remove_file(files.pid_file());
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(files.log())
        .map_err(|e| NetworkError::io("open", files.log(), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| NetworkError::io("open", files.log(), e))?;
    let mut cmd = Command::new("dnsmasq");
    cmd.args(dnsmasq_args(bridge, cfg, files))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| NetworkError::Spawn {
        program: "dnsmasq".into(),
        source: e,
    })
}

/// Waits up to `timeout` for dnsmasq to write its pid file, i.e. to be listening.
pub(crate) fn wait_ready(
    files: &DnsmasqFiles,
    bridge: &str,
    child: &mut std::process::Child,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if running_pid(files, bridge).is_some() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(files.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            return Err(NetworkError::Command {
                program: "dnsmasq",
                status: status.to_string(),
                stderr: tail.into_iter().rev().collect::<Vec<_>>().join("; "),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(NetworkError::NotReady {
        program: "dnsmasq",
        reason: format!("no pid file after {timeout:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn args_bind_to_the_bridge_and_serve_the_ranges() {
        let mut c = BTreeMap::new();
        c.insert("ipv4.address".to_string(), "10.9.8.1/24".to_string());
        let cfg = BridgeConfig::parse(&c).unwrap();
        let files = DnsmasqFiles::new("/var/lib/hutch/networks/br0");
        let a = dnsmasq_args("br0", &cfg, &files);
        assert!(a.contains(&"--interface=br0".to_string()));
        assert!(a.contains(&"--listen-address=10.9.8.1".to_string()));
        assert!(a.contains(&"--dhcp-range=10.9.8.2,10.9.8.254,255.255.255.0,1h".to_string()));
        assert!(a.contains(&"--domain=hutch".to_string()));
        assert!(
            a.contains(&"--dhcp-hostsdir=/var/lib/hutch/networks/br0/dnsmasq.hosts".to_string())
        );
        assert!(!a.iter().any(|x| x.contains("enable-ra")));
    }

    fn args_for(pairs: &[(&str, &str)]) -> Vec<String> {
        let mut c: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c.insert("ipv4.address".into(), "10.9.8.1/24".into());
        let cfg = BridgeConfig::parse(&c).unwrap();
        dnsmasq_args("br0", &cfg, &DnsmasqFiles::new("/n/br0"))
    }

    #[test]
    fn bare_names_and_the_domain_are_answered_here_never_refused() {
        let a = args_for(&[("dns.domain", "lan.example")]);
        for want in [
            "--domain-needed",
            "--domain=lan.example",
            "--local=/lan.example/",
            "--interface-name=_gateway.lan.example,br0",
        ] {
            assert!(a.contains(&want.to_string()), "{want} missing from {a:?}");
        }
        assert!(a.contains(&"--no-resolv".to_string()));
        // The raw file comes before nothing it could be confused with: one argument.
        assert!(a.contains(&"--conf-file=/n/br0/dnsmasq.raw".to_string()));
        assert!(!a.iter().any(|x| x.starts_with("--dhcp-option-force=119")));
    }

    #[test]
    fn dns_mode_none_gives_the_network_no_domain() {
        let a = args_for(&[("dns.mode", "none")]);
        assert!(!a.iter().any(|x| x.starts_with("--domain=")
            || x.starts_with("--local=")
            || x.starts_with("--interface-name=")));
        assert!(a.contains(&"--domain-needed".to_string()));
        let a = args_for(&[("dns.mode", "dynamic")]);
        assert!(a.contains(&"--domain=hutch".to_string()));
    }

    #[test]
    fn dns_search_goes_out_as_dhcp_option_119() {
        let a = args_for(&[("dns.search", "a.example, b.example")]);
        assert!(a.contains(&"--dhcp-option-force=119,a.example,b.example".to_string()));
        let a = args_for(&[("dns.search", "a.example"), ("ipv4.dhcp", "false")]);
        assert!(!a.iter().any(|x| x.starts_with("--dhcp-option-force=119")));
    }

    #[test]
    fn host_entries_carry_the_name_only_when_managed() {
        let addr: Ipv4Addr = "10.9.8.50".parse().unwrap();
        let ip = Some(addr);
        assert_eq!(host_entry("m", ip, Some("c1")), "m,10.9.8.50,c1\n");
        assert_eq!(host_entry("m", ip, None), "m,10.9.8.50\n");
        assert_eq!(host_entry("m", None, None), "m\n");

        let dir = tempfile::tempdir().unwrap();
        let files = DnsmasqFiles::new(dir.path());
        write_host_entry(&files, "c1", "eth0", &host_entry("m1", ip, Some("c1"))).unwrap();
        write_host_entry(&files, "c2", "eth0", &host_entry("m2", None, Some("c2"))).unwrap();
        name_host_entries(&files, false).unwrap();
        let read = |f: &str| fs::read_to_string(files.hosts_dir().join(f)).unwrap();
        assert_eq!(read("c1.eth0"), "m1,10.9.8.50\n");
        assert_eq!(read("c2.eth0"), "m2\n");
        // Unnamed entries still say whose they are, by their file.
        let s = static_entries(&files);
        assert_eq!(s, vec![("m1".to_string(), addr, "c1".to_string())]);
        let mut owners = entry_instances(&files);
        owners.sort();
        assert_eq!(
            owners,
            [("m1".into(), "c1".into()), ("m2".into(), "c2".into())]
        );
        name_host_entries(&files, true).unwrap();
        assert_eq!(read("c1.eth0"), "m1,10.9.8.50,c1\n");
        assert_eq!(read("c2.eth0"), "m2,c2\n");
        let left: Vec<_> = fs::read_dir(files.hosts_dir()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file is left");
    }

    #[test]
    fn the_lease_limit_follows_the_range() {
        assert!(args_for(&[]).contains(&"--dhcp-lease-max=1000".to_string()));
        let mut c = BTreeMap::new();
        c.insert("ipv4.address".to_string(), "10.9.0.1/20".to_string());
        let cfg = BridgeConfig::parse(&c).unwrap();
        let a = dnsmasq_args("br0", &cfg, &DnsmasqFiles::new("/n/br0"));
        assert!(a.contains(&"--dhcp-range=10.9.0.2,10.9.15.254,255.255.240.0,1h".to_string()));
        assert!(a.contains(&"--dhcp-lease-max=4093".to_string()), "{a:?}");
    }

    #[test]
    fn leases_parse_and_skip_junk() {
        let text = "1700000000 00:16:3e:aa:bb:cc 10.9.8.5 c1 01:00:16:3e:aa:bb:cc\n\
                    1700000001 00:16:3e:aa:bb:cd 10.9.8.6 * *\n\
                    duid 00:01:00:01\n\
                    garbage\n";
        let l = parse_leases(text);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].hostname, "c1");
        assert_eq!(l[0].address, "10.9.8.5");
        assert_eq!(l[1].hostname, "");
        assert_eq!(l[0].client_id.as_deref(), Some("01:00:16:3e:aa:bb:cc"));
        assert_eq!(l[1].client_id, None);
    }

    #[test]
    fn an_instances_macs_come_from_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let files = DnsmasqFiles::new(dir.path());
        for (inst, dev, mac) in [
            ("c1", "eth0", "00:16:3e:00:00:01"),
            ("c1", "eth1", "00:16:3e:00:00:02"),
            ("c10", "eth0", "00:16:3e:00:00:03"),
        ] {
            write_host_entry(&files, inst, dev, &host_entry(mac, None, Some(inst))).unwrap();
        }
        let mut all = entry_hwaddrs(&files, "c1", None);
        all.sort();
        assert_eq!(all, ["00:16:3e:00:00:01", "00:16:3e:00:00:02"]);
        assert_eq!(
            entry_hwaddrs(&files, "c1", Some("eth1")),
            ["00:16:3e:00:00:02"]
        );
        assert!(entry_hwaddrs(&files, "c2", None).is_empty());
    }

    #[test]
    fn host_entries_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let files = DnsmasqFiles::new(dir.path());
        let ip = "10.9.8.50".parse().unwrap();
        write_host_entry(
            &files,
            "c1",
            "eth0",
            &host_entry("00:16:3e:00:00:01", Some(ip), Some("c1")),
        )
        .unwrap();
        write_host_entry(
            &files,
            "c2",
            "eth0",
            &host_entry("00:16:3e:00:00:02", None, Some("c2")),
        )
        .unwrap();
        let s = static_entries(&files);
        assert_eq!(
            s,
            vec![("00:16:3e:00:00:01".to_string(), ip, "c1".to_string())]
        );
        remove_host_entries(&files, "c1");
        assert!(static_entries(&files).is_empty());
        assert!(files.hosts_dir().join("c2.eth0").exists());
    }
}
