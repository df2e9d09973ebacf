//! The server as a whole: what it is (`GET /1.0`), its config (`PUT/PATCH /1.0`, against
//! the api crate's key table, stored in the database), its one project and its warnings.

use std::collections::BTreeMap;

use hutch_api::project::{Project, DEFAULT_PROJECT};
use hutch_api::server::{Server, ServerEnvironment, ServerPut, StorageDriverInfo, API_EXTENSIONS};
use hutch_api::server_config::{self, server_key};
use hutch_api::warning::Warning;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::cluster::shared::{SERVER, SERVER_CONFIG};
use super::{blocking, check_version, Engine};
use crate::error::{DaemonError, Result};

impl Engine {
    /// `GET /1.0`: the server, its environment and its config (rendered: a write-only key
    /// shows as `true`).
    pub async fn server_info(&self) -> Result<Server> {
        let config = server_config::render_server_config(&self.d.db.server_config()?);
        let storage = self
            .d
            .default_pool()
            .map(|p| p.info().name)
            .unwrap_or("dir")
            .to_string();
        let https_address =
            server_config::server_config_value(&self.d.db.server_config()?, "core.https_address")
                .to_string();
        let (host, addresses) =
            blocking(move || Ok((Host::read(), listen_addresses(&https_address)))).await?;
        Ok(Server {
            api_extensions: API_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            api_status: "stable".into(),
            api_version: "1.0".into(),
            auth: "trusted".into(),
            public: false,
            auth_methods: vec!["tls".into()],
            config,
            environment: ServerEnvironment {
                addresses,
                architectures: vec![host.arch.clone()],
                certificate: self.d.identity().cert_pem.clone(),
                certificate_fingerprint: self.d.identity().fingerprint(),
                driver: "lxc".into(),
                driver_version: env!("CARGO_PKG_VERSION").into(),
                firewall: "nftables".into(),
                kernel: host.kernel,
                kernel_architecture: host.arch,
                kernel_features: BTreeMap::new(),
                kernel_version: host.kernel_version,
                lxc_features: BTreeMap::new(),
                os_name: host.os_name,
                os_version: host.os_version,
                project: DEFAULT_PROJECT.into(),
                server: "lxd".into(),
                server_clustered: self.d.cluster.get().is_some(),
                server_event_mode: "full-mesh".into(),
                // The member name when clustered, as LXD.
                server_name: self
                    .d
                    .cluster
                    .get()
                    .map_or(host.hostname, |m| m.server_name.clone()),
                server_pid: std::process::id() as i64,
                server_version: "5.0.2".into(),
                storage,
                storage_version: "1".into(),
                storage_supported_drivers: hutch_storage::supported_drivers()
                    .iter()
                    .map(|d| StorageDriverInfo {
                        name: d.name.to_string(),
                        version: "1".into(),
                        remote: false,
                    })
                    .collect(),
            },
        })
    }

    /// `PUT /1.0` (`merge` false: keys not named return to their defaults) or `PATCH /1.0`
    /// (`merge`: only the keys named change), when `if_match` (the client's ETag, if any)
    /// names the config as `GET` shows it, checked inside the same transaction as the
    /// write. Unknown keys and bad values are refused with LXD's message, storing
    /// nothing; a new trust password is stored hashed.
    #[cfg(test)]
    pub async fn update_server_config(
        &self,
        put: ServerPut,
        merge: bool,
        if_match: Option<String>,
    ) -> Result<()> {
        self.update_server_config_then(put, merge, if_match, |_| Ok(()))
            .await
    }

