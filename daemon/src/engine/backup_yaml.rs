//! Every instance, custom volume and pool carries its own description on the pool, so
//! `hutchd recover` can rebuild the database from the pools alone:
//! - an instance: `<pool>/containers/<name>/backup.yaml` (LXD's path and content), beside
//!   `rootfs/`, so the container never sees it;
//! - a custom volume: `<pool>/custom-backups/<name>.yaml`, *beside* the volume, not in it:
//!   a container that mounts the volume could rewrite a file inside it, and recover must
//!   not trust what a container wrote;
//! - a pool: `<pool>/.hutch-pool.yaml`, its driver and source as the database records them.
//!
//! Files are written 0400, root-owned, under a temporary name renamed into place. They
//! follow every change through the lifecycle events ([`on_lifecycle`]): each action that
//! changes what a file says already announces itself there, so one observer replaces a
//! call at each site. For instances the observer only queues what went stale; a
//! [`Writer`] thread rewrites it after the answer, once per burst (an instance's file holds
//! every snapshot's config: 40 KB of YAML with 50 snapshots, 2.5 ms to emit, which no
//! request should wait on). Pools' and volumes' files are small and written at once. A failure to write is logged, never the user's action's failure; a file a crash
//! left stale is rewritten from the database at the next start ([`write_all`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use hutch_backup::config as bc;
use hutch_backup::Config;
use serde::{Deserialize, Serialize};

use super::backup_config::backup_config;
use crate::daemon::{instance_vol, Daemon};
use crate::db::pools::PoolRow;
use crate::error::{DaemonError, Result};

/// The instance's file, inside its volume.
pub const INSTANCE_FILE: &str = "backup.yaml";
/// The pool's definition, at its root.
pub const POOL_FILE: &str = ".hutch-pool.yaml";
/// The directory of custom volumes' files, at a pool's root.
pub const VOLUME_FILES: &str = "custom-backups";

/// A pool as `.hutch-pool.yaml` records it: enough to mount it again without a database.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolDefinition {
    pub name: String,
    /// As recorded: `dir`, `btrfs`, `zfs:<dataset>`.
    pub driver: String,
    pub description: String,
    pub config: BTreeMap<String, String>,
}

impl PoolDefinition {
    pub fn of(row: &PoolRow) -> Self {
        PoolDefinition {
            name: row.name.clone(),
            driver: row.driver.clone(),
            description: row.description.clone(),
            config: row.config.clone(),
        }
    }

    pub fn row(&self) -> PoolRow {
        PoolRow {
            name: self.name.clone(),
            driver: self.driver.clone(),
            description: self.description.clone(),
            config: self.config.clone(),
        }
    }
}

/// The path of custom volume `name`'s file on the pool mounted at `root`.
pub fn volume_file(root: &Path, name: &str) -> PathBuf {
    root.join(VOLUME_FILES).join(format!("{name}.yaml"))
}

/// Writes `text` to `path` as root-only, read-only, replacing it whole; a file that says
/// that already is left alone. Not fsynced: these files are on every start, stop and
/// snapshot path, and each daemon start rewrites them all from the database, so a file a
/// power loss truncated is whole again before anyone needs it (the rename keeps the old
/// one whole until then).
pub(crate) fn write_file(path: &Path, text: &str) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DaemonError::io("write", path, e)
    })
}

/// Rewrites instance `name`'s `backup.yaml` from the database.
pub fn write_instance(d: &Daemon, name: &str) -> Result<()> {
    let row = d.db.instance_or_404(name)?;
    let config = backup_config(d, name)?;
    let path = d
        .pool(&row.pool)?
        .path(&instance_vol(name))
        .join(INSTANCE_FILE);
    write_file(&path, &config.to_yaml())
}

