//! Where instances live in a cluster: a create claims its name for this member in etcd
//! first (the name is the cluster's: a second create of it on any member is refused), a
//! delete releases it, a rename moves it; a task per member makes the placements agree
//! with its instances every beat, healing what a crash or an etcd outage left. The
//! scheduler places a create without a target on the online member with the fewest.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::membership::Membership;
use crate::engine::{blocking, Engine};
use crate::error::{DaemonError, Result};

/// A name claimed for a create or a rename: released again unless [`Claim::keep`] is
/// called (by [`Claim::end`]).
pub struct Claim {
    membership: Option<Arc<Membership>>,
    name: String,
}

impl Claim {
    /// The request that claimed the name is over: kept when it made the instance,
    /// released when it failed.
    pub async fn end(self, made: bool) {
        let Some(m) = self.membership else {
            return;
        };
        if !made {
            if let Err(e) = m.release_instance(&self.name).await {
                // The placement sync releases it once etcd answers again.
                tracing::warn!(instance = %self.name, error = %crate::chain(&e), "placement not released");
            }
        }
        m.settled(&self.name);
    }
}

impl Engine {
    /// Claims `name` for an instance made here (nothing to claim standalone).
    pub(in crate::engine) async fn claim_instance_name(&self, name: &str) -> Result<Claim> {
        let membership = self.d.cluster.get();
        if let Some(m) = &membership {
            m.claim_instance(name).await?;
        }
        Ok(Claim {
            membership,
            name: name.to_string(),
        })
    }

    /// Releases the placement of an instance deleted here, or renamed away from `name`.
    pub(in crate::engine) async fn release_instance_name(&self, name: &str) {
        if let Some(m) = self.d.cluster.get() {
            if let Err(e) = m.release_instance(name).await {
                tracing::warn!(instance = %name, error = %crate::chain(&e), "placement not released");
            }
        }
    }

    /// Starts the task that keeps this member's placements in step with its instances.
    pub(super) fn start_placement_sync(&self, m: &Arc<Membership>) {
        let (e, me) = (self.clone(), Arc::downgrade(m));
        let every = m.beat_interval();
        m.spawn(async move {
            loop {
                let Some(m) = me.upgrade() else { return };
                let d = e.d.clone();
                // Every state: an instance being received (an evacuation's move) is
                // this member's already.
                match blocking(move || d.db.all_instance_names()).await {
                    Ok(names) => {
                        if let Err(err) = m.sync_placements(&names).await {
                            tracing::debug!(error = %crate::chain(&err), "placement sync failed");
                        }
                    }
                    Err(err) => tracing::warn!(error = %crate::chain(&err), "placement sync"),
                }
                drop(m);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// The member a create without a target goes to: the online member with the fewest
    /// instances (LXD's default `scheduler.instance`), this one on a tie.
    pub async fn choose_member(&self, m: &Membership) -> Result<String> {
        let members = m.members(crate::unix_now()).await?;
        let placed = m.placements().await?;
        let mut counts: BTreeMap<&str, usize> = members
            .iter()
            .filter(|x| x.status == "Online")
            .map(|x| (x.server_name.as_str(), 0))
            .collect();
        for owner in placed.values() {
            if let Some(n) = counts.get_mut(owner.as_str()) {
                *n += 1;
            }
        }
        least_loaded(&counts, &m.server_name).ok_or_else(|| {
            DaemonError::Unavailable("No online cluster member to place the instance on".into())
        })
    }
}

/// The member with the fewest instances; `me` wins a tie (no hop), then the first name.
fn least_loaded(counts: &BTreeMap<&str, usize>, me: &str) -> Option<String> {
    let fewest = counts.values().min()?;
    if counts.get(me) == Some(fewest) {
        return Some(me.to_string());
    }
    counts
        .iter()
        .find(|(_, n)| *n == fewest)
        .map(|(name, _)| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_member_is_chosen_and_this_one_on_a_tie() {
        let counts = BTreeMap::from([("n1", 2), ("n2", 1), ("n3", 1)]);
        assert_eq!(least_loaded(&counts, "n1").as_deref(), Some("n2"));
        assert_eq!(least_loaded(&counts, "n3").as_deref(), Some("n3"));
        assert_eq!(least_loaded(&BTreeMap::new(), "n1"), None);
    }
}
