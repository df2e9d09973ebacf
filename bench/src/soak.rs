//! The soak (`--soak N`): N create/start/exec/stop/delete cycles of a busybox container on
//! a fresh hutchd, with the daemon's RSS, open fds and threads and the cycle latency
//! sampled every 1,000 cycles (every N/100 when N is smaller) into a CSV and PNG plots,
//! and a verdict: did each stay flat within ±5 % after warm-up (a count: or within one).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::images::import_busybox;
use crate::plot::{lines, Series};
use crate::target::{open_fds, rss_mib, threads, Daemon, Target};

/// How far a resource may move after warm-up and still count as flat.
const FLAT: f64 = 0.05;

/// One sample, taken after `cycle` cycles.
struct Sample {
    cycle: usize,
    rss_mib: f64,
    fds: usize,
    threads: usize,
    /// Mean cycle latency since the previous sample.
    cycle_ms: f64,
}

/// Cycles between samples.
fn interval(n: usize) -> usize {
    (n / 100).clamp(1, 1000)
}

/// One create/start/exec/stop/delete cycle of container `name`.
fn cycle(t: &Target, name: &str) -> Result<Duration> {
    let start = Instant::now();
    t.time("hutch", &["init", "bb", name])?;
    t.time("hutch", &["start", name])?;
    t.time("hutch", &["exec", name, "--", "true"])?;
    t.time("hutch", &["stop", name, "--force"])?;
    t.time("hutch", &["delete", name])?;
    Ok(start.elapsed())
}

/// Median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The verdict line for one resource: the median of the last quarter of the samples after
/// warm-up (the first tenth) against the median of the first quarter after it, and the
/// largest single move from that baseline. A move of `step` (one, for a count: a thread
/// of tokio's blocking pool that has not yet timed out) is never more than flat.
fn verdict(name: &str, values: &[f64], step: f64) -> (bool, String) {
    let warm = (values.len() / 10)
        .max(1)
        .min(values.len().saturating_sub(1));
    let after = &values[warm..];
    if after.len() < 2 {
        return (true, format!("{name}: too few samples to judge"));
    }
    let quarter = (after.len() / 4).max(1);
    let base = median(after[..quarter].to_vec());
    let end = median(after[after.len() - quarter..].to_vec());
    let drift = if base > 0.0 { end / base - 1.0 } else { 0.0 };
    let widest = after
        .iter()
        .map(|v| if base > 0.0 { v / base - 1.0 } else { 0.0 })
        .fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
    let flat = drift.abs() <= FLAT || (end - base).abs() <= step;
    let line = format!(
        "{name}: {base:.1} after warm-up, {end:.1} at the end ({:+.1} %, widest sample {:+.1} %): {}",
        drift * 100.0,
        widest * 100.0,
        if flat { "flat" } else { "NOT flat" }
    );
    (flat, line)
}

/// The samples as CSV, one row per sample.
fn csv(samples: &[Sample]) -> String {
    let mut csv = String::from("cycle,rss_mib,fds,threads,cycle_ms\n");
    for s in samples {
        let _ = writeln!(
            csv,
            "{},{:.2},{},{},{:.1}",
            s.cycle, s.rss_mib, s.fds, s.threads, s.cycle_ms
        );
    }
    csv
}

