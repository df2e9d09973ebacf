//! The instance resource as the API sees it: listing, reading, updating, renaming,
//! deleting and changing state, each one method of [`Engine`]. What the actions do lives
//! in `create`, `lifecycle`, `snapshot` and `pools`; this module decides what may be asked.

use std::collections::HashMap;

use hutch_api::config::validate_instance_config;
use hutch_api::instance::Instance;
use hutch_api::instance::InstancesPost;
use hutch_api::instance::{InstancePost, InstancePut, InstanceState, InstanceStatePut};
use hutch_api::operation::StatusCode;
use hutch_api::profile::ProfilePut;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{blocking, Engine, Versioned, Work};
use crate::db::instances::InstanceRow;
use crate::db::snapshots::SnapshotRow;
use crate::error::{DaemonError, Result};

/// What an instance's ETag covers: its writable fields.
fn version_of(row: &InstanceRow) -> Value {
    json!([
        row.architecture,
        row.config,
        row.devices,
        row.ephemeral,
        row.profiles
    ])
}

/// A state change asked of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAction {
    Start,
    Stop,
    Restart,
    Freeze,
    Unfreeze,
}

impl StateAction {
    /// LXD's description of the operation.
    pub fn description(self) -> &'static str {
        match self {
            StateAction::Start => "Starting instance",
            StateAction::Stop => "Stopping instance",
            StateAction::Restart => "Restarting instance",
            StateAction::Freeze => "Freezing instance",
            StateAction::Unfreeze => "Unfreezing instance",
        }
    }
}

/// Fewer instances than this are listed on the calling thread alone.
const LIST_CHUNK_MIN: usize = 64;

/// What a listing reads once for all its instances.
struct ListShared {
    profiles: HashMap<String, ProfilePut>,
    /// By instance; empty below recursion 2.
    snapshots: HashMap<String, Vec<SnapshotRow>>,
}

/// An instance as `GET` and listings show it: the object, and from level 2 its state,
/// snapshots and (null) backups.
#[derive(Serialize)]
struct FullInstance {
    #[serde(flatten)]
    object: Instance,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<InstanceState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshots: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backups: Option<Value>,
}

fn internal(e: serde_json::Error) -> DaemonError {
    DaemonError::failed("serialize", "an instance", e)
}

/// `v` serialized, for a listing to carry as it is.
fn raw<T: Serialize + ?Sized>(v: &T) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(v).map_err(internal)
}

impl Engine {
    /// The instance URLs (`recursion` 0), or the objects (1), with state and snapshots (2),
    /// keeping those matching LXD's `filter`. Each comes serialized: a listing of 1,000 is
    /// built on every core (the runtime reads are system calls per instance) and written
    /// into the response as it is.
    pub async fn list_instances(&self, recursion: u8, filter: &str) -> Result<Vec<Box<RawValue>>> {
        if recursion == 0 {
            return self
                .d
                .db
                .instance_names()?
                .iter()
                .map(|name| raw(&format!("/1.0/instances/{name}")))
                .collect();
        }
        let rows = self.d.db.instances()?;
        let d = self.clone();
        let filter = filter.to_string();
        blocking(move || {
            // What instances share is read once: profiles, and (with state) snapshots.
            let shared = ListShared {
                profiles: d.d.db.profiles_by_name()?,
                snapshots: if recursion >= 2 {
                    d.d.db.snapshots_by_instance()?
                } else {
                    HashMap::new()
                },
            };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let per_thread = rows.len().div_ceil(threads).max(LIST_CHUNK_MIN);
            let chunks: Vec<&[InstanceRow]> = rows.chunks(per_thread).collect();
            let listed: Vec<Result<Vec<Box<RawValue>>>> = match chunks.as_slice() {
                [] => Vec::new(),
                [one] => vec![d.list_chunk(one, &shared, recursion, &filter)],
                many => std::thread::scope(|s| {
                    let handles: Vec<_> = many
                        .iter()
                        .map(|chunk| {
                            let (d, shared, filter) = (&d, &shared, filter.as_str());
                            s.spawn(move || d.list_chunk(chunk, shared, recursion, filter))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join().unwrap_or_else(|_| {
                                Err(DaemonError::failed(
                                    "list",
                                    "instances",
                                    "a listing thread panicked",
                                ))
                            })
                        })
                        .collect()
                }),
            };
            let mut all = Vec::with_capacity(rows.len());
            for chunk in listed {
                all.extend(chunk?);
            }
            Ok(all)
        })
        .await
    }

