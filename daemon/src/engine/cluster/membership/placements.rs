//! Instance placements in etcd: `…/instances/<name>` holds the member an instance lives
//! on. A create claims the name first (a name is the cluster's, once), a delete releases
//! it, a move hands it over in one transaction, and a sync per member mends what a crash
//! or an etcd outage left.

use std::collections::{BTreeMap, BTreeSet};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::Membership;
use crate::error::{DaemonError, Result};

impl Membership {
    /// Moves the placement of instance `name` from member `from` to member `to`
    /// (refused when `from` does not hold it).
    pub async fn move_placement(&self, name: &str, from: &str, to: &str) -> Result<()> {
        let key = self.key("instances", name);
        let state = (key, from.to_string(), to.to_string());
        let moved = self
            .with_client(state, |mut c, (key, from, to)| async move {
                let txn = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, from)])
                    .and_then([TxnOp::put(key, to, None)]);
                Ok(c.txn(txn).await?.succeeded())
            })
            .await?;
        if moved {
            Ok(())
        } else {
            Err(DaemonError::Conflict(format!(
                "Instance {name:?} is not on cluster member {from:?}"
            )))
        }
    }

    /// Claims instance name `name` for this member: refused when another member has it.
    /// Until [`settled`](Self::settled), the placement sync leaves the name alone.
    pub async fn claim_instance(&self, name: &str) -> Result<()> {
        self.claiming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        let claimed = self.claim(name).await;
        if claimed.is_err() {
            self.settled(name);
        }
        claimed
    }

    /// Puts the placement of `name` on this member unless it has one; the owner it has.
    async fn claim(&self, name: &str) -> Result<()> {
        let key = self.key("instances", name);
        let me = self.server_name.clone();
        let owner = self
            .with_client((key, me), |mut c, (key, me)| async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.clone(), me.clone(), None)])
                    .or_else([TxnOp::get(key, None)]);
                let r = c.txn(txn).await?;
                if r.succeeded() {
                    return Ok(me);
                }
                let owner = r
                    .op_responses()
                    .into_iter()
                    .find_map(|op| match op {
                        TxnOpResponse::Get(g) => g
                            .kvs()
                            .first()
                            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                        _ => None,
                    })
                    .unwrap_or_default();
                Ok(owner)
            })
            .await?;
        if owner == self.server_name {
            Ok(())
        } else {
            Err(DaemonError::Conflict(format!(
                "Instance {name:?} already exists on cluster member {owner:?}"
            )))
        }
    }

    /// The create or rename that claimed `name` is over.
    pub fn settled(&self, name: &str) {
        self.claiming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Releases the placement of `name` if this member holds it.
    pub async fn release_instance(&self, name: &str) -> Result<()> {
        let key = self.key("instances", name);
        let me = self.server_name.clone();
        self.with_client((key, me), |mut c, (key, me)| async move {
            let txn = Txn::new()
                .when([Compare::value(key.clone(), CompareOp::Equal, me)])
                .and_then([TxnOp::delete(key, None)]);
            c.txn(txn).await.map(drop)
        })
        .await
    }

    /// The member instance `name` lives on, if it is placed.
    pub async fn placement(&self, name: &str) -> Result<Option<String>> {
        let key = self.key("instances", name);
        self.with_client(key, |mut c, key| async move {
            let r = c.get(key, None).await?;
            Ok(r.kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
        })
        .await
    }

    /// Every instance's member, by instance name.
    pub async fn placements(&self) -> Result<BTreeMap<String, String>> {
        Ok(self
            .placement_revisions()
            .await?
            .into_iter()
            .map(|(name, (owner, _))| (name, owner))
            .collect())
    }

    /// The instances placed on member `member`.
    pub async fn instances_on(&self, member: &str) -> Result<Vec<String>> {
        Ok(self
            .placements()
            .await?
            .into_iter()
            .filter(|(_, owner)| owner == member)
            .map(|(instance, _)| instance)
            .collect())
    }

    /// Every instance's member and the revision its key was last changed at.
    async fn placement_revisions(&self) -> Result<BTreeMap<String, (String, i64)>> {
        let prefix = self.key("instances", "");
        self.with_client(prefix, |mut c, prefix| async move {
            let r = c
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await?;
            Ok(r.kvs()
                .iter()
                .map(|kv| {
                    let key = String::from_utf8_lossy(kv.key());
                    let owner = String::from_utf8_lossy(kv.value()).into_owned();
                    (
                        key.strip_prefix(&prefix).unwrap_or(&key).to_string(),
                        (owner, kv.mod_revision()),
                    )
                })
                .collect())
        })
        .await
    }

    /// Makes the placements agree with the instances this member has (`local`): the
    /// missing ones claimed, those it no longer has released; names being created or
    /// renamed are left to their request, and a disagreement is mended only when the
    /// previous sync saw it too, over the same key (a move sets the placement on the
    /// receiving member a moment before that member claims it). Heals what a crash or an
    /// etcd outage left.
    pub async fn sync_placements(&self, local: &[String]) -> Result<()> {
        let placed = self.placement_revisions().await?;
        let claiming = self
            .claiming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let here: BTreeSet<&String> = local.iter().collect();
        let now = disagreements(&self.server_name, &here, &placed, &claiming);
        let before = std::mem::replace(
            &mut *self.disagreeing.lock().unwrap_or_else(|e| e.into_inner()),
            now.clone(),
        );
        for (name, revision) in &now {
            if before.get(name) != Some(revision) {
                continue;
            }
            if *revision == 0 {
                if let Err(e) = self.claim(name).await {
                    tracing::warn!(instance = %name, error = %crate::chain(&e), "instance not placed");
                }
            } else {
                self.release_placement_at(name, *revision).await?;
            }
        }
        Ok(())
    }

    /// Releases the placement of `name` if its key is still at `revision`.
    async fn release_placement_at(&self, name: &str, revision: i64) -> Result<()> {
        let key = self.key("instances", name);
        self.with_client(key, |mut c, key| async move {
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::delete(key, None)]);
            c.txn(txn).await.map(drop)
        })
        .await
    }

    /// Removes every placement on member `name` (a member removed with its instances).
    pub async fn remove_placements_of(&self, name: &str) -> Result<()> {
        let placed = self.placements().await?;
        let keys: Vec<String> = placed
            .iter()
            .filter(|(_, owner)| *owner == name)
            .map(|(i, _)| self.key("instances", i))
            .collect();
        self.with_client(keys, |mut c, keys| async move {
            for k in keys {
                c.delete(k, None).await?;
            }
            Ok(())
        })
        .await
    }
}

