//! Backup rows: `lxc export` of a stopped container holding 500 MB of random data (the
//! default gzip tarball) and `lxc import` of a backup the same daemon made, on each target,
//! A/B. Skipped, with the reason printed, when a target lacks the `container_backup` API
//! extension.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::target::Target;

/// The API extension the export and import endpoints come with.
const EXTENSION: &str = "container_backup";

/// The container every target exports.
const SOURCE: &str = "bkbig";

/// Whether `t` announces `extension` in `GET /1.0`.
fn has_extension(t: &Target, extension: &str) -> Result<bool> {
    let out = t
        .cmd("lxc", &["query", "/1.0"])
        .stdout(Stdio::piped())
        .output()?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).context("lxc query /1.0")?;
    Ok(info["api_extensions"]
        .as_array()
        .is_some_and(|all| all.iter().any(|e| e.as_str() == Some(extension))))
}

/// `export 500 MB` and `import 500 MB` on each target, A/B; the tarballs go to `work`.
pub(crate) fn measure(
    targets: &[&Target],
    runs: usize,
    work: &Path,
    mut record: impl FnMut(&str, Vec<Vec<Duration>>),
) -> Result<()> {
    for t in targets {
        if !has_extension(t, EXTENSION)? {
            println!(
                "backup rows skipped: {} lacks the {EXTENSION} API extension",
                t.label
            );
            return Ok(());
        }
    }
    for t in targets {
        t.time("lxc", &["launch", "bb", SOURCE])?;
        t.time(
            "lxc",
            &[
                "exec",
                SOURCE,
                "--",
                "dd",
                "if=/dev/urandom",
                "of=/big",
                "bs=1M",
                "count=500",
            ],
        )?;
        t.time("lxc", &["stop", SOURCE, "--force"])?;
    }
    let runs = runs.min(3);
    let tarball = |i: usize, run: usize| work.join(format!("backup-{i}-{run}.tar.gz"));
    let mut exports = vec![Vec::new(); targets.len()];
    for run in 0..runs {
        for (i, t) in targets.iter().enumerate() {
            let file = tarball(i, run);
            let file_s = file.to_str().unwrap_or_default();
            exports[i].push(t.time("lxc", &["export", SOURCE, file_s])?);
            // One tarball per target is kept for the imports.
            if run > 0 {
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    record("export 500 MB", exports);
    let mut imports = vec![Vec::new(); targets.len()];
    for run in 0..runs {
        for (i, t) in targets.iter().enumerate() {
            let file = tarball(i, 0);
            let file_s = file.to_str().unwrap_or_default();
            let name = format!("bkimp{run}");
            imports[i].push(t.time("lxc", &["import", file_s, &name])?);
            t.time("lxc", &["delete", &name])?;
        }
    }
    record("import 500 MB", imports);
    for (i, t) in targets.iter().enumerate() {
        let _ = std::fs::remove_file(tarball(i, 0));
        t.time("lxc", &["delete", SOURCE])?;
    }
    Ok(())
}
