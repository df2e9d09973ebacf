//! `hutch top [REMOTE:]`: a live table of the running instances' CPU, memory, disk and
//! network rates and processes, refreshed every `--interval` from one `GET /1.0/metrics`
//! (which serves every instance at once, from hutchd or LXD alike), sortable by key; or,
//! with `--format csv`, one table of rates over one interval.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};

use crate::http::Client;
use crate::output::{csv_row, iec};

#[derive(Args)]
pub struct TopArgs {
    /// The remote to watch (`REMOTE:`); the default remote when missing.
    pub remote: Option<String>,
    /// Seconds between refreshes (and, with --format csv, between the two samples).
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// The column to sort by, largest first (name: alphabetical).
    #[arg(long, value_enum, default_value_t = SortKey::Cpu)]
    pub sort: SortKey,
    /// `csv`: print one table of rates over one interval, and exit.
    #[arg(long, short = 'f', value_enum)]
    pub format: Option<TopFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    Cpu,
    Memory,
    Disk,
    Network,
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopFormat {
    Csv,
}

/// One sample line of the exposition text.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses Prometheus text (0.0.4): comments skipped, a sample per line.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).ok_or_else(|| anyhow!("bad metrics line {}: {line:?}", n + 1))?);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            // Skip separators, then `key="value"` or the closing brace.
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &body[start + 1..];
                break;
            }
            let eq = body[start..].find('=')? + start;
            let key = body[start..eq].trim().to_string();
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    c => value.push(c),
                }
            }
            labels.push((key, value));
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// An instance's counters at one scrape (cumulative ones as they are; rates come from two).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub cpu_seconds: f64,
    pub memory_bytes: f64,
    pub disk_read_bytes: f64,
    pub disk_written_bytes: f64,
    pub rx_bytes: f64,
    pub tx_bytes: f64,
    pub processes: f64,
}

/// Sums an instance's samples (over CPUs, devices, interfaces but loopback) by its name.
pub fn totals(samples: &[Sample]) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    let mut mem_total: BTreeMap<String, f64> = BTreeMap::new();
    let mut mem_free: BTreeMap<String, f64> = BTreeMap::new();
    for s in samples {
        let Some(name) = s.label("name") else {
            continue;
        };
        let key = match s.label("project") {
            Some(p) if !p.is_empty() && p != "default" => format!("{p}:{name}"),
            _ => name.to_string(),
        };
        let v = s.value;
        let lo = s.label("device") == Some("lo");
        match s.name.as_str() {
            "lxd_cpu_seconds_total" => out.entry(key).or_default().cpu_seconds += v,
            "lxd_memory_MemTotal_bytes" => {
                mem_total.insert(key.clone(), v);
                out.entry(key).or_default();
            }
            "lxd_memory_MemFree_bytes" => {
                mem_free.insert(key, v);
            }
            "lxd_disk_read_bytes_total" => out.entry(key).or_default().disk_read_bytes += v,
            "lxd_disk_written_bytes_total" => out.entry(key).or_default().disk_written_bytes += v,
            "lxd_network_receive_bytes_total" if !lo => out.entry(key).or_default().rx_bytes += v,
            "lxd_network_transmit_bytes_total" if !lo => out.entry(key).or_default().tx_bytes += v,
            "lxd_procs_total" => out.entry(key).or_default().processes = v,
            _ => {}
        }
    }
    // MemFree is what the limit (or the host) leaves: the instance uses the rest.
    for (key, t) in out.iter_mut() {
        if let (Some(total), Some(free)) = (mem_total.get(key), mem_free.get(key)) {
            t.memory_bytes = (total - free).max(0.0);
        }
    }
    out
}

/// One row of the table: an instance's usage over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    /// Percent of one CPU (200 is two CPUs busy); None without a previous sample.
    pub cpu_percent: Option<f64>,
    pub memory_bytes: f64,
    pub disk_read_rate: Option<f64>,
    pub disk_write_rate: Option<f64>,
    pub rx_rate: Option<f64>,
    pub tx_rate: Option<f64>,
    pub processes: f64,
}

/// Rows from the scrape `now` and, for rates, the one `elapsed` earlier. A counter that
/// went back (the instance restarted) counts from zero.
pub fn rows(
    before: Option<&BTreeMap<String, Totals>>,
    now: &BTreeMap<String, Totals>,
    elapsed: Duration,
) -> Vec<Row> {
    let secs = elapsed.as_secs_f64();
    now.iter()
        .map(|(name, t)| {
            let prev = before.and_then(|b| b.get(name)).filter(|_| secs > 0.0);
            let rate = |f: fn(&Totals) -> f64| {
                prev.map(|p| {
                    let (a, b) = (f(p), f(t));
                    (if b >= a { b - a } else { b }) / secs
                })
            };
            Row {
                name: name.clone(),
                cpu_percent: rate(|t| t.cpu_seconds).map(|r| r * 100.0),
                memory_bytes: t.memory_bytes,
                disk_read_rate: rate(|t| t.disk_read_bytes),
                disk_write_rate: rate(|t| t.disk_written_bytes),
                rx_rate: rate(|t| t.rx_bytes),
                tx_rate: rate(|t| t.tx_bytes),
                processes: t.processes,
            }
        })
        .collect()
}

