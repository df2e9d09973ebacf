//! `hutch alias add|list|remove|rename`, the user's command aliases kept in the client
//! config, and their expansion (lxc/alias.go, lxc/main_aliases.go).

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Subcommand;
use regex::Regex;
use serde_json::Value;

use crate::config;
use crate::output::{self, Format};

#[derive(Subcommand)]
pub enum Cmd {
    /// Add new aliases: `hutch alias add list "list -c ns46S"`.
    Add { alias: String, target: String },
    /// List aliases.
    #[command(visible_alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Remove aliases.
    #[command(visible_alias = "rm")]
    Remove { alias: String },
    /// Rename aliases.
    #[command(visible_alias = "mv")]
    Rename { old: String, new: String },
}

pub fn run(cmd: Cmd) -> Result<()> {
    let mut aliases = config::aliases()?;
    match cmd {
        Cmd::Add { alias, target } => {
            if aliases.contains_key(&alias) {
                bail!("Alias {alias} already exists");
            }
            aliases.insert(alias, target);
            config::save_aliases(&aliases)
        }
        Cmd::List { format } => {
            let mut rows: Vec<Vec<String>> = aliases
                .iter()
                .map(|(k, v)| vec![k.clone(), v.clone()])
                .collect();
            output::sort_rows(&mut rows);
            let raw: serde_json::Map<String, Value> = aliases
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let headers = ["ALIAS", "TARGET"].map(String::from);
            print!(
                "{}",
                output::render(format, &headers, &rows, &Value::Object(raw))?
            );
            Ok(())
        }
        Cmd::Remove { alias } => {
            if aliases.remove(&alias).is_none() {
                bail!("Alias {alias} doesn't exist");
            }
            config::save_aliases(&aliases)
        }
        Cmd::Rename { old, new } => {
            let Some(target) = aliases.get(&old).cloned() else {
                bail!("Alias {old} doesn't exist");
            };
            if aliases.contains_key(&new) {
                bail!("Alias {new} already exists");
            }
            aliases.remove(&old);
            aliases.insert(new, target);
            config::save_aliases(&aliases)
        }
    }
}

/// lxc's built-in aliases, tried when no user alias matches.
pub fn default_aliases() -> BTreeMap<String, String> {
    [("shell".to_string(), "exec @ARGS@ -- su -l".to_string())]
        .into_iter()
        .collect()
}

/// The alias whose words begin `args` (after the program name), longest first so that
/// the choice never depends on map order.
fn find_alias(
    aliases: &BTreeMap<String, String>,
    args: &[String],
) -> Option<(Vec<String>, Vec<String>)> {
    let mut found: Option<(Vec<String>, Vec<String>)> = None;
    for (k, v) in aliases {
        let key: Vec<String> = k.split(' ').map(str::to_string).collect();
        let matches = key
            .iter()
            .enumerate()
            .all(|(i, word)| args.get(i + 1) == Some(word));
        if matches && found.as_ref().is_none_or(|(f, _)| key.len() > f.len()) {
            found = Some((key, v.split(' ').map(str::to_string).collect()));
        }
    }
    found
}

/// Expands an alias in `args` (program name first) as lxc does: leading flags are kept,
/// `@ARGS@` takes the arguments after the alias, `@ARG1@`... single ones, and arguments
/// not referenced are appended. `None` when no alias matches. A target starting with `/`
/// is an external program to run.
pub fn expand(user: &BTreeMap<String, String>, args: &[String]) -> Result<Option<Vec<String>>> {
    let flags: Vec<String> = args
        .iter()
        .skip(1)
        .take_while(|a| a.starts_with('-'))
        .cloned()
        .collect();
    let mut orig = vec![args.first().cloned().unwrap_or_default()];
    orig.extend(args.iter().skip(1 + flags.len()).cloned());
    let Some((key, value)) =
        find_alias(user, &orig).or_else(|| find_alias(&default_aliases(), &orig))
    else {
        return Ok(None);
    };
    let mut out = Vec::new();
    if !value.first().is_some_and(|v| v.starts_with('/')) {
        out.push(orig[0].clone());
    }
    out.extend(flags);
    let mut at_args: Vec<String> = orig.iter().skip(key.len() + 1).cloned().collect();
    let numbered = Regex::new(r"@ARG(\d+)@").expect("a valid regex");
    let mut referenced: BTreeMap<usize, String> = BTreeMap::new();
    for word in &value {
        for m in numbered.captures_iter(word) {
            let n: usize = m[1]
                .parse()
                .map_err(|_| anyhow::anyhow!("Invalid argument {:?}", &m[0]))?;
            if n == 0 || n > at_args.len() {
                bail!(
                    "Found alias {:?} references an argument outside the given number",
                    key.join(" ")
                );
            }
            referenced.insert(n, at_args[n - 1].clone());
        }
    }
    for n in referenced.keys().rev() {
        at_args.remove(n - 1);
    }
    let mut used_args = false;
    for word in &value {
        if word == "@ARGS@" {
            out.extend(at_args.iter().cloned());
            used_args = true;
            continue;
        }
        let replaced = numbered.replace_all(word, |c: &regex::Captures| {
            let n: usize = c[1].parse().unwrap_or(0);
            referenced.get(&n).cloned().unwrap_or_default()
        });
        out.push(replaced.into_owned());
    }
    if !used_args {
        out.extend(at_args);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn aliases(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn aliases_expand_as_lxc_expands_them() {
        let a = aliases(&[
            ("ll", "list -c ns"),
            ("sh", "exec @ARG1@ -- sh -c @ARG2@"),
            ("ex", "exec @ARGS@ -- ls"),
            ("img ls", "image list"),
            ("run", "/bin/echo"),
        ]);
        let e = |args: &[&str]| expand(&a, &v(args)).unwrap();
        assert_eq!(
            e(&["hutch", "ll", "web"]),
            Some(v(&["hutch", "list", "-c", "ns", "web"]))
        );
        assert_eq!(
            e(&["hutch", "--quiet", "ll"]),
            Some(v(&["hutch", "--quiet", "list", "-c", "ns"]))
        );
        assert_eq!(
            e(&["hutch", "sh", "c1", "pwd", "extra"]),
            Some(v(&[
                "hutch", "exec", "c1", "--", "sh", "-c", "pwd", "extra"
            ]))
        );
        assert_eq!(
            e(&["hutch", "ex", "c1"]),
            Some(v(&["hutch", "exec", "c1", "--", "ls"]))
        );
        assert_eq!(
            e(&["hutch", "img", "ls"]),
            Some(v(&["hutch", "image", "list"]))
        );
        assert_eq!(e(&["hutch", "run", "x"]), Some(v(&["/bin/echo", "x"])));
        assert_eq!(
            e(&["hutch", "shell", "c1"]),
            Some(v(&["hutch", "exec", "c1", "--", "su", "-l"]))
        );
        assert_eq!(e(&["hutch", "list"]), None);
        let err = expand(&a, &v(&["hutch", "sh", "c1"])).unwrap_err();
        assert!(
            err.to_string().contains("references an argument outside"),
            "{err}"
        );
    }
}
