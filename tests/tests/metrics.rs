//! End-to-end: `GET /1.0/metrics` on a real hutchd with busybox containers, one running
//! (with a NIC on a bridge the test made, some CPU burnt and a file written) and one
//! stopped: a strict check of the Prometheus text, LXD's names and labels, values against
//! the cgroup's own counters, the request histogram, `hutch top --format csv`, who may
//! scrape over HTTPS, and (where LXD is installed) that the `lxd_*` names hutch emits are
//! LXD 5.0's. Needs root; each test has its own daemon.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hutch_tests::{require_root, ReferenceLxd, TestDaemon, Via};
use hutch_tls::{Identity, Kind, ServerTrust};
use serde_json::json;

/// One sample: family name (as written), labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the exposition text strictly: every sample's family has `# HELP` and `# TYPE`
/// before it (histogram samples by their `_bucket`/`_sum`/`_count` suffixes), a family's
/// lines are together, no series appears twice, values are numbers, and the text ends
/// with `# EOF`. Returns the samples and each family's type.
/// `lxd_procs_total` of `name` equals its cgroup's `pids.current`, in a scrape between two
/// equal readings of the counter (a container still starting or running a DHCP client
/// forks between a scrape and a later read).
fn processes_match_the_cgroup(socket: &Path, rel: &str, name: &str) {
    let current = || {
        cgroup_value(rel, &[("pids", "pids.current"), ("", "pids.current")])
            .map(|v| v.trim().parse::<f64>().unwrap())
    };
    if current().is_none() {
        return;
    }
    hutch_tests::wait_until(
        &format!("{name}'s processes as pids.current"),
        Duration::from_secs(30),
        || {
            let before = current();
            let (_, _, text) = get(socket, "/1.0/metrics");
            let (samples, _) = parse_strict(&text);
            let after = current();
            let procs = sum(&of(&samples, "lxd_procs_total", name));
            before == after && before == Some(procs)
        },
    );
}

fn parse_strict(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
    assert!(text.ends_with("# EOF\n"), "no final # EOF:\n{text}");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(helps.insert(name.clone()), "two HELP lines for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helps.contains(name), "TYPE before HELP for {name}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "two TYPE lines: {name}"
            );
            if let Some(prev) = current.replace(name.to_string()) {
                finished.insert(prev);
            }
            continue;
        }
        if line == "# EOF" || line.starts_with('#') {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("closing brace")),
            None => (head, ""),
        };
        let mut map = BTreeMap::new();
        for pair in split_labels(labels) {
            let (k, v) = pair.split_once('=').expect("label k=v");
            assert!(
                v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                "label value not quoted: {line}"
            );
            assert!(
                map.insert(k.to_string(), v[1..v.len() - 1].to_string())
                    .is_none(),
                "label {k} twice: {line}"
            );
        }
        let sorted: Vec<&String> = map.keys().collect();
        let written: Vec<&str> = split_labels(labels)
            .iter()
            .map(|p| p.split('=').next().unwrap())
            .collect();
        assert_eq!(
            sorted.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            written,
            "labels not sorted: {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample without TYPE: {line}");
        assert_eq!(
            current.as_deref(),
            Some(family),
            "family {family} not together: {line}"
        );
        assert!(!finished.contains(family), "family {family} split: {line}");
        assert!(series.insert(head.to_string()), "series twice: {head}");
        out.push(Sample {
            name: name.to_string(),
            labels: map,
            value,
        });
    }
    (out, types)
}

/// `k="v"` pairs of a label list (values here never hold a comma or a quote).
fn split_labels(labels: &str) -> Vec<&str> {
    if labels.is_empty() {
        return Vec::new();
    }
    labels.split(',').collect()
}

/// A raw GET on the daemon's unix socket: status, content type, body.
fn get(socket: &Path, path: &str) -> (u16, String, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    write!(
        s,
        // HTTP/1.0: LXD answers it whole, not chunked.
        "GET {path} HTTP/1.0\r\nHost: hutch\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    split_response(&resp)
}

fn split_response(resp: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked answer"
    );
    (status, ctype, body.to_string())
}

fn of<'a>(samples: &'a [Sample], name: &str, instance: &str) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("name").map(String::as_str) == Some(instance))
        .collect()
}

fn sum(samples: &[&Sample]) -> f64 {
    samples.iter().map(|s| s.value).sum()
}

/// A v1 or v2 file of the instance's cgroup: the first of `candidates` (controller dir,
/// file) that exists.
fn cgroup_value(rel: &str, candidates: &[(&str, &str)]) -> Option<String> {
    candidates.iter().find_map(|(hier, file)| {
        let base = Path::new("/sys/fs/cgroup").join(hier).join(rel).join(file);
        std::fs::read_to_string(base).ok()
    })
}

