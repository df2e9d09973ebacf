//! `hutchd recover`: rebuilds the database's rows from what the pools hold. Each pool
//! describes itself (`.hutch-pool.yaml`), each instance volume carries its `backup.yaml`
//! and each custom volume its file (engine/backup_yaml.rs), so after the database is lost
//! every pool, instance, snapshot and volume comes back. A validate lists what is missing
//! and what would be refused (a name taken, a file that lies about its volume or pool,
//! snapshots that differ, a profile or network that is missing); an import makes the rows
//! of the rest, naming each refused one and why.

mod pools;
mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use hutch_api::profile::ProfilePut;
use hutch_api::recover::{RecoverPool, RecoverPost, RecoverReport, RecoverStatus};
use hutch_backup::Config;

use super::backup_config::rows_of;
use super::backup_yaml;
use super::{blocking, Engine};
use crate::daemon::Daemon;
use crate::db::volumes::VolumeRow;
use crate::error::Result;
use pools::FoundPool;
use scan::{FoundInstance, FoundVolume};

/// One recover at a time: two would both see the same rows missing.
static RECOVERS: Mutex<()> = Mutex::new(());

impl Engine {
    /// `POST /internal/recover/validate` (`import` false: nothing changes, what a dry run
    /// prints) and `/internal/recover/import` (the rows are made).
    pub async fn recover_from_pools(
        &self,
        req: RecoverPost,
        import: bool,
    ) -> Result<RecoverReport> {
        let d = self.d.clone();
        blocking(move || {
            let _turn = RECOVERS.lock().unwrap_or_else(|e| e.into_inner());
            recover(&d, &req, import)
        })
        .await
    }
}

/// What one pool holds that the database lacks.
struct PoolFindings {
    pool: FoundPool,
    instances: Vec<FoundInstance>,
    volumes: Vec<FoundVolume>,
}

fn recover(d: &Daemon, req: &RecoverPost, import: bool) -> Result<RecoverReport> {
    let mut report = RecoverReport::default();
    let mut found = Vec::new();
    for name in pools::pool_names(d, &req.pools)? {
        let asked = req.pools.iter().find(|p| p.name == name);
        match pools::find_pool(d, &name, asked) {
            Ok(pool) => found.push(pool),
            Err(e) => report.pools.push(RecoverPool {
                name,
                status: RecoverStatus::Refused,
                reason: e.chain(),
                ..Default::default()
            }),
        }
    }
    let pool_names: BTreeSet<String> = found.iter().map(|p| p.def.name.clone()).collect();
    let mut profiles = BTreeMap::new();
    let mut claimed = BTreeSet::new();
    let mut findings = Vec::new();
    for pool in found {
        let mut instances = scan::instances(d, &pool)?;
        for inst in instances.iter_mut().filter(|i| i.refused.is_none()) {
            inst.refused =
                check_instance(d, inst, &pool, &pool_names, &mut profiles, &claimed).err();
            if inst.refused.is_none() {
                claimed.insert(inst.name.clone());
            }
        }
        let volumes = scan::volumes(d, &pool)?;
        findings.push(PoolFindings {
            pool,
            instances,
            volumes,
        });
    }
    report.profiles = profiles.keys().cloned().collect();
    if import {
        create_profiles(d, &profiles)?;
    }
    for f in findings {
        let mut entry = RecoverPool {
            name: f.pool.def.name.clone(),
            driver: pools::base_driver(&f.pool.def.driver).to_string(),
            source: f.pool.def.config.get("source").cloned().unwrap_or_default(),
            status: if f.pool.in_db {
                RecoverStatus::Known
            } else {
                RecoverStatus::Missing
            },
            instances: f.instances.iter().map(FoundInstance::item).collect(),
            volumes: f.volumes.iter().map(FoundVolume::item).collect(),
            ..Default::default()
        };
        if import {
            import_pool(d, &f, &mut entry);
        } else {
            pools::release(d, &f.pool);
        }
        report.pools.push(entry);
    }
    report.pools.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(report)
}

