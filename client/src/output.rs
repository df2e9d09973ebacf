//! Output formats of lists, as lxc renders them (lxc/utils/table.go): a bordered table, a
//! compact table without borders, csv, json and yaml; and lxc's natural row order.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use anyhow::Result;
use serde_json::Value;

/// A list output format, as `lxc list --format` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Compact,
    Json,
    Yaml,
    Csv,
}

/// `--quiet`: no progress or confirmation messages (set once by main).
static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(q: bool) {
    QUIET.store(q, AtomicOrdering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(AtomicOrdering::Relaxed)
}

/// Renders rows under headers in `format`; `raw` is what json and yaml print.
pub fn render(
    format: Format,
    headers: &[String],
    rows: &[Vec<String>],
    raw: &Value,
) -> Result<String> {
    Ok(match format {
        Format::Json => json_line(raw)?,
        Format::Yaml => serde_yaml::to_string(raw)?,
        Format::Csv => rows.iter().map(|r| csv_row(r)).collect(),
        Format::Table => table(headers, rows),
        Format::Compact => compact(headers, rows),
    })
}

/// One JSON document on a line, escaped as Go's encoder does (`<`, `>`, `&`, U+2028 and
/// U+2029 as `\u` escapes), so that lxc's and hutch's output compare byte for byte.
pub fn json_line(v: &Value) -> Result<String> {
    let s = serde_json::to_string(v)?;
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        match c {
            // Outside strings JSON has none of these, so escaping every one is safe.
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.push('\n');
    Ok(out)
}

/// A csv record as Go's encoding/csv writes it.
pub fn csv_row(cells: &[String]) -> String {
    cells
        .iter()
        .map(|c| csv_cell(c))
        .collect::<Vec<_>>()
        .join(",")
        + "\n"
}

fn csv_cell(c: &str) -> String {
    let needs_quotes = !c.is_empty()
        && (c.contains([',', '"', '\n', '\r'])
            || c == "\\."
            || c.chars().next().is_some_and(char::is_whitespace));
    if needs_quotes {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

/// The lines of each cell and the width of each column, headers included.
fn layout(headers: &[String], rows: &[Vec<String>]) -> (Vec<usize>, Vec<Vec<Vec<String>>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let cells: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| c.split('\n').map(str::to_string).collect())
                .collect()
        })
        .collect();
    for r in &cells {
        for (i, lines) in r.iter().enumerate() {
            if i >= widths.len() {
                widths.push(0);
            }
            for l in lines {
                widths[i] = widths[i].max(l.chars().count());
            }
        }
    }
    (widths, cells)
}

fn pad_right(s: &str, w: usize) -> String {
    format!("{s}{}", " ".repeat(w.saturating_sub(s.chars().count())))
}

/// Centred as tablewriter centres headers: the smaller half of the gap on the left.
fn centre(s: &str, w: usize) -> String {
    let gap = w.saturating_sub(s.chars().count());
    format!("{}{s}{}", " ".repeat(gap / 2), " ".repeat(gap - gap / 2))
}

/// Header text as tablewriter's auto-format shows it: `_` as a space, `.` as a space
/// unless between digits (`0.5`), trimmed, upper case.
fn title(h: &str) -> String {
    let chars: Vec<char> = h.chars().collect();
    let num_or_space = |c: char| c.is_ascii_digit() || c == ' ';
    let out: String = chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match c {
            '_' => ' ',
            '.' if (i != 0 && !num_or_space(chars[i - 1]))
                || (i + 1 != chars.len() && !num_or_space(chars[i + 1])) =>
            {
                ' '
            }
            c => c,
        })
        .collect();
    out.trim().to_uppercase()
}

/// The physical lines of one table row: cell lines side by side, short cells padded.
fn row_lines(cells: &[Vec<String>], widths: &[usize], sep: &str, edge: &str) -> String {
    let height = cells.iter().map(Vec::len).max().unwrap_or(1);
    let mut out = String::new();
    for l in 0..height {
        out.push_str(edge);
        for (i, lines) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            let text = lines.get(l).map(String::as_str).unwrap_or("");
            out.push(' ');
            out.push_str(&pad_right(text, widths[i]));
            out.push(' ');
        }
        out.push_str(edge);
        out.push('\n');
    }
    out
}

fn header_line(headers: &[String], widths: &[usize], sep: &str, edge: &str) -> String {
    let mut out = edge.to_string();
    for (i, h) in headers.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push(' ');
        out.push_str(&centre(&title(h), widths[i]));
        out.push(' ');
    }
    out.push_str(edge);
    out.push('\n');
    out
}

/// lxc's table: borders, centred headers, a line after every row.
pub fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let (widths, cells) = layout(headers, rows);
    let rule: String = "+".to_string()
        + &widths
            .iter()
            .map(|w| "-".repeat(w + 2) + "+")
            .collect::<String>()
        + "\n";
    let mut out = rule.clone();
    out.push_str(&header_line(headers, &widths, "|", "|"));
    out.push_str(&rule);
    for r in &cells {
        out.push_str(&row_lines(r, &widths, "|", "|"));
        out.push_str(&rule);
    }
    out
}

