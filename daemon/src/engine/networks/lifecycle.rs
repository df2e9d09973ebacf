//! Creating, changing, renaming and deleting a managed network. Each is a change of several
//! steps (a row, a bridge with its addresses, an nftables table, a dnsmasq), made under
//! a `Revert`, so a failure at any step leaves what was there before.

use std::collections::BTreeMap;

use hutch_api::network::{NetworkPatch, NetworkPost, NetworkPut, NetworksPost};
use hutch_network::addr::{Ipv4Net, Ipv6Net};
use hutch_network::{bridge, config, BridgeConfig};
use serde_json::json;

use super::{dnsmasq, files, parse_row, table, validate_network_name};
use crate::db::intents::IntentKind;
use crate::db::networks::NetworkRow;
use crate::engine::cluster::shared::{SharedStore, NETWORKS};
use crate::engine::net_state::lock;
use crate::engine::revert::Revert;
use crate::engine::{blocking, check_version, Engine};
use crate::error::{DaemonError, Result};

impl Engine {
    /// `POST /1.0/networks`: records the network, then brings it up; in a cluster, on
    /// every member (made here first, then recorded in etcd, whose watch makes it on the
    /// others; undone here when etcd refuses it).
    pub async fn create_network(&self, req: NetworksPost) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let (e, name) = (self.clone(), req.name.clone());
        blocking(move || create(&e, req)).await?;
        if !store.is_cluster() {
            return Ok(());
        }
        let put = self.network_put(&name).await?;
        if let Err(err) = store
            .create(self.shared_state(), NETWORKS, &name, &put)
            .await
        {
            let (e, n) = (self.clone(), name.clone());
            undo_here(blocking(move || delete(&e, &n)).await, &name);
            return Err(err);
        }
        Ok(())
    }

    /// `POST /1.0/networks?target=<member>` in a cluster: LXD's first step, defining a
    /// network on one member before the cluster-wide create. hutch defines a network for
    /// the whole cluster at once, so the step only checks what it is given (no key is
    /// member specific here).
    pub async fn define_network_on_member(&self, req: &NetworksPost) -> Result<()> {
        if self.membership().is_none() {
            return Err(DaemonError::BadRequest(
                "This server is not clustered".into(),
            ));
        }
        validate_network_name(&req.name)?;
        match req.put.config.keys().next() {
            Some(key) => Err(DaemonError::BadRequest(format!(
                "Config key {key:?} may not be used as member-specific key: a network is \
                 defined for the whole cluster at once (create it without --target)"
            ))),
            None => Ok(()),
        }
    }

    /// `PUT /1.0/networks/<name>`: the new configuration, applied to the live bridge, when
    /// `if_match` (the client's ETag, if any) names the current one.
    pub async fn update_network(
        &self,
        name: &str,
        put: NetworkPut,
        if_match: Option<String>,
    ) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let (e, n) = (self.clone(), name.to_string());
        let old = blocking(move || {
            let _ops = lock(&e.d.net.networks.ops);
            let row = e.d.db.network_or_404(&n)?;
            check_version(if_match.as_deref(), &row.put)?;
            let old = row.put.clone();
            update(&e, row, put)?;
            Ok(old)
        })
        .await?;
        self.record_network_update(&store, name, old).await
    }

    /// `PATCH /1.0/networks/<name>`: as an update, with what `patch` gives merged into the
    /// current configuration.
    pub async fn patch_network(
        &self,
        name: &str,
        patch: NetworkPatch,
        if_match: Option<String>,
    ) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let (e, n) = (self.clone(), name.to_string());
        let old = blocking(move || {
            let _ops = lock(&e.d.net.networks.ops);
            let row = e.d.db.network_or_404(&n)?;
            check_version(if_match.as_deref(), &row.put)?;
            let old = row.put.clone();
            let mut put = row.put.clone();
            put.config.extend(patch.config.unwrap_or_default());
            if let Some(desc) = patch.description {
                put.description = desc;
            }
            update(&e, row, put)?;
            Ok(old)
        })
        .await?;
        self.record_network_update(&store, name, old).await
    }

    /// A change made here to network `name` recorded in the cluster; undone here (back
    /// to `old`) when etcd refuses it.
    async fn record_network_update(
        &self,
        store: &SharedStore,
        name: &str,
        old: NetworkPut,
    ) -> Result<()> {
        if !store.is_cluster() {
            return Ok(());
        }
        let put = self.network_put(name).await?;
        if let Err(err) = store
            .update(self.shared_state(), NETWORKS, name, &put)
            .await
        {
            let (e, n) = (self.clone(), name.to_string());
            let undone = blocking(move || {
                let _ops = lock(&e.d.net.networks.ops);
                let row = e.d.db.network_or_404(&n)?;
                update(&e, row, old)
            })
            .await;
            undo_here(undone, name);
            return Err(err);
        }
        Ok(())
    }

    /// `POST /1.0/networks/<name>`: the network is taken down and brought up under its new
    /// name. One in use (on any member) cannot be renamed.
    pub async fn rename_network(&self, name: &str, req: NetworkPost) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        self.check_unused_elsewhere(NETWORKS, name).await?;
        let (e, old, new) = (self.clone(), name.to_string(), req.name.clone());
        blocking(move || rename(&e, &old, &new)).await?;
        if !store.is_cluster() {
            return Ok(());
        }
        let put = self.network_put(&req.name).await?;
        if let Err(err) = store
            .rename(self.shared_state(), NETWORKS, name, &req.name, &put)
            .await
        {
            let (e, old, new) = (self.clone(), name.to_string(), req.name.clone());
            undo_here(blocking(move || rename(&e, &new, &old)).await, name);
            return Err(err);
        }
        Ok(())
    }

    /// `DELETE /1.0/networks/<name>`. One in use (on any member) cannot be deleted.
    pub async fn delete_network(&self, name: &str) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        self.check_unused_elsewhere(NETWORKS, name).await?;
        let put = self.network_put(name).await?;
        let (e, n) = (self.clone(), name.to_string());
        blocking(move || delete(&e, &n)).await?;
        if let Err(err) = store.delete(self.shared_state(), NETWORKS, name).await {
            let (e, n) = (self.clone(), name.to_string());
            let again = NetworksPost {
                name: n.clone(),
                kind: "bridge".into(),
                put,
            };
            undo_here(blocking(move || create(&e, again)).await, name);
            return Err(err);
        }
        Ok(())
    }

    /// The configuration network `name` has here.
    async fn network_put(&self, name: &str) -> Result<NetworkPut> {
        let (e, n) = (self.clone(), name.to_string());
        blocking(move || Ok(e.d.db.network_or_404(&n)?.put)).await
    }

    /// Network `name` as the cluster has it (another member's change), here: renamed
    /// from `renamed_from`, made, or changed.
    pub(in crate::engine) async fn take_network(
        &self,
        name: &str,
        put: NetworkPut,
        renamed_from: &str,
    ) -> Result<()> {
        let (e, name, from) = (self.clone(), name.to_string(), renamed_from.to_string());
        blocking(move || {
            let d = &e.d;
            if !from.is_empty() && d.db.network(&from)?.is_some() && d.db.network(&name)?.is_none()
            {
                rename(&e, &from, &name)?;
            }
            let ops = lock(&d.net.networks.ops);
            match d.db.network(&name)? {
                Some(row) if row.put == put => Ok(()),
                Some(row) => update(&e, row, put),
                None => {
                    // create takes the lock itself.
                    drop(ops);
                    let kind = "bridge".to_string();
                    create(&e, NetworksPost { name, kind, put })
                }
            }
        })
        .await
    }

    /// Network `name` gone from the cluster: gone here too, unless something here uses it.
    pub(in crate::engine) async fn drop_network(&self, name: &str) -> Result<()> {
        let (e, n) = (self.clone(), name.to_string());
        blocking(move || match e.d.db.network(&n)? {
            Some(_) => delete(&e, &n),
            None => Ok(()),
        })
        .await
    }
}