#[test]
fn metrics_report_running_instances_under_lxds_names() {
    if !require_root("metrics_report_running_instances_under_lxds_names") {
        return;
    }
    let net = hutch_tests::unique_name("hbm");
    let d = TestDaemon::start_with(&["--network-bridge", &net]);
    assert!(d.has_extensions(&["metrics", "metrics_cpu_seconds"]));
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", "run1"]);
    d.hutch_ok(&["launch", "bb", "stop1"]);
    d.hutch_ok(&["stop", "stop1", "--force"]);
    // 20 running in all, as the issue scrapes them.
    let running: Vec<String> = (1..=20).map(|i| format!("run{i}")).collect();
    for name in &running[1..] {
        d.hutch_ok(&["launch", "bb", name]);
    }
    d.sh_ok(
        "run1",
        "dd if=/dev/zero of=/root/blob bs=1M count=4 2>/dev/null; sync; \
         i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
    );
    let socket = d.socket();
    let (status, ctype, text) = get(&socket, "/1.0/metrics");
    assert_eq!(status, 200, "{text}");
    assert_eq!(ctype, "text/plain; version=0.0.4");
    let (samples, types) = parse_strict(&text);

    // Every instance sample carries LXD's labels; the stopped instance has none.
    for s in samples.iter().filter(|s| s.name.starts_with("lxd_")) {
        assert!(
            s.labels.get("name").is_some_and(|n| running.contains(n)),
            "{s:?}"
        );
        assert_eq!(s.labels["project"], "default", "{s:?}");
        if s.name.starts_with("lxd_filesystem_") {
            assert!(!s.labels.contains_key("type"), "{s:?}");
            assert_eq!(s.labels["mountpoint"], "/", "{s:?}");
        } else {
            assert_eq!(s.labels["type"], "container", "{s:?}");
        }
    }
    for (name, kind) in [
        ("lxd_cpu_seconds_total", "counter"),
        ("lxd_memory_MemTotal_bytes", "gauge"),
        ("lxd_memory_Cached_bytes", "gauge"),
        ("lxd_filesystem_size_bytes", "gauge"),
        ("lxd_network_receive_bytes_total", "counter"),
        ("lxd_network_transmit_packets_total", "counter"),
        ("lxd_procs_total", "gauge"),
        ("hutch_api_request_duration_seconds", "histogram"),
        ("hutch_instances", "gauge"),
        ("hutch_threads", "gauge"),
        ("hutch_open_fds", "gauge"),
        ("hutch_resident_memory_bytes", "gauge"),
        ("hutch_uptime_seconds", "counter"),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "{name}:\n{text}"
        );
    }

    // Values against the cgroup's own counters, read after the scrape (they only grow,
    // and the processes are idle by now).
    let rel = format!("{}/run1", hutch_tests::daemon::cgroup_prefix(d.path()));
    let cpu = sum(&of(&samples, "lxd_cpu_seconds_total", "run1"));
    assert!(cpu > 0.0, "no CPU time:\n{text}");
    let modes: BTreeSet<&str> = of(&samples, "lxd_cpu_seconds_total", "run1")
        .iter()
        .map(|s| s.labels["mode"].as_str())
        .collect();
    assert_eq!(modes, BTreeSet::from(["system", "user"]));
    if let Some(all) = cgroup_value(&rel, &[("cpuacct", "cpuacct.usage_all")]) {
        // Per CPU: `cpu user system` in nanoseconds.
        let cg: f64 = all
            .lines()
            .skip(1)
            .flat_map(|l| l.split_whitespace().skip(1))
            .map(|v| v.parse::<f64>().unwrap() / 1e9)
            .sum();
        assert!(
            cpu <= cg + 1e-6 && cpu > cg * 0.9,
            "cpu {cpu} vs cgroup {cg}"
        );
    } else if let Some(stat) = cgroup_value(&rel, &[("", "cpu.stat"), ("unified", "cpu.stat")]) {
        let usec: f64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        assert!(cpu <= usec / 1e6 + 1e-6, "cpu {cpu} vs cgroup {usec} us");
    }
    let total = sum(&of(&samples, "lxd_memory_MemTotal_bytes", "run1"));
    let free = sum(&of(&samples, "lxd_memory_MemFree_bytes", "run1"));
    assert!(total > free && free > 0.0, "total {total} free {free}");
    let cached = sum(&of(&samples, "lxd_memory_Cached_bytes", "run1"));
    assert!(cached > 0.0, "the 4 MB file is in the page cache:\n{text}");
    let procs = sum(&of(&samples, "lxd_procs_total", "run1"));
    assert!(procs >= 1.0, "{procs}");
    processes_match_the_cgroup(&socket, &rel, "run1");
    let size = sum(&of(&samples, "lxd_filesystem_size_bytes", "run1"));
    let avail = sum(&of(&samples, "lxd_filesystem_avail_bytes", "run1"));
    assert!(size > 0.0 && avail <= size, "size {size} avail {avail}");
    let eth0: Vec<&Sample> = of(&samples, "lxd_network_transmit_packets_total", "run1");
    assert_eq!(eth0.len(), 1, "{eth0:?}");
    assert_eq!(eth0[0].labels["device"], "eth0");
    // DHCP: the container has sent something by the time it got an address.
    hutch_tests::wait_until("run1 sends packets", Duration::from_secs(30), || {
        let (_, _, t) = get(&socket, "/1.0/metrics");
        let (s, _) = parse_strict(&t);
        sum(&of(&s, "lxd_network_transmit_packets_total", "run1")) > 0.0
    });
    assert!(of(&samples, "lxd_procs_total", "stop1").is_empty());
    // Every running instance is there, each with its own processes and its NIC.
    for name in &running {
        let procs = sum(&of(&samples, "lxd_procs_total", name));
        assert!(procs >= 1.0, "{name}: {procs}");
        let rel = format!("{}/{name}", hutch_tests::daemon::cgroup_prefix(d.path()));
        processes_match_the_cgroup(&socket, &rel, name);
        assert_eq!(
            of(&samples, "lxd_network_receive_bytes_total", name).len(),
            1,
            "{name}: eth0"
        );
        assert!(
            !of(&samples, "lxd_memory_MemTotal_bytes", name).is_empty(),
            "{name}: memory"
        );
    }
    let instances: BTreeMap<&str, f64> = samples
        .iter()
        .filter(|s| s.name == "hutch_instances")
        .map(|s| (s.labels["status"].as_str(), s.value))
        .collect();
    assert_eq!(
        instances,
        BTreeMap::from([("Running", 20.0), ("Stopped", 1.0)])
    );

    // The histogram counts requests by route template, never by raw path.
    let count = |samples: &[Sample], route: &str| -> f64 {
        samples
            .iter()
            .filter(|s| {
                s.name == "hutch_api_request_duration_seconds_count"
                    && s.labels["method"] == "GET"
                    && s.labels["route"] == route
            })
            .map(|s| s.value)
            .sum()
    };
    for _ in 0..3 {
        let (status, _, _) = get(&socket, "/1.0/instances/run1");
        assert_eq!(status, 200);
    }
    let (_, _, again) = get(&socket, "/1.0/metrics");
    let (after, _) = parse_strict(&again);
    assert!(count(&after, "/1.0/metrics") >= count(&samples, "/1.0/metrics") + 1.0);
    let by_name = count(&after, "/1.0/instances/:name");
    assert!(by_name >= 3.0, "{again}");
    assert!(
        !again.contains("route=\"/1.0/instances/run1\""),
        "a raw path became a label:\n{again}"
    );
    let buckets: Vec<&Sample> = after
        .iter()
        .filter(|s| {
            s.name == "hutch_api_request_duration_seconds_bucket"
                && s.labels["route"] == "/1.0/instances/:name"
                && s.labels["method"] == "GET"
        })
        .collect();
    assert_eq!(buckets.last().unwrap().labels["le"], "+Inf");
    assert_eq!(buckets.last().unwrap().value, by_name);
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
    assert_eq!(get(&socket, "/1.0/metrics?project=default").0, 200);
    assert_eq!(get(&socket, "/1.0/metrics?project=nope").0, 404);

    // hutch top: one csv table of rates over an interval.
    let csv = d.hutch_ok(&["top", "--format", "csv", "--interval", "0.5"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "name,cpu_percent,memory_bytes,disk_read_bytes_per_second,disk_write_bytes_per_second,network_rx_bytes_per_second,network_tx_bytes_per_second,processes",
        "{csv}"
    );
    assert_eq!(lines.len(), 21, "the running instances only:\n{csv}");
    let mut names: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    names.sort();
    let mut want: Vec<&str> = running.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(names, want, "{csv}");
    let run1 = lines.iter().find(|l| l.starts_with("run1,")).unwrap();
    let cells: Vec<&str> = run1.split(',').collect();
    assert_eq!(cells.len(), 8, "{csv}");
    assert!(cells[1].parse::<f64>().unwrap() >= 0.0, "{csv}");
    assert!(cells[2].parse::<f64>().unwrap() > 0.0, "{csv}");
    assert!(cells[7].parse::<f64>().unwrap() >= 1.0, "{csv}");
    let err = d.hutch_err(&["top", "--format", "csv", "--interval", "0"]);
    assert!(err.contains("interval"), "{err}");

    let mut all: Vec<&str> = vec!["delete", "--force", "stop1"];
    all.extend(running.iter().map(String::as_str));
    d.hutch_ok(&all);
}

