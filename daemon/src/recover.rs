//! `hutchd recover`: lists what the pools hold that the database lacks and re-creates the
//! rows (LXD's `lxd recover`, without its questions). Talks to the running daemon over
//! its unix socket (`/internal/recover/...`), or, when none runs, to the daemon's API in
//! this process, holding the state directory's lock.

use std::path::{Path, PathBuf};

use hutch_api::recover::{RecoverItem, RecoverPost, RecoverReport, RecoverStatus};
use hutch_api::storage::{StoragePoolPut, StoragePoolsPost};
use serde_json::Value;

use crate::init::{with_api, InitError};

/// `hutchd recover`'s flags.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each pool describes itself in <pool>/.hutch-pool.yaml, each instance in its volume's \
backup.yaml and each custom volume in <pool>/custom-backups/<name>.yaml; recover reads them.

Without --pool it looks at every directory under $HUTCH_DIR/storage-pools/ and every \
loop file $HUTCH_DIR/disks/<pool>.img (mounting what is not mounted).

--pool NAME                 only this pool (repeatable)
--pool NAME=DRIVER:SOURCE   a pool whose backing is outside $HUTCH_DIR and not mounted: \
btrfs:/dev/sdb1, btrfs:/srv/btrfs-dir, dir:/srv/pool, zfs:tank/hutch

Refused (and named, with the reason): an instance whose name exists already, a \
backup.yaml that names another instance or pool, snapshots on disk that the file does not \
list or the reverse, a profile or network it needs that is missing. Profiles the database \
lacks are re-created from the instances' backup.yaml. Exits 1 when anything was refused.")]
pub struct RecoverArgs {
    /// Only look at this pool; NAME=DRIVER:SOURCE for one outside the state directory.
    #[arg(long = "pool", value_name = "NAME[=DRIVER:SOURCE]")]
    pools: Vec<String>,
    /// List what would be recovered and what refused; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// A `--pool` value: a name, or `NAME=DRIVER:SOURCE`.
fn parse_pool(spec: &str) -> Result<StoragePoolsPost, InitError> {
    let bad = || {
        InitError::Usage(format!(
            "--pool {spec:?}: expected NAME or NAME=DRIVER:SOURCE"
        ))
    };
    let (name, backing) = match spec.split_once('=') {
        Some((name, backing)) => (name, Some(backing)),
        None => (spec, None),
    };
    if name.is_empty() {
        return Err(bad());
    }
    let mut post = StoragePoolsPost {
        name: name.to_string(),
        driver: String::new(),
        put: StoragePoolPut::default(),
    };
    if let Some(backing) = backing {
        let (driver, source) = backing.split_once(':').ok_or_else(bad)?;
        if driver.is_empty() || source.is_empty() {
            return Err(bad());
        }
        post.driver = driver.to_string();
        post.put.config.insert("source".into(), source.to_string());
    }
    Ok(post)
}

/// Runs `hutchd recover`; returns whether anything was refused.
pub fn run(
    dir: &Path,
    hutchd: PathBuf,
    events: crate::events::EventHub,
    args: RecoverArgs,
) -> Result<bool, InitError> {
    let req = RecoverPost {
        pools: args
            .pools
            .iter()
            .map(|p| parse_pool(p))
            .collect::<Result<_, _>>()?,
    };
    let path = if args.dry_run {
        "/internal/recover/validate"
    } else {
        "/internal/recover/import"
    };
    let body = serde_json::to_value(&req).unwrap_or(Value::Null);
    let report = with_api(dir, hutchd, events, |api| {
        let (status, bytes) = api.send("POST", path, Some(&body))?;
        let envelope: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status != 200 {
            return Err(InitError::Api {
                status,
                message: envelope["error"].as_str().unwrap_or_default().to_string(),
            });
        }
        serde_json::from_value::<RecoverReport>(envelope["metadata"].clone()).map_err(|_| {
            InitError::BadResponse {
                method: "POST".into(),
                path: path.into(),
                status,
            }
        })
    })?;
    print!("{}", render(&report, args.dry_run));
    Ok(report.refused())
}

fn status_word(s: RecoverStatus, dry_run: bool) -> &'static str {
    match s {
        RecoverStatus::Known => "in the database",
        RecoverStatus::Missing if dry_run => "missing, would be recovered",
        RecoverStatus::Missing => "missing",
        RecoverStatus::Recovered => "recovered",
        RecoverStatus::Refused => "REFUSED",
    }
}