/// Logs an undo that failed: the error the caller returns is the one that made it undo.
fn undo_here(undone: Result<()>, name: &str) {
    if let Err(err) = undone {
        tracing::warn!(network = name, error = %err.chain(), "undo here of a change the cluster refused");
    }
}

fn create(e: &Engine, req: NetworksPost) -> Result<()> {
    let d = &e.d;
    let _ops = lock(&d.net.networks.ops);
    let name = req.name.clone();
    validate_network_name(&name)?;
    if !matches!(req.kind.as_str(), "" | "bridge") {
        return Err(DaemonError::BadRequest(format!(
            "Network type {:?} is not supported (only \"bridge\")",
            req.kind
        )));
    }
    if d.db.network(&name)?.is_some() {
        return Err(DaemonError::Conflict("The network already exists".into()));
    }
    if d.net.netlink.link(&name)?.is_some() {
        return Err(DaemonError::BadRequest(format!(
            "The network already exists: an interface named {name:?} exists on the host"
        )));
    }
    let mut put = req.put;
    let host4 = resolve(e, &mut put.config)?;
    let cfg = BridgeConfig::parse(&put.config)?;
    check_overlaps(e, &name, &cfg, &host4)?;
    let mut revert = Revert::new();
    d.db.insert_network(&NetworkRow {
        name: name.clone(),
        kind: "bridge".into(),
        put,
    })?;
    let (e2, n2) = (e.clone(), name.clone());
    revert.add(move || {
        if let Err(err) = e2.d.db.delete_network(&n2) {
            tracing::warn!(network = n2, error = %err.chain(), "undo: remove the row");
        }
    });
    undo_with_teardown(e, &mut revert, &name);
    bring_up(e, &name, &cfg)?;
    revert.success();
    d.events.lifecycle(
        "network-created",
        &format!("/1.0/networks/{name}"),
        json!({}),
    );
    Ok(())
}