#[test]
fn metrics_read_a_cgroup2_only_host() {
    if !require_root("metrics_read_a_cgroup2_only_host") {
        return;
    }
    // The daemon sees the cgroup2 hierarchy alone (on a hybrid host it has few or no
    // controllers: CPU time and processes are core, memory may be missing).
    let d = TestDaemon::start_cgroup2_only();
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", "v2a"]);
    d.sh_ok("v2a", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done");
    let (status, _, text) = get(&d.socket(), "/1.0/metrics");
    assert_eq!(status, 200, "{text}");
    let (samples, _) = parse_strict(&text);
    let cpu = of(&samples, "lxd_cpu_seconds_total", "v2a");
    let labels: BTreeSet<(&str, &str)> = cpu
        .iter()
        .map(|s| (s.labels["cpu"].as_str(), s.labels["mode"].as_str()))
        .collect();
    // As LXD on cgroup v2: no per-CPU split, all of it as CPU 0.
    assert_eq!(
        labels,
        BTreeSet::from([("0", "system"), ("0", "user")]),
        "{text}"
    );
    assert!(sum(&cpu) > 0.0, "{text}");
    assert!(
        sum(&of(&samples, "lxd_procs_total", "v2a")) >= 1.0,
        "{text}"
    );
    let controllers =
        std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").unwrap_or_default();
    let memory = !of(&samples, "lxd_memory_MemTotal_bytes", "v2a").is_empty();
    if Path::new("/sys/fs/cgroup/unified").exists() {
        // A hybrid host: memory samples only where its v2 tree has the controller.
        assert_eq!(
            memory,
            controllers.split_whitespace().any(|c| c == "memory"),
            "{text}"
        );
    }
    d.hutch_ok(&["delete", "--force", "v2a"]);
}

/// A client of the HTTPS listener, the server pinned, with a certificate or without.
struct Client {
    address: String,
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    fn new(d: &TestDaemon, url: &str, identity: Option<&Identity>) -> Client {
        let server = hutch_tls::cert_der_of_pem(&d.server_cert()).expect("server.crt");
        let config = hutch_tls::client_config(ServerTrust::Pinned(server), identity).expect("tls");
        Client {
            address: url.trim_start_matches("https://").to_string(),
            config,
        }
    }

    fn get(&self, path: &str) -> (u16, String, String) {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let conn = rustls::ClientConnection::new(self.config.clone(), name).expect("client");
        let tcp = TcpStream::connect(&self.address).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        );
        tls.write_all(head.as_bytes()).expect("send");
        let mut resp = Vec::new();
        // The server may close without close_notify once it has answered.
        let _ = tls.read_to_end(&mut resp);
        split_response(&resp)
    }
}

