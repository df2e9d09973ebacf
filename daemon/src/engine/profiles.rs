//! Profiles: config and devices that instances share. Each change is checked whole (its
//! devices against their rules, its config against the key table, and what it makes of
//! every instance that uses it) before it is stored, then applied to the running ones, as
//! LXD does.

use hutch_api::profile::{Profile, ProfilePatch, ProfilePost, ProfilePut, ProfilesPost};
use serde_json::json;

use super::devices::validate_devices;
use super::spec::{drop_empty_values, expand_with, Expanded};
use super::{blocking, check_root_size, check_version, expand, limits_of, root_pool, Engine};
use crate::db::instances::InstanceRow;
use crate::error::{DaemonError, Result};

/// The profile every instance gets unless it asks otherwise; it can be neither renamed nor
/// deleted.
const DEFAULT: &str = "default";

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') {
        return Err(DaemonError::BadRequest("Invalid profile name".into()));
    }
    Ok(())
}

fn validate(e: &Engine, put: &ProfilePut) -> Result<()> {
    validate_devices(e, &put.devices)?;
    // A disk on a pool that does not exist is refused even before an instance uses it.
    for (devname, dev) in &put.devices {
        let pool = dev.get("pool").filter(|p| !p.is_empty());
        if let (Some("disk"), Some(pool)) = (dev.get("type").map(String::as_str), pool) {
            if e.d.pool(pool).is_err() {
                return Err(DaemonError::BadRequest(format!(
                    "Invalid device {devname:?}: storage pool {pool:?} not found"
                )));
            }
        }
    }
    hutch_api::config::validate_instance_config(&put.config)?;
    Ok(())
}

impl Engine {
    /// `GET /1.0/profiles`.
    pub async fn profile_names(&self) -> Result<Vec<String>> {
        let e = self.clone();
        blocking(move || e.d.db.profile_names()).await
    }

    /// `GET /1.0/profiles?recursion=1`.
    pub async fn profiles(&self) -> Result<Vec<Profile>> {
        let e = self.clone();
        blocking(move || {
            e.d.db
                .profile_names()?
                .iter()
                .map(|n| e.d.db.full_profile(n))
                .collect()
        })
        .await
    }

    /// `GET /1.0/profiles/<name>`.
    pub async fn profile(&self, name: &str) -> Result<Profile> {
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || e.d.db.full_profile(&name)).await
    }

    /// `POST /1.0/profiles`.
    pub async fn create_profile(&self, mut req: ProfilesPost) -> Result<()> {
        drop_empty_values(&mut req.put.config, &mut req.put.devices);
        let e = self.clone();
        blocking(move || {
            validate_name(&req.name)?;
            validate(&e, &req.put)?;
            e.d.db.insert_profile(&req.name, &req.put)?;
            e.d.events.lifecycle(
                "profile-created",
                &format!("/1.0/profiles/{}", req.name),
                json!({}),
            );
            Ok(())
        })
        .await
    }

    /// `PUT /1.0/profiles/<name>`, when `if_match` (the client's ETag, if any) names the
    /// current profile.
    pub async fn update_profile(
        &self,
        name: &str,
        put: ProfilePut,
        if_match: Option<String>,
    ) -> Result<()> {
        let (e, name) = (self.clone(), name.to_string());
        let changed = blocking(move || {
            let current = e.d.db.profile_or_404(&name)?;
            check_version(if_match.as_deref(), &current)?;
            store(&e, &name, &put)
        })
        .await?;
        self.apply_to_instances(changed).await
    }

    /// `PATCH /1.0/profiles/<name>`: `patch` merged into the current profile.
    pub async fn patch_profile(
        &self,
        name: &str,
        patch: ProfilePatch,
        if_match: Option<String>,
    ) -> Result<()> {
        let (e, name) = (self.clone(), name.to_string());
        let changed = blocking(move || {
            let mut put = e.d.db.profile_or_404(&name)?;
            check_version(if_match.as_deref(), &put)?;
            put.config.extend(patch.config.unwrap_or_default());
            put.devices.extend(patch.devices.unwrap_or_default());
            if let Some(desc) = patch.description {
                put.description = desc;
            }
            store(&e, &name, &put)
        })
        .await?;
        self.apply_to_instances(changed).await
    }

    /// `POST /1.0/profiles/<name>` (rename).
    pub async fn rename_profile(&self, name: &str, req: ProfilePost) -> Result<()> {
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || {
            e.d.db.profile_or_404(&name)?;
            if name == DEFAULT {
                return Err(DaemonError::Forbidden(
                    "The \"default\" profile cannot be renamed".into(),
                ));
            }
            validate_name(&req.name)?;
            e.d.db.rename_profile(&name, &req.name)?;
            e.d.events.lifecycle(
                "profile-renamed",
                &format!("/1.0/profiles/{}", req.name),
                json!({"old_name": name}),
            );
            Ok(())
        })
        .await
    }

    /// `DELETE /1.0/profiles/<name>`. One in use cannot be deleted.
    pub async fn delete_profile(&self, name: &str) -> Result<()> {
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || {
            let p = e.d.db.full_profile(&name)?;
            if name == DEFAULT {
                return Err(DaemonError::Forbidden(
                    "The \"default\" profile cannot be deleted".into(),
                ));
            }
            if !p.used_by.is_empty() {
                return Err(DaemonError::BadRequest(
                    "Profile is currently in use".into(),
                ));
            }
            e.d.db.delete_profile(&name)?;
            e.d.events.lifecycle(
                "profile-deleted",
                &format!("/1.0/profiles/{name}"),
                json!({}),
            );
            Ok(())
        })
        .await
    }
}