/// Applies `put` to network `row` (under the ops lock); on failure the old row and the old
/// bridge are back.
fn update(e: &Engine, row: NetworkRow, mut put: NetworkPut) -> Result<()> {
    let d = &e.d;
    let name = row.name.clone();
    for key in ["ipv4.address", "ipv6.address"] {
        put.config
            .entry(key.into())
            .or_insert_with(|| "none".into());
    }
    let host4 = resolve(e, &mut put.config)?;
    let cfg = BridgeConfig::parse(&put.config)?;
    check_overlaps(e, &name, &cfg, &host4)?;
    let mut revert = Revert::new();
    d.db.update_network(&name, &put)?;
    let e2 = e.clone();
    revert.add(move || {
        let restored = e2.d.db.update_network(&row.name, &row.put);
        let back_up = parse_row(&row).and_then(|old| bring_up(&e2, &row.name, &old));
        if let Err(err) = restored.and(back_up) {
            tracing::warn!(network = row.name, error = %err.chain(), "undo: restore the network");
        }
    });
    bring_up(e, &name, &cfg)?;
    revert.success();
    d.events.lifecycle(
        "network-updated",
        &format!("/1.0/networks/{name}"),
        json!({}),
    );
    Ok(())
}

fn rename(e: &Engine, name: &str, new: &str) -> Result<()> {
    let d = &e.d;
    let _ops = lock(&d.net.networks.ops);
    let row = d.db.network_or_404(name)?;
    validate_network_name(new)?;
    if !e.network_users(name)?.is_empty() {
        return Err(DaemonError::BadRequest(
            "The network is currently in use".into(),
        ));
    }
    if d.db.network(new)?.is_some() || d.net.netlink.link(new)?.is_some() {
        return Err(DaemonError::Conflict(format!(
            "Network {new:?} already exists"
        )));
    }
    let cfg = parse_row(&row)?;
    let mut revert = Revert::new();
    let (e2, old, cfg2) = (e.clone(), name.to_string(), cfg.clone());
    revert.add(move || {
        if let Err(err) = bring_up(&e2, &old, &cfg2) {
            tracing::warn!(network = old, error = %err.chain(), "undo: bring back");
        }
    });
    teardown(e, name)?;
    d.db.insert_network(&NetworkRow {
        name: new.to_string(),
        ..row.clone()
    })?;
    let (e2, n2) = (e.clone(), new.to_string());
    revert.add(move || {
        if let Err(err) = e2.d.db.delete_network(&n2) {
            tracing::warn!(network = n2, error = %err.chain(), "undo: remove the row");
        }
    });
    d.db.delete_network(name)?;
    let e2 = e.clone();
    revert.add(move || {
        if let Err(err) = e2.d.db.insert_network(&row) {
            tracing::warn!(network = row.name, error = %err.chain(), "undo: restore the row");
        }
    });
    undo_with_teardown(e, &mut revert, new);
    bring_up(e, new, &cfg)?;
    revert.success();
    d.events.lifecycle(
        "network-renamed",
        &format!("/1.0/networks/{new}"),
        json!({"old_name": name}),
    );
    Ok(())
}

