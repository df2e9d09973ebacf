//! Creating an instance from a local image: a row in state `creating` first, then the
//! root filesystem cloned from the image volume, then the row made `ready`. A failure at
//! any step removes what was made; a crash is cleaned up at the next start.

use std::path::Path;
use std::sync::Arc;

use hutch_storage::StorageDriver;

use hutch_api::config::validate_instance_config;
use hutch_api::instance::InstancesPost;
use serde_json::json;

use super::cancel::{canceled, Cancel};
use super::revert::Revert;
use crate::daemon::{image_vol, instance_vol, snapshot_vol, AppState, Daemon};
use crate::db::images::ImageRow;
use crate::db::instances::InstanceRow;
use crate::error::{DaemonError, Result};

/// Checks a create request before anything is made; returns the name and the image.
/// Where a new instance's root filesystem comes from.
#[derive(Debug)]
pub enum CreateSource {
    Image(Box<ImageRow>),
    /// An image on a remote, pulled (or found in the store) when the create runs.
    Remote(super::image_pull::PullSource),
    /// Another instance (`instance`) or one of its snapshots.
    Copy {
        instance: String,
        snapshot: Option<String>,
        architecture: String,
        /// Copy the source's snapshots too (a copy of a whole instance, unless instance-only).
        with_snapshots: bool,
    },
    /// Another server's instance, received with LXD's migration protocol.
    Migration(Box<super::migration::MigrationSource>),
}

pub fn validate_create(d: &AppState, req: &mut InstancesPost) -> Result<CreateSource> {
    if req.name.is_empty() {
        req.name = format!("hutch-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    }
    validate_name(&req.name)?;
    if !matches!(req.kind.as_str(), "" | "container") {
        return Err(DaemonError::BadRequest(format!(
            "Instance type {:?} is not supported",
            req.kind
        )));
    }
    let migration = match req.source.kind.as_str() {
        "image" | "copy" => None,
        "migration" => Some(super::migration::MigrationSource::check(&req.source)?),
        "none" => {
            return Err(DaemonError::BadRequest(format!(
                "Source type {:?} is not supported yet",
                req.source.kind
            )))
        }
        other => {
            return Err(DaemonError::BadRequest(format!(
                "Unknown source type {other}"
            )))
        }
    };
    let profiles = req
        .put
        .profiles
        .get_or_insert_with(|| vec!["default".to_string()]);
    for p in profiles.iter() {
        if d.db.profile(p)?.is_none() {
            return Err(DaemonError::BadRequest(format!(
                "Requested profile {p:?} doesn't exist"
            )));
        }
    }
    validate_instance_config(&req.put.config)?;
    let mut devices = hutch_api::profile::Devices::new();
    for p in req.put.profiles.iter().flatten() {
        devices.extend(d.db.profile_or_404(p)?.devices);
    }
    devices.extend(req.put.devices.clone());
    super::check_root_size(d, &devices)?;
    super::devices::validate_devices(d, &devices)?;
    // A refresh updates the instance that is there; on a missing one it is a plain copy.
    let refresh = migration.as_ref().is_some_and(|m| m.refresh());
    if !refresh && d.db.instance(&req.name)?.is_some() {
        return Err(DaemonError::Conflict(format!(
            "Instance {:?} already exists",
            req.name
        )));
    }
    if let Some(m) = migration {
        return Ok(CreateSource::Migration(Box::new(m)));
    }
    if req.source.kind == "copy" {
        let (instance, snapshot) = match req.source.source.split_once('/') {
            Some((i, s)) => (i.to_string(), Some(s.to_string())),
            None => (req.source.source.clone(), None),
        };
        let src = d.db.instance_or_404(&instance)?;
        if let Some(s) = &snapshot {
            d.db.snapshot(&instance, s)?;
        }
        // `lxc copy --instance-only` (the `container_only_migration` extension).
        let with_snapshots =
            snapshot.is_none() && !req.source.instance_only && !req.source.container_only;
        return Ok(CreateSource::Copy {
            instance,
            snapshot,
            architecture: src.architecture,
            with_snapshots,
        });
    }
    if !req.source.server.is_empty() {
        let s = &req.source;
        return Ok(CreateSource::Remote(
            super::image_pull::PullSource::new(
                &s.server,
                &s.protocol,
                &s.mode,
                &s.alias,
                &s.fingerprint,
            )?
            .with_credentials(&s.certificate, &s.secret)?,
        ));
    }
    let image = if !req.source.alias.is_empty() {
        match d.db.alias(&req.source.alias)? {
            Some(a) => d.db.image_by_prefix(&a.fingerprint)?,
            None => d.db.image_by_prefix(&req.source.alias)?,
        }
    } else {
        d.db.image_by_prefix(&req.source.fingerprint)?
    };
    Ok(CreateSource::Image(Box::new(image)))
}

/// LXD's instance name rules: a host name, not starting with a digit or a dash.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(DaemonError::BadRequest(format!(
            "Invalid instance name {name:?}"
        )))
    }
}

