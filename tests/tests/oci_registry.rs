//! End-to-end: OCI images pulled from a registry. Debian's `docker-registry` (distribution
//! v2) runs on a free loopback port with its storage in the test's directory; an image
//! built here from busybox is pushed into it with `skopeo`; a remote of protocol `oci`
//! points at it. `hutch launch REMOTE:IMAGE:TAG` runs the image's process, `image copy`
//! names it, a second launch reuses the image of the same manifest digest without a blob
//! download (the registry's log says so), a missing tag, an unreachable registry, a blob
//! that does not match its digest and an image for another architecture fail clearly and
//! leave nothing. The built-in `docker` remote is listed, never contacted. A registry
//! behind token auth is pulled from anonymously or with the host's login; one over HTTPS
//! is trusted through the daemon's roots only. Needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hutch_oci::{host_arch, write_oci_archive, ImageToWrite, RunConfig};
use hutch_tests::image_server::TestCa;
use hutch_tests::registry::Registry;
use hutch_tests::token_server::TokenServer;
use hutch_tests::{
    busybox_rootfs, free_port, require_root, skipped, unique_name, wait_until, TestDaemon,
};
use serde_json::Value;

/// Generous: every wait below is for a state, never a measure of speed.
const LIMIT: Duration = Duration::from_secs(60);

/// A one-layer busybox image that says hello and stays up, as an OCI archive.
fn build_archive(dir: &Path) -> PathBuf {
    build_archive_as(
        dir,
        "bb-oci.tar",
        "echo hello-registry; sleep 1000",
        host_arch(),
    )
}

/// A one-layer busybox image running `script`, for `arch`, as the OCI archive `file`.
fn build_archive_as(dir: &Path, file: &str, script: &str, arch: &str) -> PathBuf {
    let rootfs = dir.join("bb-rootfs");
    busybox_rootfs(&rootfs).expect("busybox rootfs");
    let layers = vec![hutch_oci::tree_layer(&rootfs).expect("tar the rootfs")];
    fs::remove_dir_all(&rootfs).expect("remove the rootfs");
    let run = RunConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec![script.into()],
        env: vec!["PATH=/bin:/sbin:/usr/bin:/usr/sbin".into()],
        ..RunConfig::default()
    };
    let archive = dir.join(file);
    write_oci_archive(
        &archive,
        &ImageToWrite {
            architecture: arch,
            run: &run,
            layers: &layers,
            gzip: true,
        },
    )
    .expect("write the OCI archive");
    archive
}