/// Checks what the instance needs besides its volume: rows it can be made of, a name no
/// other pool claimed, its profiles (re-created from its file where the database lacks
/// them), its networks and the pools of its disks.
fn check_instance(
    d: &Daemon,
    inst: &FoundInstance,
    pool: &FoundPool,
    pool_names: &BTreeSet<String>,
    profiles: &mut BTreeMap<String, ProfilePut>,
    claimed: &BTreeSet<String>,
) -> std::result::Result<(), String> {
    let Some(config) = &inst.config else {
        return Err("no backup.yaml".into());
    };
    if claimed.contains(&inst.name) {
        return Err(format!(
            "an instance named {:?} was found on another pool too",
            inst.name
        ));
    }
    rows_of(config, &inst.name, &pool.def.name).map_err(|e| e.chain())?;
    let Some(c) = &config.container else {
        return Err("its backup.yaml describes no instance".into());
    };
    let mut needed = BTreeMap::new();
    for name in &c.profiles {
        let current = d.db.profile(name).map_err(|e| e.chain())?;
        let from_file = config.profiles.iter().find(|p| &p.name == name);
        // The `default` profile a daemon makes for itself on an empty database is
        // empty: the instance's own record of it is the better one.
        let stand_in = current
            .as_ref()
            .is_some_and(|p| name == "default" && p.config.is_empty() && p.devices.is_empty());
        match (current, from_file) {
            (Some(_), _) if !stand_in => {}
            (_, Some(p)) => {
                needed.insert(
                    name.clone(),
                    ProfilePut {
                        config: p.config.clone(),
                        description: p.description.clone(),
                        devices: p.devices.clone(),
                    },
                );
            }
            (Some(_), None) => {}
            (None, None) => return Err(format!("profile {name:?} does not exist")),
        }
    }
    for (dev, keys) in &c.expanded_devices {
        let kind = keys.get("type").map(String::as_str);
        if let Some(net) = keys.get("network").filter(|_| kind == Some("nic")) {
            if d.db.network(net).map_err(|e| e.chain())?.is_none() {
                return Err(format!(
                    "device {dev:?} needs network {net:?}, which does not exist (create it first)"
                ));
            }
        }
        if let Some(p) = keys.get("pool").filter(|_| kind == Some("disk")) {
            let known = pool_names.contains(p) || d.db.pool(p).map_err(|e| e.chain())?.is_some();
            if !known {
                return Err(format!(
                    "device {dev:?} needs storage pool {p:?}, which was not found"
                ));
            }
        }
    }
    for (name, put) in needed {
        // The first instance's record of a profile wins.
        profiles.entry(name).or_insert(put);
    }
    Ok(())
}

/// Makes the profiles the recovered instances need (or fills the stand-in `default`).
fn create_profiles(d: &Daemon, profiles: &BTreeMap<String, ProfilePut>) -> Result<()> {
    for (name, put) in profiles {
        if d.db.profile(name)?.is_some() {
            d.db.update_profile(name, put)?;
        } else {
            d.db.insert_profile(name, put)?;
        }
    }
    Ok(())
}

/// Makes the rows of one pool and of what it holds; fills `entry` with the outcome.
fn import_pool(d: &Daemon, f: &PoolFindings, entry: &mut RecoverPool) {
    let pool = &f.pool.def.name;
    if !f.pool.in_db {
        match add_pool(d, &f.pool) {
            Ok(()) => entry.status = RecoverStatus::Recovered,
            Err(e) => {
                entry.status = RecoverStatus::Refused;
                entry.reason = e.chain();
                for item in entry.instances.iter_mut().chain(entry.volumes.iter_mut()) {
                    item.status = RecoverStatus::Refused;
                    item.reason = "its pool could not be recovered".into();
                }
                return;
            }
        }
    }
    for (inst, item) in f.instances.iter().zip(entry.instances.iter_mut()) {
        let (Some(config), None) = (&inst.config, &inst.refused) else {
            continue;
        };
        match add_instance(d, pool, &inst.name, config) {
            Ok(()) => item.status = RecoverStatus::Recovered,
            Err(e) => {
                item.status = RecoverStatus::Refused;
                item.reason = e.chain();
            }
        }
    }
    for (vol, item) in f.volumes.iter().zip(entry.volumes.iter_mut()) {
        if vol.refused.is_some() {
            continue;
        }
        match add_volume(d, pool, vol) {
            Ok(()) => item.status = RecoverStatus::Recovered,
            Err(e) => {
                item.status = RecoverStatus::Refused;
                item.reason = e.chain();
            }
        }
    }
}

