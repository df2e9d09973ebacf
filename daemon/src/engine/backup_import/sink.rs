//! The import's side of the reader: checks the index (name, pool, profiles, driver),
//! records the instance, makes each volume as its files or stream arrive, records each
//! snapshot, and on success finishes the instance; a [`Revert`] removes all of it on
//! any failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hutch_backup::read::{read_backup, Limits, Part, Sink};
use hutch_backup::{BackupError, Index, OptimizedHeader};
use hutch_storage::StorageDriver;
use serde_json::json;
use tokio::sync::oneshot;

use super::BackupUpload;
use crate::daemon::{instance_vol, snapshot_vol};
use crate::db::instances::InstanceRow;
use crate::db::snapshots::SnapshotRow;
use crate::engine::backup_config::rows_of;
use crate::engine::migration::DiskIdmap;
use crate::engine::revert::Revert;
use crate::engine::Engine;
use crate::error::{DaemonError, Result};

/// The most a backup may unpack to, whatever the pool's free space.
const MAX_BYTES: u64 = 1 << 40;

/// Reads the backup from `body` into a new instance (the import's thread). `accepted`
/// gets the instance's name once the index is accepted, or the reason it is not.
pub(super) fn import(
    e: Engine,
    req: BackupUpload,
    body: impl Read + Send + 'static,
    accepted: oneshot::Sender<Result<String>>,
    cancelled: Arc<AtomicBool>,
) -> Result<()> {
    let mut sink = ImportSink {
        e: e.clone(),
        req,
        accepted: Some(accepted),
        cancelled,
        revert: Revert::new(),
        state: None,
        error: None,
    };
    let read = read_backup(
        body,
        &mut sink,
        Limits {
            max_bytes: MAX_BYTES,
        },
    );
    let outcome = match read {
        Ok(_) => sink.finish(),
        Err(err) => Err(sink.error.take().unwrap_or_else(|| bad_backup(err))),
    };
    if let Err(err) = outcome {
        if let Some(tx) = sink.accepted.take() {
            let _ = tx.send(Err(err));
            return Ok(());
        }
        // The revert runs here (dropping the sink), before the operation reports.
        drop(sink);
        return Err(err);
    }
    Ok(())
}

/// A backup's own fault is the client's (400), as LXD words it where it has words.
fn bad_backup(err: BackupError) -> DaemonError {
    match err {
        BackupError::Io { .. } => DaemonError::failed("import", "the backup", err),
        BackupError::Invalid(m) if m == hutch_backup::read::MISSING_INDEX => {
            DaemonError::BadRequest(m)
        }
        BackupError::Invalid(m) => DaemonError::BadRequest(format!("Invalid backup: {m}")),
        other => {
            DaemonError::BadRequest(format!("Invalid backup: {}", crate::error::chain(&other)))
        }
    }
}

/// What the import knows once the index is accepted.
struct Accepted {
    row: InstanceRow,
    snapshots: Vec<SnapshotRow>,
    pool: Arc<dyn StorageDriver>,
    optimized: bool,
    /// The source pool's driver (`index.yaml`'s `backend`).
    backend: String,
    /// The source's disk idmap: LXD writes files (in a tarball or a stream) with the ids
    /// they have on its disk, shifted unless it used idmapped mounts.
    idmap: DiskIdmap,
    /// The received main volume of an optimized backup, in its staging directory.
    staged_main: Option<PathBuf>,
}

struct ImportSink {
    e: Engine,
    req: BackupUpload,
    accepted: Option<oneshot::Sender<Result<String>>>,
    cancelled: Arc<AtomicBool>,
    revert: Revert,
    state: Option<Accepted>,
    /// The daemon's own error behind a [`BackupError`] handed back to the reader.
    error: Option<DaemonError>,
}

impl ImportSink {
    /// Keeps `err` for the caller and gives the reader something to stop on.
    fn fail(&mut self, err: DaemonError) -> BackupError {
        let text = err.chain();
        self.error = Some(err);
        BackupError::Invalid(text)
    }

