//! `${VAR}` interpolation as compose does it, and the `.env` file beside a stack file.
//!
//! Forms: `${VAR}` and `$VAR` (unset: empty, with a warning), `${VAR:-default}` (default
//! when unset or empty), `${VAR-default}` (default when unset), `${VAR:?message}` and
//! `${VAR?message}` (an error when unset or empty / unset), and `$$` for a literal `$`.
//! Defaults may themselves hold `${...}`.

use std::collections::BTreeMap;

use super::error::StackError;

/// Where variables come from: the process environment first, then the `.env` file.
pub struct Vars<'a> {
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    pub dotenv: &'a BTreeMap<String, String>,
    /// Variables used but set nowhere (said once each as a warning).
    pub missing: Vec<String>,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).or_else(|| self.dotenv.get(name).cloned())
    }
}

/// Interpolates one string value found at `path` (for error messages).
pub fn interpolate(text: &str, path: &str, vars: &mut Vars<'_>) -> Result<String, StackError> {
    let bad = |why: &str| StackError::Interpolation {
        path: path.to_string(),
        why: why.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = closing_brace(r).ok_or_else(|| bad("a \"${\" without its \"}\""))?;
            out.push_str(&expand(&r[..end], path, vars)?);
            rest = &r[end + 1..];
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if n == 0 {
                // A lone `$` stays as it is, as compose keeps it.
                out.push('$');
            } else {
                out.push_str(&value_or_warn(&after[..n], vars));
            }
            rest = &after[n..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` that closes a `${` whose body starts `s`.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn value_or_warn(name: &str, vars: &mut Vars<'_>) -> String {
    match vars.get(name) {
        Some(v) => v,
        None => {
            if !vars.missing.iter().any(|m| m == name) {
                vars.missing.push(name.to_string());
            }
            String::new()
        }
    }
}

/// The body of one `${...}`.
fn expand(body: &str, path: &str, vars: &mut Vars<'_>) -> Result<String, StackError> {
    let n = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, op) = body.split_at(n);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(StackError::Interpolation {
            path: path.to_string(),
            why: format!("\"${{{body}}}\" does not name a variable"),
        });
    }
    let value = vars.get(name);
    let (empty_counts, op) = match op.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, op),
    };
    let unset = match &value {
        None => true,
        Some(v) => empty_counts && v.is_empty(),
    };
    if op.is_empty() && !empty_counts {
        return Ok(value_or_warn(name, vars));
    }
    if let Some(default) = op.strip_prefix('-') {
        return match value {
            Some(v) if !unset => Ok(v),
            _ => interpolate(default, path, vars),
        };
    }
    if let Some(message) = op.strip_prefix('?') {
        return match value {
            Some(v) if !unset => Ok(v),
            _ => Err(StackError::Interpolation {
                path: path.to_string(),
                why: if message.is_empty() {
                    format!("required variable {name} is not set")
                } else {
                    format!("required variable {name} is not set: {message}")
                },
            }),
        };
    }
    Err(StackError::Interpolation {
        path: path.to_string(),
        why: format!("\"${{{body}}}\" is not a form hutch knows (${{VAR}}, ${{VAR:-default}}, ${{VAR-default}}, ${{VAR:?message}})"),
    })
}

/// Parses a `.env` file: `KEY=VALUE` lines, `#` comments, an optional `export `, values
/// in single quotes taken as they are, in double quotes with `\n` and `\"` unescaped.
pub fn parse_dotenv(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = if let Some(v) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            v.to_string()
        } else if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            v.replace("\\n", "\n").replace("\\\"", "\"")
        } else {
            // An unquoted value ends at a ` #` comment.
            value
                .split_once(" #")
                .map_or(value, |(v, _)| v)
                .trim_end()
                .to_string()
        };
        vars.insert(key.trim().to_string(), value);
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, env: &[(&str, &str)], dotenv: &[(&str, &str)]) -> (String, Vec<String>) {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dotenv: BTreeMap<String, String> = dotenv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = |k: &str| env.get(k).cloned();
        let mut vars = Vars {
            lookup: &lookup,
            dotenv: &dotenv,
            missing: Vec::new(),
        };
        let out = interpolate(text, "x", &mut vars).unwrap();
        (out, vars.missing)
    }

    #[test]
    fn variables_and_defaults_expand_as_compose_expands_them() {
        let env = [("A", "1"), ("EMPTY", "")];
        assert_eq!(run("${A}", &env, &[]).0, "1");
        assert_eq!(run("a$A-b", &env, &[]).0, "a1-b");
        assert_eq!(run("${B:-two}", &env, &[]).0, "two");
        assert_eq!(run("${EMPTY:-two}", &env, &[]).0, "two");
        assert_eq!(run("${EMPTY-two}", &env, &[]).0, "");
        assert_eq!(run("${A:-two}", &env, &[]).0, "1");
        assert_eq!(run("${B:-${A}x}", &env, &[]).0, "1x");
        assert_eq!(run("cost $$5 and $", &env, &[]).0, "cost $5 and $");
        let (out, missing) = run("[${NOPE}]", &env, &[]);
        assert_eq!(out, "[]");
        assert_eq!(missing, ["NOPE"]);
    }

    #[test]
    fn the_environment_wins_over_the_dotenv_file() {
        assert_eq!(run("${A}", &[("A", "env")], &[("A", "file")]).0, "env");
        assert_eq!(run("${A}", &[], &[("A", "file")]).0, "file");
    }

    #[test]
    fn bad_forms_and_required_variables_are_errors() {
        let lookup = |_: &str| None;
        let dotenv = BTreeMap::new();
        let mut vars = Vars {
            lookup: &lookup,
            dotenv: &dotenv,
            missing: Vec::new(),
        };
        for (text, want) in [
            ("${A", "without its"),
            ("${A:?give A}", "required variable A is not set: give A"),
            ("${A?}", "required variable A is not set"),
            ("${}", "does not name a variable"),
            ("${A/x/y}", "not a form"),
        ] {
            let e = interpolate(text, "instances.web.image", &mut vars)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("instances.web.image"), "{e}");
        }
    }

    #[test]
    fn dotenv_lines_parse() {
        let vars = parse_dotenv(
            "# comment\nA=1\nexport B = two \nC='x # y'\nD=\"q\\\"n\"\nE=v # note\nbad line\n",
        );
        assert_eq!(vars["A"], "1");
        assert_eq!(vars["B"], "two");
        assert_eq!(vars["C"], "x # y");
        assert_eq!(vars["D"], "q\"n");
        assert_eq!(vars["E"], "v");
        assert_eq!(vars.len(), 5);
    }
}