/// The pool's row, and the pool opened (replacing the stand-in `default` a daemon opens
/// on an empty database).
fn add_pool(d: &Daemon, pool: &FoundPool) -> Result<()> {
    let row = pool.def.row();
    d.db.insert_pool(&row)?;
    if let Err(e) = d.add_pool(&row) {
        let _ = d.db.delete_pool(&row.name);
        return Err(e);
    }
    if let Err(e) = backup_yaml::write_pool(d, &row.name) {
        tracing::warn!(pool = %row.name, error = %e.chain(), "cannot write its definition");
    }
    tracing::info!(pool = %row.name, "storage pool recovered");
    Ok(())
}

/// The rows of an instance and its snapshots, as its `backup.yaml` describes them. The
/// volume is this host's own: its config is kept whole (an import from another host drops
/// the keys that described that host).
fn add_instance(d: &Daemon, pool: &str, name: &str, config: &Config) -> Result<()> {
    let (mut row, mut snapshots) = rows_of(config, name, pool)?;
    if let Some(c) = &config.container {
        row.config = c.config.clone();
        row.stateful = c.stateful;
        if !c.last_used_at.is_empty() {
            row.last_used_at = c.last_used_at.clone();
        }
    }
    for (s, from) in snapshots.iter_mut().zip(&config.snapshots) {
        s.config = from.config.clone();
    }
    // Made ready at once: a crash must never let the start-up clean-up take a recovered
    // instance for an interrupted create and delete its volume.
    row.state = "ready".into();
    d.db.insert_instance(&row)?;
    let snapshots_made = snapshots.iter().try_for_each(|s| d.db.insert_snapshot(s));
    if let Err(e) = snapshots_made {
        // Rows only: the volumes were there before and stay.
        let _ = d.db.delete_instance_snapshots(name);
        let _ = d.db.delete_instance(name);
        return Err(e);
    }
    match super::expand(d, &row) {
        Ok(expanded) => super::create::secure_instance_volume(d, &row, &expanded)?,
        Err(e) => tracing::warn!(instance = %name, error = %e.chain(), "expand after recover"),
    }
    if let Err(e) = backup_yaml::write_instance(d, name) {
        tracing::warn!(instance = %name, error = %e.chain(), "cannot write its backup.yaml");
    }
    tracing::info!(instance = %name, pool, "instance recovered");
    Ok(())
}

/// The row of a custom volume, from its file or with an empty config.
fn add_volume(d: &Daemon, pool: &str, vol: &FoundVolume) -> Result<()> {
    let v = vol
        .config
        .as_ref()
        .and_then(|c| c.volume.clone())
        .unwrap_or_default();
    d.db.insert_volume(&VolumeRow {
        pool: pool.to_string(),
        name: vol.name.clone(),
        description: v.description,
        config: v.config,
        created_at: if v.created_at.is_empty() {
            crate::now()
        } else {
            v.created_at
        },
    })?;
    if let Err(e) = backup_yaml::write_volume(d, pool, &vol.name) {
        tracing::warn!(volume = %vol.name, error = %e.chain(), "cannot write its backup file");
    }
    tracing::info!(volume = %vol.name, pool, "custom volume recovered");
    Ok(())
}