/// Sorts rows by `key`: largest first, names alphabetically (and to break ties).
pub fn sort_rows(rows: &mut [Row], key: SortKey) {
    let value = |r: &Row| -> f64 {
        let z = |v: Option<f64>| v.unwrap_or(0.0);
        match key {
            SortKey::Cpu => z(r.cpu_percent),
            SortKey::Memory => r.memory_bytes,
            SortKey::Disk => z(r.disk_read_rate) + z(r.disk_write_rate),
            SortKey::Network => z(r.rx_rate) + z(r.tx_rate),
            SortKey::Name => 0.0,
        }
    };
    rows.sort_by(|a, b| {
        value(b)
            .total_cmp(&value(a))
            .then_with(|| crate::output::natural_cmp(&a.name, &b.name))
    });
}

/// The csv header.
pub const CSV_HEADER: &[&str] = &[
    "name",
    "cpu_percent",
    "memory_bytes",
    "disk_read_bytes_per_second",
    "disk_write_bytes_per_second",
    "network_rx_bytes_per_second",
    "network_tx_bytes_per_second",
    "processes",
];

/// A csv table: the header, then a row per instance with plain numbers.
pub fn csv(rows: &[Row]) -> String {
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.0}"));
    let mut out = csv_row(&CSV_HEADER.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    for r in rows {
        out.push_str(&csv_row(&[
            r.name.clone(),
            r.cpu_percent.map_or(String::new(), |v| format!("{v:.1}")),
            format!("{:.0}", r.memory_bytes),
            num(r.disk_read_rate),
            num(r.disk_write_rate),
            num(r.rx_rate),
            num(r.tx_rate),
            format!("{:.0}", r.processes),
        ]));
    }
    out
}

/// The live table's lines, at most `height` of them, each cut at `width` columns.
fn screen(
    rows: &[Row],
    key: SortKey,
    remote: &str,
    interval: f64,
    width: usize,
    height: usize,
) -> Vec<String> {
    let rate = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{}/s", iec(v as i64)));
    let header = [
        "NAME",
        "CPU%",
        "MEMORY",
        "DISK READ",
        "DISK WRITE",
        "NET RX",
        "NET TX",
        "PROCS",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            r.name.clone(),
            r.cpu_percent.map_or("-".into(), |v| format!("{v:.1}")),
            iec(r.memory_bytes as i64),
            rate(r.disk_read_rate),
            rate(r.disk_write_rate),
            rate(r.rx_rate),
            rate(r.tx_rate),
            format!("{:.0}", r.processes),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let sorted = format!("{key:?}").to_lowercase();
    let mut lines = vec![format!(
        "hutch top {remote}: {} running, every {interval}s, sorted by {sorted}. Sort: c cpu, m memory, d disk, n network, a name; q quit",
        rows.len()
    )];
    for c in &cells {
        let line: Vec<String> = c
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (v, w))| {
                if i == 0 {
                    format!("{v:<w$}")
                } else {
                    format!("{v:>w$}")
                }
            })
            .collect();
        lines.push(line.join("  "));
    }
    lines.truncate(height.max(2));
    lines
        .into_iter()
        .map(|l| l.chars().take(width).collect())
        .collect()
}

/// Scrapes the metrics once.
fn scrape(client: &Client) -> Result<BTreeMap<String, Totals>> {
    let raw = client.raw("GET", "/1.0/metrics", &[], b"")?;
    let text = String::from_utf8_lossy(&raw.body);
    if raw.status != 200 {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {}", raw.status));
        bail!("{msg}");
    }
    Ok(totals(&parse_exposition(&text)?))
}

pub fn top(default: &Client, args: &TopArgs) -> Result<()> {
    if !(args.interval > 0.0 && args.interval.is_finite()) {
        bail!("Invalid interval {}: it must be above 0", args.interval);
    }
    let raw = args.remote.clone().unwrap_or_default();
    let (client, rest) = super::remote::split(default, &raw)?;
    if !rest.is_empty() {
        bail!("hutch top takes a remote (REMOTE:), not {rest:?}");
    }
    let interval = Duration::from_secs_f64(args.interval);
    if args.format == Some(TopFormat::Csv) {
        let first = scrape(&client)?;
        let start = Instant::now();
        std::thread::sleep(interval);
        let second = scrape(&client)?;
        let mut table = rows(Some(&first), &second, start.elapsed());
        sort_rows(&mut table, args.sort);
        print!("{}", csv(&table));
        return Ok(());
    }
    live(&client, &raw, args.sort, args.interval, interval)
}

