//! The Prometheus text exposition format (version 0.0.4) as LXD writes it: families in a
//! fixed order, each with `# HELP` and `# TYPE`, labels sorted by name, values formatted as
//! Go's `strconv.FormatFloat(v, 'g', -1, 64)`, and a final `# EOF`.

use std::fmt::Write;

/// The `Content-Type` of the body.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// What a family is: its name, help text and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

/// One sample line: a suffix of the family's name (`_bucket`, `_sum`, `_count` of a
/// histogram; empty otherwise), its labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    suffix: &'static str,
    labels: Vec<(&'static str, String)>,
    value: f64,
}

/// A family and its samples.
#[derive(Debug)]
struct Family {
    desc: Desc,
    samples: Vec<Sample>,
}

/// The families of one scrape, rendered in the order they were first declared; a family
/// without samples is left out, as LXD leaves out what a container lacks.
#[derive(Debug, Default)]
pub struct MetricSet {
    families: Vec<Family>,
}

impl MetricSet {
    /// A set with `descs` declared in this order (their samples may come in any order).
    pub fn with_order(descs: &[Desc]) -> Self {
        MetricSet {
            families: descs
                .iter()
                .map(|d| Family {
                    desc: *d,
                    samples: Vec::new(),
                })
                .collect(),
        }
    }