/// Runs the soak (`workers` clients side by side, each cycling its own container) and
/// writes `soak.csv`, `soak-rss.png`, `soak-latency.png` and `soak-fds-threads.png` into
/// `out`. Returns whether everything stayed flat.
pub(crate) fn run(
    bin: &Path,
    image: &Path,
    driver: &str,
    n: usize,
    workers: usize,
    out: &Path,
) -> Result<bool> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let d = Daemon::start(bin, driver)?;
    let t = &d.target;
    import_busybox(t, image)?;
    let every = interval(n);
    let csv_path = out.join("soak.csv");
    let sample = |cycle: usize, cycle_ms: f64| Sample {
        cycle,
        rss_mib: rss_mib(t.pid),
        fds: open_fds(t.pid),
        threads: threads(t.pid),
        cycle_ms,
    };
    /// What the workers share: cycles claimed and under way, and since the last sample,
    /// the cycles finished and their time.
    struct Progress {
        claimed: usize,
        in_flight: usize,
        /// A sample is being taken: no cycle starts until it is.
        sampling: bool,
        finished: usize,
        spent: Duration,
        samples: Vec<Sample>,
    }
    let progress = std::sync::Mutex::new(Progress {
        claimed: 0,
        in_flight: 0,
        sampling: false,
        finished: 0,
        spent: Duration::ZERO,
        samples: vec![sample(0, 0.0)],
    });
    let changed = std::sync::Condvar::new();
    let wait = |p| changed.wait(p).expect("soak progress");
    let worker = |w: usize| -> Result<()> {
        let name = format!("soak{w}");
        loop {
            let i = {
                let mut p = progress.lock().expect("soak progress");
                while p.sampling {
                    p = wait(p);
                }
                if p.claimed == n {
                    return Ok(());
                }
                p.claimed += 1;
                p.in_flight += 1;
                p.claimed
            };
            let took = cycle(t, &name).with_context(|| format!("soak cycle {i}"));
            let mut p = progress.lock().expect("soak progress");
            p.in_flight -= 1;
            changed.notify_all();
            // A failed cycle ends the soak: the others claim nothing more.
            let took = took.inspect_err(|_| p.claimed = n)?;
            p.finished += 1;
            p.spent += took;
            let done = p.samples.last().map_or(0, |s| s.cycle) + p.finished;
            if (done.is_multiple_of(every) || done == n) && !p.sampling {
                // Sampled between cycles, none under way: a request in flight holds fds
                // and threads of its own, which would read as noise or growth.
                p.sampling = true;
                while p.in_flight > 0 {
                    p = wait(p);
                }
                let done = p.samples.last().map_or(0, |s| s.cycle) + p.finished;
                let s = sample(done, p.spent.as_secs_f64() * 1000.0 / p.finished as f64);
                eprintln!(
                    "soak: {done}/{n} cycles, RSS {:.1} MiB, {} fds, {} threads, {:.0} ms/cycle",
                    s.rss_mib, s.fds, s.threads, s.cycle_ms
                );
                p.samples.push(s);
                // Written at every sample so a soak cut short still leaves its numbers.
                if let Err(e) = std::fs::write(&csv_path, csv(&p.samples)) {
                    eprintln!("soak: writing {}: {e}", csv_path.display());
                }
                p.finished = 0;
                p.spent = Duration::ZERO;
                p.sampling = false;
                changed.notify_all();
            }
        }
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|w| s.spawn(move || worker(w)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a soak worker panicked")))
            })
            .collect::<Result<Vec<()>>>()
    })?;
    let samples = progress.into_inner().expect("soak progress").samples;
    std::fs::write(&csv_path, csv(&samples))?;
    let points = |f: &dyn Fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.cycle as f64, f(s))).collect()
    };
    lines(
        &out.join("soak-rss.png"),
        &format!("hutchd RSS over {n} cycles"),
        "MiB",
        &[Series {
            name: "RSS",
            points: points(&|s| s.rss_mib),
        }],
    )?;
    lines(
        &out.join("soak-latency.png"),
        &format!("create/start/exec/stop/delete cycle latency over {n} cycles"),
        "ms per cycle",
        &[Series {
            name: "cycle",
            points: samples
                .iter()
                .skip(1)
                .map(|s| (s.cycle as f64, s.cycle_ms))
                .collect(),
        }],
    )?;
    lines(
        &out.join("soak-fds-threads.png"),
        &format!("hutchd open fds and threads over {n} cycles"),
        "count",
        &[
            Series {
                name: "open fds",
                points: points(&|s| s.fds as f64),
            },
            Series {
                name: "threads",
                points: points(&|s| s.threads as f64),
            },
        ],
    )?;
    // The sample before the first cycle is not part of the soak.
    let measured = &samples[1..];
    let mut all_flat = true;
    println!("soak of {n} cycles ({driver}, {workers} at a time), sampled every {every}:");
    for (name, values, step) in [
        (
            "RSS (MiB)",
            measured.iter().map(|s| s.rss_mib).collect::<Vec<_>>(),
            0.0,
        ),
        (
            "open fds",
            measured.iter().map(|s| s.fds as f64).collect(),
            1.0,
        ),
        (
            "threads",
            measured.iter().map(|s| s.threads as f64).collect(),
            1.0,
        ),
    ] {
        let (flat, line) = verdict(name, &values, step);
        all_flat &= flat;
        println!("  {line}");
    }
    println!(
        "  CSV and plots in {}: {}",
        out.display(),
        if all_flat {
            "RSS, fds and threads stayed flat within ±5 % after warm-up"
        } else {
            "something grew more than 5 % after warm-up"
        }
    );
    Ok(all_flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_every_thousand_or_every_hundredth() {
        assert_eq!(interval(100_000), 1000);
        assert_eq!(interval(5_000), 50);
        assert_eq!(interval(50), 1);
    }

    #[test]
    fn a_steady_series_is_flat_and_a_growing_one_is_not() {
        let steady = [
            30.0, 20.0, 20.5, 20.2, 19.9, 20.1, 20.3, 20.0, 20.2, 20.1, 20.0,
        ];
        assert!(verdict("rss", &steady, 0.0).0);
        let growing: Vec<f64> = (0..20).map(|i| 20.0 + i as f64).collect();
        assert!(!verdict("rss", &growing, 0.0).0);
        assert!(!verdict("threads", &growing, 1.0).0);
        // One thread more of eleven is a count's least move, not growth.
        let threads = [
            9.0, 10.0, 11.0, 11.0, 10.0, 11.0, 12.0, 12.0, 11.0, 12.0, 12.0,
        ];
        assert!(!verdict("threads", &threads, 0.0).0);
        assert!(verdict("threads", &threads, 1.0).0);
    }
}