    /// As [`update_server_config`](Self::update_server_config), with `apply` run on the
    /// new config (as stored: hidden keys hashed) before it is committed: what it refuses
    /// (a listener that cannot bind) is not stored.
    pub async fn update_server_config_then(
        &self,
        put: ServerPut,
        merge: bool,
        if_match: Option<String>,
        apply: impl FnOnce(&BTreeMap<String, String>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let store = self.shared_store();
        let _change = store.begin(self.shared_state()).await;
        let d = self.d.clone();
        let (changed, old, new) = blocking(move || {
            d.db.update_server_config(|current| {
                check_version(
                    if_match.as_deref(),
                    &server_config::render_server_config(current),
                )?;
                let mut change = server_config::change_server_config(current, &put.config, merge)
                    .map_err(|e| DaemonError::BadRequest(e.to_string()))?;
                for key in &change.changed {
                    if server_key(key).is_some_and(|k| k.hidden) {
                        if let Some(clear) = change.config.get_mut(key) {
                            *clear = hash_password(clear);
                        }
                    }
                }
                apply(&change.config)?;
                let new = change.config.clone();
                Ok((change.config, (change.changed, current.clone(), new)))
            })
        })
        .await?;
        // In a cluster, the keys that are the cluster's go to every member; undone here
        // when etcd refuses them.
        if changed.iter().any(|k| !server_config::is_member_key(k)) {
            let shared = cluster_keys(&new);
            if let Err(err) = store
                .replace(self.shared_state(), SERVER_CONFIG, SERVER, &shared)
                .await
            {
                let d = self.d.clone();
                blocking(move || d.db.update_server_config(|_| Ok((old, ())))).await?;
                return Err(err);
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        for key in &changed {
            match server_key(key) {
                Some(k) if !k.live => tracing::info!(key = %key, "server config stored: {}", k.doc),
                _ => tracing::info!(key = %key, "server config changed"),
            }
        }
        self.d.events.lifecycle("config-updated", "/1.0", json!({}));
        Ok(())
    }

    /// The cluster's server keys as another member changed them, here (this member's own
    /// keys stay).
    pub(in crate::engine) async fn take_server_config(
        &self,
        shared: BTreeMap<String, String>,
    ) -> Result<()> {
        let d = self.d.clone();
        blocking(move || {
            d.db.update_server_config(|current| {
                let mut new: BTreeMap<String, String> = current
                    .iter()
                    .filter(|(k, _)| server_config::is_member_key(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                new.extend(shared);
                Ok((new, ()))
            })
        })
        .await
    }

    /// This member's server keys that are the cluster's.
    pub(in crate::engine) fn cluster_server_config(&self) -> Result<BTreeMap<String, String>> {
        Ok(cluster_keys(&self.d.db.server_config()?))
    }

    /// `GET /1.0/projects`: the default project, the only one.
    pub fn projects(&self) -> Result<Vec<Project>> {
        Ok(vec![self.project(DEFAULT_PROJECT)?])
    }

    /// `GET /1.0/projects/<name>`: the default project holds every instance, image, custom
    /// volume, profile and managed network.
    pub fn project(&self, name: &str) -> Result<Project> {
        if name != DEFAULT_PROJECT {
            return Err(DaemonError::NotFound("Project not found".into()));
        }
        let db = &self.d.db;
        let mut used_by: Vec<String> = Vec::new();
        used_by.extend(
            db.instances()?
                .into_iter()
                .map(|i| format!("/1.0/instances/{}", i.name)),
        );
        used_by.extend(
            db.images()?
                .into_iter()
                .map(|i| format!("/1.0/images/{}", i.fingerprint)),
        );
        for pool in self.d.pool_names() {
            used_by.extend(
                db.volumes(&pool)?
                    .into_iter()
                    .map(|v| format!("/1.0/storage-pools/{}/volumes/custom/{}", v.pool, v.name)),
            );
        }
        used_by.extend(
            db.profile_names()?
                .into_iter()
                .map(|p| format!("/1.0/profiles/{p}")),
        );
        used_by.extend(
            db.networks()?
                .into_iter()
                .map(|n| format!("/1.0/networks/{}", n.name)),
        );
        used_by.sort();
        let config = [
            "features.images",
            "features.networks",
            "features.profiles",
            "features.storage.volumes",
        ]
        .into_iter()
        .map(|k| (k.to_string(), "true".to_string()))
        .collect();
        Ok(Project {
            name: DEFAULT_PROJECT.into(),
            description: "Default project".into(),
            config,
            used_by,
        })
    }

    /// `GET /1.0/warnings`: hutch records no warnings yet (LXD's are mostly about
    /// clustering and missing kernel features), so the list is empty.
    pub fn warnings(&self) -> Vec<Warning> {
        Vec::new()
    }

    /// `GET /1.0/warnings/<uuid>`.
    pub fn warning(&self, uuid: &str) -> Result<Warning> {
        self.warnings()
            .into_iter()
            .find(|w| w.uuid == uuid)
            .ok_or_else(|| DaemonError::NotFound("Warning not found".into()))
    }
}

impl Engine {
    /// The HTTPS listener's TLS config: the server certificate (as it is at each
    /// handshake), client certificates asked for and checked against the trust store per
    /// request.
    pub fn tls_server_config(&self) -> Result<std::sync::Arc<rustls::ServerConfig>> {
        self.d
            .cert_switch
            .server_config()
            .map_err(|e| DaemonError::failed("set up", "TLS", e))
    }

    /// `core.ui_address` as stored ("" when the web UI has no loopback listener).
    pub fn ui_address(&self) -> Result<String> {
        Ok(
            server_config::server_config_value(&self.d.db.server_config()?, "core.ui_address")
                .to_string(),
        )
    }

    /// `core.https_address` as stored ("" when the API is not served over HTTPS).
    pub fn https_address(&self) -> Result<String> {
        Ok(
            server_config::server_config_value(&self.d.db.server_config()?, "core.https_address")
                .to_string(),
        )
    }
}

/// Where a listener on `address` (`core.https_address`) is reached, as LXD's
/// `util.ListenAddresses` lists it: the address with its port (8443 when none), or for a
/// wildcard host the host's global unicast addresses (IPv4 only for `0.0.0.0`).
pub(crate) fn listen_addresses(address: &str) -> Vec<String> {
    if address.is_empty() {
        return Vec::new();
    }
    let (host, port) = split_listen_address(address);
    let join = |ip: &str| {
        if ip.contains(':') {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    };
    if !(host.is_empty() || host == "0.0.0.0" || host == "::") {
        return vec![join(&host)];
    }
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in ifaddrs {
        let Some(addr) = a.address else { continue };
        let ip: std::net::IpAddr = if let Some(v4) = addr.as_sockaddr_in() {
            std::net::IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            std::net::IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !is_global_unicast(&ip) || (ip.is_ipv6() && host == "0.0.0.0") {
            continue;
        }
        let text = join(&ip.to_string());
        if !out.contains(&text) {
            out.push(text);
        }
    }
    out
}

/// `host` and `port` of a listen address as LXD reads one: a bare host or IP takes port
/// 8443; brackets are taken off an IPv6 host.
pub(crate) fn split_listen_address(address: &str) -> (String, u16) {
    const DEFAULT_PORT: u16 = 8443;
    let unwrapped = address.trim_matches(|c| c == '[' || c == ']');
    if unwrapped.parse::<std::net::IpAddr>().is_ok() || !unwrapped.contains(':') {
        return (unwrapped.to_string(), DEFAULT_PORT);
    }
    match server_config::split_host_port(address) {
        Some((host, port)) => (host.to_string(), port.parse().unwrap_or(DEFAULT_PORT)),
        None => (unwrapped.to_string(), DEFAULT_PORT),
    }
}

/// Go's `IP.IsGlobalUnicast`: not loopback, link-local, multicast or unspecified.
fn is_global_unicast(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_unspecified()
                || v4.is_broadcast())
        }
        std::net::IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_multicast()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// What `GET /1.0` tells of the host: uname, /etc/os-release, hostname.
struct Host {
    kernel: String,
    kernel_version: String,
    arch: String,
    os_name: String,
    os_version: String,
    hostname: String,
}

impl Host {
    fn read() -> Host {
        let u = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            u.as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let (os_name, os_version) = os_release(&os);
        Host {
            kernel: field(|u| u.sysname()),
            kernel_version: field(|u| u.release()),
            arch: field(|u| u.machine()),
            os_name,
            os_version,
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}

/// `NAME` and `VERSION_ID` of an os-release file.
fn os_release(text: &str) -> (String, String) {
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (field("NAME"), field("VERSION_ID"))
}

/// PBKDF2-HMAC-SHA256 rounds for the stored trust password.
const PASSWORD_ROUNDS: u32 = 10_000;

/// The keys of `config` that are the cluster's (not each member's own).
fn cluster_keys(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .iter()
        .filter(|(k, _)| !server_config::is_member_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A write-only secret as stored: `pbkdf2-sha256$ROUNDS$SALT$HASH` (hex), never the clear
/// text (LXD stores a salted scrypt hash).
fn hash_password(clear: &str) -> String {
    let salt = uuid::Uuid::new_v4().into_bytes();
    let hash = pbkdf2_sha256(clear.as_bytes(), &salt, PASSWORD_ROUNDS);
    format!(
        "pbkdf2-sha256${PASSWORD_ROUNDS}${}${}",
        hex::encode(salt),
        hex::encode(hash)
    )
}

/// Whether `clear` is the password `stored` was made from (an empty `stored`: no password
/// is set, nothing matches).
pub(crate) fn password_matches(stored: &str, clear: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(rounds), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(rounds), Ok(salt), Ok(hash)) = (rounds.parse(), hex::decode(salt), hex::decode(hash))
    else {
        return false;
    };
    let got = pbkdf2_sha256(clear.as_bytes(), &salt, rounds);
    // Compared without an early exit.
    got.len() == hash.len() && got.iter().zip(&hash).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// PBKDF2 (RFC 8018) with HMAC-SHA256, one 32-byte block.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let mut key = [0u8; 64];
    if password.len() > 64 {
        key[..32].copy_from_slice(&Sha256::digest(password));
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let pad = |byte: u8| -> Sha256 {
        let mut h = Sha256::new();
        h.update(key.map(|k| k ^ byte));
        h
    };
    let (inner, outer) = (pad(0x36), pad(0x5c));
    let hmac = |msg: &[&[u8]]| -> [u8; 32] {
        let mut i = inner.clone();
        for m in msg {
            i.update(m);
        }
        let mut o = outer.clone();
        o.update(i.finalize());
        o.finalize().into()
    };
    let mut u = hmac(&[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..rounds {
        u = hmac(&[&u]);
        out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_fields() {
        let text =
            "PRETTY_NAME=\"Debian GNU/Linux 12\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n";
        assert_eq!(
            os_release(text),
            ("Debian GNU/Linux".to_string(), "12".to_string())
        );
        assert_eq!(os_release(""), (String::new(), String::new()));
    }

    #[test]
    fn listen_addresses_as_lxd_lists_them() {
        assert!(listen_addresses("").is_empty());
        assert_eq!(listen_addresses("127.0.0.1"), ["127.0.0.1:8443"]);
        assert_eq!(listen_addresses("127.0.0.1:9443"), ["127.0.0.1:9443"]);
        assert_eq!(listen_addresses("[::1]:9443"), ["[::1]:9443"]);
        assert_eq!(listen_addresses("::1"), ["[::1]:8443"]);
        assert_eq!(listen_addresses("[::1]"), ["[::1]:8443"]);
        assert_eq!(split_listen_address(":8444"), (String::new(), 8444));
        assert_eq!(
            split_listen_address("host.example"),
            ("host.example".into(), 8443)
        );
        for a in listen_addresses(":8444") {
            assert!(a.ends_with(":8444"), "{a}");
            assert!(!a.starts_with("127."), "{a}");
        }
    }

    #[test]
    fn pbkdf2_matches_rfc_7914_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256 ("passwd", "salt", c = 1).
        let got = pbkdf2_sha256(b"passwd", b"salt", 1);
        assert_eq!(
            hex::encode(got),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
    }

    #[test]
    fn passwords_are_stored_salted_and_checked() {
        let a = hash_password("s3cret");
        let b = hash_password("s3cret");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(!a.contains("s3cret"));
        assert!(password_matches(&a, "s3cret"));
        assert!(!password_matches(&a, "s3cret!"));
        assert!(!password_matches("s3cret", "s3cret"));
    }
}

#[cfg(test)]
mod engine_tests {
    use serde_json::json;

    use crate::api::testing::TestApi;
    use crate::error::ErrorKind;
    use hutch_api::server::ServerPut;

    fn put(v: serde_json::Value) -> ServerPut {
        serde_json::from_value(json!({ "config": v })).unwrap()
    }

    #[tokio::test]
    async fn the_trust_password_is_stored_hashed() {
        let api = TestApi::new().await;
        let e = &api.engine;
        e.update_server_config(put(json!({"core.trust_password": "s3cret"})), true, None)
            .await
            .unwrap();
        let stored = e.d.db.server_config().unwrap();
        let hash = &stored["core.trust_password"];
        assert!(!hash.contains("s3cret"), "{hash}");
        assert!(super::password_matches(hash, "s3cret"));
        // Kept as it is when the client sends back what GET showed.
        e.update_server_config(put(json!({"core.trust_password": true})), false, None)
            .await
            .unwrap();
        assert_eq!(
            &e.d.db.server_config().unwrap()["core.trust_password"],
            hash
        );
    }

    #[tokio::test]
    async fn a_stale_version_stores_nothing() {
        let api = TestApi::new().await;
        let e = &api.engine;
        let stale = Some("0000".to_string());
        let err = e
            .update_server_config(put(json!({"user.a": "1"})), true, stale)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
        assert!(e.d.db.server_config().unwrap().is_empty());
        let current = Some(crate::engine::etag(&std::collections::BTreeMap::<
            String,
            serde_json::Value,
        >::new()));
        let err = e
            .update_server_config(put(json!({"nope": "1"})), true, current.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        e.update_server_config(put(json!({"user.a": "1"})), true, current)
            .await
            .unwrap();
        assert_eq!(e.d.db.server_config().unwrap()["user.a"], "1");
    }

    #[tokio::test]
    async fn the_default_project_is_used_by_what_exists() {
        let api = TestApi::new().await;
        let e = &api.engine;
        let row = crate::db::instances::InstanceRow {
            name: "c1".into(),
            kind: "container".into(),
            architecture: "x86_64".into(),
            ephemeral: false,
            stateful: false,
            description: String::new(),
            created_at: "now".into(),
            last_used_at: "now".into(),
            config: Default::default(),
            devices: Default::default(),
            profiles: vec!["default".into()],
            state: "ready".into(),
            pool: "default".into(),
        };
        e.d.db.insert_instance(&row).unwrap();
        let p = e.project("default").unwrap();
        assert_eq!(p.used_by, ["/1.0/instances/c1", "/1.0/profiles/default"]);
        assert_eq!(e.project("x").unwrap_err().kind(), ErrorKind::NotFound);
    }
}
