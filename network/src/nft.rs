//! nftables: one table per managed network (forwarding, DHCP/DNS input, NAT) and one per
//! instance with NAT proxies (DNAT), each written whole in one atomic `nft -f` transaction.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::config::BridgeConfig;
use crate::error::{NetworkError, Result};
use crate::proxy::Protocol;

/// Runs nft scripts. The seam lets the rule logic be tested without the kernel.
pub trait Nft: Send + Sync {
    /// Applies `script` as one transaction (`nft -f -`).
    fn apply(&self, script: &str) -> Result<()>;
    /// `(family, name)` of every table.
    fn tables(&self) -> Result<Vec<(String, String)>>;
}

/// A shared runner (a test keeps the other handle to look at what was run).
impl<T: Nft + ?Sized> Nft for std::sync::Arc<T> {
    fn apply(&self, script: &str) -> Result<()> {
        (**self).apply(script)
    }
    fn tables(&self) -> Result<Vec<(String, String)>> {
        (**self).tables()
    }
}

/// The real `nft` command.
#[derive(Debug, Default)]
pub struct SystemNft;

impl Nft for SystemNft {
    fn apply(&self, script: &str) -> Result<()> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetworkError::Spawn {
                program: "nft".into(),
                source: e,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| NetworkError::Spawn {
            program: "nft".into(),
            source: e,
        })?;
        if !out.status.success() {
            return Err(NetworkError::Command {
                program: "nft",
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    fn tables(&self) -> Result<Vec<(String, String)>> {
        let out = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .map_err(|e| NetworkError::Spawn {
                program: "nft".into(),
                source: e,
            })?;
        if !out.status.success() {
            return Err(NetworkError::Command {
                program: "nft",
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(parse_tables(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// Records scripts instead of running them, for unit tests: it keeps the set of tables the
/// scripts leave (from their `table inet` and `delete table inet` lines), and fails the
/// script it is told to.
#[derive(Debug, Default)]
pub struct FakeNft {
    pub scripts: Mutex<Vec<String>>,
    state: Mutex<FakeTables>,
}

#[derive(Debug, Default)]
struct FakeTables {
    /// The number (1-based, over the fake's life) of the `apply` that fails.
    fail_at: Option<usize>,
    applied: usize,
    tables: std::collections::BTreeSet<String>,
    journal: Option<crate::Journal>,
}

impl FakeNft {
    /// Also writes every script to `journal`, as the tables it makes and removes.
    pub fn journal_to(&self, journal: &crate::Journal) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).journal = Some(journal.clone());
    }

    /// Makes the `n`th `apply` from now fail (1: the next one), without effect.
    pub fn fail_call(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.fail_at = Some(s.applied + n);
    }

    /// The names of the `inet` tables the scripts so far leave.
    pub fn table_names(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.tables.iter().cloned().collect()
    }
}

impl Nft for FakeNft {
    fn apply(&self, script: &str) -> Result<()> {
        self.scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(script.to_string());
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.applied += 1;
        if s.fail_at == Some(s.applied) {
            return Err(NetworkError::Command {
                program: "nft",
                status: "exit status: 1".into(),
                stderr: "injected failure".into(),
            });
        }
        let mut made = Vec::new();
        for line in script.lines() {
            if let Some(t) = line.strip_prefix("delete table inet ") {
                s.tables.remove(t.trim());
            } else if let Some(t) = line
                .strip_prefix("table inet ")
                .and_then(|r| r.strip_suffix(" {"))
            {
                s.tables.insert(t.to_string());
                made.push(t.to_string());
            }
        }
        if let Some(j) = &s.journal {
            let deleted = script
                .lines()
                .filter_map(|l| l.strip_prefix("delete table inet "))
                .filter(|t| !made.iter().any(|m| m == t));
            for t in deleted {
                j.push(format!("nft delete {t}"));
            }
            for t in &made {
                j.push(format!("nft write {t}"));
            }
        }
        Ok(())
    }

    fn tables(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .table_names()
            .into_iter()
            .map(|t| ("inet".to_string(), t))
            .collect())
    }
}

/// Parses `nft list tables` output: `table <family> <name>` lines.
pub fn parse_tables(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                ["table", family, name] => Some((family.to_string(), name.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// An nft identifier for a network or instance name (hyphens are not allowed in one).
/// `scope` is the daemon's own prefix (such as `hutch_1a2b3c4d`): every table of one daemon
/// starts with it, so its reconcile never touches another daemon's tables.
fn ident(scope: &str, kind: &str, name: &str) -> String {
    format!(
        "{}_{kind}_{}",
        scope.replace('-', "_"),
        name.replace('-', "_")
    )
}

/// The table of network `name`.
pub fn network_table(scope: &str, name: &str) -> String {
    ident(scope, "net", name)
}

/// The table of `instance`'s NAT proxies.
pub fn proxy_table(scope: &str, instance: &str) -> String {
    ident(scope, "proxy", instance)
}

/// A script that replaces table `inet <table>` with `body` (empty body: removes it).
fn replace_table(table: &str, body: &str) -> String {
    // Declaring then deleting makes the delete succeed whether or not it existed.
    let mut s = format!("table inet {table} {{}}\ndelete table inet {table}\n");
    if !body.is_empty() {
        s.push_str(&format!("table inet {table} {{\n{body}}}\n"));
    }
    s
}

/// The rules of a managed bridge: DHCP and DNS from the bridge accepted, forwarding to and
/// from it accepted, and masquerading of its subnets when NAT is on.
pub fn network_ruleset(table: &str, bridge: &str, cfg: &BridgeConfig) -> String {
    let mut body = String::new();
    body.push_str(&format!(
        "  chain input {{\n    type filter hook input priority filter; policy accept;\n\
         \x20   iifname \"{bridge}\" udp dport {{ 53, 67, 547 }} accept\n\
         \x20   iifname \"{bridge}\" tcp dport 53 accept\n  }}\n"
    ));
    body.push_str(&format!(
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;\n\
         \x20   iifname \"{bridge}\" accept\n    oifname \"{bridge}\" accept\n  }}\n"
    ));
    let mut nat = String::new();
    if let (Some(v4), true) = (cfg.ipv4, cfg.ipv4_nat) {
        let subnet = format!("{}/{}", v4.network(), v4.prefix);
        nat.push_str(&format!(
            "    ip saddr {subnet} ip daddr != {subnet} masquerade\n"
        ));
    }
    if let (Some(v6), true) = (cfg.ipv6, cfg.ipv6_nat) {
        let subnet = format!("{}/{}", v6.network(), v6.prefix);
        nat.push_str(&format!(
            "    ip6 saddr {subnet} ip6 daddr != {subnet} masquerade\n"
        ));
    }
    if !nat.is_empty() {
        body.push_str(&format!(
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{nat}  }}\n"
        ));
    }
    replace_table(table, &body)
}

/// Removes a table (no error if it is absent).
pub fn delete_table_script(table: &str) -> String {
    replace_table(table, "")
}

/// One kernel port forward: traffic for `listen` is sent to `connect` in the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnatRule {
    pub protocol: Protocol,
    /// `None`: any local address of the host.
    pub listen_addr: Option<IpAddr>,
    pub listen_ports: (u16, u16),
    pub connect_addr: IpAddr,
    /// The first port of the target range; ranges map one to one.
    pub connect_port: u16,
    pub single_target: bool,
}

/// The table of an instance's NAT proxies: DNAT for traffic arriving and for traffic from
/// the host itself, and masquerading of hairpin traffic from the instance to itself.
pub fn proxy_ruleset(table: &str, rules: &[DnatRule]) -> String {
    if rules.is_empty() {
        return delete_table_script(table);
    }
    let mut dnat = String::new();
    let mut hairpin = String::new();
    for r in rules {
        let proto = r.protocol.as_str();
        let (fam, daddr) = match r.listen_addr {
            Some(IpAddr::V4(a)) => ("ip", format!("ip daddr {a} ")),
            Some(IpAddr::V6(a)) => ("ip6", format!("ip6 daddr {a} ")),
            None => (
                if r.connect_addr.is_ipv4() {
                    "ip"
                } else {
                    "ip6"
                },
                "fib daddr type local ".to_string(),
            ),
        };
        let ports = if r.listen_ports.0 == r.listen_ports.1 {
            r.listen_ports.0.to_string()
        } else {
            format!("{}-{}", r.listen_ports.0, r.listen_ports.1)
        };
        let target = match r.connect_addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let tport = if r.single_target || r.listen_ports.0 == r.listen_ports.1 {
            r.connect_port.to_string()
        } else {
            let end = r.connect_port as u32 + (r.listen_ports.1 - r.listen_ports.0) as u32;
            format!("{}-{end}", r.connect_port)
        };
        dnat.push_str(&format!(
            "    {daddr}{proto} dport {ports} dnat {fam} to {target}:{tport}\n"
        ));
        let caddr = match r.connect_addr {
            IpAddr::V4(a) => format!("ip saddr {a} ip daddr {a}"),
            IpAddr::V6(a) => format!("ip6 saddr {a} ip6 daddr {a}"),
        };
        hairpin.push_str(&format!("    {caddr} {proto} dport {tport} masquerade\n"));
    }
    let body = format!(
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{hairpin}  }}\n"
    );
    replace_table(table, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg(nat: bool) -> BridgeConfig {
        let mut c = BTreeMap::new();
        c.insert("ipv4.address".to_string(), "10.9.8.1/24".to_string());
        c.insert("ipv4.nat".to_string(), nat.to_string());
        BridgeConfig::parse(&c).unwrap()
    }

    #[test]
    fn network_table_masquerades_only_with_nat() {
        let s = network_ruleset("hutch_net_br_x", "br-x", &cfg(true));
        assert!(s.starts_with("table inet hutch_net_br_x {}\ndelete table inet hutch_net_br_x\n"));
        assert!(s.contains("ip saddr 10.9.8.0/24 ip daddr != 10.9.8.0/24 masquerade"));
        assert!(s.contains("iifname \"br-x\" udp dport { 53, 67, 547 } accept"));
        let s = network_ruleset("t", "br-x", &cfg(false));
        assert!(!s.contains("masquerade"));
        assert!(s.contains("oifname \"br-x\" accept"));
    }

    #[test]
    fn table_names_are_nft_identifiers() {
        assert_eq!(network_table("hutch-1a2b", "my-br"), "hutch_1a2b_net_my_br");
        assert_eq!(proxy_table("hutch-1a2b", "web-1"), "hutch_1a2b_proxy_web_1");
        assert_eq!(
            delete_table_script("t"),
            "table inet t {}\ndelete table inet t\n"
        );
    }

    #[test]
    fn proxy_rules_dnat_ports_and_ranges() {
        let rules = vec![
            DnatRule {
                protocol: Protocol::Tcp,
                listen_addr: Some("10.9.8.1".parse().unwrap()),
                listen_ports: (8080, 8080),
                connect_addr: "10.9.8.50".parse().unwrap(),
                connect_port: 80,
                single_target: true,
            },
            DnatRule {
                protocol: Protocol::Udp,
                listen_addr: None,
                listen_ports: (5000, 5002),
                connect_addr: "10.9.8.50".parse().unwrap(),
                connect_port: 6000,
                single_target: false,
            },
        ];
        let s = proxy_ruleset("hutch_proxy_c1", &rules);
        assert!(
            s.contains("ip daddr 10.9.8.1 tcp dport 8080 dnat ip to 10.9.8.50:80"),
            "{s}"
        );
        assert!(
            s.contains("fib daddr type local udp dport 5000-5002 dnat ip to 10.9.8.50:6000-6002"),
            "{s}"
        );
        assert!(s.contains("ip saddr 10.9.8.50 ip daddr 10.9.8.50 tcp dport 80 masquerade"));
        assert_eq!(proxy_ruleset("t", &[]), delete_table_script("t"));
    }

    #[test]
    fn list_output_parses() {
        let t = parse_tables("table inet filter\ntable ip hutch_net_a\n");
        assert_eq!(t[1], ("ip".to_string(), "hutch_net_a".to_string()));
    }

    #[test]
    fn fake_records_scripts_and_follows_tables() {
        let f = FakeNft::default();
        f.apply("x").unwrap();
        assert_eq!(f.scripts.lock().unwrap().len(), 1);
        f.apply(&network_ruleset("t1", "br0", &cfg(true))).unwrap();
        assert_eq!(f.table_names(), ["t1"]);
        f.fail_call(1);
        assert!(f.apply(&delete_table_script("t1")).is_err());
        assert_eq!(f.table_names(), ["t1"], "a failed script has no effect");
        f.apply(&delete_table_script("t1")).unwrap();
        assert!(f.table_names().is_empty());
    }
}
