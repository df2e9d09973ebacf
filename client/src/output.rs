//! Output formats: table, json, yaml, csv.

use anyhow::{bail, Result};
use serde_json::Value;

/// A list output format, as `lxc list --format` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
    Csv,
}

/// Renders rows under headers in `format`; `raw` is what json and yaml print.
pub fn render(
    format: Format,
    headers: &[String],
    rows: &[Vec<String>],
    raw: &Value,
) -> Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string(raw)? + "\n",
        Format::Yaml => serde_yaml::to_string(raw)?,
        Format::Csv => rows
            .iter()
            .map(|r| r.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",") + "\n")
            .collect(),
        Format::Table => table(headers, rows),
    })
}

fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_string()
    }
}

/// An ASCII table like lxc's.
pub fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            for line in c.lines() {
                widths[i] = widths[i].max(line.chars().count());
            }
        }
    }
    let sep: String = "+".to_string()
        + &widths
            .iter()
            .map(|w| "-".repeat(w + 2) + "+")
            .collect::<String>()
        + "\n";
    let line = |cells: &[String]| -> String {
        let height = cells
            .iter()
            .map(|c| c.lines().count().max(1))
            .max()
            .unwrap_or(1);
        let mut out = String::new();
        for l in 0..height {
            out.push('|');
            for (i, c) in cells.iter().enumerate() {
                let text = c.lines().nth(l).unwrap_or("");
                out.push_str(&format!(" {:<w$} |", text, w = widths[i]));
            }
            out.push('\n');
        }
        out
    };
    let mut out = sep.clone();
    out.push_str(&line(headers));
    out.push_str(&sep);
    for r in rows {
        out.push_str(&line(r));
        out.push_str(&sep);
    }
    out
}

/// Parses `-c` column letters for `list`.
pub fn columns(spec: &str) -> Result<Vec<char>> {
    let cols: Vec<char> = spec.chars().filter(|c| *c != ',').collect();
    for c in &cols {
        if !"ns46tSpPlbcd".contains(*c) {
            bail!("unknown column {c:?} (known: n s 4 6 t S p P l b c d)");
        }
    }
    Ok(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_csv_render() {
        let h = vec!["NAME".to_string(), "STATE".to_string()];
        let rows = vec![vec!["c1".to_string(), "RUNNING".to_string()]];
        let t = table(&h, &rows);
        assert!(t.contains("| NAME | STATE   |"), "{t}");
        assert!(t.contains("| c1   | RUNNING |"), "{t}");
        assert_eq!(
            render(Format::Csv, &h, &rows, &Value::Null).unwrap(),
            "c1,RUNNING\n"
        );
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert!(columns("ns4").is_ok());
        assert!(columns("nz").is_err());
    }
}
