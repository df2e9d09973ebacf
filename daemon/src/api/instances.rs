//! `/1.0/instances` (and the legacy `/1.0/containers`): list, create, get, update,
//! rename, delete, state and the console log.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::config::validate_instance_config;
use hutch_api::instance::{InstancePost, InstancePut, InstanceStatePut, InstancesPost};
use serde_json::{json, Value};

use super::{check_if_match, empty, parse_json, sync, sync_etag};
use crate::daemon::AppState;
use crate::db::instances::InstanceRow;
use crate::engine;
use crate::error::{DaemonError, Result};
use crate::operations::instance_resources;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list).post(create))
        .route(
            "/:name",
            get(one).put(put).patch(patch).post(rename).delete(delete),
        )
        .route("/:name/state", get(state).put(change_state))
}

/// What an instance's ETag covers: its writable fields.
fn tag_of(row: &InstanceRow) -> Value {
    json!([
        row.architecture,
        row.config,
        row.devices,
        row.ephemeral,
        row.profiles
    ])
}

/// The instance object (with state and snapshots from `level` 2). The runtime is asked
/// once per instance, for both the object and its state; `ifaces` are its interfaces when a
/// listing has read them already.
fn full(
    d: &AppState,
    row: &InstanceRow,
    info: &engine::RuntimeInfo,
    ifaces: Option<hutch_network::nic::Interfaces>,
    level: u8,
) -> Result<Value> {
    let obj = engine::instance_object_with(d, row, info.code)?;
    // The state reuses the object's expanded devices: profiles are read once per instance.
    let state =
        (level >= 2).then(|| engine::instance_state_with(row, &obj.expanded_devices, info, ifaces));
    let mut v = serde_json::to_value(obj).unwrap_or_default();
    if let Some(state) = state {
        v["state"] = serde_json::to_value(state).unwrap_or_default();
        let snaps = d.db.snapshots(&row.name)?;
        v["snapshots"] = Value::Array(
            snaps
                .iter()
                .map(super::snapshots::snapshot_object)
                .collect(),
        );
        v["backups"] = Value::Null;
    }
    Ok(v)
}