fn item_line(kind: &str, i: &RecoverItem, dry_run: bool) -> String {
    let snaps = match i.snapshots {
        1 => "1 snapshot".to_string(),
        n => format!("{n} snapshots"),
    };
    let mut line = format!(
        "  {kind:<8} {:<24} {snaps:<13} {}",
        i.name,
        status_word(i.status, dry_run)
    );
    if !i.reason.is_empty() {
        line.push_str(": ");
        line.push_str(&i.reason);
    }
    line.trim_end().to_string() + "\n"
}

/// The report as people read it: a block per pool, a line per instance or volume.
pub fn render(report: &RecoverReport, dry_run: bool) -> String {
    let mut out = String::new();
    let (mut missing, mut refused) = (0, 0);
    for p in &report.pools {
        let backing = if p.source.is_empty() {
            p.driver.clone()
        } else {
            format!("{}, {}", p.driver, p.source)
        };
        out.push_str(&format!(
            "Pool {} ({backing}): {}",
            p.name,
            status_word(p.status, dry_run)
        ));
        if !p.reason.is_empty() {
            out.push_str(&format!(": {}", p.reason));
        }
        out.push('\n');
        for i in &p.instances {
            out.push_str(&item_line("instance", i, dry_run));
        }
        for v in &p.volumes {
            out.push_str(&item_line("volume", v, dry_run));
        }
        for s in
            std::iter::once(p.status).chain(p.instances.iter().chain(&p.volumes).map(|i| i.status))
        {
            match s {
                RecoverStatus::Missing | RecoverStatus::Recovered => missing += 1,
                RecoverStatus::Refused => refused += 1,
                RecoverStatus::Known => {}
            }
        }
    }
    if !report.profiles.is_empty() {
        out.push_str(&format!(
            "Profiles {}: {}\n",
            if dry_run {
                "to re-create"
            } else {
                "re-created"
            },
            report.profiles.join(", ")
        ));
    }
    let verb = if dry_run {
        "would be recovered"
    } else {
        "recovered"
    };
    out.push_str(&format!("{missing} {verb}, {refused} refused"));
    if dry_run {
        out.push_str(" (dry run: nothing was changed)");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hutch_api::recover::RecoverPool;

    #[test]
    fn pool_flags_are_a_name_or_a_backing() {
        assert_eq!(parse_pool("p1").unwrap().driver, "");
        let p = parse_pool("p2=btrfs:/dev/sdb1").unwrap();
        assert_eq!((p.name.as_str(), p.driver.as_str()), ("p2", "btrfs"));
        assert_eq!(p.put.config["source"], "/dev/sdb1");
        assert_eq!(
            parse_pool("p3=zfs:tank/a").unwrap().put.config["source"],
            "tank/a"
        );
        assert!(parse_pool("=dir:/x").is_err());
        assert!(parse_pool("p=dir").is_err());
        assert!(parse_pool("p=:/x").is_err());
    }

    #[test]
    fn the_report_names_each_refusal_and_why() {
        let report = RecoverReport {
            pools: vec![RecoverPool {
                name: "default".into(),
                driver: "btrfs".into(),
                source: "/d/default.img".into(),
                status: RecoverStatus::Missing,
                instances: vec![
                    RecoverItem {
                        name: "c1".into(),
                        snapshots: 2,
                        status: RecoverStatus::Missing,
                        reason: String::new(),
                    },
                    RecoverItem {
                        name: "c2".into(),
                        snapshots: 1,
                        status: RecoverStatus::Refused,
                        reason: "an instance named \"c2\" exists already".into(),
                    },
                ],
                ..Default::default()
            }],
            profiles: vec!["default".into()],
        };
        let text = render(&report, true);
        assert!(text.contains("Pool default (btrfs, /d/default.img): missing, would be recovered"));
        assert!(text.contains("c1") && text.contains("2 snapshots"));
        assert!(text.contains("REFUSED: an instance named \"c2\" exists already"));
        assert!(text.contains("Profiles to re-create: default"));
        assert!(text.ends_with("2 would be recovered, 1 refused (dry run: nothing was changed)\n"));
        assert!(report.refused());
    }
}