/// The backup config of custom volume `name` on `pool`.
fn volume_config(d: &Daemon, pool: &str, name: &str) -> Result<Config> {
    let row = d.db.volume(pool, name)?;
    let pool_row = d.db.pool_or_404(pool)?;
    let p = d.pool(pool)?;
    let volume_snapshots = super::volumes::snapshot_names(&*p, name)
        .into_iter()
        .map(|s| bc::StorageVolumeSnapshot {
            name: s,
            ..Default::default()
        })
        .collect();
    Ok(Config {
        pool: Some(pool_object(&pool_row)),
        volume: Some(bc::StorageVolume {
            name: row.name,
            description: row.description,
            kind: "custom".into(),
            config: row.config,
            content_type: "filesystem".into(),
            location: "none".into(),
            created_at: row.created_at,
            used_by: Vec::new(),
        }),
        volume_snapshots,
        ..Default::default()
    })
}

/// A pool row as a backup config names it.
pub fn pool_object(row: &PoolRow) -> bc::StoragePool {
    bc::StoragePool {
        name: row.name.clone(),
        description: row.description.clone(),
        driver: row.driver.split(':').next().unwrap_or_default().to_string(),
        config: row.config.clone(),
        used_by: Vec::new(),
        status: "Created".into(),
        locations: vec!["none".into()],
    }
}