async fn list(
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let rows = d.db.instances()?;
    let level = super::recursion(&q);
    let filter = q.get("filter").map(String::as_str).unwrap_or("");
    if level == 0 {
        return Ok(sync(
            rows.iter()
                .map(|r| format!("/1.0/instances/{}", r.name))
                .collect::<Vec<_>>(),
        ));
    }
    let d2 = d.clone();
    let out = tokio::task::spawn_blocking(move || {
        let infos: Vec<_> = rows
            .iter()
            .map(|r| engine::runtime_info(&d2, &r.name))
            .collect();
        // Interfaces of every running instance, read in one pass over their namespaces.
        let mut ifaces: HashMap<i64, hutch_network::nic::Interfaces> = HashMap::new();
        if level >= 2 {
            let pids: Vec<i64> = infos.iter().map(|i| i.pid).filter(|p| *p > 0).collect();
            let pids32: Vec<i32> = pids.iter().map(|p| *p as i32).collect();
            for (pid, res) in pids
                .iter()
                .zip(hutch_network::nic::interfaces_of_many(&pids32))
            {
                if let Ok(i) = res {
                    ifaces.insert(*pid, i);
                }
            }
        }
        rows.iter()
            .zip(infos.iter())
            .map(|(r, info)| full(&d2, r, info, ifaces.remove(&info.pid), level))
            .collect::<Result<Vec<_>>>()
    })
    .await??;
    let out: Vec<Value> = out
        .into_iter()
        .filter(|v| matches_filter(v, filter))
        .collect();
    Ok(sync(out))
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

async fn create(State(d): State<AppState>, body: Bytes) -> Result<Response> {
    let mut req: InstancesPost = parse_json(&body)?;
    let image = engine::validate_create(&d, &mut req)?;
    Ok(super::run_task(
        &d,
        "Creating instance",
        instance_resources(&req.name),
        engine::create_instance(d.clone(), req, image),
    ))
}

async fn one(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let row = d.db.instance_or_404(&name)?;
    let level = if super::recursion(&q) > 0 { 2 } else { 1 };
    let info = engine::runtime_info(&d, &row.name);
    let v = full(&d, &row, &info, None, level)?;
    Ok(sync_etag(v, &tag_of(&row)))
}

fn validate_put(d: &AppState, put: &InstancePut) -> Result<()> {
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
    engine::check_root_size(d, &devices)?;
    engine::devices::validate_devices(d, &devices)?;
    Ok(())
}

/// Applies an update to the row and, for live keys, to the running container.
async fn apply_update(d: &AppState, mut row: InstanceRow, put: InstancePut) -> Result<()> {
    let old_row = row.clone();
    let old_expanded = engine::expand(d, &row)?;
    let old_size = engine::check_root_size(d, &old_expanded.devices).unwrap_or(None);
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
    let expanded = engine::expand(d, &row)?;
    let limits = engine::limits_of(&expanded.config)?;
    if engine::root_pool(&expanded.devices) != row.pool {
        return Err(DaemonError::BadRequest(format!(
            "The root disk's pool cannot change here (the instance is on {:?}): move the instance with --storage",
            row.pool
        )));
    }
    d.db.update_instance(&row)?;
    // A changed root disk size applies at once, running or not.
    let size = engine::check_root_size(d, &expanded.devices)?;
    if size != old_size {
        let (d2, name) = (d.clone(), row.name.clone());
        tokio::task::spawn_blocking(move || {
            d2.instance_pool(&name)?
                .set_quota(&crate::daemon::instance_vol(&name), size)
                .map_err(DaemonError::from)
        })
        .await??;
    }
    let (status, pid) = engine::runtime_status(d, &row.name);
    if status != hutch_api::operation::StatusCode::Stopped {
        let rd = d.runtime_dir(&row.name);
        tokio::task::spawn_blocking(move || hutch_runtime::container::set_limits(&rd, &limits))
            .await??;
        // NICs and proxies are plugged and unplugged live; a device that cannot be (a name
        // taken inside, a port in use) leaves the record as it was.
        if let Err(e) =
            engine::devices::apply_device_changes(d, &row, pid as i32, &old_expanded, &expanded)
                .await
        {
            d.db.update_instance(&old_row)?;
            return Err(e);
        }
    }
    d.events.lifecycle(
        "instance-updated",
        &format!("/1.0/instances/{}", row.name),
        json!({}),
    );
    Ok(())
}

async fn put(
    State(d): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let row = d.db.instance_or_404(&name)?;
    check_if_match(&headers, &tag_of(&row))?;
    let put: InstancePut = parse_json(&body)?;
    if !put.restore.is_empty() {
        // Restore mode: every other field is ignored, as LXD does. lxc names the snapshot
        // in full ("c1/snap0"), pylxd alone ("snap0").
        let put = InstancePut {
            restore: put
                .restore
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            ..put
        };
        d.db.snapshot(&name, &put.restore)?;
        let restore = engine::restore_snapshot(d.clone(), name.clone(), put.restore);
        return Ok(super::run_task(
            &d,
            "Restoring snapshot",
            instance_resources(&name),
            restore,
        ));
    }
    validate_put(&d, &put)?;
    let (d2, name2) = (d.clone(), name.clone());
    let update = async move {
        // Read, checked and written under the instance's lock: no update is lost to a
        // concurrent one.
        let lock = d2.instance_lock(&name2);
        let _g = lock.lock().await;
        let row = d2.db.instance_or_404(&name2)?;
        check_if_match(&headers, &tag_of(&row))?;
        apply_update(&d2, row, put).await
    };
    Ok(super::run_task(
        &d,
        "Updating instance",
        instance_resources(&name),
        update,
    ))
}

async fn patch(
    State(d): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let req: Value = parse_json(&body)?;
    let lock = d.instance_lock(&name);
    let _g = lock.lock().await;
    let row = d.db.instance_or_404(&name)?;
    check_if_match(&headers, &tag_of(&row))?;
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
    let patch: InstancePut = serde_json::from_value(req.clone())
        .map_err(|e| DaemonError::BadRequest(format!("Invalid JSON: {e}")))?;
    if !patch.restore.is_empty() {
        return Err(DaemonError::BadRequest(
            "PATCH cannot restore a snapshot".into(),
        ));
    }
    put.config.extend(patch.config);
    put.devices.extend(patch.devices);
    if patch.profiles.is_some() {
        put.profiles = patch.profiles;
    }
    if req.get("ephemeral").is_some() {
        put.ephemeral = patch.ephemeral;
    }
    if req.get("description").is_some() {
        put.description = patch.description;
    }
    validate_put(&d, &put)?;
    apply_update(&d, row, put).await?;
    Ok(empty())
}

async fn rename(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstancePost = parse_json(&body)?;
    let row = d.db.instance_or_404(&name)?;
    // A move to another pool of this server (lxc move --storage), perhaps with a new name.
    if !req.pool.is_empty() && req.pool != row.pool {
        d.pool(&req.pool).map_err(|_| {
            DaemonError::BadRequest(format!("Storage pool {:?} not found", req.pool))
        })?;
        let new = if req.name.is_empty() {
            name.clone()
        } else {
            req.name.clone()
        };
        if new != name {
            engine::validate_name(&new)?;
            if d.db.instance(&new)?.is_some() {
                return Err(DaemonError::Conflict(format!(
                    "Name {new:?} already in use"
                )));
            }
        }
        let d2 = d.clone();
        let (name2, pool) = (name.clone(), req.pool.clone());
        return Ok(super::run_task(
            &d,
            "Moving instance",
            instance_resources(&name),
            async move {
                engine::pools::move_instance_pool(d2.clone(), name2.clone(), pool).await?;
                if new != name2 {
                    engine::rename_instance(d2, name2, new).await?;
                }
                Ok(())
            },
        ));
    }
    if req.migration {
        return Err(DaemonError::BadRequest(
            "Migration is not supported yet".into(),
        ));
    }
    engine::validate_name(&req.name)?;
    if d.db.instance(&req.name)?.is_some() {
        return Err(DaemonError::Conflict(format!(
            "Name {:?} already in use",
            req.name
        )));
    }
    Ok(super::run_task(
        &d,
        "Renaming instance",
        instance_resources(&name),
        engine::rename_instance(d.clone(), name, req.name),
    ))
}

async fn delete(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    if engine::runtime_status(&d, &name).0 != hutch_api::operation::StatusCode::Stopped {
        return Err(DaemonError::BadRequest("Instance is running".into()));
    }
    Ok(super::run_task(
        &d,
        "Deleting instance",
        instance_resources(&name),
        engine::delete_instance(d.clone(), name),
    ))
}

async fn state(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    let d2 = d.clone();
    let st = tokio::task::spawn_blocking(move || engine::instance_state(&d2, &name)).await??;
    Ok(sync(st))
}

async fn change_state(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: InstanceStatePut = parse_json(&body)?;
    d.db.instance_or_404(&name)?;
    let (desc, action) = match req.action.as_str() {
        "start" => ("Starting instance", req.action.clone()),
        "stop" => ("Stopping instance", req.action.clone()),
        "restart" => ("Restarting instance", req.action.clone()),
        "freeze" => ("Freezing instance", req.action.clone()),
        "unfreeze" => ("Unfreezing instance", req.action.clone()),
        other => {
            return Err(DaemonError::BadRequest(format!(
                "Unknown action: '{other}'"
            )))
        }
    };
    let mut resources = std::collections::BTreeMap::new();
    resources.insert(
        "instances".to_string(),
        vec![format!("/1.0/instances/{name}")],
    );
    let d2 = d.clone();
    let work = async move {
        match action.as_str() {
            "start" => engine::start_instance(d2, name).await,
            "stop" => engine::stop_instance(d2, name, req.timeout, req.force).await,
            "restart" => {
                engine::stop_instance(d2.clone(), name.clone(), req.timeout, req.force).await?;
                engine::start_instance(d2, name).await
            }
            "freeze" => engine::freeze_instance(d2, name).await,
            _ => engine::unfreeze_instance(d2, name).await,
        }
    };
    Ok(super::run_task(&d, desc, resources, work))
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