/// An instance whose expanded config a profile change altered: before and after.
pub(super) struct InstanceChange {
    row: InstanceRow,
    old: Expanded,
    new: Expanded,
}

/// Checks `put` as profile `name`, and what it makes of each instance that uses it (a
/// root disk on an existing pool, the same pool as now, valid limits and devices), then
/// stores it. Returns the instances whose expanded config changed.
fn store(e: &Engine, name: &str, put: &ProfilePut) -> Result<Vec<InstanceChange>> {
    let d = &e.d;
    let mut put = put.clone();
    drop_empty_values(&mut put.config, &mut put.devices);
    let put = &put;
    validate(e, put)?;
    let mut changes = Vec::new();
    for row in d.db.instances()? {
        if !row.profiles.iter().any(|p| p == name) {
            continue;
        }
        let old = expand(d, &row)?;
        let new = expand_with(&row, |p| {
            if p == name {
                Ok(Some(put.clone()))
            } else {
                d.db.profile(p)
            }
        })?;
        if new == old {
            continue;
        }
        let refuse = |why: String| {
            DaemonError::BadRequest(format!(
                "Profile change refused for instance {:?}: {why}",
                row.name
            ))
        };
        check_root_size(d, &new.devices).map_err(|e| refuse(e.to_string()))?;
        if root_pool(&new.devices) != row.pool {
            return Err(refuse(format!(
                "its root disk would move from pool {:?} to {:?}",
                row.pool,
                root_pool(&new.devices)
            )));
        }
        limits_of(&new.config).map_err(|e| refuse(e.to_string()))?;
        validate_devices(e, &new.devices).map_err(|e| refuse(e.to_string()))?;
        changes.push(InstanceChange { row, old, new });
    }
    d.db.update_profile(name, put)?;
    d.events.lifecycle(
        "profile-updated",
        &format!("/1.0/profiles/{name}"),
        json!({}),
    );
    Ok(changes)
}

impl Engine {
    /// Applies a stored profile change to the instances it altered (limits, quota,
    /// devices live), each under its lock. Like LXD, the profile stays changed when an
    /// instance cannot take it; the error names every instance that failed.
    async fn apply_to_instances(&self, changes: Vec<InstanceChange>) -> Result<()> {
        let mut failed = Vec::new();
        for c in changes {
            let lock = self.d.instance_lock(&c.row.name);
            let _g = lock.lock().await;
            let applied = async {
                let old_size = check_root_size(&self.d, &c.old.devices).unwrap_or(None);
                let limits = limits_of(&c.new.config)?;
                self.apply_expanded_change(&c.row, &c.old, &c.new, old_size, limits)
                    .await
            }
            .await;
            if let Err(e) = applied {
                failed.push(format!("{}: {}", c.row.name, e.chain()));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(DaemonError::BadRequest(format!(
                "Failed to update instance(s): {}",
                failed.join("; ")
            )))
        }
    }
}