/// Rewrites custom volume `name`'s file on `pool`, or removes it when the volume is gone.
pub fn write_volume(d: &Daemon, pool: &str, name: &str) -> Result<()> {
    let root = d.pool(pool)?.root().to_path_buf();
    let path = volume_file(&root, name);
    match volume_config(d, pool, name) {
        Ok(config) => {
            let dir = root.join(VOLUME_FILES);
            std::fs::create_dir_all(&dir).map_err(|e| DaemonError::io("create", &dir, e))?;
            write_file(&path, &config.to_yaml())
        }
        Err(DaemonError::NotFound(_)) => {
            let _ = std::fs::remove_file(&path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Writes pool `name`'s definition at its root.
pub fn write_pool(d: &Daemon, name: &str) -> Result<()> {
    let row = d.db.pool_or_404(name)?;
    let root = d.pool(name)?.root().join(POOL_FILE);
    let text = serde_yaml::to_string(&PoolDefinition::of(&row)).unwrap_or_default();
    write_file(&root, &text)
}

/// Every pool's definition and every instance's and custom volume's file, as the
/// database has them now (at start: files older than this feature, or missed changes).
pub fn write_all(d: &Daemon) {
    for pool in d.db.pools().unwrap_or_default() {
        log(write_pool(d, &pool.name), "pool", &pool.name);
        for v in d.db.volumes(&pool.name).unwrap_or_default() {
            log(write_volume(d, &pool.name, &v.name), "volume", &v.name);
        }
    }
    for row in d.db.instances().unwrap_or_default() {
        if row.state == "ready" {
            log(write_instance(d, &row.name), "instance", &row.name);
        }
    }
}

fn log(done: Result<()>, what: &str, name: &str) {
    if let Err(e) = done {
        tracing::warn!(object = what, name, error = %e.chain(), "cannot write its backup file");
    }
}

/// What a lifecycle event asks to rewrite.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Refresh {
    Instance(String),
    Volume {
        pool: String,
        name: String,
    },
    Pool(String),
    /// Every instance that uses the profile.
    Profile(String),
}

/// The file an event about `source` (an API path) makes stale, if any.
fn refresh_of(action: &str, source: &str) -> Option<Refresh> {
    let parts: Vec<&str> = source.trim_start_matches('/').split('/').collect();
    match (action, parts.as_slice()) {
        ("instance-deleted", _) | ("storage-volume-deleted", _) => None,
        (a, ["1.0", "instances", name, ..]) if a.starts_with("instance-") => {
            // Pauses and file pushes change nothing the file records (a start or stop
            // does: `volatile.last_state.power`, `last_used_at`).
            let irrelevant = [
                "instance-paused",
                "instance-resumed",
                "instance-file-pushed",
            ];
            (!irrelevant.contains(&a)).then(|| Refresh::Instance(name.to_string()))
        }
        (a, ["1.0", "storage-pools", pool, "volumes", "custom", name, ..])
            if a.starts_with("storage-volume") =>
        {
            Some(Refresh::Volume {
                pool: pool.to_string(),
                name: name.to_string(),
            })
        }
        ("storage-pool-created" | "storage-pool-updated", ["1.0", "storage-pools", pool]) => {
            Some(Refresh::Pool(pool.to_string()))
        }
        ("profile-updated" | "profile-renamed", ["1.0", "profiles", name]) => {
            Some(Refresh::Profile(name.to_string()))
        }
        _ => None,
    }
}

/// The lifecycle observer: queues the instances' files the event made stale for the
/// writer; a pool's or a custom volume's file (a few lines) is rewritten at once, as part
/// of the change, so that a pool or volume deleted right after never races its writer.
pub fn on_lifecycle(d: &Arc<Daemon>, action: &str, source: &str) {
    match refresh_of(action, source) {
        None => {}
        Some(stale @ (Refresh::Instance(_) | Refresh::Profile(_))) => {
            d.backup_files.queue(d, stale)
        }
        Some(stale) => {
            // Only an instance can be busy: nothing comes back.
            let _ = refresh(d, stale);
        }
    }
}

/// Rewrites one stale file (or, for a profile, every file of its instances); what it could
/// not write yet (an instance whose lock a long action holds) is handed back.
fn refresh(d: &Daemon, stale: Refresh) -> Vec<Refresh> {
    match stale {
        Refresh::Instance(name) => {
            // The instance's own lock: no delete or rename moves the volume mid-write. An
            // export or a copy may hold it for minutes: the writer does not wait behind it.
            let lock = d.instance_lock(&name);
            let Ok(held) = lock.try_lock() else {
                return vec![Refresh::Instance(name)];
            };
            match write_instance(d, &name) {
                // Deleted or renamed since the event: its volume says nothing any more.
                Err(DaemonError::NotFound(_)) => {
                    drop(held);
                    drop(lock);
                    d.prune_instance_locks();
                }
                done => log(done, "instance", &name),
            }
            Vec::new()
        }
        Refresh::Volume { pool, name } => {
            log(write_volume(d, &pool, &name), "volume", &name);
            // A renamed volume's old file: the event names the new one only.
            prune_volume_files(d, &pool);
            Vec::new()
        }
        Refresh::Pool(name) => {
            log(write_pool(d, &name), "pool", &name);
            Vec::new()
        }
        Refresh::Profile(profile) => {
            d.db.instances()
                .unwrap_or_default()
                .into_iter()
                .filter(|row| row.state == "ready" && row.profiles.contains(&profile))
                .flat_map(|row| refresh(d, Refresh::Instance(row.name)))
                .collect()
        }
    }
}

/// The files waiting to be rewritten, and whether a thread is rewriting them.
#[derive(Debug, Default)]
struct Stale {
    files: BTreeSet<Refresh>,
    writing: bool,
}

/// Rewrites stale files on a thread of its own, which lives while there is work: a burst of
/// changes to one instance is one write, and no request waits for YAML to be emitted.
#[derive(Debug, Default)]
pub struct Writer {
    stale: Mutex<Stale>,
    /// Signalled when the writer has nothing left.
    idle: Condvar,
}

impl Writer {
    fn queue(&self, d: &Arc<Daemon>, stale: Refresh) {
        let mut s = self.stale.lock().unwrap_or_else(|e| e.into_inner());
        s.files.insert(stale);
        if s.writing {
            return;
        }
        s.writing = true;
        let weak = Arc::downgrade(d);
        let spawned = std::thread::Builder::new()
            .name("backup-yaml".into())
            .spawn(move || write_until_idle(weak));
        if let Err(e) = spawned {
            // Left queued: the next change tries again, and the next start writes all.
            s.writing = false;
            tracing::warn!(error = %e, "cannot start the backup.yaml writer");
        }
    }

    /// Waits until every queued file is written, at most `limit` (at exit: the next start
    /// writes whatever is left from the database).
    pub fn flush(&self, limit: Duration) {
        let s = self.stale.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self
            .idle
            .wait_timeout_while(s, limit, |s| s.writing || !s.files.is_empty());
    }
}

/// The writer thread: takes what is stale in batches until nothing is.
fn write_until_idle(d: Weak<Daemon>) {
    loop {
        let Some(d) = d.upgrade() else { return };
        let batch = {
            let mut s = d
                .backup_files
                .stale
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if s.files.is_empty() {
                s.writing = false;
                d.backup_files.idle.notify_all();
                return;
            }
            std::mem::take(&mut s.files)
        };
        let busy: Vec<Refresh> = batch.into_iter().flat_map(|s| refresh(&d, s)).collect();
        if !busy.is_empty() {
            d.backup_files
                .stale
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .files
                .extend(busy);
            drop(d);
            std::thread::sleep(BUSY_RETRY);
        }
    }
}

/// How soon a file whose instance was busy is tried again.
const BUSY_RETRY: Duration = Duration::from_millis(50);

/// Removes the files of custom volumes that no longer exist on `pool`.
fn prune_volume_files(d: &Daemon, pool: &str) {
    let Ok(p) = d.pool(pool) else { return };
    let Ok(rows) = d.db.volumes(pool) else { return };
    let dir = p.root().join(VOLUME_FILES);
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".yaml") else {
            continue;
        };
        if !name.starts_with('.') && !rows.iter().any(|r| r.name == name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_file_they_make_stale() {
        assert_eq!(
            refresh_of("instance-updated", "/1.0/instances/c1"),
            Some(Refresh::Instance("c1".into()))
        );
        assert_eq!(
            refresh_of(
                "instance-snapshot-created",
                "/1.0/instances/c1/snapshots/s0"
            ),
            Some(Refresh::Instance("c1".into()))
        );
        assert_eq!(refresh_of("instance-paused", "/1.0/instances/c1"), None);
        assert_eq!(refresh_of("instance-deleted", "/1.0/instances/c1"), None);
        assert_eq!(
            refresh_of(
                "storage-volume-snapshot-created",
                "/1.0/storage-pools/p/volumes/custom/v/snapshots/s"
            ),
            Some(Refresh::Volume {
                pool: "p".into(),
                name: "v".into()
            })
        );
        assert_eq!(
            refresh_of("profile-updated", "/1.0/profiles/default"),
            Some(Refresh::Profile("default".into()))
        );
        assert_eq!(
            refresh_of("storage-pool-created", "/1.0/storage-pools/p"),
            Some(Refresh::Pool("p".into()))
        );
        assert_eq!(refresh_of("image-created", "/1.0/images/abc"), None);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_busy_instance_does_not_hold_up_the_other_files() {
        let api = crate::api::testing::TestApi::new().await;
        let fp = api.tiny_image().await;
        api.tiny_instance("c1", &fp).await;
        api.tiny_instance("c2", &fp).await;
        let d = api.engine.d.clone();
        let flush = |d: &Arc<Daemon>| {
            let d = d.clone();
            tokio::task::spawn_blocking(move || d.backup_files.flush(Duration::from_secs(10)))
        };
        flush(&d).await.unwrap();
        let file = |name: &str| {
            d.pool("default")
                .unwrap()
                .path(&instance_vol(name))
                .join(INSTANCE_FILE)
        };
        for name in ["c1", "c2"] {
            std::fs::remove_file(file(name)).unwrap();
        }
        // c1's lock is held, as a long export holds it: c2's file is written meanwhile.
        let lock = d.instance_lock("c1");
        let held = lock.lock().await;
        on_lifecycle(&d, "instance-updated", "/1.0/instances/c1");
        on_lifecycle(&d, "instance-updated", "/1.0/instances/c2");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !file("c2").exists() {
            assert!(std::time::Instant::now() < deadline, "c2 waited behind c1");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!file("c1").exists());
        drop(held);
        flush(&d).await.unwrap();
        assert!(file("c1").exists());
    }

    #[test]
    fn files_are_replaced_whole_and_read_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.yaml");
        write_file(&path, "a: 1\n").unwrap();
        write_file(&path, "a: 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o400);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
