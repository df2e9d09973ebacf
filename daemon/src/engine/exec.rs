//! Exec: the request turned into what the runtime runs (environment, user, cwd).

use std::collections::BTreeMap;

use hutch_api::instance::InstanceExecPost;
use hutch_api::operation::StatusCode;
use hutch_runtime::{ExecRequest, ExecSession, ExecStdio, WindowSize};

use super::{expand, runtime_status};
use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

/// The runtime request for `req`, with LXD's environment rules: `environment.*` keys fill
/// what the request leaves unset, PATH has a default, root gets HOME and USER, LANG is set.
pub fn exec_request(d: &AppState, name: &str, req: &InstanceExecPost) -> Result<ExecRequest> {
    let row = d.db.instance_or_404(name)?;
    match runtime_status(d, name).0 {
        StatusCode::Running => {}
        StatusCode::Frozen => return Err(DaemonError::BadRequest("Instance is frozen".into())),
        _ => return Err(DaemonError::BadRequest("Instance is not running".into())),
    }
    if req.command.is_empty() {
        return Err(DaemonError::BadRequest("No command given".into()));
    }
    let expanded = expand(d, &row)?;
    let mut env: BTreeMap<String, String> = expanded
        .config
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("environment.")
                .map(|var| (var.to_string(), v.clone()))
        })
        .collect();
    env.extend(req.environment.clone());
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.entry("LANG".into()).or_insert_with(|| "C.UTF-8".into());
    if req.user == 0 {
        env.entry("HOME".into()).or_insert_with(|| "/root".into());
        env.entry("USER".into()).or_insert_with(|| "root".into());
    }
    let cwd = if req.cwd.is_empty() {
        env.get("HOME").cloned()
    } else {
        Some(req.cwd.clone())
    };
    let pty = req.interactive.then_some(WindowSize {
        cols: if req.width > 0 { req.width } else { 80 },
        rows: if req.height > 0 { req.height } else { 24 },
    });
    Ok(ExecRequest {
        command: req.command.clone(),
        env,
        cwd,
        uid: req.user,
        gid: req.group,
        pty,
    })
}

/// Starts the command (blocking: call from a blocking task).
pub fn exec_instance(
    d: &AppState,
    name: &str,
    req: &ExecRequest,
    stdio: ExecStdio,
) -> Result<ExecSession> {
    Ok(hutch_runtime::exec(
        &d.hutchd,
        &d.runtime_dir(name),
        req,
        stdio,
    )?)
}