    /// Part of a listing: `rows` as objects, serialized, those matching `filter` kept.
    fn list_chunk(
        &self,
        rows: &[InstanceRow],
        shared: &ListShared,
        recursion: u8,
        filter: &str,
    ) -> Result<Vec<Box<RawValue>>> {
        let infos: Vec<_> = rows
            .iter()
            .map(|r| super::runtime_info(&self.d, &r.name))
            .collect();
        // Interfaces of every running instance, read in one pass over their namespaces.
        let mut ifaces: HashMap<i64, hutch_network::nic::Interfaces> = HashMap::new();
        if recursion >= 2 {
            let pids: Vec<i64> = infos.iter().map(|i| i.pid).filter(|p| *p > 0).collect();
            let pids32: Vec<i32> = pids.iter().map(|p| *p as i32).collect();
            for (pid, res) in pids
                .iter()
                .zip(super::devices::interfaces_of_many(self, &pids32))
            {
                if let Ok(i) = res {
                    ifaces.insert(*pid, i);
                }
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for (row, info) in rows.iter().zip(infos.iter()) {
            let expanded =
                super::spec::expand_with(row, |name| Ok(shared.profiles.get(name).cloned()))?;
            let snapshots = shared
                .snapshots
                .get(&row.name)
                .map_or(&[][..], Vec::as_slice);
            let full = self.full(
                row,
                info,
                expanded,
                ifaces.remove(&info.pid),
                snapshots,
                recursion,
            );
            if filter.is_empty() {
                out.push(raw(&full)?);
            } else {
                let v = serde_json::to_value(&full).map_err(internal)?;
                if matches_filter(&v, filter) {
                    out.push(raw(&v)?);
                }
            }
        }
        Ok(out)
    }

    /// One instance (with state and snapshots when `recursion` > 0).
    pub async fn instance(&self, name: &str, recursion: u8) -> Result<Versioned<Value>> {
        let row = self.d.db.instance_or_404(name)?;
        let level = if recursion > 0 { 2 } else { 1 };
        let info = super::runtime_info(&self.d, &row.name);
        let expanded = super::expand(&self.d, &row)?;
        let snapshots = if level >= 2 {
            self.d.db.snapshots(&row.name)?
        } else {
            Vec::new()
        };
        let full = self.full(&row, &info, expanded, None, &snapshots, level);
        Ok(Versioned {
            object: serde_json::to_value(full).map_err(internal)?,
            version: version_of(&row),
        })
    }

    /// The instance object (with state and snapshots from `level` 2). The runtime is asked
    /// once per instance, for both the object and its state; `ifaces` are its interfaces
    /// when a listing has read them already.
    fn full(
        &self,
        row: &InstanceRow,
        info: &super::RuntimeInfo,
        expanded: super::spec::Expanded,
        ifaces: Option<hutch_network::nic::Interfaces>,
        snapshots: &[SnapshotRow],
        level: u8,
    ) -> FullInstance {
        let mut object = super::instance_object_expanded(row, info.code, expanded);
        object.location = self.d.location();
        if level < 2 {
            return FullInstance {
                object,
                state: None,
                snapshots: None,
                backups: None,
            };
        }
        // The state reuses the object's expanded devices.
        let state =
            super::instance_state_with(&self.d, row, &object.expanded_devices, info, ifaces);
        FullInstance {
            object,
            state: Some(state),
            snapshots: Some(
                snapshots
                    .iter()
                    .map(super::snapshot::snapshot_object)
                    .collect(),
            ),
            backups: Some(Value::Null),
        }
    }

    /// Checks a create request and returns the work that makes the instance.
    pub fn create_instance(&self, mut req: InstancesPost) -> Result<(String, Work)> {
        super::spec::drop_empty_values(&mut req.put.config, &mut req.put.devices);
        let source = super::validate_create(self, &mut req)?;
        let name = req.name.clone();
        Ok((
            name,
            Box::pin(super::create_instance(self.clone(), req, source)),
        ))
    }

    /// `PUT`: a full update, or with `restore` a snapshot restore. The update is checked
    /// now and applied by the returned work under the instance's lock.
    pub fn replace_instance(
        &self,
        name: &str,
        mut put: InstancePut,
        if_match: Option<String>,
    ) -> Result<Work> {
        super::spec::drop_empty_values(&mut put.config, &mut put.devices);
        let row = self.d.db.instance_or_404(name)?;
        super::check_version(if_match.as_deref(), &version_of(&row))?;
        if !put.restore.is_empty() {
            // Restore mode: every other field is ignored, as LXD does. lxc names the
            // snapshot in full ("c1/snap0"), pylxd alone ("snap0").
            let snap = put
                .restore
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            self.d.db.snapshot(name, &snap)?;
            return Ok(Box::pin(super::restore_snapshot(
                self.clone(),
                name.to_string(),
                snap,
            )));
        }
        self.validate_put(&put)?;
        let (e, name) = (self.clone(), name.to_string());
        Ok(Box::pin(async move {
            // Read, checked and written under the instance's lock: no update is lost to a
            // concurrent one.
            let lock = e.d.instance_lock(&name);
            let _g = lock.lock().await;
            let row = e.d.db.instance_or_404(&name)?;
            super::check_version(if_match.as_deref(), &version_of(&row))?;
            e.apply_update(row, put).await
        }))
    }

    /// `PATCH`: the fields present in `patch` replace the instance's, config and devices
    /// merge key by key.
    pub async fn patch_instance(
        &self,
        name: &str,
        patch: Value,
        if_match: Option<String>,
    ) -> Result<()> {
        let lock = self.d.instance_lock(name);
        let _g = lock.lock().await;
        let row = self.d.db.instance_or_404(name)?;
        super::check_version(if_match.as_deref(), &version_of(&row))?;
        let mut put = InstancePut {
            architecture: row.architecture.clone(),
            config: row.config.clone(),
            devices: row.devices.clone(),
            ephemeral: row.ephemeral,
            profiles: Some(row.profiles.clone()),
            stateful: row.stateful,
            description: row.description.clone(),
            restore: String::new(),
        };
        let given: InstancePut = serde_json::from_value(patch.clone())
            .map_err(|e| DaemonError::BadRequest(format!("Invalid JSON: {e}")))?;
        if !given.restore.is_empty() {
            return Err(DaemonError::BadRequest(
                "PATCH cannot restore a snapshot".into(),
            ));
        }
        put.config.extend(given.config);
        put.devices.extend(given.devices);
        super::spec::drop_empty_values(&mut put.config, &mut put.devices);
        if given.profiles.is_some() {
            put.profiles = given.profiles;
        }
        if patch.get("ephemeral").is_some() {
            put.ephemeral = given.ephemeral;
        }
        if patch.get("description").is_some() {
            put.description = given.description;
        }
        self.validate_put(&put)?;
        self.apply_update(row, put).await
    }

    fn validate_put(&self, put: &InstancePut) -> Result<()> {
        let d = &self.d;
        validate_instance_config(&put.config)?;
        for p in put.profiles.iter().flatten() {
            if d.db.profile(p)?.is_none() {
                return Err(DaemonError::BadRequest(format!(
                    "Requested profile {p:?} doesn't exist"
                )));
            }
        }
        for (name, dev) in &put.devices {
            if !dev.contains_key("type") {
                return Err(DaemonError::BadRequest(format!(
                    "Device {name:?} has no type"
                )));
            }
        }
        let mut devices = hutch_api::profile::Devices::new();
        for p in put.profiles.iter().flatten() {
            devices.extend(d.db.profile_or_404(p)?.devices);
        }
        devices.extend(put.devices.clone());
        super::check_root_size(d, &devices)?;
        super::devices::validate_devices(self, &devices)?;
        Ok(())
    }

    /// Applies an update to the row and, for live keys, to the running container. A step
    /// that fails puts the row back as it was.
    async fn apply_update(&self, mut row: InstanceRow, put: InstancePut) -> Result<()> {
        let d = &self.d;
        let old_row = row.clone();
        let old_expanded = super::expand(d, &row)?;
        let old_size = super::check_root_size(d, &old_expanded.devices).unwrap_or(None);
        // The daemon's volatile keys survive a client's full replace.
        let volatile: Vec<(String, String)> = row
            .config
            .iter()
            .filter(|(k, _)| k.starts_with("volatile."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        row.config = put.config;
        for (k, v) in volatile {
            row.config.entry(k).or_insert(v);
        }
        row.devices = put.devices;
        if let Some(p) = put.profiles {
            row.profiles = p;
        }
        row.ephemeral = put.ephemeral;
        row.description = put.description;
        let expanded = super::expand(d, &row)?;
        let limits = super::limits_of(&expanded.config)?;
        if super::root_pool(&expanded.devices) != row.pool {
            return Err(DaemonError::BadRequest(format!(
                "The root disk's pool cannot change here (the instance is on {:?}): move the instance with --storage",
                row.pool
            )));
        }
        d.db.update_instance(&row)?;
        let mut revert = super::revert::Revert::new();
        {
            let (db_owner, old) = (self.clone(), old_row.clone());
            revert.add(move || {
                if let Err(e) = db_owner.d.db.update_instance(&old) {
                    tracing::error!(instance = %old.name, error = %e.chain(), "put an update back");
                }
            });
        }
        self.apply_expanded_change(&row, &old_expanded, &expanded, old_size, limits)
            .await?;
        revert.success();
        d.events.lifecycle(
            "instance-updated",
            &format!("/1.0/instances/{}", row.name),
            json!({}),
        );
        Ok(())
    }

    /// What a change of `row`'s expanded config and devices (its own, or a profile's) does
    /// at once: a new root disk size applies running or not; limits and devices apply to
    /// a running container. NICs, proxies and disks are plugged and unplugged live; a
    /// device that cannot be (a name taken inside, a port in use) fails the change.
    pub(super) async fn apply_expanded_change(
        &self,
        row: &InstanceRow,
        old: &super::spec::Expanded,
        new: &super::spec::Expanded,
        old_size: Option<u64>,
        limits: hutch_runtime::Limits,
    ) -> Result<()> {
        let d = &self.d;
        let size = super::check_root_size(d, &new.devices)?;
        if size != old_size {
            let (e, name) = (self.clone(), row.name.clone());
            blocking(move || {
                Ok(e.d
                    .instance_pool(&name)?
                    .set_quota(&crate::daemon::instance_vol(&name), size)?)
            })
            .await?;
        }
        let (status, pid) = super::runtime_status(d, &row.name);
        if status != StatusCode::Stopped {
            let rd = d.runtime_dir(&row.name);
            blocking(move || Ok(hutch_runtime::container::set_limits(&rd, &limits)?)).await?;
            super::devices::apply_device_changes(self, row, pid as i32, old, new).await?;
        }
        Ok(())
    }

    /// `POST /1.0/instances/<name>`: a rename, or a move to another pool of this server
    /// (`lxc move --storage`), perhaps with a new name.
    pub fn rename_instance(&self, name: &str, req: InstancePost) -> Result<(&'static str, Work)> {
        let d = &self.d;
        let row = d.db.instance_or_404(name)?;
        if !req.pool.is_empty() && req.pool != row.pool {
            d.pool(&req.pool).map_err(|_| {
                DaemonError::BadRequest(format!("Storage pool {:?} not found", req.pool))
            })?;
            let new = if req.name.is_empty() {
                name.to_string()
            } else {
                req.name.clone()
            };
            if new != name {
                super::validate_name(&new)?;
                self.check_name_free(&new)?;
            }
            let (e, name, pool) = (self.clone(), name.to_string(), req.pool.clone());
            return Ok((
                "Moving instance",
                Box::pin(async move {
                    super::pools::move_instance_pool(e.clone(), name.clone(), pool).await?;
                    if new != name {
                        super::rename_instance(e, name, new).await?;
                    }
                    Ok(())
                }),
            ));
        }
        if req.migration {
            // Migrations answer a websocket operation of their own (`migrate_instance`).
            return Err(DaemonError::BadRequest(
                "Migration requests go through migrate_instance".into(),
            ));
        }
        super::validate_name(&req.name)?;
        self.check_name_free(&req.name)?;
        Ok((
            "Renaming instance",
            Box::pin(super::rename_instance(
                self.clone(),
                name.to_string(),
                req.name,
            )),
        ))
    }

    fn check_name_free(&self, name: &str) -> Result<()> {
        if self.d.db.instance(name)?.is_some() {
            return Err(DaemonError::Conflict(format!(
                "Name {name:?} already in use"
            )));
        }
        Ok(())
    }

    /// Checks that the instance exists and is stopped; the work removes it.
    pub fn delete_instance(&self, name: &str) -> Result<Work> {
        self.d.db.instance_or_404(name)?;
        if super::runtime_status(&self.d, name).0 != StatusCode::Stopped {
            return Err(DaemonError::BadRequest("Instance is running".into()));
        }
        Ok(Box::pin(super::delete_instance(
            self.clone(),
            name.to_string(),
        )))
    }

    /// `GET .../state`.
    pub async fn instance_state(&self, name: &str) -> Result<InstanceState> {
        self.d.db.instance_or_404(name)?;
        let (e, name) = (self.clone(), name.to_string());
        blocking(move || super::instance_state(&e.d, &name)).await
    }

    /// `PUT .../state`: checks the action; the work carries it out.
    pub fn change_state(&self, name: &str, req: InstanceStatePut) -> Result<(StateAction, Work)> {
        self.d.db.instance_or_404(name)?;
        let action = match req.action.as_str() {
            "start" => StateAction::Start,
            "stop" => StateAction::Stop,
            "restart" => StateAction::Restart,
            "freeze" => StateAction::Freeze,
            "unfreeze" => StateAction::Unfreeze,
            other => {
                return Err(DaemonError::BadRequest(format!(
                    "Unknown action: '{other}'"
                )))
            }
        };
        let (e, name) = (self.clone(), name.to_string());
        let work: Work = Box::pin(async move {
            match action {
                StateAction::Start => super::start_instance(e, name).await,
                StateAction::Stop => super::stop_instance(e, name, req.timeout, req.force).await,
                StateAction::Restart => {
                    super::stop_instance(e.clone(), name.clone(), req.timeout, req.force).await?;
                    super::start_instance(e, name).await
                }
                StateAction::Freeze => super::freeze_instance(e, name).await,
                StateAction::Unfreeze => super::unfreeze_instance(e, name).await,
            }
        });
        Ok((action, work))
    }
}

/// LXD's `filter=` with `eq`/`ne` on dotted fields, joined by `and`; empty matches all.
fn matches_filter(v: &Value, filter: &str) -> bool {
    let filter = filter.trim();
    if filter.is_empty() {
        return true;
    }
    filter.split(" and ").all(|clause| {
        let parts: Vec<&str> = clause.trim().splitn(3, ' ').collect();
        let [field, op, want] = parts[..] else {
            return true;
        };
        let found = lookup(v, field);
        let have = found
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .unwrap_or_default();
        let eq = have.eq_ignore_ascii_case(want.trim_matches('"'));
        match op {
            "eq" => eq,
            "ne" => !eq,
            _ => true,
        }
    })
}

/// A dotted path into JSON, where keys may themselves contain dots (`config.image.os`).
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(x) = v.get(path) {
        return Some(x);
    }
    let mut at = 0;
    while let Some(i) = path[at..].find('.') {
        let (head, tail) = (&path[..at + i], &path[at + i + 1..]);
        if let Some(next) = v.get(head).and_then(|n| lookup(n, tail)) {
            return Some(next);
        }
        at += i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_dotted_fields() {
        let v = json!({"name": "c1", "status": "Running", "config": {"image.os": "Debian"}});
        assert!(matches_filter(&v, ""));
        assert!(matches_filter(&v, "status eq running"));
        assert!(matches_filter(
            &v,
            "config.image.os eq debian and name eq c1"
        ));
        assert!(!matches_filter(&v, "name ne c1"));
    }
}