/// The placements that disagree with member `me`'s instances `here`, with their key's
/// revision (0: an instance here with no placement); names in `claiming` are left out.
fn disagreements(
    me: &str,
    here: &BTreeSet<&String>,
    placed: &BTreeMap<String, (String, i64)>,
    claiming: &BTreeSet<String>,
) -> BTreeMap<String, i64> {
    let unplaced = here
        .iter()
        .filter(|name| !placed.contains_key(name.as_str()))
        .map(|name| (name.to_string(), 0));
    let gone = placed
        .iter()
        .filter(|(name, (owner, _))| owner == me && !here.contains(name))
        .map(|(name, (_, revision))| (name.clone(), *revision));
    unplaced
        .chain(gone)
        .filter(|(name, _)| !claiming.contains(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placements_disagree_when_missing_here_or_there() {
        let (a, b) = ("a".to_string(), "b".to_string());
        let here = BTreeSet::from([&a, &b]);
        let placed = BTreeMap::from([
            ("a".to_string(), ("n1".to_string(), 7)),
            ("c".to_string(), ("n1".to_string(), 9)),
            ("d".to_string(), ("n2".to_string(), 11)),
            ("e".to_string(), ("n1".to_string(), 12)),
        ]);
        let claiming = BTreeSet::from(["e".to_string()]);
        let found = disagreements("n1", &here, &placed, &claiming);
        assert_eq!(
            found,
            BTreeMap::from([("b".to_string(), 0), ("c".to_string(), 9)])
        );
    }
}
