//! One optimized volume (`backup/snapshots/<s>.bin`, `backup/container.bin`) received by
//! the pool's own command (`btrfs receive --chroot`) from the tarball's stream, as the
//! migration target receives one from a peer (migration/send_receive.rs), but blocking:
//! the tarball is read on the import's thread.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hutch_storage::StorageDriver;

use crate::error::{DaemonError, Result};

/// Receives `stream` into directory `dir` (relative to the pool; made if missing) and
/// returns the volume it made there; a snapshot (`name`) must end up with its name.
pub(super) fn receive(
    pool: &dyn StorageDriver,
    dir: &Path,
    name: Option<&str>,
    stream: &mut dyn Read,
) -> Result<PathBuf> {
    let into = pool.path(dir);
    std::fs::create_dir_all(&into).map_err(|e| DaemonError::io("create", &into, e))?;
    let list = || -> BTreeSet<OsString> {
        std::fs::read_dir(&into)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect()
    };
    let before = list();
    let argv = pool.receive_argv(dir).ok_or_else(|| {
        DaemonError::BadRequest(format!(
            "The {} pool cannot receive optimized backups",
            pool.info().name
        ))
    })?;
    let label = name.unwrap_or("the instance's volume").to_string();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DaemonError::io("run", &argv[0], e))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = (&mut stderr).take(64 << 10).read_to_string(&mut text);
        text
    });
    let pumped = std::io::copy(stream, &mut stdin).and_then(|_| stdin.flush());
    drop(stdin);
    if pumped.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| DaemonError::io("wait for", &argv[0], e))?;
    let text = errors.join().unwrap_or_default();
    let new: Vec<OsString> = list().difference(&before).cloned().collect();
    let made: Vec<PathBuf> = new.iter().map(|n| dir.join(n)).collect();
    let cleanup = |made: &[PathBuf]| {
        for vol in made {
            let _ = pool.delete_volume(vol);
        }
    };
    if let Err(e) = pumped {
        cleanup(&made);
        return Err(DaemonError::failed(
            "receive",
            &label,
            std::io::Error::new(e.kind(), format!("{e} ({})", text.trim())),
        ));
    }
    if !status.success() {
        cleanup(&made);
        return Err(DaemonError::BadRequest(format!(
            "Invalid backup: btrfs receive of {label} failed: {}",
            text.trim()
        )));
    }
    let [one] = &made[..] else {
        cleanup(&made);
        return Err(DaemonError::BadRequest(format!(
            "Invalid backup: the stream of {label} did not make one subvolume"
        )));
    };
    let Some(name) = name else {
        return Ok(one.clone());
    };
    let want = dir.join(name);
    if *one != want {
        // Renamed within its directory (a received subvolume is read-only, but its
        // name is its parent's entry).
        if let Err(e) = pool.rename_volume(one, &want) {
            cleanup(&made);
            return Err(e.into());
        }
    }
    Ok(want)
}
