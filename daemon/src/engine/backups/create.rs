//! Creating a backup: checked at once, then, under the instance's lock, a row in state
//! `creating`, read-only copies of the volumes where they are instant (atomic on btrfs and
//! zfs; dir pools read the live volumes at export instead), the config captured, and the
//! row made `ready`.

use hutch_api::backup::InstanceBackupsPost;
use hutch_api::operation::StatusCode;
use hutch_backup::compress::Compression;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::{backup_container_vol, backup_snapshot_vol, next_backup_name, validate_backup_name};
use crate::daemon::{instance_vol, snapshot_vol, AppState, Daemon};
use crate::db::backups::BackupRow;
use crate::engine::revert::Revert;
use crate::engine::{blocking, runtime_status, Engine, Work};
use crate::error::{DaemonError, Result};

const NEVER: &str = hutch_backup::config::NEVER;

/// A create request, checked.
#[derive(Debug, Clone)]
struct Request {
    name: String,
    expires_at: String,
    instance_only: bool,
    optimized: bool,
    compression: String,
}

impl Engine {
    /// Checks a backup request and names the backup (the name goes into the operation's
    /// resources); the work makes it. A duplicate fails inside the work, as in LXD.
    pub fn create_backup(&self, name: &str, req: InstanceBackupsPost) -> Result<(String, Work)> {
        self.d.db.instance_or_404(name)?;
        let backup = if req.name.is_empty() {
            let taken: Vec<String> = self
                .d
                .db
                .backups(name)?
                .into_iter()
                .map(|b| b.name)
                .collect();
            next_backup_name(&taken)
        } else {
            validate_backup_name(&req.name)?;
            req.name.clone()
        };
        let expires_at = match req.expires_at.as_str() {
            "" => NEVER.to_string(),
            e if e.starts_with("0001-01-01") => NEVER.to_string(),
            e => {
                time::OffsetDateTime::parse(e, &Rfc3339)
                    .map_err(|_| DaemonError::BadRequest(format!("Invalid expires_at {e:?}")))?;
                e.to_string()
            }
        };
        // The request's algorithm, else the server's `backups.compression_algorithm`.
        let compression = if req.compression_algorithm.is_empty() {
            hutch_api::server_config::server_config_value(
                &self.d.db.server_config()?,
                "backups.compression_algorithm",
            )
            .to_string()
        } else {
            req.compression_algorithm.clone()
        };
        Compression::parse(&compression)?;
        let request = Request {
            name: backup.clone(),
            expires_at,
            instance_only: req.instance_only || req.container_only,
            optimized: req.optimized_storage,
            compression,
        };
        let (e, name) = (self.clone(), name.to_string());
        Ok((
            backup,
            Box::pin(async move { create_backup(e, name, request).await }),
        ))
    }
}

async fn create_backup(d: AppState, name: String, req: Request) -> Result<()> {
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    let row = d.db.instance_or_404(&name)?;
    let pool = d.instance_pool(&name)?;
    let snapshots: Vec<String> = if req.instance_only {
        Vec::new()
    } else {
        d.db.snapshots(&name)?.into_iter().map(|s| s.name).collect()
    };
    let config = crate::engine::backup_config::backup_config(&d, &name)?;
    let mut config = config;
    if req.instance_only {
        config.snapshots.clear();
    }
    // Optimized only where the driver has a send stream LXD's layout describes (btrfs);
    // elsewhere it is silently a plain backup, as LXD does on dir.
    let optimized = req.optimized && pool.send_argv(&instance_vol(&name), None).is_some();
    let record = BackupRow {
        instance: name.clone(),
        name: req.name.clone(),
        created_at: crate::now(),
        expires_at: req.expires_at.clone(),
        instance_only: req.instance_only,
        optimized_storage: optimized,
        compression: req.compression.clone(),
        pool: row.pool.clone(),
        state: "creating".into(),
        snapshots: snapshots.clone(),
        config: config.to_yaml(),
        total_bytes: 0,
    };
    d.db.insert_backup(&record)?;
    let mut revert = Revert::new();
    {
        let (d, name, backup) = (d.clone(), name.clone(), req.name.clone());
        revert.add(move || {
            let _ = super::delete::remove_backup(&d, &name, &backup);
        });
    }
    let running = runtime_status(&d, &name).0 == StatusCode::Running;
    let freeze = running && !pool.info().atomic_snapshots;
    let (d2, name2, backup) = (d.clone(), name.clone(), req.name.clone());
    let yaml = record.config.clone();
    let total =
        blocking(move || capture(&d2, &name2, &backup, &snapshots, freeze, &yaml, optimized))
            .await?;
    d.db.set_backup_ready(&name, &req.name, total)?;
    revert.success();
    d.events.lifecycle(
        "instance-backup-created",
        &format!("/1.0/instances/{name}/backups/{}", req.name),
        json!({}),
    );
    Ok(())
}

/// The read-only copies of the volumes where they are instant (else the instance's own
/// are read at export: [`super::captures_volumes`]); returns the bytes of file data the
/// export will read.
fn capture(
    d: &Daemon,
    name: &str,
    backup: &str,
    snapshots: &[String],
    freeze: bool,
    backup_yaml: &str,
    optimized: bool,
) -> Result<u64> {
    let pool = d.instance_pool(name)?;
    // The copies hold what the containers wrote: no host user may reach them.
    let top = pool.path(std::path::Path::new("backups"));
    std::fs::create_dir_all(&top).map_err(|e| DaemonError::io("create", &top, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| DaemonError::io("chmod", &top, e))?;
    }
    // The volume carries its backup.yaml, as LXD's do: an optimized stream must hold it
    // (LXD's import reads it from the received volume). A plain export writes the
    // captured one into the tarball anyway, so there a full pool is no failure.
    if let Err(e) = super::super::backup_yaml::write_file(
        &pool.path(&instance_vol(name)).join("backup.yaml"),
        backup_yaml,
    ) {
        if optimized {
            return Err(e);
        }
        tracing::warn!(instance = %name, error = %e.chain(), "backup.yaml not updated");
    }
    if !super::captures_volumes(&*pool) {
        // The backup's directory only: rename and delete find it as for a captured one.
        let dir = pool.path(&super::backup_dir(name, backup));
        std::fs::create_dir_all(&dir).map_err(|e| DaemonError::io("create", &dir, e))?;
        let mut total = hutch_backup::write::tree_bytes(&pool.path(&instance_vol(name)));
        for snap in snapshots {
            total += hutch_backup::write::tree_bytes(&pool.path(&snapshot_vol(name, snap)));
        }
        return Ok(total);
    }
    let mut total = 0;
    for snap in snapshots {
        let vol = backup_snapshot_vol(name, backup, snap);
        pool.clone_volume(&snapshot_vol(name, snap), &vol, true)?;
        total += hutch_backup::write::tree_bytes(&pool.path(&vol));
    }
    let rd = d.runtime_dir(name);
    if freeze {
        hutch_runtime::container::freeze(&rd)?;
    }
    let vol = backup_container_vol(name, backup);
    let cloned = pool.clone_volume(&instance_vol(name), &vol, true);
    if freeze {
        let _ = hutch_runtime::container::thaw(&rd);
    }
    cloned?;
    total += hutch_backup::write::tree_bytes(&pool.path(&vol));
    Ok(total)
}