fn get(d: &TestDaemon, path: &str) -> Value {
    let (status, body) = d.http("GET", path, b"");
    assert_eq!(status, 200, "GET {path}: {body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["metadata"].clone()
}

/// The fingerprints of the daemon's images.
fn images(d: &TestDaemon) -> Vec<String> {
    get(d, "/1.0/images?recursion=1")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["fingerprint"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Files a pull left in the image store's scratch names.
fn scratch_left(d: &TestDaemon) -> Vec<String> {
    fs::read_dir(d.path().join("images"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".upload-"))
                .collect()
        })
        .unwrap_or_default()
}

fn tools_present(test: &str) -> bool {
    match Registry::tools_missing() {
        Some(why) => {
            skipped(test, why);
            false
        }
        None => true,
    }
}

#[test]
fn images_pulled_from_a_registry_run_and_are_cached_by_digest() {
    let test = "images_pulled_from_a_registry_run_and_are_cached_by_digest";
    if !require_root(test) || !tools_present(test) {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let registry = Registry::start(d.path());
    let archive = build_archive(d.path());
    registry.push(&archive, "test/bb:1");

    // The built-in registry remote is listed (and never contacted here).
    let remotes = d.hutch_ok(&["remote", "list"]);
    assert!(
        remotes.contains("docker") && remotes.contains("https://docker.io"),
        "{remotes}"
    );
    d.hutch_ok(&["remote", "add", "reg", &registry.url(), "--protocol", "oci"]);

    // Launch: pulled, flattened, its process runs.
    let c1 = unique_name("reg-a");
    d.hutch_ok(&["launch", "reg:test/bb:1", &c1]);
    wait_until("hello-registry in the console log", LIMIT, || {
        d.hutch_ok(&["console", &c1, "--show-log"])
            .contains("hello-registry")
    });
    let first = images(&d);
    assert_eq!(first.len(), 1, "{first:?}");
    let image = get(&d, &format!("/1.0/images/{}", first[0]));
    assert_eq!(image["properties"]["type"], "oci", "{image}");
    let digest = image["properties"]["oci.manifest_digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(digest.starts_with("sha256:"), "{image}");
    assert_eq!(image["update_source"]["protocol"], "oci", "{image}");
    let blobs = registry.blob_requests("test/bb");
    assert!(blobs >= 2, "config and layer pulled: {blobs}");

    // A second launch of the tag: the manifest is asked for, no blob is downloaded, the
    // image is the same one.
    let c2 = unique_name("reg-b");
    d.hutch_ok(&["launch", "reg:test/bb:1", &c2]);
    assert_eq!(images(&d), first);
    assert_eq!(registry.blob_requests("test/bb"), blobs);
    // By digest too.
    let c3 = unique_name("reg-c");
    d.hutch_ok(&["init", &format!("reg:test/bb@{digest}"), &c3]);
    assert_eq!(images(&d), first);
    assert_eq!(registry.blob_requests("test/bb"), blobs);

    // image copy with an alias names the same image.
    d.hutch_ok(&[
        "image",
        "copy",
        "reg:test/bb:1",
        "local:",
        "--alias",
        "bb-reg",
    ]);
    let alias = get(&d, "/1.0/images/aliases/bb-reg");
    assert_eq!(alias["target"], first[0].as_str(), "{alias}");
    assert_eq!(images(&d), first);

    // A missing tag: a clear error, nothing made.
    let c4 = unique_name("reg-d");
    let err = d.hutch_err(&["launch", "reg:test/bb:nope", &c4]);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(images(&d), first);
    let (status, _) = d.http("GET", &format!("/1.0/instances/{c4}"), b"");
    assert_eq!(status, 404);

    // An unreachable registry: a clear error, nothing made.
    let closed = format!("http://127.0.0.1:{}", free_port());
    d.hutch_ok(&["remote", "add", "gone", &closed, "--protocol", "oci"]);
    let err = d.hutch_err(&["image", "copy", "gone:test/bb:1", "local:"]);
    assert!(err.contains("gone") || err.contains("127.0.0.1"), "{err}");
    assert_eq!(images(&d), first);
    assert!(scratch_left(&d).is_empty(), "{:?}", scratch_left(&d));

    // The tag moves on: a refresh (what images.auto_update_interval runs) pulls the new
    // manifest and the alias follows it; asked again, nothing changes.
    let out = d.hutch_ok(&["image", "refresh", "bb-reg"]);
    assert!(out.contains("up to date"), "{out}");
    let newer = build_archive_as(
        d.path(),
        "bb-oci-2.tar",
        "echo hello-again; sleep 1000",
        host_arch(),
    );
    registry.push(&newer, "test/bb:1");
    let out = d.hutch_ok(&["image", "refresh", "bb-reg"]);
    assert!(out.contains("refreshed"), "{out}");
    let moved = get(&d, "/1.0/images/aliases/bb-reg")["target"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(moved, first[0], "the alias follows the tag");
    let refreshed = get(&d, &format!("/1.0/images/{moved}"));
    assert_ne!(
        refreshed["properties"]["oci.manifest_digest"],
        digest.as_str()
    );
    assert_eq!(
        refreshed["update_source"]["alias"], "test/bb:1",
        "{refreshed}"
    );
    let out = d.hutch_ok(&["image", "refresh", "bb-reg"]);
    assert!(out.contains("up to date"), "{out}");

    for c in [&c1, &c2, &c3] {
        d.hutch_ok(&["delete", "--force", c]);
    }
}

/// The digest of the config of `repo_tag` in the registry (`skopeo inspect --raw`).
fn config_digest(registry: &Registry, repo_tag: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://127.0.0.1:{}/{repo_tag}", registry.port))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).expect("manifest");
    manifest["config"]["digest"]
        .as_str()
        .expect("config digest")
        .to_string()
}

#[test]
fn broken_images_on_a_registry_are_refused_and_leave_nothing() {
    let test = "broken_images_on_a_registry_are_refused_and_leave_nothing";
    if !require_root(test) || !tools_present(test) {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let registry = Registry::start(d.path());
    d.hutch_ok(&["remote", "add", "reg", &registry.url(), "--protocol", "oci"]);

    // A blob whose content no longer matches its digest (changed in the registry's
    // storage, same length): refused.
    let archive = build_archive_as(d.path(), "bad.tar", "echo corrupt; sleep 1000", host_arch());
    registry.push(&archive, "test/bad:1");
    let digest = config_digest(&registry, "test/bad:1");
    let hex = digest.trim_start_matches("sha256:");
    let data = d
        .path()
        .join("registry-storage/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let len = fs::metadata(&data).expect("the config blob").len() as usize;
    fs::write(&data, vec![b' '; len]).expect("corrupt the config blob");
    let c1 = unique_name("reg-bad");
    let err = d.hutch_err(&["launch", "reg:test/bad:1", &c1]);
    assert!(err.to_lowercase().contains("digest"), "{err}");

    // An image for another architecture: refused, naming it.
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let archive = build_archive_as(d.path(), "other.tar", "echo other; sleep 1000", other);
    registry.skopeo_copy(&["--override-arch", other], &[], &archive, "test/other:1");
    let c2 = unique_name("reg-arch");
    let err = d.hutch_err(&["launch", "reg:test/other:1", &c2]);
    assert!(err.contains(other), "{err}");

    assert!(images(&d).is_empty(), "{:?}", images(&d));
    assert!(scratch_left(&d).is_empty(), "{:?}", scratch_left(&d));
    for c in [&c1, &c2] {
        let (status, _) = d.http("GET", &format!("/1.0/instances/{c}"), b"");
        assert_eq!(status, 404, "{c}");
    }
}

/// The registry auth file hutchd reads (REGISTRY_AUTH_FILE), for `user`:`password` on
/// `registry`.
fn write_auth_file(path: &Path, registry: &Registry, user: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let key = format!("127.0.0.1:{}", registry.port);
    let json = serde_json::json!({"auths": {key: {"auth": auth}}});
    fs::write(path, json.to_string()).expect("write the auth file");
}

#[test]
fn a_registry_behind_token_auth_is_pulled_anonymously_or_with_the_hosts_login() {
    let test = "a_registry_behind_token_auth_is_pulled_anonymously_or_with_the_hosts_login";
    if !require_root(test) || !tools_present(test) {
        return;
    }
    let secrets = tempfile::tempdir().expect("a directory for the auth file");
    let auth_file = secrets.path().join("auth.json");
    let auth_env = auth_file.display().to_string();
    let d = TestDaemon::start_with_env(
        &["--storage-backend", "dir"],
        &[("REGISTRY_AUTH_FILE", &auth_env)],
    );
    let tokens = TokenServer::start(d.path(), "hutch", "s3cret");
    let registry = Registry::start_with(d.path(), &tokens.registry_config());
    let archive = build_archive(d.path());
    for repo in ["public/bb:1", "private/bb:1"] {
        let creds = ["--dest-creds", "hutch:s3cret"];
        registry.skopeo_copy(&[], &creds, &archive, repo);
    }
    d.hutch_ok(&["remote", "add", "reg", &registry.url(), "--protocol", "oci"]);

    // A public repository: the challenge answered with an anonymous token.
    let c1 = unique_name("tok-a");
    d.hutch_ok(&["launch", "reg:public/bb:1", &c1]);
    wait_until("hello-registry in the console log", LIMIT, || {
        d.hutch_ok(&["console", &c1, "--show-log"])
            .contains("hello-registry")
    });
    let first = images(&d);
    assert_eq!(first.len(), 1, "{first:?}");

    // A private one without a login, then with a wrong one: refused, saying where
    // credentials come from; nothing made.
    let err = d.hutch_err(&["image", "copy", "reg:private/bb:1", "local:"]);
    assert!(
        err.contains("refused access") && err.contains("login"),
        "{err}"
    );
    write_auth_file(&auth_file, &registry, "hutch", "wrong");
    let err = d.hutch_err(&["image", "copy", "reg:private/bb:1", "local:"]);
    assert!(err.contains("refused access"), "{err}");
    assert_eq!(images(&d), first);
    assert!(scratch_left(&d).is_empty(), "{:?}", scratch_left(&d));
    // A broken auth file is an error, not an anonymous pull.
    fs::write(&auth_file, "{").unwrap();
    let err = d.hutch_err(&["image", "copy", "reg:private/bb:1", "local:"]);
    assert!(err.contains("auth file"), "{err}");

    // The host's login (read at each pull, no restart): the token server sees the
    // credentials, and the same image (one manifest) is found again.
    let before = tokens.counts.authenticated.load(Ordering::SeqCst);
    write_auth_file(&auth_file, &registry, "hutch", "s3cret");
    let c2 = unique_name("tok-b");
    d.hutch_ok(&["launch", "reg:private/bb:1", &c2]);
    assert!(tokens.counts.authenticated.load(Ordering::SeqCst) > before);
    assert_eq!(images(&d), first, "the same manifest, the same image");
    wait_until("hello-registry in the second console log", LIMIT, || {
        d.hutch_ok(&["console", &c2, "--show-log"])
            .contains("hello-registry")
    });
    for c in [&c1, &c2] {
        d.hutch_ok(&["delete", "--force", c]);
    }
}

#[test]
fn an_https_registry_is_trusted_through_the_hosts_roots_and_no_other() {
    let test = "an_https_registry_is_trusted_through_the_hosts_roots_and_no_other";
    if !require_root(test) || !tools_present(test) {
        return;
    }
    let ca = TestCa::new();
    let ca_file = ca.ca_file().display().to_string();
    let d = TestDaemon::start_with_env(
        &["--storage-backend", "dir"],
        &[("SSL_CERT_FILE", &ca_file)],
    );
    let trusted_dir = d.path().join("trusted");
    fs::create_dir_all(&trusted_dir).unwrap();
    let registry = Registry::start_tls(&trusted_dir, &ca);
    assert!(registry.url().starts_with("https://"));
    let archive = build_archive(d.path());
    registry.push(&archive, "test/bb:1");
    d.hutch_ok(&["remote", "add", "reg", &registry.url(), "--protocol", "oci"]);
    let c1 = unique_name("tls-a");
    d.hutch_ok(&["launch", "reg:test/bb:1", &c1]);
    wait_until("hello-registry in the console log", LIMIT, || {
        d.hutch_ok(&["console", &c1, "--show-log"])
            .contains("hello-registry")
    });
    let first = images(&d);

    // A registry whose certificate no root of the daemon's signed: refused, nothing made.
    let other_dir = d.path().join("untrusted");
    fs::create_dir_all(&other_dir).unwrap();
    let untrusted = Registry::start_tls(&other_dir, &TestCa::new());
    untrusted.push(&archive, "test/bb:1");
    d.hutch_ok(&[
        "remote",
        "add",
        "bad",
        &untrusted.url(),
        "--protocol",
        "oci",
    ]);
    let c2 = unique_name("tls-b");
    let err = d.hutch_err(&["launch", "bad:test/bb:1", &c2]);
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert_eq!(images(&d), first);
    assert!(scratch_left(&d).is_empty(), "{:?}", scratch_left(&d));
    let (status, _) = d.http("GET", &format!("/1.0/instances/{c2}"), b"");
    assert_eq!(status, 404);
    d.hutch_ok(&["delete", "--force", &c1]);
}
