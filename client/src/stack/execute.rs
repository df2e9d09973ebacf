//! Carries out a plan: networks, volumes and profiles first (side by side), then the
//! instances wave by wave in `depends_on` order (the instances of a wave side by side),
//! then orphans when asked. A failure stops it after the steps already under way; the
//! report says what was done and what was not, and applying again finishes the job (the
//! plan of the next run starts from what the server then has).

use std::sync::Mutex;

use anyhow::Result;

use super::actions;
use super::current::{Current, Object};
use super::file::Condition;
use super::model::Stack;
use super::plan::{Kind, Op, Plan, Step};
use crate::http::Client;
use crate::output;

/// What `apply` may do besides creating and updating.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Replace instances whose image changed.
    pub replace: bool,
    /// Delete the stack's objects that the file no longer names.
    pub remove_orphans: bool,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub done: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// Steps not run, and why.
    pub not_done: Vec<(String, String)>,
    /// Objects left on purpose (orphans without `--remove-orphans`, volumes without
    /// `--volumes`), and what would remove them.
    pub kept: Vec<(String, String)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.not_done.is_empty()
    }
}

fn say(msg: &str) {
    if !output::quiet() {
        println!("{msg}");
    }
}

/// A step's title and the work that does it.
type Job<'a> = (String, Box<dyn FnOnce() -> Result<()> + Send + 'a>);

/// How many steps run at once: enough for a small site, without a thread per replica of
/// a large `count`.
const WORKERS: usize = 8;

/// Runs `jobs` side by side, [`WORKERS`] at a time, recording each in `report`.
fn parallel(jobs: Vec<Job<'_>>, report: &Mutex<Report>) {
    let workers = jobs.len().min(WORKERS);
    let queue = Mutex::new(jobs.into_iter());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some((title, job)) = next else {
                    return;
                };
                let result = job();
                let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(()) => r.done.push(title),
                    Err(e) => {
                        let why: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                        r.failed.push((title, why.join(": ")));
                    }
                }
            });
        }
    });
}

fn failed(report: &Mutex<Report>) -> bool {
    !report
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .failed
        .is_empty()
}

/// The job for one network, volume or profile step.
fn base_job<'a>(c: &'a Client, stack: &'a Stack, step: &'a Step) -> Option<Job<'a>> {
    let update = matches!(step.op, Op::Update(_));
    let job: Box<dyn FnOnce() -> Result<()> + Send> = match step.kind {
        Kind::Network => {
            let n = stack.networks.get(&step.name)?;
            Box::new(move || match update {
                true => actions::update_network(c, n),
                false => actions::create_network(c, n),
            })
        }
        Kind::Volume => {
            let v = stack.volumes.get(&step.name)?;
            Box::new(move || match update {
                true => actions::update_volume(c, v),
                false => actions::create_volume(c, v),
            })
        }
        Kind::Profile => {
            let p = stack.profiles.get(&step.name)?;
            Box::new(move || match update {
                true => actions::update_profile(c, p),
                false => actions::create_profile(c, p),
            })
        }
        Kind::Instance => return None,
    };
    let verb = if update { "Updating" } else { "Creating" };
    say(&format!("{verb} {} {}", step.kind, step.name));
    Some((step.title(), job))
}

/// Brings one instance to what its step asks.
fn instance_job(c: &Client, stack: &Stack, step: &Step, now: Option<&Object>) -> Result<()> {
    let Some(i) = stack.instances.get(&step.name) else {
        return Ok(());
    };
    let create = |what: &str| -> Result<()> {
        say(&format!("{what} instance {}", i.name));
        actions::create_instance(c, i)?;
        say(&format!("Starting {}", i.name));
        actions::start(c, &i.name)?;
        if !i.files.is_empty() || !i.provision.is_empty() {
            say(&format!("Provisioning {}", i.name));
        }
        actions::provision(c, i)
    };
    match &step.op {
        Op::Create => create("Creating"),
        Op::Replace(_) => {
            say(&format!("Deleting instance {} (to replace it)", i.name));
            actions::delete_instance(c, &i.name)?;
            create("Creating new")
        }
        Op::Update(changes) => {
            let reconfigure = changes
                .iter()
                .any(|ch| !matches!(ch.key.as_str(), "status" | "provisioned"));
            if reconfigure {
                say(&format!("Updating instance {}", i.name));
                actions::update_instance(c, i, now.unwrap_or(&Object::default()))?;
            }
            if changes.iter().any(|ch| ch.key == "status") {
                say(&format!("Starting {}", i.name));
                actions::start(c, &i.name)?;
            }
            if changes.iter().any(|ch| ch.key == "provisioned") {
                say(&format!("Provisioning {}", i.name));
                actions::provision(c, i)?;
            }
            Ok(())
        }
        Op::Delete => Ok(()),
    }
}

/// The healthchecks of the instances that `wave` waits on with `condition: healthy`.
fn health_jobs<'a>(c: &'a Client, stack: &'a Stack, wave: &[String]) -> Vec<Job<'a>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut checks: Vec<Job> = Vec::new();
    for svc in wave {
        for (dep, cond) in &stack.services[svc].depends_on {
            let target = &stack.services[dep];
            let Some(h) = target.healthcheck.as_ref() else {
                continue;
            };
            if *cond != Condition::Healthy {
                continue;
            }
            for inst in target.instances.iter().filter(|i| seen.insert(i.as_str())) {
                say(&format!("Waiting for {inst} to be healthy"));
                checks.push((
                    format!("healthcheck of {inst}"),
                    Box::new(move || actions::wait_healthy(c, inst, h)),
                ));
            }
        }
    }
    checks
}

