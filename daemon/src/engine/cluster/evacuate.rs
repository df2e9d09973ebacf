//! Evacuating a member and restoring it (`lxc cluster evacuate|restore`, LXD's `POST
//! /1.0/cluster/members/<name>/state`): an evacuated member is marked in etcd (status
//! `Evacuated`, no new instances placed on it) and each of its instances moves to the
//! online member with the fewest, over the migration path (stopped first, started again
//! where it lands when it was running), remembering its origin in
//! `volatile.evacuate.origin`; a restore brings every instance whose origin it is back.
//!
//! Every step is a call to a member's API (this one's included), so whichever member
//! answers the request drives the moves. `lxc move c1 --target n2` moves one instance the
//! same way.

use axum::body::Body;
use axum::http::{header, Method, Request};
use serde_json::{json, Value};

use super::forward::{FORWARDED, TRUST};
use super::membership::Membership;
use crate::engine::{Engine, Work};
use crate::error::{DaemonError, Result};

/// How long one step of a move may take (a stop, a transfer of a large root).
const STEP_TIMEOUT_SECONDS: u32 = 3600;

/// The config key that remembers where an evacuated instance came from (LXD's).
pub const ORIGIN_KEY: &str = "volatile.evacuate.origin";

impl Engine {
    /// `POST /1.0/cluster/members/<name>/state`: checked now, done by the returned work.
    pub async fn change_member_state(
        &self,
        name: &str,
        action: &str,
    ) -> Result<(&'static str, Work)> {
        let m = self
            .membership()
            .ok_or_else(|| DaemonError::BadRequest("This server is not clustered".into()))?;
        let member = self.cluster_member(name).await?;
        let e = self.clone();
        let name = name.to_string();
        match action {
            "evacuate" => {
                if member.status == "Evacuated" {
                    return Err(DaemonError::BadRequest(format!(
                        "Cluster member {name:?} is already evacuated"
                    )));
                }
                Ok((
                    "Evacuating cluster member",
                    Box::pin(async move { e.evacuate(&m, &name).await }),
                ))
            }
            "restore" => {
                if member.status != "Evacuated" {
                    return Err(DaemonError::BadRequest(format!(
                        "Cluster member {name:?} is not evacuated"
                    )));
                }
                Ok((
                    "Restoring cluster member",
                    Box::pin(async move { e.restore(&m, &name).await }),
                ))
            }
            other => Err(DaemonError::BadRequest(format!(
                "Unknown cluster member state action {other:?}"
            ))),
        }
    }

    /// `POST /1.0/instances/<name>?target=<member>` with `migration` (`lxc move c1
    /// --target n2`): the instance, here, moved to another member over the migration path
    /// (stopped first and started again there when it runs).
    pub async fn move_to_member(
        &self,
        name: &str,
        member: &str,
        new_name: &str,
    ) -> Result<(&'static str, Work)> {
        let m = self
            .membership()
            .ok_or_else(|| DaemonError::BadRequest("This server is not clustered".into()))?;
        if !new_name.is_empty() && new_name != name {
            return Err(DaemonError::BadRequest(
                "An instance keeps its name when it moves to another cluster member".into(),
            ));
        }
        if !self.has_instance(name)? {
            return Err(DaemonError::NotFound("Instance not found".into()));
        }
        if member == m.server_name {
            return Err(DaemonError::BadRequest(format!(
                "Instance {name:?} is already on cluster member {member:?}"
            )));
        }
        let target = self.cluster_member(member).await?;
        if target.status != "Online" {
            return Err(DaemonError::BadRequest(format!(
                "Cluster member {member:?} is {}",
                target.status.to_lowercase()
            )));
        }
        let (e, name, member) = (self.clone(), name.to_string(), member.to_string());
        Ok((
            "Migrating instance",
            Box::pin(async move {
                let me = m.server_name.clone();
                e.move_instance(&m, &name, &me, &member, None).await
            }),
        ))
    }

    async fn evacuate(&self, m: &Membership, name: &str) -> Result<()> {
        m.set_evacuated(name, true).await?;
        let on_it = m.instances_on(name).await?;
        for instance in on_it {
            let to = self.choose_member(m).await?;
            if to == name {
                return Err(DaemonError::BadRequest(
                    "No other online cluster member to evacuate the instances to".into(),
                ));
            }
            self.move_instance(m, &instance, name, &to, Some(name))
                .await?;
        }
        self.d.events.lifecycle(
            "cluster-member-evacuated",
            &format!("/1.0/cluster/members/{name}"),
            json!({}),
        );
        Ok(())
    }

    async fn restore(&self, m: &Membership, name: &str) -> Result<()> {
        m.set_evacuated(name, false).await?;
        let elsewhere: Vec<(String, String)> = m
            .placements()
            .await?
            .into_iter()
            .filter(|(_, owner)| owner != name)
            .collect();
        for (instance, owner) in elsewhere {
            let path = format!("/1.0/instances/{instance}");
            let found = self.member_call(&owner, Method::GET, &path, None).await?;
            if found["metadata"]["config"][ORIGIN_KEY].as_str() == Some(name) {
                self.move_instance(m, &instance, &owner, name, None).await?;
            }
        }
        self.d.events.lifecycle(
            "cluster-member-restored",
            &format!("/1.0/cluster/members/{name}"),
            json!({}),
        );
        Ok(())
    }

