//! Copies across a cluster: `lxc copy c1 c2 --target n2` where `c1` lives on another
//! member. The create is rewritten, before it is answered or sent on, to pull the instance
//! (or snapshot) from the member that has it over the migration path, as a move does but
//! keeping the source; what the request leaves out (config, devices, profiles) is the
//! source's. A copy without a target is made on the source's member (a local, cheap copy).

use axum::http::Method;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::{DaemonError, Result};

impl Engine {
    /// The member instance `name` (of a copy's `source`, `c1` or `c1/snap`) lives on:
    /// this one when it has it. None outside a cluster, or for a source that is not a
    /// copy.
    pub async fn copy_source_member(&self, source: &Value) -> Result<Option<String>> {
        let Some(m) = self.membership() else {
            return Ok(None);
        };
        if source["type"] != "copy" {
            return Ok(None);
        }
        let from = source["source"].as_str().unwrap_or_default();
        let instance = from.split('/').next().unwrap_or_default();
        if instance.is_empty() || self.has_instance(instance)? {
            return Ok(Some(m.server_name.clone()));
        }
        m.placement(instance).await
    }

    /// Create `create` (a copy, to member `dest`) rewritten to pull its source from member
    /// `owner` over the migration path.
    pub async fn copy_from_member(&self, owner: &str, create: &mut Value) -> Result<()> {
        let m = self
            .membership()
            .ok_or_else(|| DaemonError::BadRequest("This server is not clustered".into()))?;
        let source = create["source"].clone();
        let from = source["source"].as_str().unwrap_or_default().to_string();
        // The client's names go into a request made as the cluster: checked first.
        let path = match from.split_once('/') {
            Some((instance, snapshot)) => {
                crate::engine::validate_name(instance)?;
                crate::engine::validate_snapshot_name(snapshot)?;
                format!(
                    "/1.0/instances/{instance}/snapshots/{}",
                    hutch_api::percent_encode(snapshot)
                )
            }
            None => {
                crate::engine::validate_name(&from)?;
                format!("/1.0/instances/{from}")
            }
        };
        let original = self.member_call(owner, Method::GET, &path, None).await?["metadata"].clone();
        let instance_only = source["instance_only"].as_bool().unwrap_or(false)
            || source["container_only"].as_bool().unwrap_or(false);
        let link =
            m.links().members.get(owner).cloned().ok_or_else(|| {
                DaemonError::NotFound(format!("Cluster member {owner:?} not found"))
            })?;
        // A snapshot's migration names what the target makes (LXD's shape).
        let name = create["name"].clone();
        let migration = json!({
            "migration": true, "live": false, "instance_only": instance_only, "name": name,
        });
        let source_op = self
            .member_call(owner, Method::POST, &path, Some(migration))
            .await?;
        // What the request leaves out is the source's (its volatile keys but the base
        // image are its own).
        if create["config"].is_null() {
            let mut config = original["config"].as_object().cloned().unwrap_or_default();
            config.retain(|k, _| !k.starts_with("volatile.") || k == "volatile.base_image");
            create["config"] = Value::Object(config);
        }
        for key in ["devices", "profiles", "architecture"] {
            if create[key].is_null() {
                create[key] = original[key].clone();
            }
        }
        let base_image = original["config"]["volatile.base_image"].clone();
        create["source"] = json!({
            "type": "migration",
            "mode": "pull",
            "operation": format!("{}{}", link.url, source_op["operation"].as_str().unwrap_or_default()),
            "certificate": hutch_tls::pem_of_der(&link.certificate),
            "secrets": source_op["metadata"]["metadata"],
            "base-image": base_image,
            "live": false,
            "instance_only": instance_only,
        });
        Ok(())
    }
}