    fn check_cancel(&mut self) -> Result<(), BackupError> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(self.fail(DaemonError::BadRequest("Operation cancelled".into())));
        }
        Ok(())
    }

    fn state(&mut self) -> &mut Accepted {
        self.state.as_mut().expect("the index comes first")
    }

    /// Checks the index and records the instance (`creating`).
    fn accept(&mut self, index: &Index) -> Result<Accepted> {
        let e = self.e.clone();
        let config = index.config.as_ref().ok_or_else(|| {
            DaemonError::BadRequest("The backup's index.yaml holds no instance config".into())
        })?;
        let container = config.container.as_ref().ok_or_else(|| {
            DaemonError::BadRequest("The backup's index.yaml describes no instance".into())
        })?;
        let name = match &self.req.name {
            Some(n) if !n.is_empty() => n.clone(),
            _ if !container.name.is_empty() => container.name.clone(),
            _ => index.name.clone(),
        };
        let pool_name = match &self.req.pool {
            Some(p) if !p.is_empty() => p.clone(),
            // The backup's pool where this host has one of that name, as LXD does.
            _ if !index.pool.is_empty() && e.db.pool(&index.pool)?.is_some() => index.pool.clone(),
            _ => {
                let default = e.db.profile("default")?.unwrap_or_default();
                crate::engine::root_pool(&default.devices)
            }
        };
        let pool = e.pool(&pool_name)?;
        let optimized = index.optimized.unwrap_or(false);
        if optimized {
            check_driver(&index.backend, &*pool)?;
        }
        let (mut row, snapshots) = rows_of(config, &name, &pool_name)?;
        if e.db.instance(&name)?.is_some() {
            return Err(DaemonError::Conflict(format!(
                "Instance {name:?} already exists"
            )));
        }
        for p in &row.profiles {
            if e.db.profile(p)?.is_none() {
                return Err(DaemonError::BadRequest(format!(
                    "Profile {p:?} does not exist (create it before importing)"
                )));
            }
        }
        place_root_disk(&e, &mut row, &pool_name)?;
        let idmap = DiskIdmap::from_lxd_json(
            container
                .config
                .get("volatile.last_state.idmap")
                .map(String::as_str)
                .unwrap_or("[]"),
        );
        if let Err(err) = e.db.insert_instance(&row) {
            // Another create of the same name got in between the check and here.
            if e.db.instance(&name)?.is_some() {
                return Err(DaemonError::Conflict(format!(
                    "Instance {name:?} already exists"
                )));
            }
            return Err(err);
        }
        {
            let (d, n) = (e.clone(), name.clone());
            self.revert
                .add(move || crate::engine::create::remove_leftovers(&d, &n));
        }
        {
            // Snapshot volumes made before their rows, and the directory holding them.
            let (p, n) = (pool.clone(), name.clone());
            self.revert.add(move || {
                let dir = PathBuf::from("containers-snapshots").join(&n);
                for entry in std::fs::read_dir(p.path(&dir))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let _ = p.delete_volume(&dir.join(entry.file_name()));
                }
                let _ = std::fs::remove_dir(p.path(&dir));
            });
        }
        {
            let (d, n) = (e.clone(), name.clone());
            self.revert
                .add(move || crate::engine::create::remove_snapshot_leftovers(&d, &n));
        }
        Ok(Accepted {
            row,
            snapshots,
            pool,
            optimized,
            backend: index.backend.clone(),
            idmap,
            staged_main: None,
        })
    }

    /// The row of snapshot `s`: the backup's, or a bare one when its config lacks it.
    fn snapshot_row(&mut self, s: &str) -> SnapshotRow {
        let st = self.state();
        st.snapshots
            .iter()
            .find(|r| r.name == s)
            .cloned()
            .unwrap_or_else(|| SnapshotRow {
                instance: st.row.name.clone(),
                name: s.to_string(),
                created_at: crate::now(),
                expires_at: hutch_backup::config::NEVER.to_string(),
                architecture: st.row.architecture.clone(),
                config: Default::default(),
                devices: Default::default(),
                profiles: st.row.profiles.clone(),
                ephemeral: false,
            })
    }

    /// The volume's path in the pool.
    fn vol(&mut self, part: &Part) -> PathBuf {
        let name = self.state().row.name.clone();
        match part {
            Part::Snapshot(s) => snapshot_vol(&name, s),
            Part::Main => instance_vol(&name),
        }
    }

    fn open(&mut self, part: &Part) -> Result<PathBuf> {
        let vol = self.vol(part);
        let pool = self.state().pool.clone();
        pool.create_volume(&vol)?;
        let (p, v) = (pool.clone(), vol.clone());
        self.revert.add(move || {
            let _ = p.set_readonly(&v, false);
            let _ = p.delete_volume(&v);
        });
        Ok(pool.path(&vol))
    }

    fn close(&mut self, part: &Part) -> Result<()> {
        let vol = self.vol(part);
        let (pool, idmap) = (self.state().pool.clone(), self.state().idmap.clone());
        // LXD 5.0 writes a shifted disk's ids as they are on it: back to the container's.
        idmap.unshift_tree(&pool.path(&vol).join("rootfs"))?;
        if let Part::Snapshot(s) = part {
            pool.set_readonly(&vol, true)?;
            let row = self.snapshot_row(s);
            self.e.db.insert_snapshot(&row)?;
        }
        Ok(())
    }

    fn receive_part(&mut self, part: &Part, stream: &mut dyn Read) -> Result<()> {
        let name = self.state().row.name.clone();
        let pool = self.state().pool.clone();
        match part {
            Part::Snapshot(s) => {
                let dir = PathBuf::from("containers-snapshots").join(&name);
                super::receive::receive(&*pool, &dir, Some(s), stream)?;
                let row = self.snapshot_row(s);
                self.e.db.insert_snapshot(&row)?;
            }
            Part::Main => {
                let staging = PathBuf::from("containers").join(format!(".{name}.importing"));
                {
                    let p = pool.clone();
                    let st = staging.clone();
                    self.revert.add(move || remove_staging(&*p, &st));
                }
                let received = super::receive::receive(&*pool, &staging, None, stream)?;
                self.state().staged_main = Some(received);
            }
        }
        Ok(())
    }

    /// After the whole backup: the main volume in place, the instance ready.
    fn finish(&mut self) -> Result<()> {
        let e = self.e.clone();
        let st = self.state.as_mut().expect("a read backup had its index");
        if st.optimized && !st.idmap.is_empty() {
            for s in e.db.snapshots(&st.row.name)? {
                let vol = snapshot_vol(&st.row.name, &s.name);
                if st.pool.path(&vol).exists() {
                    unshift_received(&*st.pool, &st.idmap, &vol)?;
                }
            }
        }
        let main = instance_vol(&st.row.name);
        if let Some(received) = st.staged_main.take() {
            // A received subvolume is read-only: its writable snapshot is the instance's.
            st.pool.clone_volume(&received, &main, false)?;
            let staging = received.parent().map(Path::to_path_buf).unwrap_or_default();
            remove_staging(&*st.pool, &staging);
            st.idmap.unshift_tree(&st.pool.path(&main).join("rootfs"))?;
        }
        if st.optimized && !st.pool.path(&main).exists() {
            return Err(DaemonError::BadRequest(
                "Invalid backup: no instance volume".into(),
            ));
        }
        let path = st.pool.path(&main);
        // backup.yaml described the source; this host writes its own.
        let _ = std::fs::remove_file(path.join("backup.yaml"));
        let expanded = crate::engine::expand(&e, &st.row)?;
        crate::engine::create::secure_instance_volume(&e, &st.row, &expanded)?;
        e.db.set_instance_state(&st.row.name, "ready")?;
        let (name, pool) = (st.row.name.clone(), st.row.pool.clone());
        std::mem::take(&mut self.revert).success();
        e.events.lifecycle(
            "instance-created",
            &format!("/1.0/instances/{name}"),
            json!({"type": "container", "storage-pool": pool}),
        );
        Ok(())
    }
}