    /// Moves instance `name` from member `from` to member `to` over the migration path,
    /// its placement with it; `origin` set (an evacuation) or cleared (a restore) in its
    /// config. A failed transfer leaves it where it was, started again if it ran.
    async fn move_instance(
        &self,
        m: &Membership,
        name: &str,
        from: &str,
        to: &str,
        origin: Option<&str>,
    ) -> Result<()> {
        let path = format!("/1.0/instances/{name}");
        let instance = self.member_call(from, Method::GET, &path, None).await?["metadata"].clone();
        let running = instance["status"] == "Running";
        if running {
            self.change_member_instance(from, name, "stop").await?;
        }
        let source_url = m
            .links()
            .members
            .get(from)
            .map(|l| (l.url.clone(), hutch_tls::pem_of_der(&l.certificate)))
            .ok_or_else(|| DaemonError::NotFound(format!("Cluster member {from:?} not found")))?;
        let migration = json!({"migration": true, "live": false, "instance_only": false});
        let source_op = self
            .member_call(from, Method::POST, &path, Some(migration))
            .await?;
        let mut config = instance["config"].as_object().cloned().unwrap_or_default();
        config.remove("volatile.last_state.power");
        match origin {
            Some(o) => config.insert(ORIGIN_KEY.into(), json!(o)),
            None => config.remove(ORIGIN_KEY),
        };
        let create = json!({
            "name": name,
            "architecture": instance["architecture"],
            "config": config,
            "devices": instance["devices"],
            "ephemeral": instance["ephemeral"],
            "profiles": instance["profiles"],
            "stateful": false,
            "description": instance["description"],
            "type": "container",
            "source": {
                "type": "migration",
                "mode": "pull",
                "operation": format!("{}{}", source_url.0, source_op["operation"].as_str().unwrap_or_default()),
                "certificate": source_url.1,
                "secrets": source_op["metadata"]["metadata"],
                "base-image": instance["config"]["volatile.base_image"],
                "live": false,
                "instance_only": false,
            },
        });
        m.move_placement(name, from, to).await?;
        let moved = async {
            let op = self
                .member_call(to, Method::POST, "/1.0/instances", Some(create))
                .await?;
            self.member_wait(to, &op).await
        }
        .await;
        if let Err(e) = moved {
            let op = source_op["operation"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let _ = self.member_call(from, Method::DELETE, &op, None).await;
            let _ = m.move_placement(name, to, from).await;
            if running {
                let _ = self.change_member_instance(from, name, "start").await;
            }
            return Err(e);
        }
        let op = self.member_call(from, Method::DELETE, &path, None).await?;
        self.member_wait(from, &op).await?;
        if running {
            self.change_member_instance(to, name, "start").await?;
        }
        Ok(())
    }

    /// Starts or stops instance `name` on member `member` and waits for it.
    async fn change_member_instance(&self, member: &str, name: &str, action: &str) -> Result<()> {
        let path = format!("/1.0/instances/{name}/state");
        let body = json!({"action": action, "timeout": 30, "force": false});
        let op = self
            .member_call(member, Method::PUT, &path, Some(body))
            .await?;
        if self.member_wait(member, &op).await.is_ok() || action != "stop" {
            return Ok(());
        }
        // A stop the instance did not heed in time: forced, as LXD's evacuation does.
        let body = json!({"action": "stop", "force": true});
        let op = self
            .member_call(member, Method::PUT, &path, Some(body))
            .await?;
        self.member_wait(member, &op).await
    }

    /// A call to member `member`'s API (this one's too) as the cluster: its envelope, or
    /// its error.
    pub(super) async fn member_call(
        &self,
        member: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let me = self
            .membership()
            .map(|m| m.server_name.clone())
            .unwrap_or_default();
        let body = match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, member)
            .header(header::CONTENT_TYPE, "application/json")
            .header(FORWARDED, me)
            .header(TRUST, "admin")
            .body(body)
            .map_err(|e| DaemonError::BadRequest(e.to_string()))?;
        let resp = self.send_to_member(member, req).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 64 << 20)
            .await
            .map_err(|e| {
                DaemonError::Unavailable(format!("Cluster member {member:?} did not answer: {e}"))
            })?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            let msg = v["error"].as_str().unwrap_or("failed").to_string();
            return Err(match status.as_u16() {
                404 => DaemonError::NotFound(msg),
                409 => DaemonError::Conflict(msg),
                503 => DaemonError::Unavailable(msg),
                _ => DaemonError::BadRequest(format!("Cluster member {member:?}: {msg}")),
            });
        }
        Ok(v)
    }

    /// Waits for the operation an envelope of member `member` started, if it started one.
    pub(super) async fn member_wait(&self, member: &str, envelope: &Value) -> Result<()> {
        let Some(op) = envelope["operation"].as_str().filter(|o| !o.is_empty()) else {
            return Ok(());
        };
        let path = format!("{op}/wait?timeout={STEP_TIMEOUT_SECONDS}");
        let done = self.member_call(member, Method::GET, &path, None).await?;
        let md = &done["metadata"];
        if md["status_code"].as_u64() == Some(200) {
            return Ok(());
        }
        Err(DaemonError::BadRequest(format!(
            "Cluster member {member:?}: {}",
            md["err"]
                .as_str()
                .filter(|e| !e.is_empty())
                .unwrap_or("operation failed")
        )))
    }
}
