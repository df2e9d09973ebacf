//! The instance list of a whole cluster in one request: this member's own, each online
//! member's (asked at once, in parallel), and for a member that is offline its instances
//! as the placements in etcd name them, with status `Error` (LXD's answer: never shown
//! as stopped, since nobody knows). Operations too are listed for the whole cluster.

use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::{DaemonError, Result};

impl Engine {
    /// `GET /1.0/operations` of the whole cluster: this member's (`local`, by status) and
    /// each online member's own, asked in parallel (`path`: the query they are asked).
    pub async fn merge_cluster_operations(
        &self,
        path: &str,
        mut local: std::collections::BTreeMap<String, Vec<Value>>,
    ) -> std::collections::BTreeMap<String, Vec<Value>> {
        for answer in self.ask_other_members(path).await {
            if let Value::Object(by_status) = answer {
                for (status, ops) in by_status {
                    if let Value::Array(ops) = ops {
                        local.entry(status).or_default().extend(ops);
                    }
                }
            }
        }
        local
    }

    /// What `GET path` answers on each other online member, asked in parallel; a member
    /// that does not answer is logged and left out (a cluster-wide list goes on without
    /// it).
    pub async fn ask_other_members(&self, path: &str) -> Vec<Value> {
        let Some(m) = self.membership() else {
            return Vec::new();
        };
        let others = m.other_online_members();
        let asked = others
            .iter()
            .map(|member| self.get_from_member(member, path));
        let answers = futures_util::future::join_all(asked).await;
        others
            .iter()
            .zip(answers)
            .filter_map(|(member, answer)| match answer {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(member = %member, path, error = %crate::chain(&e), "cluster member not read");
                    None
                }
            })
            .collect()
    }

    /// The other member that runs operation `id` (not this one's, nor one it forwarded):
    /// the first online member that knows it.
    pub async fn operation_holder(&self, id: &str) -> Option<String> {
        let m = self.membership()?;
        for member in m.other_online_members() {
            if self
                .get_from_member(&member, &format!("/1.0/operations/{id}"))
                .await
                .is_ok()
            {
                return Some(member);
            }
        }
        None
    }

    /// `GET /1.0/instances` in a cluster (the members asked list their own only).
    pub async fn list_cluster_instances(
        &self,
        recursion: u8,
        filter: &str,
    ) -> Result<Vec<Box<RawValue>>> {
        let local = self.list_instances(recursion, filter).await?;
        let Some(m) = self.membership() else {
            return Ok(local);
        };
        // Without etcd the list goes on from what was read of it last: the members then
        // online are asked, nobody's placements are known.
        let (members, placed) = match tokio::try_join!(m.members(crate::unix_now()), m.placements())
        {
            Ok((members, placed)) => (
                members
                    .into_iter()
                    // An evacuated member still answers for what it holds.
                    .map(|x| (x.server_name, x.status != "Offline"))
                    .collect::<Vec<_>>(),
                placed,
            ),
            Err(e) => {
                tracing::warn!(error = %crate::chain(&e), "listing from the members last known");
                let links = m.links();
                let members = links
                    .members
                    .iter()
                    .map(|(name, l)| (name.clone(), l.online))
                    .collect();
                (members, Default::default())
            }
        };
        let query = format!(
            "/1.0/instances?recursion={recursion}&filter={}",
            hutch_api::percent_encode(filter)
        );
        let asked = members
            .iter()
            .filter(|(name, online)| *name != m.server_name && *online)
            .map(|(name, _)| {
                let (e, name, query) = (self.clone(), name.clone(), query.clone());
                async move {
                    let got = e.get_from_member(&name, &query).await;
                    (name, got)
                }
            });
        let answers = futures_util::future::join_all(asked).await;
        let mut out = local;
        let mut answered = std::collections::BTreeSet::from([m.server_name.clone()]);
        for (name, got) in answers {
            match got {
                Ok(Value::Array(items)) => {
                    answered.insert(name);
                    for item in items {
                        out.push(to_raw(&item)?);
                    }
                }
                Ok(_) => tracing::warn!(member = %name, "cluster member listed no array"),
                Err(e) => {
                    tracing::warn!(member = %name, error = %crate::chain(&e), "cluster member not listed")
                }
            }
        }
        // The rest: members offline, or not answering.
        if filter.is_empty() {
            for (instance, owner) in &placed {
                if !answered.contains(owner) {
                    out.push(to_raw(&unreachable_instance(instance, owner, recursion))?);
                }
            }
        }
        Ok(out)
    }
}

fn to_raw(v: &Value) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(v)
        .map_err(|e| DaemonError::failed("encode", "the instance list", e))
}

/// An instance on a member that cannot be asked: its name and place, status `Error`.
fn unreachable_instance(name: &str, member: &str, recursion: u8) -> Value {
    if recursion == 0 {
        return json!(format!("/1.0/instances/{name}"));
    }
    json!({
        "name": name,
        "location": member,
        "project": "default",
        "type": "container",
        "status": "Error",
        "status_code": 400,
        "architecture": "",
        "config": {},
        "devices": {},
        "expanded_config": {},
        "expanded_devices": {},
        "profiles": [],
        "ephemeral": false,
        "stateful": false,
        "description": "",
        "created_at": "1970-01-01T00:00:00Z",
        "last_used_at": "1970-01-01T00:00:00Z",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_instances_are_errors_where_they_live() {
        let v = unreachable_instance("c1", "n2", 1);
        assert_eq!(
            (v["status"].as_str(), v["location"].as_str()),
            (Some("Error"), Some("n2"))
        );
        assert_eq!(unreachable_instance("c1", "n2", 0), "/1.0/instances/c1");
        assert_eq!(
            hutch_api::percent_encode("status=Running x"),
            "status%3DRunning%20x"
        );
    }
}