/// Applies `plan` (computed from `current`) to the server.
pub fn apply(c: &Client, stack: &Stack, plan: &Plan, current: &Current, opts: Options) -> Report {
    // One Ctrl-C handler for the whole run: the waits of the steps side by side install
    // and restore theirs in any order.
    let _ctrl_c = crate::interrupt::Watch::install();
    let report = Mutex::new(Report::default());
    let mut rest: Vec<&Step> = Vec::new();
    // Networks, volumes and profiles.
    let base: Vec<Job> = plan
        .steps
        .iter()
        .filter(|s| s.kind != Kind::Instance && s.op != Op::Delete)
        .filter_map(|s| base_job(c, stack, s))
        .collect();
    parallel(base, &report);
    // Instances, wave by wave.
    let waves = super::model::waves(&stack.services);
    for wave in &waves {
        let steps: Vec<&Step> = wave
            .iter()
            .flat_map(|svc| stack.services[svc].instances.iter())
            .filter_map(|name| plan.step(Kind::Instance, name))
            .collect();
        if failed(&report) {
            rest.extend(steps);
            continue;
        }
        // Healthchecks of the services this wave waits on, when it has work to do.
        if !steps.is_empty() {
            let checks = health_jobs(c, stack, wave);
            parallel(checks, &report);
            if failed(&report) {
                rest.extend(steps);
                continue;
            }
        }
        let mut jobs: Vec<Job> = Vec::new();
        for step in steps {
            if matches!(step.op, Op::Replace(_)) && !opts.replace {
                let r = &mut report.lock().unwrap_or_else(|e| e.into_inner());
                r.not_done.push((
                    step.title(),
                    "the image changed: apply --replace makes a new instance".into(),
                ));
                continue;
            }
            let now = current.instances.get(&step.name);
            jobs.push((
                step.title(),
                Box::new(move || instance_job(c, stack, step, now)),
            ));
        }
        parallel(jobs, &report);
    }
    // Orphans.
    let orphans: Vec<&Step> = plan.steps.iter().filter(|s| s.op == Op::Delete).collect();
    if !opts.remove_orphans || failed(&report) {
        let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
        for s in &orphans {
            let (what, why) = (
                format!("{} {}", s.kind, s.name),
                "not in the file: apply --remove-orphans deletes it",
            );
            if opts.remove_orphans {
                r.not_done
                    .push((s.title(), "an earlier step failed".into()));
            } else {
                r.kept.push((what, why.into()));
            }
        }
    } else {
        delete_all(
            c,
            &orphans
                .iter()
                .map(|s| (s.kind, s.name.as_str()))
                .collect::<Vec<_>>(),
            &report,
        );
    }
    let mut r = report.into_inner().unwrap_or_else(|e| e.into_inner());
    for s in rest {
        r.not_done
            .push((s.title(), "an earlier step failed".into()));
    }
    r
}

/// Deletes objects: instances side by side first, then profiles, networks and volumes.
pub fn delete_all(c: &Client, objects: &[(Kind, &str)], report: &Mutex<Report>) {
    for kind in [Kind::Instance, Kind::Profile, Kind::Network, Kind::Volume] {
        let jobs: Vec<Job> = objects
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|&(k, name)| -> Job {
                say(&format!("Deleting {k} {name}"));
                let job: Box<dyn FnOnce() -> Result<()> + Send> = match k {
                    Kind::Instance => Box::new(move || actions::delete_instance(c, name)),
                    Kind::Profile => Box::new(move || actions::delete_profile(c, name)),
                    Kind::Network => Box::new(move || actions::delete_network(c, name)),
                    Kind::Volume => Box::new(move || actions::delete_volume(c, name)),
                };
                (format!("delete {k} {name}"), job)
            })
            .collect();
        parallel(jobs, report);
    }
}

/// `down`: every object labelled with the stack, volumes only when `volumes`.
pub fn down(c: &Client, stack: &str, current: &Current, volumes: bool) -> Report {
    let mine = |o: &Object| o.stack() == Some(stack);
    let mut objects: Vec<(Kind, &str)> = Vec::new();
    let mut kept = Vec::new();
    for (kind, map) in [
        (Kind::Instance, &current.instances),
        (Kind::Profile, &current.profiles),
        (Kind::Network, &current.networks),
        (Kind::Volume, &current.volumes),
    ] {
        for (name, o) in map {
            if !mine(o) {
                continue;
            }
            if kind == Kind::Volume && !volumes {
                kept.push((
                    format!("volume {name}"),
                    "down --volumes deletes it".to_string(),
                ));
            } else {
                objects.push((kind, name));
            }
        }
    }
    let _ctrl_c = crate::interrupt::Watch::install();
    let report = Mutex::new(Report {
        kept,
        ..Default::default()
    });
    delete_all(c, &objects, &report);
    report.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn parallel_runs_every_job_a_few_at_a_time_and_reports_each() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let jobs: Vec<Job> = (0..40)
            .map(|i| -> Job {
                let (running, most) = (&running, &most);
                (
                    format!("job {i}"),
                    Box::new(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        running.fetch_sub(1, Ordering::SeqCst);
                        if i % 4 == 0 {
                            anyhow::bail!("job {i} broke")
                        }
                        Ok(())
                    }),
                )
            })
            .collect();
        let report = Mutex::new(Report::default());
        parallel(jobs, &report);
        let r = report.into_inner().unwrap();
        assert_eq!(r.done.len(), 30);
        assert_eq!(r.failed.len(), 10);
        assert!(r.failed.iter().all(|(t, why)| why == &format!("{t} broke")));
        assert!(most.load(Ordering::SeqCst) <= WORKERS);
        assert!(!r.ok());
    }
}