/// Creates the instance (the body of the create operation). A cancel of the operation
/// stops the download, the unpack or the copy and removes everything made.
pub async fn create_instance(d: AppState, req: InstancesPost, source: CreateSource) -> Result<()> {
    let cancel = Cancel::current();
    // In a cluster the name is claimed for this member first.
    let claim = d.claim_instance_name(&req.name).await?;
    let made = create(d, req, source, &cancel).await.map_err(|e| {
        if cancel.is_cancelled() {
            canceled()
        } else {
            e
        }
    });
    claim.end(made.is_ok()).await;
    made
}

async fn create(
    d: AppState,
    req: InstancesPost,
    source: CreateSource,
    cancel: &Cancel,
) -> Result<()> {
    let source = match source {
        CreateSource::Remote(remote) => {
            let options = super::image_pull::PullOptions {
                cached: true,
                auto_update: None,
                public: false,
                prefer_cached: true,
            };
            CreateSource::Image(Box::new(
                super::image_pull::pull_image(&d, &remote, options).await?,
            ))
        }
        other => other,
    };
    cancel.check()?;
    let now = crate::now();
    let mut config = req.put.config.clone();
    let architecture = match &source {
        CreateSource::Image(image) => {
            for (k, v) in &image.properties {
                config.insert(format!("image.{k}"), v.clone());
            }
            // An OCI image's Env, under the request's own environment.* keys.
            for (k, v) in super::oci::environment_keys(&image.properties) {
                config.entry(k).or_insert(v);
            }
            config.insert("volatile.base_image".into(), image.fingerprint.clone());
            config.insert(super::templates::APPLY_KEY.into(), "create".into());
            image.architecture.clone()
        }
        CreateSource::Remote(_) => unreachable!("pulled above"),
        CreateSource::Migration(_) => {
            return Err(DaemonError::BadRequest(
                "Migration sources are created by create_from_migration".into(),
            ))
        }
        CreateSource::Copy { architecture, .. } => {
            // A copy starts its own life: no power state or NIC addresses of the source.
            config.retain(|k, _| !k.starts_with("volatile.") || k == "volatile.base_image");
            config.insert(super::templates::APPLY_KEY.into(), "copy".into());
            architecture.clone()
        }
    };
    let mut row = InstanceRow {
        name: req.name.clone(),
        kind: "container".into(),
        architecture,
        ephemeral: req.put.ephemeral,
        stateful: false,
        description: req.put.description.clone(),
        created_at: now.clone(),
        last_used_at: "1970-01-01T00:00:00Z".into(),
        config,
        devices: req.put.devices.clone(),
        profiles: req.put.profiles.clone().unwrap_or_default(),
        state: "creating".into(),
        pool: String::new(),
    };
    // The instance lives on its root disk's pool.
    row.pool = super::spec::root_pool(&super::expand(&d, &row)?.devices);
    d.db.insert_instance(&row)?;
    let mut revert = Revert::new();
    {
        let (d, name) = (d.clone(), row.name.clone());
        revert.add(move || remove_leftovers(&d, &name));
    }
    let lock = d.instance_lock(&row.name);
    let _guard = cancel.run(async { Ok(lock.lock().await) }).await?;
    let d2 = d.clone();
    let name = row.name.clone();
    let base_image = match &source {
        CreateSource::Image(image) => Some(image.fingerprint.clone()),
        _ => None,
    };
    let snapshots_of = match &source {
        CreateSource::Copy {
            instance,
            with_snapshots: true,
            ..
        } => Some(instance.clone()),
        _ => None,
    };
    let pool_name = row.pool.clone();
    let cancel2 = cancel.clone();
    tokio::task::spawn_blocking(move || clone_volume(&d2, &name, &pool_name, &source, &cancel2))
        .await??;
    cancel.check()?;
    secure_instance_volume(&d, &row, &super::expand(&d, &row)?)?;
    // The root disk's size, from the profiles and the instance's own devices.
    let size = super::spec::root_size(&super::expand(&d, &row)?.devices)?;
    if size.is_some() {
        d.pool(&row.pool)?
            .set_quota(&instance_vol(&row.name), size)?;
    }
    if let Some(from) = &snapshots_of {
        // Runs before the instance's own removal: snapshot volumes and rows first.
        let (d2, name) = (d.clone(), row.name.clone());
        revert.add(move || remove_snapshot_leftovers(&d2, &name));
        let (d2, from, to, cancel2) = (d.clone(), from.clone(), row.name.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || copy_snapshots(&d2, &from, &to, &cancel2)).await??;
    }
    cancel.check()?;
    d.db.set_instance_state(&row.name, "ready")?;
    if let Some(fp) = &base_image {
        d.db.touch_image(fp, &now)?;
    }
    revert.success();
    d.events.lifecycle(
        "instance-created",
        &format!("/1.0/instances/{}", row.name),
        json!({"type": "container", "storage-pool": row.pool}),
    );
    Ok(())
}

