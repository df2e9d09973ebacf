//! An instance's records as LXD's `backup.yaml` ([`hutch_backup::Config`]) and back: the
//! one conversion that export (index.yaml, each volume's backup.yaml), import and recover
//! share, so a backup written by one reads the same in the others.

use hutch_backup::config as bc;
use hutch_backup::Config;

use super::{expand, runtime_status};
use crate::daemon::Daemon;
use crate::db::instances::InstanceRow;
use crate::db::snapshots::SnapshotRow;
use crate::error::{DaemonError, Result};

/// The backup config of instance `name` as the database has it now: the instance (with
/// its expanded config and devices), its snapshots, its pool, the profiles it uses, and
/// its volume.
pub(crate) fn backup_config(d: &Daemon, name: &str) -> Result<Config> {
    let row = d.db.instance_or_404(name)?;
    let snapshots = d.db.snapshots(name)?;
    config_of(d, &row, &snapshots)
}

/// [`backup_config`] of rows already at hand.
pub(crate) fn config_of(
    d: &Daemon,
    row: &InstanceRow,
    snapshots: &[SnapshotRow],
) -> Result<Config> {
    let expanded = expand(d, row)?;
    let (code, _) = runtime_status(d, &row.name);
    let container = bc::Instance {
        name: row.name.clone(),
        description: row.description.clone(),
        architecture: row.architecture.clone(),
        config: row.config.clone(),
        devices: row.devices.clone(),
        ephemeral: row.ephemeral,
        profiles: row.profiles.clone(),
        stateful: row.stateful,
        created_at: row.created_at.clone(),
        last_used_at: row.last_used_at.clone(),
        expanded_config: expanded.config,
        expanded_devices: expanded.devices,
        status: code.text().to_string(),
        status_code: code as u16,
        location: "none".into(),
        kind: row.kind.clone(),
        project: "default".into(),
    };
    let snapshots = snapshots
        .iter()
        .map(|s| bc::InstanceSnapshot {
            name: s.name.clone(),
            architecture: s.architecture.clone(),
            config: s.config.clone(),
            devices: s.devices.clone(),
            ephemeral: s.ephemeral,
            profiles: s.profiles.clone(),
            created_at: s.created_at.clone(),
            expires_at: s.expires_at.clone(),
            expanded_config: s.config.clone(),
            expanded_devices: s.devices.clone(),
            ..Default::default()
        })
        .collect();
    let pool = d.db.pool_or_404(&row.pool)?;
    let mut profiles = Vec::new();
    for name in &row.profiles {
        if let Some(p) = d.db.profile(name)? {
            profiles.push(bc::Profile {
                name: name.clone(),
                description: p.description,
                config: p.config,
                devices: p.devices,
                used_by: Vec::new(),
            });
        }
    }
    Ok(Config {
        container: Some(container),
        snapshots,
        pool: Some(bc::StoragePool {
            name: pool.name.clone(),
            description: pool.description.clone(),
            driver: pool.driver.clone(),
            config: pool.config.clone(),
            used_by: Vec::new(),
            status: "Created".into(),
            locations: vec!["none".into()],
        }),
        profiles,
        volume: Some(bc::StorageVolume {
            name: row.name.clone(),
            kind: "container".into(),
            content_type: "filesystem".into(),
            created_at: row.created_at.clone(),
            location: "none".into(),
            ..Default::default()
        }),
        volume_snapshots: Vec::new(),
    })
}

/// The rows that re-create the instance a backup config describes, named `name` (the
/// config's own name unless overridden) on pool `pool`, in state `creating` (the caller
/// makes the volumes, then marks it ready). Checks names and refuses what hutch cannot
/// run (virtual machines); config keys pass through as LXD wrote them, less the volatile
/// ones that described the source host.
pub(crate) fn rows_of(
    config: &Config,
    name: &str,
    pool: &str,
) -> Result<(InstanceRow, Vec<SnapshotRow>)> {
    let c = config
        .container
        .as_ref()
        .ok_or_else(|| DaemonError::BadRequest("The backup describes no instance".into()))?;
    super::validate_name(name)?;
    let kind = if c.kind.is_empty() {
        "container"
    } else {
        c.kind.as_str()
    };
    if kind != "container" {
        return Err(DaemonError::BadRequest(format!(
            "Instance type {kind:?} is not supported (hutch runs containers)"
        )));
    }
    let mut row_config = c.config.clone();
    drop_host_keys(&mut row_config);
    let architecture = if c.architecture.is_empty() {
        std::env::consts::ARCH.to_string()
    } else {
        c.architecture.clone()
    };
    let row = InstanceRow {
        name: name.to_string(),
        kind: "container".into(),
        architecture: architecture.clone(),
        ephemeral: c.ephemeral,
        stateful: false,
        description: c.description.clone(),
        created_at: nonzero_or_now(&c.created_at),
        last_used_at: "1970-01-01T00:00:00Z".into(),
        config: row_config,
        devices: c.devices.clone(),
        profiles: c.profiles.clone(),
        state: "creating".into(),
        pool: pool.to_string(),
    };
    let mut snapshots = Vec::new();
    for s in &config.snapshots {
        super::validate_snapshot_name(&s.name)?;
        let mut snap_config = s.config.clone();
        drop_host_keys(&mut snap_config);
        snapshots.push(SnapshotRow {
            instance: name.to_string(),
            name: s.name.clone(),
            created_at: nonzero_or_now(&s.created_at),
            expires_at: if s.expires_at.is_empty() {
                bc::NEVER.to_string()
            } else {
                s.expires_at.clone()
            },
            architecture: if s.architecture.is_empty() {
                architecture.clone()
            } else {
                s.architecture.clone()
            },
            config: snap_config,
            devices: s.devices.clone(),
            profiles: s.profiles.clone(),
            ephemeral: s.ephemeral,
        });
    }
    Ok((row, snapshots))
}

/// Keys that described the source host's view of the files: hutch stores root
/// filesystems unshifted and maps them at start, so the old map must not be applied.
fn drop_host_keys(config: &mut std::collections::BTreeMap<String, String>) {
    config.retain(|k, _| {
        !(k.starts_with("volatile.idmap.")
            || k.starts_with("volatile.last_state.")
            || k == "volatile.apply_template")
    });
    config.insert("volatile.last_state.idmap".into(), "[]".into());
}

fn nonzero_or_now(t: &str) -> String {
    if t.is_empty() || t.starts_with("0001-") {
        crate::now()
    } else {
        t.to_string()
    }
}
