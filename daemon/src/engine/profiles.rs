//! Profiles: config and devices that instances share. Each change is checked whole (its
//! devices against their rules, its config against the key table) before it is stored.

use hutch_api::profile::{Profile, ProfilePatch, ProfilePost, ProfilePut, ProfilesPost};
use serde_json::json;

use super::devices::validate_devices;
use super::{blocking, check_version, Engine};
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
    pub async fn create_profile(&self, req: ProfilesPost) -> Result<()> {
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
        blocking(move || {
            let current = e.d.db.profile_or_404(&name)?;
            check_version(if_match.as_deref(), &current)?;
            store(&e, &name, &put)
        })
        .await
    }

    /// `PATCH /1.0/profiles/<name>`: `patch` merged into the current profile.
    pub async fn patch_profile(
        &self,
        name: &str,
        patch: ProfilePatch,
        if_match: Option<String>,
    ) -> Result<()> {
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || {
            let mut put = e.d.db.profile_or_404(&name)?;
            check_version(if_match.as_deref(), &put)?;
            put.config.extend(patch.config.unwrap_or_default());
            put.devices.extend(patch.devices.unwrap_or_default());
            if let Some(desc) = patch.description {
                put.description = desc;
            }
            store(&e, &name, &put)
        })
        .await
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

/// Checks and stores `put` as profile `name`.
fn store(e: &Engine, name: &str, put: &ProfilePut) -> Result<()> {
    validate(e, put)?;
    e.d.db.update_profile(name, put)?;
    e.d.events.lifecycle(
        "profile-updated",
        &format!("/1.0/profiles/{name}"),
        json!({}),
    );
    Ok(())
}