impl Sink for ImportSink {
    fn index(
        &mut self,
        index: &Index,
        _header: Option<&OptimizedHeader>,
    ) -> Result<u64, BackupError> {
        let accepted = match self.accept(index) {
            Ok(a) => a,
            Err(err) => return Err(self.fail(err)),
        };
        let free = accepted
            .pool
            .pool_usage()
            .map(|u| u.space_total.saturating_sub(u.space_used))
            .unwrap_or(MAX_BYTES);
        let name = accepted.row.name.clone();
        self.state = Some(accepted);
        if let Some(tx) = self.accepted.take() {
            let _ = tx.send(Ok(name));
        }
        Ok(free)
    }

    fn open_volume(&mut self, part: &Part) -> Result<PathBuf, BackupError> {
        self.check_cancel()?;
        if self.state().optimized {
            let err = DaemonError::BadRequest(format!(
                "Invalid backup: files of {part} in an optimized backup"
            ));
            return Err(self.fail(err));
        }
        self.open(part).map_err(|err| self.fail(err))
    }

    fn close_volume(&mut self, part: &Part) -> Result<(), BackupError> {
        self.close(part).map_err(|err| self.fail(err))
    }

    fn receive(&mut self, part: &Part, stream: &mut dyn Read) -> Result<(), BackupError> {
        self.check_cancel()?;
        if !self.state().optimized {
            // An index without `optimized` (older LXD): the stream tells.
            let backend = self.state().backend.clone();
            let pool = self.state().pool.clone();
            if let Err(err) = check_driver(&backend, &*pool) {
                return Err(self.fail(err));
            }
            self.state().optimized = true;
        }
        self.receive_part(part, stream)
            .map_err(|err| self.fail(err))
    }
}