    fn family(&mut self, desc: Desc) -> &mut Family {
        // Descriptions are constants: their names' pointers match first.
        let same = |f: &Family| std::ptr::eq(f.desc.name, desc.name) || f.desc.name == desc.name;
        let i = match self.families.iter().position(same) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    desc,
                    samples: Vec::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// Adds a sample of `desc` (declared now if it was not).
    pub fn add(&mut self, desc: Desc, labels: Vec<(&'static str, String)>, value: f64) {
        self.family(desc).samples.push(Sample {
            suffix: "",
            labels,
            value,
        });
    }

    /// Adds one series of a histogram: `buckets` are (upper bound, cumulative count) in
    /// increasing order; the `+Inf` bucket is `count`.
    pub fn add_histogram(
        &mut self,
        desc: Desc,
        labels: Vec<(&'static str, String)>,
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let family = self.family(desc);
        let bounds = buckets
            .iter()
            .map(|(le, n)| (format_value(*le), *n))
            .chain(std::iter::once(("+Inf".to_string(), count)));
        for (le, n) in bounds {
            let mut l = vec![("le", le)];
            l.extend(labels.iter().cloned());
            family.samples.push(Sample {
                suffix: "_bucket",
                labels: l,
                value: n as f64,
            });
        }
        family.samples.push(Sample {
            suffix: "_sum",
            labels: labels.clone(),
            value: sum,
        });
        family.samples.push(Sample {
            suffix: "_count",
            labels,
            value: count as f64,
        });
    }

    /// The exposition text, ending with `# EOF` as LXD's does.
    pub fn render(&self) -> String {
        let lines: usize = self.families.iter().map(|f| f.samples.len()).sum();
        let mut out = String::with_capacity(lines * 96 + 64);
        for f in self.families.iter().filter(|f| !f.samples.is_empty()) {
            let _ = writeln!(out, "# HELP {} {}", f.desc.name, escape_help(f.desc.help));
            let _ = writeln!(out, "# TYPE {} {}", f.desc.name, f.desc.kind.name());
            for s in &f.samples {
                out.push_str(f.desc.name);
                out.push_str(s.suffix);
                push_labels(&mut out, &s.labels);
                out.push(' ');
                push_value(&mut out, s.value);
                out.push('\n');
            }
        }
        out.push_str("# EOF\n");
        out
    }
}

/// `{a="…",b="…"}` sorted by name (callers mostly add them sorted: then no sort is made).
fn push_labels(out: &mut String, labels: &[(&'static str, String)]) {
    if labels.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..labels.len()).collect();
    if !labels.windows(2).all(|w| w[0].0 <= w[1].0) {
        order.sort_by_key(|i| labels[*i].0);
    }
    out.push('{');
    for (n, i) in order.into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        let (k, v) = &labels[i];
        out.push_str(k);
        out.push_str("=\"");
        push_escaped_label(out, v);
        out.push('"');
    }
    out.push('}');
}

/// A label value with `\`, `"` and newlines escaped.
fn push_escaped_label(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A help text with `\` and newlines escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Writes [`format_value`] of `v`; whole numbers below a million (most samples) go
/// straight as integers.
fn push_value(out: &mut String, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e6 {
        let _ = write!(out, "{}", v as i64);
    } else {
        out.push_str(&format_value(v));
    }
}

/// `v` as Go's `FormatFloat(v, 'g', -1, 64)`: the shortest digits that read back as `v`,
/// in exponent form (`5.24288e+06`) when the exponent is below -4 or at least 6.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    // Rust's `{:e}` gives the same shortest digits, as `5.24288e6`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROCS: Desc = Desc {
        name: "lxd_procs_total",
        help: "The number of running processes.",
        kind: Kind::Gauge,
    };
    const CPU: Desc = Desc {
        name: "lxd_cpu_seconds_total",
        help: "The total number of CPU time used in seconds.",
        kind: Kind::Counter,
    };

    #[test]
    fn values_are_formatted_as_go_formats_them() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (4096.0, "4096"),
            (61440.0, "61440"),
            (999999.0, "999999"),
            (1e6, "1e+06"),
            (5246976.0, "5.246976e+06"),
            (2.68435456e8, "2.68435456e+08"),
            (24683584000.0, "2.4683584e+10"),
            (0.004626047, "0.004626047"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e100, "1e+100"),
            (-3.0, "-3"),
            (f64::INFINITY, "+Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(format_value(v), want, "{v}");
        }
    }

    #[test]
    fn families_render_in_declared_order_with_sorted_labels() {
        let mut set = MetricSet::with_order(&[CPU, PROCS]);
        set.add(
            PROCS,
            vec![
                ("type", "container".into()),
                ("name", "c1".into()),
                ("project", "default".into()),
            ],
            3.0,
        );
        set.add(
            CPU,
            vec![
                ("name", "c1".into()),
                ("mode", "user".into()),
                ("cpu", "0".into()),
            ],
            1.25,
        );
        assert_eq!(
            set.render(),
            "# HELP lxd_cpu_seconds_total The total number of CPU time used in seconds.\n\
             # TYPE lxd_cpu_seconds_total counter\n\
             lxd_cpu_seconds_total{cpu=\"0\",mode=\"user\",name=\"c1\"} 1.25\n\
             # HELP lxd_procs_total The number of running processes.\n\
             # TYPE lxd_procs_total gauge\n\
             lxd_procs_total{name=\"c1\",project=\"default\",type=\"container\"} 3\n\
             # EOF\n"
        );
    }

    #[test]
    fn empty_families_are_left_out() {
        let mut set = MetricSet::with_order(&[CPU, PROCS]);
        set.add(PROCS, Vec::new(), 1.0);
        assert_eq!(
            set.render(),
            "# HELP lxd_procs_total The number of running processes.\n\
             # TYPE lxd_procs_total gauge\nlxd_procs_total 1\n# EOF\n"
        );
        assert_eq!(MetricSet::default().render(), "# EOF\n");
    }

    #[test]
    fn histograms_have_cumulative_buckets_sum_and_count() {
        let desc = Desc {
            name: "hutch_api_request_duration_seconds",
            help: "Time to answer API requests.",
            kind: Kind::Histogram,
        };
        let mut set = MetricSet::default();
        set.add_histogram(
            desc,
            vec![("method", "GET".into()), ("route", "/1.0".into())],
            &[(0.005, 2), (0.01, 3)],
            0.0125,
            4,
        );
        assert_eq!(
            set.render(),
            "# HELP hutch_api_request_duration_seconds Time to answer API requests.\n\
             # TYPE hutch_api_request_duration_seconds histogram\n\
             hutch_api_request_duration_seconds_bucket{le=\"0.005\",method=\"GET\",route=\"/1.0\"} 2\n\
             hutch_api_request_duration_seconds_bucket{le=\"0.01\",method=\"GET\",route=\"/1.0\"} 3\n\
             hutch_api_request_duration_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/1.0\"} 4\n\
             hutch_api_request_duration_seconds_sum{method=\"GET\",route=\"/1.0\"} 0.0125\n\
             hutch_api_request_duration_seconds_count{method=\"GET\",route=\"/1.0\"} 4\n\
             # EOF\n"
        );
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let desc = Desc {
            name: "x",
            help: "a \\ b\nc",
            kind: Kind::Gauge,
        };
        let mut set = MetricSet::default();
        set.add(desc, vec![("name", "a\"b\\c\nd".into())], 1.0);
        assert_eq!(
            set.render(),
            "# HELP x a \\\\ b\\nc\n# TYPE x gauge\nx{name=\"a\\\"b\\\\c\\nd\"} 1\n# EOF\n"
        );
    }
}
