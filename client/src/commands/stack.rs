//! `hutch apply`, `diff`, `down` and `ps`: declarative stacks (see `crate::stack`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::http::{encode, Client};
use crate::output::{self, Format};
use crate::stack::execute::{self, Options, Report};
use crate::stack::plan::{Op, Plan};
use crate::stack::{actions, current, load, plan};

/// The stack commands, at the top level of `hutch` as compose's are.
#[derive(Subcommand)]
pub enum Cmd {
    /// Create and update a stack's instances, networks, volumes and profiles from its file.
    Apply(ApplyArgs),
    /// Show what `apply` would do: create, update, replace, delete, with the keys that differ.
    Diff(FileArg),
    /// Delete a stack's instances, profiles and networks (and volumes with --volumes).
    Down(DownArgs),
    /// List a stack's instances: status, IPv4 address, ports.
    Ps(PsArgs),
}

#[derive(Args)]
pub struct FileArg {
    /// The stack file.
    #[arg(short = 'f', long = "file", default_value = "stack.yaml")]
    pub file: PathBuf,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub file: FileArg,
    /// Show the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replace instances whose image changed (their data goes; volumes stay).
    #[arg(long)]
    pub replace: bool,
    /// Delete the stack's objects that the file no longer names.
    #[arg(long)]
    pub remove_orphans: bool,
}

#[derive(Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub file: FileArg,
    /// Delete the stack's volumes too.
    #[arg(long)]
    pub volumes: bool,
}

#[derive(Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub file: FileArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn run(c: &Client, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Apply(a) => apply(c, &a),
        Cmd::Diff(a) => diff(c, &a),
        Cmd::Down(a) => down(c, &a),
        Cmd::Ps(a) => ps(c, &a),
    }
}

fn print_plan(name: &str, plan: &Plan) {
    if plan.is_empty() {
        println!("Stack {name} is up to date: nothing to do");
        return;
    }
    println!("Plan for stack {name}:");
    for s in &plan.steps {
        let mark = match s.op {
            Op::Create => "+",
            Op::Update(_) => "~",
            Op::Replace(_) => "!",
            Op::Delete => "-",
        };
        println!(
            "  {mark} {:<8} {:<8} {}",
            s.op.verb(),
            s.kind.to_string(),
            s.name
        );
        match &s.op {
            Op::Update(changes) | Op::Replace(changes) => {
                for ch in changes {
                    println!("        {ch}");
                }
            }
            Op::Delete => println!("        not in the file (apply --remove-orphans deletes it)"),
            Op::Create => {}
        }
    }
}

fn print_report(report: &Report) {
    let lines = |title: &str, items: &[(String, String)]| {
        if !items.is_empty() {
            println!("{title}:");
            for (what, why) in items {
                println!("  {what}: {why}");
            }
        }
    };
    if !report.done.is_empty() && !output::quiet() {
        println!("Done:");
        let mut done = report.done.clone();
        done.sort();
        for d in done {
            println!("  {d}");
        }
    }
    lines("Failed", &report.failed);
    lines("Not done", &report.not_done);
    lines("Kept", &report.kept);
}

fn apply(c: &Client, a: &ApplyArgs) -> Result<()> {
    let stack = load(&a.file.file)?;
    let now = current::read(c)?;
    let plan = plan::plan(&stack, &now)?;
    print_plan(&stack.name, &plan);
    if a.dry_run || plan.is_empty() {
        return Ok(());
    }
    let opts = Options {
        replace: a.replace,
        remove_orphans: a.remove_orphans,
    };
    let report = execute::apply(c, &stack, &plan, &now, opts);
    print_report(&report);
    if !report.failed.is_empty() {
        bail!(
            "apply of stack {} stopped: {} step(s) failed, {} not done; fix the cause and apply again to finish",
            stack.name,
            report.failed.len(),
            report.not_done.len()
        );
    }
    if !report.not_done.is_empty() {
        bail!(
            "{} step(s) of stack {} not done (see above)",
            report.not_done.len(),
            stack.name
        );
    }
    Ok(())
}

fn diff(c: &Client, a: &FileArg) -> Result<()> {
    let stack = load(&a.file)?;
    let plan = plan::plan(&stack, &current::read(c)?)?;
    print_plan(&stack.name, &plan);
    Ok(())
}

fn down(c: &Client, a: &DownArgs) -> Result<()> {
    let stack = load(&a.file.file)?;
    let now = current::read(c)?;
    let report = execute::down(c, &stack.name, &now, a.volumes);
    if report.done.is_empty() && report.failed.is_empty() {
        println!("Stack {}: nothing to remove", stack.name);
    }
    print_report(&report);
    if !report.ok() {
        bail!("down of stack {} did not finish", stack.name);
    }
    Ok(())
}

fn ps(c: &Client, a: &PsArgs) -> Result<()> {
    let stack = load(&a.file.file)?;
    let now = current::read(c)?;
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for (name, o) in &now.instances {
        if o.stack() != Some(stack.name.as_str()) {
            continue;
        }
        let state = c.get(&format!("/1.0/instances/{}/state", encode(name)))?;
        let ipv4 = actions::ipv4(&state).unwrap_or_default();
        let ports: Vec<String> = o
            .devices
            .values()
            .filter(|d| d.get("type").map(String::as_str) == Some("proxy"))
            .map(|d| {
                format!(
                    "{}->{}",
                    d.get("listen").map_or("", String::as_str),
                    d.get("connect").map_or("", String::as_str)
                )
            })
            .collect();
        let service = if stack.instances.contains_key(name) {
            stack.instances[name].service.clone()
        } else {
            "(orphan)".into()
        };
        raw.push(json!({"name": name, "service": service, "status": o.status, "ipv4": ipv4, "ports": ports}));
        rows.push(vec![
            name.clone(),
            service,
            o.status.to_uppercase(),
            ipv4,
            ports.join("\n"),
        ]);
    }
    let headers: Vec<String> = ["NAME", "SERVICE", "STATE", "IPV4", "PORTS"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    print!(
        "{}",
        output::render(a.format, &headers, &rows, &json!(raw))?
    );
    Ok(())
}