fn delete(e: &Engine, name: &str) -> Result<()> {
    let d = &e.d;
    let _ops = lock(&d.net.networks.ops);
    let row = d.db.network_or_404(name)?;
    if !e.network_users(name)?.is_empty() {
        return Err(DaemonError::BadRequest(
            "The network is currently in use".into(),
        ));
    }
    // A crash from here on leaves the intent, which the next start finishes.
    d.db.record_intent(IntentKind::Network, "", name)?;
    let mut revert = Revert::new();
    let e2 = e.clone();
    revert.add(move || {
        let back = parse_row(&row).and_then(|cfg| bring_up(&e2, &row.name, &cfg));
        if let Err(err) = back {
            tracing::warn!(network = row.name, error = %err.chain(), "undo: bring back");
        }
        let _ = e2.d.db.clear_intent(IntentKind::Network, "", &row.name);
    });
    teardown(e, name)?;
    d.db.delete_network(name)?;
    revert.success();
    d.db.clear_intent(IntentKind::Network, "", name)?;
    d.events.lifecycle(
        "network-deleted",
        &format!("/1.0/networks/{name}"),
        json!({}),
    );
    Ok(())
}

/// What a recorded delete does: the network off the host, then its row, then the intent.
pub(super) fn finish_delete(e: &Engine, name: &str) -> Result<()> {
    teardown(e, name)?;
    e.d.db.delete_network(name)?;
    e.d.db.clear_intent(IntentKind::Network, "", name)
}

/// Brings network `name` to `cfg` on the host: bridge, addresses, rules, dnsmasq. Safe to
/// run again.
pub(super) fn bring_up(e: &Engine, name: &str, cfg: &BridgeConfig) -> Result<()> {
    let d = &e.d;
    bridge::apply(&*d.net.netlink, &*d.net.nft, name, cfg, &table(d, name))?;
    dnsmasq::restart(d, name, cfg)
}

/// Removes everything of network `name` from the host (dnsmasq, rules, bridge, files);
/// what is gone already is fine.
pub(super) fn teardown(e: &Engine, name: &str) -> Result<()> {
    let d = &e.d;
    dnsmasq::stop(d, name);
    bridge::remove(&*d.net.netlink, &*d.net.nft, name, &table(d, name))?;
    let dir = files(d, name).dir;
    match std::fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(DaemonError::io("remove", &dir, err))
        }
        _ => Ok(()),
    }
}

/// Adds to `revert` the removal of whatever of network `name` the next steps make; added
/// before those steps, since a step that fails halfway may have made part of it.
fn undo_with_teardown(e: &Engine, revert: &mut Revert, name: &str) {
    let (e, name) = (e.clone(), name.to_string());
    revert.add(move || {
        if let Err(err) = teardown(&e, &name) {
            tracing::warn!(network = name, error = %err.chain(), "undo: take down");
        }
    });
}

/// Resolves `auto` addresses against the host's routes and the other networks; returns the
/// host's IPv4 prefixes.
fn resolve(e: &Engine, config: &mut BTreeMap<String, String>) -> Result<Vec<Ipv4Net>> {
    let (mut used4, mut used6): (Vec<Ipv4Net>, Vec<Ipv6Net>) = e.d.net.netlink.used_prefixes()?;
    let host4 = used4.clone();
    for other in e.d.db.networks()? {
        if let Ok(c) = parse_row(&other) {
            used4.extend(c.ipv4);
            used6.extend(c.ipv6);
        }
    }
    config::resolve_auto(config, &used4, &used6)?;
    Ok(host4)
}

/// Refuses a subnet that overlaps another network's or a route of the host (but the
/// network's own current one).
fn check_overlaps(e: &Engine, name: &str, cfg: &BridgeConfig, host4: &[Ipv4Net]) -> Result<()> {
    let Some(v4) = cfg.ipv4 else { return Ok(()) };
    let mut own: Option<Ipv4Net> = None;
    for other in e.d.db.networks()? {
        let Ok(ocfg) = parse_row(&other) else {
            continue;
        };
        let Some(o4) = ocfg.ipv4 else { continue };
        if other.name == name {
            own = Some(o4);
            continue;
        }
        if o4.overlaps(&v4) {
            return Err(DaemonError::BadRequest(format!(
                "Subnet {}/{} overlaps with network {:?} ({}/{})",
                v4.network(),
                v4.prefix,
                other.name,
                o4.network(),
                o4.prefix
            )));
        }
    }
    for h in host4 {
        // The bridge's own address and route, when it is being changed.
        let is_own = own.is_some_and(|o| o.contains(h.network()) && h.prefix >= o.prefix);
        if !is_own && h.overlaps(&v4) {
            return Err(DaemonError::BadRequest(format!(
                "Subnet {}/{} overlaps with {}/{}, already in use on the host",
                v4.network(),
                v4.prefix,
                h.network(),
                h.prefix
            )));
        }
    }
    Ok(())
}
