//! Registry credentials from the files `docker login`, `podman login` and `skopeo login`
//! write (containers-auth.json(5)), so a registry the host's root has logged in to is
//! pulled from with those credentials, as Incus (through skopeo) does.
//!
//! Files are read in the order containers-auth.json gives: `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json` (or `/run/containers/<uid>/auth.json`),
//! `$XDG_CONFIG_HOME/containers/auth.json` (or `~/.config/…`), `~/.docker/config.json`;
//! the first that has an entry for the image wins, and in it the most specific key
//! (`registry/namespace/repo` over `registry/namespace` over `registry`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::OciError;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

// Never printed: a password in a log is a leak.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
}

/// The auth files to look in, most important first, from the process's environment.
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME").unwrap_or_else(|| PathBuf::from("/root"));
    let mut files = Vec::new();
    files.extend(env("REGISTRY_AUTH_FILE"));
    files.push(match env("XDG_RUNTIME_DIR") {
        Some(run) => run.join("containers/auth.json"),
        None => PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            nix::unistd::getuid()
        )),
    });
    files.push(
        env("XDG_CONFIG_HOME")
            .unwrap_or_else(|| home.join(".config"))
            .join("containers/auth.json"),
    );
    files.push(home.join(".docker/config.json"));
    files
}

/// The credentials for `repository` on `registry` (`host[:port]`, as a reference names
/// it) in the first of `files` that has an entry for it. Missing files are skipped; one
/// that cannot be read or parsed is an error (a typo must not look like no login).
pub fn find_credentials(
    files: &[PathBuf],
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>, OciError> {
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(OciError::io("read", file, e)),
        };
        if let Some(c) = credentials_in(&text, file, registry, repository)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// The entry of one auth file's text for `registry`/`repository`.
fn credentials_in(
    text: &str,
    file: &Path,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>, OciError> {
    let what = || format!("registry auth file {}", file.display());
    let parsed: AuthFile = serde_json::from_str(text).map_err(|source| OciError::Json {
        what: what(),
        source,
    })?;
    let registry = normalise(registry);
    let image = format!("{registry}/{repository}");
    let best = parsed
        .auths
        .iter()
        .filter(|(_, e)| !e.auth.is_empty())
        .map(|(k, e)| (normalise(k), e))
        .filter(|(k, _)| *k == registry || image == *k || image.starts_with(&format!("{k}/")))
        .max_by_key(|(k, _)| k.len());
    let Some((key, entry)) = best else {
        return Ok(None);
    };
    let bad = |reason: &str| OciError::invalid(format!("{} entry {key:?}", what()), reason);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.trim())
        .map_err(|_| bad("auth is not base64"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad("auth is not UTF-8"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| bad("auth is not user:password"))?;
    Ok(Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    }))
}

/// A key as the registry it names: no scheme, no trailing `/` or legacy `/v1/` path, and
/// Docker Hub's several names as `docker.io`.
fn normalise(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    match key {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        k => match k.split_once('/') {
            Some(("index.docker.io" | "registry-1.docker.io", rest)) => format!("docker.io/{rest}"),
            _ => k.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(user_pass: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    }

    fn find(text: &str, registry: &str, repo: &str) -> Option<(String, String)> {
        credentials_in(text, Path::new("auth.json"), registry, repo)
            .unwrap()
            .map(|c| (c.username, c.password))
    }

    #[test]
    fn the_most_specific_key_wins() {
        let text = serde_json::json!({"auths": {
            "127.0.0.1:5000": {"auth": auth("all:one")},
            "127.0.0.1:5000/team": {"auth": auth("team:two")},
            "https://index.docker.io/v1/": {"auth": auth("hub:three")},
            "other.example": {"auth": auth("other:four")},
        }})
        .to_string();
        let pair = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        assert_eq!(
            find(&text, "127.0.0.1:5000", "team/app"),
            pair("team", "two")
        );
        assert_eq!(
            find(&text, "127.0.0.1:5000", "teamx/app"),
            pair("all", "one")
        );
        assert_eq!(
            find(&text, "docker.io", "library/nginx"),
            pair("hub", "three")
        );
        assert_eq!(find(&text, "127.0.0.1:5001", "team/app"), None);
        // A password may hold a colon.
        let text = serde_json::json!({"auths": {"r": {"auth": auth("u:p:q")}}}).to_string();
        assert_eq!(find(&text, "r", "a"), pair("u", "p:q"));
    }

    #[test]
    fn broken_files_are_errors_and_missing_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{").unwrap();
        let good = dir.path().join("good.json");
        let text = serde_json::json!({"auths": {"r": {"auth": auth("u:p")}}}).to_string();
        std::fs::write(&good, text).unwrap();
        let missing = dir.path().join("missing.json");
        let found = find_credentials(&[missing.clone(), good.clone()], "r", "a").unwrap();
        assert_eq!(found.unwrap().username, "u");
        assert!(find_credentials(&[missing, broken.clone(), good], "r", "a").is_err());
        let bad = serde_json::json!({"auths": {"r": {"auth": "%%"}}}).to_string();
        std::fs::write(&broken, bad).unwrap();
        let e = find_credentials(&[broken], "r", "a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not base64"), "{e}");
        // The password never shows in a debug print.
        let c = Credentials {
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