/// An optimized backup goes onto a pool of its own driver only.
fn check_driver(backend: &str, pool: &dyn StorageDriver) -> Result<()> {
    let ours = pool.info().name;
    if backend != ours {
        return Err(driver_mismatch(backend, pool));
    }
    if pool.receive_argv(Path::new(".")).is_none() {
        // zfs: hutch keeps its snapshots as clones, not as the `@` snapshots of LXD's
        // zfs streams, so it has no receive of that layout yet.
        return Err(DaemonError::BadRequest(format!(
            "Optimized backups of storage driver {ours:?} cannot be imported: use a backup \
             made without --optimized-storage"
        )));
    }
    Ok(())
}

fn driver_mismatch(backend: &str, pool: &dyn StorageDriver) -> DaemonError {
    DaemonError::BadRequest(format!(
        "Optimized backup storage driver {backend:?} differs from the target storage pool driver {:?}",
        pool.info().name
    ))
}

/// The instance's own root disk names the pool it lands on; one that comes from a
/// profile naming another pool gets a root disk of the instance's own.
fn place_root_disk(e: &Engine, row: &mut InstanceRow, pool: &str) -> Result<()> {
    let own_root = row.devices.values_mut().find(|d| {
        d.get("type").map(String::as_str) == Some("disk")
            && d.get("path").map(String::as_str) == Some("/")
    });
    if let Some(root) = own_root {
        root.insert("pool".into(), pool.to_string());
        return Ok(());
    }
    let expanded = crate::engine::expand(e, row)?;
    if crate::engine::root_pool(&expanded.devices) != pool {
        row.devices.insert(
            "root".into(),
            [("type", "disk"), ("path", "/"), ("pool", pool)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    Ok(())
}

/// Shifts a received read-only snapshot's files back to the container's ids. btrfs
/// refuses to make a received subvolume writable (later incremental streams find their
/// parent by it), so once every stream is in: a writable snapshot of it is shifted and
/// takes its place, read-only.
fn unshift_received(pool: &dyn StorageDriver, idmap: &DiskIdmap, vol: &Path) -> Result<()> {
    let name = vol
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let work = vol.with_file_name(format!(".{name}.unshifting"));
    let _ = pool.delete_volume(&work);
    pool.clone_volume(vol, &work, false)?;
    let shifted = idmap
        .unshift_tree(&pool.path(&work).join("rootfs"))
        .map_err(DaemonError::from)
        .and_then(|()| {
            pool.delete_volume(vol)?;
            Ok(pool.clone_volume(&work, vol, true)?)
        });
    let _ = pool.delete_volume(&work);
    shifted
}

fn remove_staging(pool: &dyn StorageDriver, staging: &Path) {
    for entry in std::fs::read_dir(pool.path(staging))
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = pool.delete_volume(&staging.join(entry.file_name()));
    }
    let _ = std::fs::remove_dir_all(pool.path(staging));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hutch_storage::{DirDriver, FakeRunner, ZfsDriver};

    use super::check_driver;

    #[test]
    fn optimized_backups_go_only_onto_a_pool_that_receives_their_stream() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DirDriver::new(tmp.path());
        let err = check_driver("btrfs", &dir).unwrap_err().to_string();
        assert!(
            err.contains(r#"driver "btrfs" differs from the target storage pool driver "dir""#),
            "{err}"
        );
        let zfs = ZfsDriver::new(tmp.path(), "tank/hutch", Arc::new(FakeRunner::default()));
        let err = check_driver("zfs", &zfs).unwrap_err().to_string();
        assert!(
            err.contains(r#"Optimized backups of storage driver "zfs" cannot be imported"#),
            "{err}"
        );
    }
}