/// lxc's compact table: no borders, no rules, columns two spaces apart.
pub fn compact(headers: &[String], rows: &[Vec<String>]) -> String {
    let (widths, cells) = layout(headers, rows);
    let mut out = header_line(headers, &widths, "", " ");
    for r in &cells {
        out.push_str(&row_lines(r, &widths, "", " "));
    }
    out
}

/// `a < b` in natural order (fvbommel/sortorder's NaturalLess): runs of digits compare
/// as numbers, and digits sort before other characters.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (da, db) = (a[i].is_ascii_digit(), b[j].is_ascii_digit());
        if da != db {
            return if da {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if !da {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
            continue;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let (nz_a, nz_b) = (i, j);
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (len_a, len_b) = (i - nz_a, j - nz_b);
        if len_a != len_b {
            return len_a.cmp(&len_b);
        }
        if a[nz_a..i] != b[nz_b..j] {
            return a[nz_a..i].cmp(&b[nz_b..j]);
        }
        if nz_a != nz_b {
            return nz_a.cmp(&nz_b);
        }
    }
    // Equal so far: the shorter string first (Go compares the whole lengths).
    a.len().cmp(&b.len())
}

/// Sorts rows as lxc's `ByName`: by the first cell that differs, naturally, empty
/// cells last.
pub fn sort_rows(rows: &mut [Vec<String>]) {
    rows.sort_by(|x, y| {
        for (a, b) in x.iter().zip(y) {
            if a == b {
                continue;
            }
            if a.is_empty() {
                return Ordering::Greater;
            }
            if b.is_empty() {
                return Ordering::Less;
            }
            return natural_cmp(a, b);
        }
        Ordering::Equal
    });
}

/// Bytes in IEC units with two decimals, as LXD's `units.GetByteSizeStringIEC(n, 2)`.
pub fn iec(bytes: i64) -> String {
    byte_size(
        bytes,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
        2,
    )
}

/// Bytes in SI units with two decimals, as LXD's `units.GetByteSizeString(n, 2)`.
pub fn si(bytes: i64) -> String {
    byte_size(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB", "EB"], 2)
}

fn byte_size(bytes: i64, base: f64, units: &[&str], precision: usize) -> String {
    if (bytes as f64) < base {
        return format!("{bytes}{}", units[0]);
    }
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= base && i + 1 < units.len() {
        v /= base;
        i += 1;
    }
    format!("{v:.precision$}{}", units[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn tables_are_drawn_as_lxc_draws_them() {
        let h = s(&["NAME", "STATE"]);
        let rows = vec![s(&["c1", "RUNNING"]), s(&["c2", "STOPPED"])];
        assert_eq!(
            table(&h, &rows),
            "+------+---------+\n\
             | NAME |  STATE  |\n\
             +------+---------+\n\
             | c1   | RUNNING |\n\
             +------+---------+\n\
             | c2   | STOPPED |\n\
             +------+---------+\n"
        );
        assert_eq!(
            compact(&h, &rows),
            "  NAME   STATE   \n  c1    RUNNING  \n  c2    STOPPED  \n"
        );
        // A cell of two lines makes a row of two lines.
        let t = table(&s(&["IPV4"]), &[s(&["10.0.0.2 (eth0)\n10.0.0.3 (eth1)"])]);
        assert!(
            t.contains("| 10.0.0.2 (eth0) |\n| 10.0.0.3 (eth1) |\n"),
            "{t}"
        );
        assert_eq!(title("user.tier"), "USER TIER");
        assert_eq!(title("limits_0.5"), "LIMITS 0.5");
        // No rows: the header alone.
        assert_eq!(table(&h, &[]).lines().count(), 3);
    }

    #[test]
    fn csv_quotes_as_go_does() {
        let h = s(&["A"]);
        let rows = vec![s(&["c1", "a,b", "", " x", "say \"hi\"", "1\n2"])];
        assert_eq!(
            render(Format::Csv, &h, &rows, &Value::Null).unwrap(),
            "c1,\"a,b\",,\" x\",\"say \"\"hi\"\"\",\"1\n2\"\n"
        );
    }

    #[test]
    fn json_escapes_as_go_does() {
        let v = serde_json::json!({"a": "<b>&"});
        assert_eq!(
            json_line(&v).unwrap(),
            "{\"a\":\"\\u003cb\\u003e\\u0026\"}\n"
        );
    }

    #[test]
    fn natural_order() {
        let mut rows = vec![
            s(&["c10", "x"]),
            s(&["c2", "x"]),
            s(&["c1", ""]),
            s(&["c1", "a"]),
            s(&["b", "x"]),
        ];
        sort_rows(&mut rows);
        let names: Vec<String> = rows.iter().map(|r| r.join("/")).collect();
        assert_eq!(names, ["b/x", "c1/a", "c1/", "c2/x", "c10/x"]);
        assert_eq!(natural_cmp("a", "ab"), Ordering::Less);
        assert_eq!(natural_cmp("a01", "a1"), Ordering::Greater);
        assert_eq!(natural_cmp("1", "a"), Ordering::Less);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(iec(512), "512B");
        assert_eq!(iec(1536), "1.50KiB");
        assert_eq!(iec(10 * 1024 * 1024), "10.00MiB");
        assert_eq!(si(1500), "1.50kB");
    }
}