/// Closes an instance's volume directory to everyone but the container's root on the host
/// (who traverses it from inside the user namespace) or, privileged, host root.
pub fn secure_instance_volume(
    d: &Daemon,
    row: &InstanceRow,
    expanded: &super::spec::Expanded,
) -> Result<()> {
    let owner = match super::idmaps::instance_idmap(d, row, expanded)? {
        None => (0, 0),
        Some(map) => (map.host_uid(0).unwrap_or(0), map.host_gid(0).unwrap_or(0)),
    };
    let vol = d.pool(&row.pool)?.path(&instance_vol(&row.name));
    crate::layout::secure_instance_dir(&vol, owner);
    Ok(())
}

/// The instance's root filesystem on pool `pool`, cloned from the image volume (or the
/// source instance) under a temporary name and renamed into place once complete.
fn clone_volume(
    d: &AppState,
    name: &str,
    pool: &str,
    source: &CreateSource,
    cancel: &Cancel,
) -> Result<()> {
    let dst = d.pool(pool)?;
    // A btrfs snapshot, or a copy made aside and renamed into place, per driver.
    let (src, from) = match source {
        CreateSource::Image(image) => {
            super::images::ensure_image_volume(d, &*dst, &image.fingerprint, cancel)?;
            cancel.check()?;
            (dst.clone(), image_vol(&image.fingerprint))
        }
        CreateSource::Remote(_) | CreateSource::Migration(_) => {
            unreachable!("pulled or received before the clone")
        }
        CreateSource::Copy {
            instance,
            snapshot: Some(s),
            ..
        } => (d.instance_pool(instance)?, snapshot_vol(instance, s)),
        CreateSource::Copy {
            instance,
            snapshot: None,
            ..
        } => {
            // A copy of a live tree is only consistent while the source is frozen.
            let rd = d.runtime_dir(instance);
            let running = matches!(
                hutch_runtime::container::status(&rd),
                Ok(hutch_runtime::Status::Running(_))
            );
            let src = d.instance_pool(instance)?;
            let across = !Arc::ptr_eq(&src, &dst);
            if running && (across || !src.info().atomic_snapshots) {
                hutch_runtime::container::freeze(&rd)?;
                let cloned = copy_volume_until(
                    &src,
                    &instance_vol(instance),
                    &dst,
                    &instance_vol(name),
                    false,
                    cancel,
                );
                let _ = hutch_runtime::container::thaw(&rd);
                return cloned;
            }
            (src, instance_vol(instance))
        }
    };
    copy_volume_until(&src, &from, &dst, &instance_vol(name), false, cancel)
}

/// A clone within a pool (a snapshot where the driver can), or a copy across pools.
pub fn copy_volume(
    src: &Arc<dyn StorageDriver>,
    from: &Path,
    dst: &Arc<dyn StorageDriver>,
    to: &Path,
    readonly: bool,
) -> Result<()> {
    copy_volume_until(src, from, dst, to, readonly, &Cancel::none())
}

/// [`copy_volume`], stopped (and undone) by a cancel while it copies.
pub fn copy_volume_until(
    src: &Arc<dyn StorageDriver>,
    from: &Path,
    dst: &Arc<dyn StorageDriver>,
    to: &Path,
    readonly: bool,
    cancel: &Cancel,
) -> Result<()> {
    let stop = cancel.copy_check();
    if Arc::ptr_eq(src, dst) {
        Ok(dst.clone_volume_until(from, to, readonly, &stop)?)
    } else {
        Ok(hutch_storage::copy_volume_across_until(
            &**src, from, &**dst, to, readonly, &stop,
        )?)
    }
}

/// Copies every snapshot of `from` (volumes and records) to the new instance `to`.
fn copy_snapshots(d: &AppState, from: &str, to: &str, cancel: &Cancel) -> Result<()> {
    let (src, dst) = (d.instance_pool(from)?, d.instance_pool(to)?);
    for mut s in d.db.snapshots(from)? {
        cancel.check()?;
        copy_volume_until(
            &src,
            &snapshot_vol(from, &s.name),
            &dst,
            &snapshot_vol(to, &s.name),
            true,
            cancel,
        )?;
        s.instance = to.to_string();
        d.db.insert_snapshot(&s)?;
    }
    Ok(())
}

/// Removes the snapshot volumes and rows of a half-made instance.
pub(super) fn remove_snapshot_leftovers(d: &Daemon, name: &str) {
    if let Ok(pool) = d.instance_pool(name) {
        for s in d.db.snapshots(name).unwrap_or_default() {
            let _ = pool.delete_volume(&snapshot_vol(name, &s.name));
        }
    }
    let _ = d.db.delete_instance_snapshots(name);
}

/// Removes the row and volume of a half-made instance.
pub fn remove_leftovers(d: &Daemon, name: &str) {
    let pool = d.db.instance(name).ok().flatten().map(|r| r.pool);
    if let Some(pool) = pool.and_then(|p| d.pool(&p).ok()) {
        let _ = pool.delete_volume(&instance_vol(name));
        let _ = pool.delete_volume(&Path::new("containers").join(format!(".{name}.copying")));
    }
    let _ = d.db.delete_instance(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_lxd_rules() {
        for ok in ["c1", "web-01", "a"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "1abc", "-a", "a-", "a/b", "a_b", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