#[test]
fn metrics_certificates_scrape_and_reach_nothing_else() {
    if !require_root("metrics_certificates_scrape_and_reach_nothing_else") {
        return;
    }
    let d = TestDaemon::start();
    let url = d.enable_https();
    let trust = |kind: &str| {
        let id = Identity::generate(Kind::Client).unwrap();
        let body = json!({"certificate": hutch_tls::base64_encode(&id.cert_der),
                          "name": kind, "type": kind});
        let (status, out) = d.http("POST", "/1.0/certificates", body.to_string().as_bytes());
        assert_eq!(status, 201, "{out}");
        id
    };
    let metrics_id = trust("metrics");
    let scraper = Client::new(&d, &url, Some(&metrics_id));
    let (status, ctype, text) = scraper.get("/1.0/metrics");
    assert_eq!(status, 200, "{text}");
    assert_eq!(ctype, "text/plain; version=0.0.4");
    let (samples, _) = parse_strict(&text);
    assert!(samples.iter().any(|s| s.name == "hutch_threads"), "{text}");
    for path in [
        "/1.0/instances",
        "/1.0/certificates",
        "/1.0/events",
        "/1.0/metrics/x",
    ] {
        let (status, _, body) = scraper.get(path);
        assert_eq!(status, 403, "a metrics certificate on {path}: {body}");
    }
    let admin_id = trust("client");
    let (status, _, _) = Client::new(&d, &url, Some(&admin_id)).get("/1.0/metrics");
    assert_eq!(status, 200);
    // hutch top over HTTPS: a remote added by token, one scrape per refresh.
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", "far1"]);
    let out = d.hutch_ok(&["config", "trust", "add", "--name", "topc"]);
    let token = out.lines().last().unwrap_or_default().trim().to_string();
    let h = hutch_tests::HutchClient::new();
    h.ok(&["remote", "add", "r1", &token]);
    let csv = h.ok(&["top", "r1:", "--format", "csv", "--interval", "0.2"]);
    let names: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(names, ["far1"], "{csv}");
    assert!(csv.starts_with("name,cpu_percent,"), "{csv}");
    let err = h.err_in(&["top", "r1:far1", "--format", "csv"], b"");
    assert!(err.contains("takes a remote"), "{err}");
    d.hutch_ok(&["delete", "--force", "far1"]);
    for (who, client) in [
        ("no certificate", Client::new(&d, &url, None)),
        (
            "an unknown certificate",
            Client::new(&d, &url, Some(&Identity::generate(Kind::Client).unwrap())),
        ),
    ] {
        let (status, _, body) = client.get("/1.0/metrics");
        assert_eq!(status, 403, "{who}: {body}");
        assert!(body.contains("not authorized"), "{who}: {body}");
    }
}

