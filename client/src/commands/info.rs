//! `hutch info`: an instance's state as lxc prints it (lxc/info.go), with `--show-log`
//! its log; without an instance the server's info, with `--resources` the host's CPUs and
//! memory.

use anyhow::Result;
use serde_json::Value;

use crate::http::{encode, Client};
use crate::output::{self, iec, si};

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// LXD's `2006/01/02 15:04 MST` of an RFC 3339 time, or `None` for an unset one (not
/// after the epoch, as LXD's TimeIsSet). Shown in UTC.
pub fn info_time(t: &str) -> Option<String> {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    if t.unix_timestamp() <= 0 {
        return None;
    }
    let t = t.to_offset(time::UtcOffset::UTC);
    Some(format!(
        "{:04}/{:02}/{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    ))
}

/// hutch's own line (LXD has none): what `boot.autorestart` did since the instance was
/// last started by hand, from the daemon's `volatile.autorestart.*` keys.
fn autorestart_line(config: &Value) -> String {
    let count = s(&config["volatile.autorestart.count"]);
    let when = |key: &str| info_time(&s(&config[key]));
    let restarts = match count.as_str() {
        "" => String::new(),
        "1" => " after 1 restart".to_string(),
        n => format!(" after {n} restarts"),
    };
    if let Some(t) = when("volatile.autorestart.gave_up") {
        return format!("Autorestart: gave up {t}{restarts}: restarted too often, left stopped\n");
    }
    match (count.as_str(), when("volatile.autorestart.last")) {
        ("", _) | (_, None) => String::new(),
        ("1", Some(t)) => format!("Autorestart: restarted 1 time, last {t}\n"),
        (n, Some(t)) => format!("Autorestart: restarted {n} times, last {t}\n"),
    }
}

/// hutch's own line (LXD has none): the ports an OCI image exposes, as a hint (proxy
/// devices are made for them only when asked, `launch --ports`).
fn exposed_ports_line(config: &Value) -> String {
    let ports = s(&config["image.oci.exposed_ports"]);
    if s(&config["image.type"]) != "oci" || ports.is_empty() {
        return String::new();
    }
    format!(
        "Exposed ports: {} (OCI image; `launch --ports all` publishes them)\n",
        ports.replace(',', ", ")
    )
}

/// The text of `hutch info NAME` for the instance object `v` (recursion=1: with state
/// and snapshots).
pub fn render_instance(v: &Value) -> String {
    let mut o = String::new();
    let st = &v["state"];
    o += &format!("Name: {}\n", s(&v["name"]));
    o += &format!("Status: {}\n", s(&v["status"]).to_uppercase());
    let ty = match s(&v["type"]) {
        t if t.is_empty() => "container".to_string(),
        t => t,
    };
    if v["ephemeral"].as_bool().unwrap_or(false) {
        o += &format!("Type: {ty} (ephemeral)\n");
    } else {
        o += &format!("Type: {ty}\n");
    }
    o += &format!("Architecture: {}\n", s(&v["architecture"]));
    let pid = n(&st["pid"]);
    if pid != 0 {
        o += &format!("PID: {pid}\n");
    }
    if let Some(t) = info_time(&s(&v["created_at"])) {
        o += &format!("Created: {t}\n");
    }
    if let Some(t) = info_time(&s(&v["last_used_at"])) {
        o += &format!("Last Used: {t}\n");
    }
    o += &autorestart_line(&v["config"]);
    o += &exposed_ports_line(&v["config"]);
    if pid != 0 {
        o += "\nResources:\n";
        o += &format!("  Processes: {}\n", n(&st["processes"]));
        // hutch's own line (LXD has no such field): say when /proc shows the host's
        // totals because lxcfs was not serving when the container started.
        if st["resource_view"].as_str() == Some("host") {
            o += "  View of /proc: host (no lxcfs at start: free, top and uptime show the host's totals)\n";
        }
        let mut disks: Vec<(&String, &Value)> =
            st["disk"].as_object().into_iter().flatten().collect();
        disks.sort_by(|a, b| a.0.cmp(b.0));
        let disk: String = disks
            .iter()
            .filter(|(_, d)| n(&d["usage"]) != 0)
            .map(|(k, d)| format!("    {k}: {}\n", iec(n(&d["usage"]))))
            .collect();
        if !disk.is_empty() {
            o += "  Disk usage:\n";
            o += &disk;
        }
        let cpu = n(&st["cpu"]["usage"]);
        if cpu != 0 {
            o += "  CPU usage:\n";
            o += &format!("    CPU usage (in seconds): {}\n", cpu / 1_000_000_000);
        }
        let mem = &st["memory"];
        let mut memory = String::new();
        for (key, label) in [
            ("usage", "Memory (current)"),
            ("usage_peak", "Memory (peak)"),
            ("swap_usage", "Swap (current)"),
            ("swap_usage_peak", "Swap (peak)"),
        ] {
            if n(&mem[key]) != 0 {
                memory += &format!("    {label}: {}\n", iec(n(&mem[key])));
            }
        }
        if !memory.is_empty() {
            o += "  Memory usage:\n";
            o += &memory;
        }
        let mut nets: Vec<(&String, &Value)> =
            st["network"].as_object().into_iter().flatten().collect();
        nets.sort_by(|a, b| a.0.cmp(b.0));
        if !nets.is_empty() {
            o += "  Network usage:\n";
        }
        for (name, net) in nets {
            o += &format!("    {name}:\n");
            o += &format!("      Type: {}\n", s(&net["type"]));
            o += &format!("      State: {}\n", s(&net["state"]).to_uppercase());
            if !s(&net["host_name"]).is_empty() {
                o += &format!("      Host interface: {}\n", s(&net["host_name"]));
            }
            if !s(&net["hwaddr"]).is_empty() {
                o += &format!("      MAC address: {}\n", s(&net["hwaddr"]));
            }
            if n(&net["mtu"]) != 0 {
                o += &format!("      MTU: {}\n", n(&net["mtu"]));
            }
            let c = &net["counters"];
            o += &format!("      Bytes received: {}\n", si(n(&c["bytes_received"])));
            o += &format!("      Bytes sent: {}\n", si(n(&c["bytes_sent"])));
            o += &format!("      Packets received: {}\n", n(&c["packets_received"]));
            o += &format!("      Packets sent: {}\n", n(&c["packets_sent"]));
            o += "      IP addresses:\n";
            for a in net["addresses"].as_array().into_iter().flatten() {
                let family = s(&a["family"]);
                let gap = if family == "inet" { "  " } else { " " };
                o += &format!(
                    "        {family}:{gap}{}/{} ({})\n",
                    s(&a["address"]),
                    s(&a["netmask"]),
                    s(&a["scope"])
                );
            }
        }
    }
    let snaps = v["snapshots"].as_array().cloned().unwrap_or_default();
    if !snaps.is_empty() {
        o += "\nSnapshots:\n";
        let rows: Vec<Vec<String>> = snaps
            .iter()
            .map(|snap| {
                let name = s(&snap["name"]);
                vec![
                    name.rsplit('/').next().unwrap_or("").to_string(),
                    info_time(&s(&snap["created_at"])).unwrap_or_else(|| " ".into()),
                    info_time(&s(&snap["expires_at"])).unwrap_or_else(|| " ".into()),
                    if snap["stateful"].as_bool().unwrap_or(false) {
                        "YES".into()
                    } else {
                        "NO".into()
                    },
                ]
            })
            .collect();
        let headers = ["Name", "Taken at", "Expires at", "Stateful"].map(String::from);
        o += &output::table(&headers, &rows);
    }
    o
}

/// `hutch info NAME [--show-log]`.
pub fn instance(client: &Client, name: &str, show_log: bool) -> Result<()> {
    let v = client.get(&format!("/1.0/instances/{}?recursion=1", encode(name)))?;
    print!("{}", render_instance(&v));
    if show_log {
        let file = if v["type"] == "virtual-machine" {
            "qemu.log"
        } else {
            "lxc.log"
        };
        let raw = client.raw(
            "GET",
            &format!("/1.0/instances/{}/logs/{file}", encode(name)),
            &[],
            b"",
        )?;
        if raw.status != 200 {
            crate::http::parse_envelope(&raw)?;
        }
        print!("\nLog:\n\n{}\n", String::from_utf8_lossy(&raw.body));
    }
    Ok(())
}

/// `hutch info [--resources]` without an instance.
pub fn server(client: &Client, resources: bool) -> Result<()> {
    if resources {
        let r = client.get("/1.0/resources")?;
        print!("{}", render_resources(&r));
    } else {
        let mut v = client.get("/1.0")?;
        // LXD's storage driver info has JSON keys `Name`, `Version`, `Remote` but yaml
        // keys in lower case.
        if let Some(drivers) = v["environment"]["storage_supported_drivers"].as_array_mut() {
            for d in drivers.iter_mut().filter_map(Value::as_object_mut) {
                *d = std::mem::take(d)
                    .into_iter()
                    .map(|(k, v)| (k.to_lowercase(), v))
                    .collect();
            }
        }
        print!("{}", serde_yaml::to_string(&v)?);
    }
    Ok(())
}

fn render_cpu(o: &mut String, cpu: &Value, prefix: &str) {
    if !s(&cpu["vendor"]).is_empty() {
        *o += &format!("{prefix}Vendor: {}\n", s(&cpu["vendor"]));
    }
    if !s(&cpu["name"]).is_empty() {
        *o += &format!("{prefix}Name: {}\n", s(&cpu["name"]));
    }
    if let Some(caches) = cpu["cache"].as_array() {
        *o += &format!("{prefix}Caches:\n");
        for c in caches {
            *o += &format!(
                "{prefix}  - Level {} (type: {}): {}\n",
                n(&c["level"]),
                s(&c["type"]),
                byte_size_0(n(&c["size"]))
            );
        }
    }
    *o += &format!("{prefix}Cores:\n");
    for core in cpu["cores"].as_array().into_iter().flatten() {
        *o += &format!("{prefix}  - Core {}\n", n(&core["core"]));
        *o += &format!("{prefix}    Frequency: {}Mhz\n", n(&core["frequency"]));
        *o += &format!("{prefix}    Threads:\n");
        for t in core["threads"].as_array().into_iter().flatten() {
            *o += &format!(
                "{prefix}      - {} (id: {}, online: {}, NUMA node: {})\n",
                n(&t["thread"]),
                n(&t["id"]),
                t["online"].as_bool().unwrap_or(false),
                n(&t["numa_node"])
            );
        }
    }
    let f = n(&cpu["frequency"]);
    if f > 0 {
        let (min, turbo) = (n(&cpu["frequency_minimum"]), n(&cpu["frequency_turbo"]));
        if turbo > 0 && min > 0 {
            *o += &format!("{prefix}Frequency: {f}Mhz (min: {min}Mhz, max: {turbo}Mhz)\n");
        } else {
            *o += &format!("{prefix}Frequency: {f}Mhz\n");
        }
    }
}

/// IEC units without decimals (cache sizes).
fn byte_size_0(b: i64) -> String {
    if b < 1024 {
        return format!("{b}B");
    }
    let mut v = b as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB", "PiB"] {
        v /= 1024.0;
        if v < 1024.0 {
            return format!("{v:.0}{unit}");
        }
    }
    format!("{v:.0}EiB")
}

fn memory_lines(o: &mut String, m: &Value, prefix: &str) {
    let (total, used) = (n(&m["total"]), n(&m["used"]));
    *o += &format!("{prefix}Free: {}\n", iec(total - used));
    *o += &format!("{prefix}Used: {}\n", iec(used));
    *o += &format!("{prefix}Total: {}\n", iec(total));
}

fn hugepages(o: &mut String, m: &Value, prefix: &str) {
    let (total, used) = (n(&m["hugepages_total"]), n(&m["hugepages_used"]));
    if total > 0 {
        *o += &format!("{prefix}Hugepages:\n");
        *o += &format!("{prefix}  Free: {}\n", iec(total - used));
        *o += &format!("{prefix}  Used: {}\n", iec(used));
        *o += &format!("{prefix}  Total: {}\n", iec(total));
    }
}

/// `hutch info --resources`, as lxc renders `/1.0/resources` (CPUs and memory: hutchd
/// lists no GPUs, NICs or disks).
pub fn render_resources(r: &Value) -> String {
    let mut o = String::new();
    let cpu = &r["cpu"];
    let sockets = cpu["sockets"].as_array().cloned().unwrap_or_default();
    let arch = s(&cpu["architecture"]);
    if sockets.len() == 1 {
        o += &format!("CPU ({arch}):\n");
        render_cpu(&mut o, &sockets[0], "  ");
    } else if sockets.len() > 1 {
        o += &format!("CPUs ({arch}):\n");
        for sock in &sockets {
            o += &format!("  Socket {}:\n", n(&sock["socket"]));
            render_cpu(&mut o, sock, "    ");
        }
    }
    let m = &r["memory"];
    o += "\nMemory:\n";
    hugepages(&mut o, m, "  ");
    let nodes = m["nodes"].as_array().cloned().unwrap_or_default();
    if nodes.len() > 1 {
        o += "  NUMA nodes:\n";
        for node in &nodes {
            o += &format!("    Node {}:\n", n(&node["numa_node"]));
            hugepages(&mut o, node, "      ");
            memory_lines(&mut o, node, "      ");
        }
    }
    memory_lines(&mut o, m, "  ");
    o
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn instance_info_reads_as_lxc_prints_it() {
        let v = json!({
            "name": "c1", "status": "Running", "type": "container", "ephemeral": false,
            "architecture": "x86_64", "created_at": "2026-12-02T04:11:37Z",
            "last_used_at": "1970-01-01T00:00:00Z",
            "state": {"pid": 42, "processes": 2, "cpu": {"usage": 3_000_000_000_i64},
                "memory": {"usage": 2048, "usage_peak": 0},
                "network": {"eth0": {"type": "broadcast", "state": "up", "hwaddr": "00:16:3e:00:00:01",
                    "mtu": 1500, "host_name": "veth1",
                    "counters": {"bytes_received": 1500, "bytes_sent": 10, "packets_received": 3, "packets_sent": 1},
                    "addresses": [{"family": "inet", "address": "10.0.0.2", "netmask": "24", "scope": "global"}]}}},
            "snapshots": [{"name": "c1/s0", "created_at": "2026-12-02T05:00:00Z", "stateful": false}]
        });
        let text = render_instance(&v);
        assert!(text.starts_with("Name: c1\nStatus: RUNNING\nType: container\nArchitecture: x86_64\nPID: 42\nCreated: 2026/12/02 04:11 UTC\n\nResources:\n  Processes: 2\n  CPU usage:\n    CPU usage (in seconds): 3\n  Memory usage:\n    Memory (current): 2.00KiB\n  Network usage:\n    eth0:\n      Type: broadcast\n      State: UP\n      Host interface: veth1\n      MAC address: 00:16:3e:00:00:01\n      MTU: 1500\n      Bytes received: 1.50kB\n      Bytes sent: 10B\n      Packets received: 3\n      Packets sent: 1\n      IP addresses:\n        inet:  10.0.0.2/24 (global)\n\nSnapshots:\n"), "{text}");
        assert!(
            text.contains("| s0   | 2026/12/02 05:00 UTC |            | NO       |"),
            "{text}"
        );
    }

    #[test]
    fn an_oci_images_ports_are_a_hint() {
        assert_eq!(exposed_ports_line(&json!({})), "");
        let c = json!({"image.type": "oci", "image.oci.exposed_ports": "80/tcp,53/udp"});
        assert_eq!(
            exposed_ports_line(&c),
            "Exposed ports: 80/tcp, 53/udp (OCI image; `launch --ports all` publishes them)\n"
        );
    }

    #[test]
    fn autorestarts_are_shown_and_a_give_up_is_said() {
        assert_eq!(autorestart_line(&json!({})), "");
        let restarted = json!({"volatile.autorestart.count": "3",
            "volatile.autorestart.last": "2026-12-02T05:00:00Z"});
        assert_eq!(
            autorestart_line(&restarted),
            "Autorestart: restarted 3 times, last 2026/12/02 05:00 UTC\n"
        );
        let gave_up = json!({"volatile.autorestart.count": "10",
            "volatile.autorestart.last": "2026-12-02T05:00:00Z",
            "volatile.autorestart.gave_up": "2026-12-02T05:01:00Z"});
        assert_eq!(
            autorestart_line(&gave_up),
            "Autorestart: gave up 2026/12/02 05:01 UTC after 10 restarts: restarted too often, left stopped\n"
        );
    }

    #[test]
    fn resources_read_as_lxc_prints_them() {
        let r = json!({"cpu": {"architecture": "x86_64", "sockets": [{"socket": 0, "name": "Xeon", "vendor": "Intel",
            "cache": [], "frequency": 2000, "cores": [{"core": 0, "frequency": 2000,
            "threads": [{"id": 0, "thread": 0, "online": true, "numa_node": 0}]}]}]},
            "memory": {"nodes": [], "hugepages_total": 0, "used": 1048576, "total": 4194304}});
        assert_eq!(
            render_resources(&r),
            "CPU (x86_64):\n  Vendor: Intel\n  Name: Xeon\n  Caches:\n  Cores:\n    - Core 0\n      Frequency: 2000Mhz\n      Threads:\n        - 0 (id: 0, online: true, NUMA node: 0)\n  Frequency: 2000Mhz\n\nMemory:\n  Free: 3.00MiB\n  Used: 1.00MiB\n  Total: 4.00MiB\n"
        );
    }
}
