//! Reading networks: the managed ones as recorded, the host's other interfaces as LXD lists
//! them (unmanaged), leases and live state.

use hutch_api::network::{InterfaceState, Network, NetworkLease, NetworkPut};
use hutch_network::netlink::Link;

use super::dnsmasq;
use crate::db::networks::NetworkRow;
use crate::engine::net_state::interface_state;
use crate::engine::{blocking, Engine};
use crate::error::{DaemonError, Result};

impl Engine {
    /// `GET /1.0/networks`: the managed networks, then the host's bridges and physical
    /// interfaces, which LXD lists too (as unmanaged).
    pub async fn network_names(&self) -> Result<Vec<String>> {
        let e = self.clone();
        blocking(move || {
            let rows = e.d.db.networks()?;
            let unmanaged = unmanaged_links(&e, &rows)?;
            Ok(rows
                .into_iter()
                .map(|r| r.name)
                .chain(unmanaged.into_iter().map(|l| l.name))
                .collect())
        })
        .await
    }

    /// `GET /1.0/networks?recursion=1`: as [`network_names`](Self::network_names), whole.
    pub async fn networks(&self) -> Result<Vec<Network>> {
        let e = self.clone();
        blocking(move || {
            let rows = e.d.db.networks()?;
            let unmanaged = unmanaged_links(&e, &rows)?;
            let mut all = rows
                .iter()
                .map(|r| managed_object(&e, r))
                .collect::<Result<Vec<_>>>()?;
            all.extend(unmanaged.iter().map(unmanaged_object));
            Ok(all)
        })
        .await
    }

    /// `GET /1.0/networks/<name>`: a managed network, or a host interface.
    pub async fn network(&self, name: &str) -> Result<Network> {
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || match e.d.db.network(&name)? {
            Some(row) => managed_object(&e, &row),
            None => {
                e.d.net
                    .netlink
                    .link(&name)?
                    .map(|l| unmanaged_object(&l))
                    .ok_or_else(|| DaemonError::NotFound("Network not found".into()))
            }
        })
        .await
    }

    /// `GET /1.0/networks/<name>/leases`.
    pub async fn network_leases(&self, name: &str) -> Result<Vec<NetworkLease>> {
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || {
            e.d.db.network_or_404(&name)?;
            Ok(dnsmasq::leases(&e.d, &name))
        })
        .await
    }

    /// `GET /1.0/networks/<name>/state`, for managed and host interfaces alike.
    pub async fn network_state(&self, name: &str) -> Result<InterfaceState> {
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || {
            let nl = &e.d.net.netlink;
            let link = nl
                .link(&name)?
                .ok_or_else(|| DaemonError::NotFound("Network not found".into()))?;
            let own: Vec<_> = nl
                .addresses()?
                .into_iter()
                .filter(|a| a.index == link.index)
                .collect();
            Ok(interface_state(&link, &own))
        })
        .await
    }
}

/// The host's bridges, physical interfaces and loopback that are not managed networks (LXD
/// lists `lo` too; `lxc network list` leaves it out of its table).
fn unmanaged_links(e: &Engine, rows: &[NetworkRow]) -> Result<Vec<Link>> {
    Ok(e.d
        .net
        .netlink
        .links()?
        .into_iter()
        .filter(|l| !rows.iter().any(|r| r.name == l.name))
        .filter(|l| l.kind.is_empty() || l.kind == "bridge")
        .collect())
}

fn managed_object(e: &Engine, row: &NetworkRow) -> Result<Network> {
    Ok(Network {
        name: row.name.clone(),
        put: row.put.clone(),
        kind: row.kind.clone(),
        managed: true,
        status: "Created".into(),
        used_by: e.network_users(&row.name)?,
        locations: vec!["none".into()],
    })
}

/// A host interface that hutch does not manage, as LXD lists it.
fn unmanaged_object(link: &Link) -> Network {
    let kind = match (link.kind.as_str(), link.link_type.as_str()) {
        ("bridge", _) => "bridge",
        (_, "loopback") => "loopback",
        ("", _) => "physical",
        _ => "unknown",
    };
    Network {
        name: link.name.clone(),
        put: NetworkPut::default(),
        kind: kind.into(),
        managed: false,
        status: String::new(),
        used_by: Vec::new(),
        locations: vec!["none".into()],
    }
}