/// The terminal in cbreak mode (keys one at a time, not echoed; Ctrl-C still a signal)
/// on the alternate screen, both undone on drop.
struct Screen(Option<nix::sys::termios::Termios>);

impl Screen {
    fn enter() -> Self {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok();
        if let Some(orig) = &saved {
            let mut t = orig.clone();
            t.local_flags.remove(LocalFlags::ICANON | LocalFlags::ECHO);
            let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &t);
        }
        print!("\x1b[?1049h\x1b[?25l");
        let _ = std::io::stdout().flush();
        Screen(saved)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}

/// Columns and lines of the terminal (80x24 when it does not say).
fn terminal_size() -> (usize, usize) {
    let mut ws: libc::winsize = empty_winsize();
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col as usize, ws.ws_row as usize)
    } else {
        (80, 24)
    }
}

fn empty_winsize() -> libc::winsize {
    libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Waits up to `wait` for a key; None when none came (or Ctrl-C interrupted the wait).
fn key_within(wait: Duration) -> Option<u8> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdin = std::io::stdin();
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) if n > 0 => {
            let mut b = [0u8; 1];
            match nix::unistd::read(libc::STDIN_FILENO, &mut b) {
                Ok(1) => Some(b[0]),
                _ => None,
            }
        }
        _ => None,
    }
}

