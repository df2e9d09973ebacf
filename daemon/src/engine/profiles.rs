//! Profiles: config and devices that instances share. Each change is checked whole (its
//! devices against their rules, its config against the key table, and what it makes of
//! every instance that uses it) before it is stored, then applied to the running ones, as
//! LXD does.

use hutch_api::profile::{Profile, ProfilePatch, ProfilePost, ProfilePut, ProfilesPost};
use serde_json::json;

use super::cluster::shared::PROFILES;
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
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let e = self.clone();
        let checked = req.clone();
        blocking(move || {
            validate_name(&checked.name)?;
            validate(&e, &checked.put)?;
            if e.d.db.profile(&checked.name)?.is_some() {
                return Err(DaemonError::Conflict("The profile already exists".into()));
            }
            Ok(())
        })
        .await?;
        store
            .create(self.shared_state(), PROFILES, &req.name, &req.put)
            .await?;
        let e = self.clone();
        blocking(move || {
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
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let (e, n) = (self.clone(), name.to_string());
        let (put, changed) = blocking(move || {
            let current = e.d.db.profile_or_404(&n)?;
            check_version(if_match.as_deref(), &current)?;
            check_change(&e, &n, &put)
        })
        .await?;
        self.store_profile(&store, name, put, changed).await
    }

    /// `PATCH /1.0/profiles/<name>`: `patch` merged into the current profile.
    pub async fn patch_profile(
        &self,
        name: &str,
        patch: ProfilePatch,
        if_match: Option<String>,
    ) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let (e, n) = (self.clone(), name.to_string());
        let (put, changed) = blocking(move || {
            let mut put = e.d.db.profile_or_404(&n)?;
            check_version(if_match.as_deref(), &put)?;
            put.config.extend(patch.config.unwrap_or_default());
            put.devices.extend(patch.devices.unwrap_or_default());
            if let Some(desc) = patch.description {
                put.description = desc;
            }
            check_change(&e, &n, &put)
        })
        .await?;
        self.store_profile(&store, name, put, changed).await
    }

    /// A checked profile change recorded (in the cluster first), stored here and applied
    /// to the instances it alters.
    async fn store_profile(
        &self,
        store: &super::cluster::shared::SharedStore,
        name: &str,
        put: ProfilePut,
        changed: Vec<InstanceChange>,
    ) -> Result<()> {
        store
            .update(self.shared_state(), PROFILES, name, &put)
            .await?;
        let (e, n) = (self.clone(), name.to_string());
        blocking(move || {
            e.d.db.update_profile(&n, &put)?;
            e.d.events
                .lifecycle("profile-updated", &format!("/1.0/profiles/{n}"), json!({}));
            Ok(())
        })
        .await?;
        self.apply_to_instances(changed).await
    }

    /// Profile `name` replaced by another member's change: stored here and applied to the
    /// instances here as far as they take it (no event: the member that made the change
    /// sent it).
    pub(in crate::engine) async fn replace_profile_here(
        &self,
        name: &str,
        put: ProfilePut,
    ) -> Result<()> {
        let (e, n) = (self.clone(), name.to_string());
        let changed = blocking(move || {
            let changed = match check_change(&e, &n, &put) {
                Ok((_, changed)) => changed,
                Err(err) => {
                    tracing::warn!(profile = %n, error = %crate::chain(&err), "cluster profile stored here as it is");
                    Vec::new()
                }
            };
            let mut put = put;
            drop_empty_values(&mut put.config, &mut put.devices);
            e.d.db.update_profile(&n, &put)?;
            Ok(changed)
        })
        .await?;
        self.apply_to_instances(changed).await
    }

    /// `POST /1.0/profiles/<name>` (rename).
    pub async fn rename_profile(&self, name: &str, req: ProfilePost) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let (e, n, new) = (self.clone(), name.to_string(), req.name.clone());
        let put = blocking(move || {
            let put = e.d.db.profile_or_404(&n)?;
            if n == DEFAULT {
                return Err(DaemonError::Forbidden(
                    "The \"default\" profile cannot be renamed".into(),
                ));
            }
            validate_name(&new)?;
            if e.d.db.profile(&new)?.is_some() {
                return Err(DaemonError::Conflict("The profile already exists".into()));
            }
            Ok(put)
        })
        .await?;
        store
            .rename(self.shared_state(), PROFILES, name, &req.name, &put)
            .await?;
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || {
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
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let (e, n) = (self.clone(), name.to_string());
        blocking(move || {
            let p = e.d.db.full_profile(&n)?;
            if n == DEFAULT {
                return Err(DaemonError::Forbidden(
                    "The \"default\" profile cannot be deleted".into(),
                ));
            }
            if !p.used_by.is_empty() {
                return Err(DaemonError::BadRequest(
                    "Profile is currently in use".into(),
                ));
            }
            Ok(())
        })
        .await?;
        self.check_unused_elsewhere(PROFILES, name).await?;
        store.delete(self.shared_state(), PROFILES, name).await?;
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || {
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
/// root disk on an existing pool, the same pool as now, valid limits and devices).
/// Returns it with its empty values dropped, and the instances whose expanded config it
/// changes.
fn check_change(
    e: &Engine,
    name: &str,
    put: &ProfilePut,
) -> Result<(ProfilePut, Vec<InstanceChange>)> {
    let d = &e.d;
    let mut put = put.clone();
    drop_empty_values(&mut put.config, &mut put.devices);
    validate(e, &put)?;
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
    Ok((put, changes))
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
