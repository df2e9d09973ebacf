//! `/1.0/instances/<name>/logs`: the instance's log files — `lxc.log` (its monitor's log)
//! and the recorded output of exec (`exec_<id>.stdout|stderr`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{empty, sync};
use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/:name/logs", get(list))
        .route("/:name/logs/:file", get(read).delete(delete))
}

/// Where a log file lives; only names LXD exposes are accepted.
fn log_path(d: &AppState, name: &str, file: &str) -> Result<std::path::PathBuf> {
    if file == "lxc.log" {
        return Ok(d.runtime_dir(name).join("monitor.log"));
    }
    let ok = file.starts_with("exec_") && !file.contains('/') && !file.contains("..");
    if !ok {
        return Err(DaemonError::NotFound("not found".into()));
    }
    Ok(d.dir.join("logs").join(name).join(file))
}

async fn list(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    let mut files = vec![format!("/1.0/instances/{name}/logs/lxc.log")];
    if let Ok(entries) = std::fs::read_dir(d.dir.join("logs").join(&name)) {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("exec_"))
            .collect();
        names.sort();
        files.extend(
            names
                .into_iter()
                .map(|n| format!("/1.0/instances/{name}/logs/{n}")),
        );
    }
    Ok(sync(files))
}

async fn read(
    State(d): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    let path = log_path(&d, &name, &file)?;
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && file == "lxc.log" => Vec::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DaemonError::NotFound("not found".into()))
        }
        Err(e) => return Err(DaemonError::io("read", &path, e)),
    };
    Ok(([("Content-Type", "application/octet-stream")], data).into_response())
}

async fn delete(
    State(d): State<AppState>,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response> {
    d.db.instance_or_404(&name)?;
    if file == "lxc.log" {
        return Err(DaemonError::BadRequest("lxc.log cannot be deleted".into()));
    }
    let path = log_path(&d, &name, &file)?;
    std::fs::remove_file(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DaemonError::NotFound("not found".into())
        } else {
            DaemonError::io("remove", &path, e)
        }
    })?;
    Ok(empty())
}
