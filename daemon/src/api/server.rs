//! `GET /1.0` (server info), `PUT/PATCH /1.0`, projects and the placeholder network list.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hutch_api::server::{Server, ServerEnvironment, StorageDriverInfo, API_EXTENSIONS};
use serde_json::json;

use super::{empty, sync, sync_etag};
use crate::daemon::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0", get(info).put(update).patch(update))
        .route("/1.0/projects", get(projects))
        .route("/1.0/projects/default", get(project))
}

fn uname() -> (String, String, String) {
    let u = nix::sys::utsname::uname().ok();
    let get = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        u.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    (
        get(|u| u.sysname()),
        get(|u| u.release()),
        get(|u| u.machine()),
    )
}

fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (field("NAME"), field("VERSION_ID"))
}

async fn info(State(d): State<AppState>) -> Response {
    let (kernel, version, arch) = uname();
    let (os_name, os_version) = os_release();
    let config: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let server = Server {
        api_extensions: API_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        api_status: "stable".into(),
        api_version: "1.0".into(),
        auth: "trusted".into(),
        public: false,
        auth_methods: vec!["tls".into()],
        config: config.clone(),
        environment: ServerEnvironment {
            addresses: vec![],
            architectures: vec![arch.clone()],
            certificate: String::new(),
            certificate_fingerprint: String::new(),
            driver: "lxc".into(),
            driver_version: env!("CARGO_PKG_VERSION").into(),
            firewall: "nftables".into(),
            kernel,
            kernel_architecture: arch,
            kernel_features: BTreeMap::new(),
            kernel_version: version,
            lxc_features: BTreeMap::new(),
            os_name,
            os_version,
            project: "default".into(),
            server: "lxd".into(),
            server_clustered: false,
            server_event_mode: "full-mesh".into(),
            server_name: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            server_pid: std::process::id() as i64,
            server_version: "5.0.2".into(),
            storage: d
                .default_pool()
                .map(|p| p.info().name)
                .unwrap_or("dir")
                .into(),
            storage_version: "1".into(),
            storage_supported_drivers: ["dir", "btrfs"]
                .iter()
                .map(|n| StorageDriverInfo {
                    name: n.to_string(),
                    version: "1".into(),
                    remote: false,
                })
                .collect(),
        },
    };
    sync_etag(server, &config)
}

async fn update() -> Response {
    empty()
}

fn default_project() -> serde_json::Value {
    json!({"name": "default", "description": "Default project", "config": {"features.images": "true", "features.profiles": "true"}, "used_by": []})
}

async fn projects(Query(q): Query<HashMap<String, String>>) -> Response {
    if super::recursion(&q) > 0 {
        sync(vec![default_project()])
    } else {
        sync(vec!["/1.0/projects/default"])
    }
}

async fn project() -> Response {
    sync(default_project())
}