/// Metric names newer LXD releases emit that 5.0 does not (`lxd/metrics/types.go` on
/// main): hutch emits them too, for the dashboards made for those releases.
const NEWER_LXD_NAMES: &[&str] = &["lxd_cpu_effective_total", "lxd_memory_OOM_kills_total"];

#[test]
fn hutch_emits_lxds_metric_names() {
    if !require_root("hutch_emits_lxds_metric_names") {
        return;
    }
    let Some(lxd) = ReferenceLxd::start("hutch_emits_lxds_metric_names") else {
        return;
    };
    lxd.import_busybox();
    lxd.lxc_ok(&["launch", "bb", "m1"]);
    let (status, _, lxd_text) = get(&lxd.lxd_dir().join("unix.socket"), "/1.0/metrics");
    assert_eq!(status, 200, "{lxd_text}");
    let (lxd_samples, lxd_types) = parse_strict(&lxd_text);
    // hutch top reads LXD's metrics as well (on LXD's own socket).
    let conf = hutch_tests::TestDir::new();
    let mut top = std::process::Command::new(hutch_tests::hutch_bin());
    top.args(["top", "--format", "csv", "--interval", "0.2"])
        .env("HUTCH_DIR", lxd.lxd_dir())
        .env("HUTCH_CONF", conf.path().join("hutch-conf"));
    let out = hutch_tests::output_within(&mut top, b"", hutch_tests::COMMAND_LIMIT);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{csv}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    assert!(rows[0].starts_with("m1,"), "{csv}");
    lxd.lxc_ok(&["delete", "--force", "m1"]);

    let d = TestDaemon::start();
    d.import_busybox(Via::Hutch);
    d.hutch_ok(&["launch", "bb", "m1"]);
    let (_, _, text) = get(&d.socket(), "/1.0/metrics");
    let (samples, types) = parse_strict(&text);
    d.hutch_ok(&["delete", "--force", "m1"]);

    let names = |s: &[Sample]| -> BTreeSet<String> {
        s.iter()
            .filter(|s| s.name.starts_with("lxd_"))
            .map(|s| s.name.clone())
            .collect()
    };
    let (ours, theirs) = (names(&samples), names(&lxd_samples));
    let extra: Vec<&String> = ours
        .difference(&theirs)
        .filter(|n| !NEWER_LXD_NAMES.contains(&n.as_str()))
        .collect();
    assert!(
        extra.is_empty(),
        "not LXD's: {extra:?}\nLXD:\n{lxd_text}\nhutch:\n{text}"
    );
    for n in ours.intersection(&theirs) {
        assert_eq!(types[n], lxd_types[n], "type of {n}");
        // The same label names, the values aside.
        let keys = |s: &[Sample]| -> BTreeSet<String> {
            s.iter()
                .filter(|s| &s.name == n)
                .flat_map(|s| s.labels.keys().cloned())
                .collect()
        };
        assert_eq!(keys(&samples), keys(&lxd_samples), "labels of {n}");
    }
    for core in [
        "lxd_cpu_seconds_total",
        "lxd_memory_MemTotal_bytes",
        "lxd_procs_total",
    ] {
        assert!(ours.contains(core), "{core}:\n{text}");
    }
}