fn live(
    client: &Client,
    remote: &str,
    mut key: SortKey,
    secs: f64,
    interval: Duration,
) -> Result<()> {
    let interrupt = crate::interrupt::Watch::install();
    let terminal = Screen::enter();
    let mut before: Option<(Instant, BTreeMap<String, Totals>)> = None;
    let remote = if remote.is_empty() { "(local)" } else { remote };
    let result = (|| -> Result<()> {
        loop {
            let now = scrape(client)?;
            let at = Instant::now();
            let mut table = rows(
                before.as_ref().map(|(_, b)| b),
                &now,
                before.as_ref().map_or(Duration::ZERO, |(t, _)| at - *t),
            );
            before = Some((at, now));
            let deadline = at + interval;
            loop {
                sort_rows(&mut table, key);
                let (w, h) = terminal_size();
                let text = screen(&table, key, remote, secs, w, h).join("\n");
                print!("\x1b[H\x1b[2J{text}");
                std::io::stdout().flush()?;
                let left = deadline.saturating_duration_since(Instant::now());
                if interrupt.pressed() {
                    return Ok(());
                }
                if left.is_zero() {
                    break;
                }
                match key_within(left) {
                    Some(b'q' | b'Q' | 3) => return Ok(()),
                    Some(b'c') => key = SortKey::Cpu,
                    Some(b'm') => key = SortKey::Memory,
                    Some(b'd') => key = SortKey::Disk,
                    Some(b'n') => key = SortKey::Network,
                    Some(b'a') => key = SortKey::Name,
                    _ if interrupt.pressed() => return Ok(()),
                    _ => {}
                }
            }
        }
    })();
    drop(terminal);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP lxd_cpu_seconds_total The total number of CPU time used in seconds.
# TYPE lxd_cpu_seconds_total counter
lxd_cpu_seconds_total{cpu="0",mode="system",name="c1",project="default",type="container"} 1.5
lxd_cpu_seconds_total{cpu="0",mode="user",name="c1",project="default",type="container"} 2.5
lxd_cpu_seconds_total{cpu="0",mode="user",name="c2",project="default",type="container"} 0.5
lxd_disk_read_bytes_total{device="vda",name="c1",project="default",type="container"} 4096
lxd_disk_written_bytes_total{device="vda",name="c1",project="default",type="container"} 1e+06
lxd_memory_MemFree_bytes{name="c1",project="default",type="container"} 7.5e+08
lxd_memory_MemTotal_bytes{name="c1",project="default",type="container"} 1e+09
lxd_network_receive_bytes_total{device="eth0",name="c1",project="default",type="container"} 100
lxd_network_receive_bytes_total{device="lo",name="c1",project="default",type="container"} 9999
lxd_network_transmit_bytes_total{device="eth0",name="c1",project="default",type="container"} 200
lxd_procs_total{name="c1",project="default",type="container"} 3
lxd_procs_total{name="w\"x",project="p2",type="container"} 1
hutch_threads 9
# EOF
"#;

    #[test]
    fn exposition_text_is_parsed() {
        let s = parse_exposition(TEXT).unwrap();
        assert_eq!(s.len(), 13);
        assert_eq!(s[0].name, "lxd_cpu_seconds_total");
        assert_eq!(s[0].label("mode"), Some("system"));
        assert_eq!(s[0].value, 1.5);
        assert_eq!(s[4].value, 1e6);
        assert_eq!(s[11].label("name"), Some("w\"x"));
        assert_eq!(s[12].labels, vec![]);
        assert!(parse_exposition("x{a=\"1\" 2\n").is_err());
        assert!(parse_exposition("x nope\n").is_err());
    }

    #[test]
    fn samples_sum_per_instance() {
        let t = totals(&parse_exposition(TEXT).unwrap());
        let c1 = t["c1"];
        assert_eq!(c1.cpu_seconds, 4.0);
        assert_eq!(c1.memory_bytes, 2.5e8);
        assert_eq!((c1.disk_read_bytes, c1.disk_written_bytes), (4096.0, 1e6));
        // Loopback is not the instance's traffic.
        assert_eq!((c1.rx_bytes, c1.tx_bytes), (100.0, 200.0));
        assert_eq!(c1.processes, 3.0);
        assert_eq!(t["c2"].cpu_seconds, 0.5);
        assert_eq!(t["p2:w\"x"].processes, 1.0);
        assert_eq!(t.len(), 3);
    }

    fn totals_of(cpu: f64, rx: f64) -> Totals {
        Totals {
            cpu_seconds: cpu,
            rx_bytes: rx,
            memory_bytes: 1024.0,
            ..Totals::default()
        }
    }

    #[test]
    fn rates_come_from_two_samples() {
        let before = BTreeMap::from([
            ("a".to_string(), totals_of(10.0, 1000.0)),
            ("b".to_string(), totals_of(5.0, 0.0)),
        ]);
        let now = BTreeMap::from([
            ("a".to_string(), totals_of(11.0, 5000.0)),
            // Restarted: its counters began again.
            ("b".to_string(), totals_of(0.5, 0.0)),
            ("new".to_string(), totals_of(1.0, 0.0)),
        ]);
        let r = rows(Some(&before), &now, Duration::from_secs(2));
        assert_eq!(r[0].name, "a");
        assert_eq!(r[0].cpu_percent, Some(50.0));
        assert_eq!(r[0].rx_rate, Some(2000.0));
        assert_eq!(r[1].cpu_percent, Some(25.0));
        assert_eq!(r[2].cpu_percent, None);
        assert_eq!(r[2].memory_bytes, 1024.0);
        // One sample: no rates.
        assert!(rows(None, &now, Duration::ZERO)
            .iter()
            .all(|r| r.cpu_percent.is_none()));
    }

    #[test]
    fn rows_sort_by_key_then_name() {
        let now = BTreeMap::from([
            ("b".to_string(), totals_of(2.0, 0.0)),
            ("a".to_string(), totals_of(4.0, 100.0)),
            ("c10".to_string(), totals_of(1.0, 900.0)),
            ("c9".to_string(), totals_of(1.0, 900.0)),
        ]);
        let zero = BTreeMap::from_iter(now.keys().map(|k| (k.clone(), Totals::default())));
        let mut r = rows(Some(&zero), &now, Duration::from_secs(1));
        sort_rows(&mut r, SortKey::Cpu);
        let names = |r: &[Row]| r.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&r), ["a", "b", "c9", "c10"]);
        sort_rows(&mut r, SortKey::Network);
        assert_eq!(names(&r), ["c9", "c10", "a", "b"]);
        sort_rows(&mut r, SortKey::Name);
        assert_eq!(names(&r), ["a", "b", "c9", "c10"]);
    }

    #[test]
    fn csv_has_a_header_and_plain_numbers() {
        let before = BTreeMap::from([("a".to_string(), totals_of(10.0, 1000.0))]);
        let now = BTreeMap::from([("a".to_string(), totals_of(10.5, 3000.0))]);
        let text = csv(&rows(Some(&before), &now, Duration::from_secs(1)));
        assert_eq!(
            text,
            "name,cpu_percent,memory_bytes,disk_read_bytes_per_second,disk_write_bytes_per_second,network_rx_bytes_per_second,network_tx_bytes_per_second,processes\n\
             a,50.0,1024,0,0,2000,0,0\n"
        );
    }

    #[test]
    fn the_screen_fits_the_terminal() {
        let now = BTreeMap::from_iter((0..50).map(|i| (format!("c{i}"), totals_of(1.0, 1.0))));
        let r = rows(None, &now, Duration::ZERO);
        let lines = screen(&r, SortKey::Cpu, "local:", 2.0, 40, 10);
        assert_eq!(lines.len(), 10);
        assert!(lines.iter().all(|l| l.chars().count() <= 40));
        assert!(lines[1].starts_with("NAME"), "{lines:?}");
    }
}
