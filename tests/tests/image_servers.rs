//! Image servers: hutchd pulls images from simplestreams remotes (a tree the streams writer
//! made, served over HTTPS on loopback by the test image server with its own CA), caches
//! them, refreshes and expires them, and leaves nothing behind when a download fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hutch_images::streams_tree::{Published, StreamsFiles, StreamsImage, StreamsTree};
use hutch_tests::{
    busybox_rootfs, output_within, require_root, unique_name, wait_until, Fault, ImageServer,
    TestDaemon, TestDir, COMMAND_LIMIT,
};
use serde_json::{json, Value};

/// A simplestreams tree of busybox images and the HTTPS server that serves it.
struct Remote {
    dir: TestDir,
    tree: StreamsTree,
    server: ImageServer,
}

/// How the rootfs of a published image is packed.
#[derive(Clone, Copy, PartialEq)]
enum Packing {
    TarXz,
    Squashfs,
}

impl Remote {
    fn new() -> Remote {
        let dir = TestDir::new();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(&root).unwrap();
        let tree = StreamsTree::new(&root);
        let server = ImageServer::https(&root);
        Remote { dir, tree, server }
    }

    /// Publishes a busybox image under `busybox/1` with version key `serial`.
    fn publish(&self, serial: &str, packing: Packing) -> Published {
        let work = self.dir.path().join(format!("work-{serial}"));
        let tree = work.join("tree");
        let rootfs = tree.join("rootfs");
        std::fs::create_dir_all(&tree).unwrap();
        busybox_rootfs(&rootfs).expect("busybox rootfs");
        std::fs::write(
            tree.join("metadata.yaml"),
            format!("architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n  serial: \"{serial}\"\n"),
        )
        .unwrap();
        let meta = work.join("meta.tar.xz");
        run(Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .args(["-cJf"])
            .arg(&meta)
            .arg("metadata.yaml"));
        let root = match packing {
            Packing::TarXz => {
                let out = work.join("root.tar.xz");
                run(Command::new("tar")
                    .arg("-C")
                    .arg(&rootfs)
                    .args(["--numeric-owner", "-cJf"])
                    .arg(&out)
                    .arg("."));
                out
            }
            Packing::Squashfs => {
                let out = work.join("root.squashfs");
                run(Command::new("mksquashfs").arg(&rootfs).arg(&out).args([
                    "-noappend",
                    "-quiet",
                    "-no-progress",
                ]));
                out
            }
        };
        self.tree
            .add(&StreamsImage {
                os: "busybox".into(),
                release: "1".into(),
                release_title: String::new(),
                version: "1".into(),
                arch: "amd64".into(),
                variant: "default".into(),
                serial: serial.into(),
                aliases: vec!["busybox/1".into()],
                files: StreamsFiles::Split { meta, rootfs: root },
            })
            .expect("publish")
    }

    fn url(&self) -> String {
        self.server.url()
    }

    /// How many times the server was asked for `path` (tree-relative).
    fn requests_for(&self, path: &str) -> usize {
        let want = format!("/{}", path.trim_start_matches('/'));
        self.server
            .requests()
            .iter()
            .filter(|p| **p == want)
            .count()
    }
}

fn run(cmd: &mut Command) {
    let out = output_within(cmd, b"", COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A daemon that trusts the remote's CA, with `env` added.
fn daemon(remote: &Remote, env: &[(&str, &str)]) -> TestDaemon {
    let ca = remote.server.ca_file();
    let mut all = vec![("SSL_CERT_FILE", ca.to_str().unwrap())];
    all.extend_from_slice(env);
    TestDaemon::start_with_env(&["--storage-backend", "dir"], &all)
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Starts an async request; returns the operation id.
fn start_op(d: &TestDaemon, method: &str, path: &str, body: &Value) -> String {
    let (status, text) = d.http(method, path, body.to_string().as_bytes());
    assert_eq!(status, 202, "{text}");
    parse(&text)["metadata"]["id"].as_str().unwrap().to_string()
}

/// Waits for an operation; returns it.
fn wait_op(d: &TestDaemon, id: &str) -> Value {
    let (_, text) = d.http(
        "GET",
        &format!("/1.0/operations/{id}/wait?timeout=120"),
        b"",
    );
    parse(&text)["metadata"].clone()
}

/// `POST /1.0/instances` from `alias` on the remote; the finished operation.
fn create(d: &TestDaemon, remote: &Remote, name: &str, alias: &str) -> Value {
    let body = json!({
        "name": name,
        "source": {"type": "image", "mode": "pull", "server": remote.url(),
                   "protocol": "simplestreams", "alias": alias},
    });
    let id = start_op(d, "POST", "/1.0/instances", &body);
    wait_op(d, &id)
}

fn images(d: &TestDaemon) -> Vec<Value> {
    let (_, text) = d.http("GET", "/1.0/images?recursion=1", b"");
    parse(&text)["metadata"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn instance_names(d: &TestDaemon) -> Vec<String> {
    let (_, text) = d.http("GET", "/1.0/instances", b"");
    parse(&text)["metadata"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            v.as_str()
                .map(|s| s.rsplit('/').next().unwrap().to_string())
        })
        .collect()
}

/// Entries of the daemon's `images/` directory and of the pool's image volumes.
fn image_debris(d: &TestDaemon) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        d.path().join("images"),
        d.path().join("storage-pools/default/images"),
    ] {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            out.push(e.path());
        }
    }
    out
}

/// Nothing of a failed pull: no image row, no file, no volume, no instance.
fn assert_nothing_left(d: &TestDaemon) {
    assert_eq!(images(d), Vec::<Value>::new());
    assert_eq!(image_debris(d), Vec::<PathBuf>::new());
    assert_eq!(instance_names(d), Vec::<String>::new());
}

fn root_or_skip(test: &str) -> bool {
    require_root(test)
}

#[test]
fn launch_by_alias_pulls_once_then_uses_the_cache() {
    if !root_or_skip("launch_by_alias_pulls_once_then_uses_the_cache") {
        return;
    }
    let remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::TarXz);
    let d = daemon(&remote, &[]);
    let c1 = unique_name("pull");
    let op = create(&d, &remote, &c1, "busybox/1");
    assert_eq!(op["status_code"], 200, "{op}");
    let imgs = images(&d);
    assert_eq!(imgs.len(), 1, "{imgs:?}");
    let image = &imgs[0];
    assert_eq!(image["fingerprint"], v1.fingerprint.as_str());
    assert_eq!(image["cached"], true);
    assert_eq!(image["auto_update"], true);
    assert_eq!(image["properties"]["serial"], "20240501_05:24");
    assert_eq!(image["properties"]["type"], "root.tar.xz");
    assert_eq!(image["update_source"]["alias"], "busybox/1");
    assert_eq!(image["update_source"]["server"], remote.url().as_str());
    assert_eq!(image["update_source"]["protocol"], "simplestreams");
    assert_ne!(image["last_used_at"], "0001-01-01T00:00:00Z");
    let (_, inst) = d.http("GET", &format!("/1.0/instances/{c1}"), b"");
    let inst = parse(&inst);
    assert_eq!(
        inst["metadata"]["config"]["volatile.base_image"],
        v1.fingerprint.as_str()
    );
    assert_eq!(inst["metadata"]["config"]["image.serial"], "20240501_05:24");
    let rootfs = v1.rootfs_path.clone().unwrap();
    assert_eq!(remote.requests_for(&rootfs), 1);

    // The second launch finds the image in the store: no file is asked for again.
    let c2 = unique_name("pull");
    let op = create(&d, &remote, &c2, "busybox/1");
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(remote.requests_for(&rootfs), 1);
    assert_eq!(remote.requests_for(&v1.meta_path), 1);
    assert_eq!(images(&d).len(), 1);

    // A newer serial on the server: while auto-update is on, launches keep using the
    // cached image (LXD's PreferCached); the refresh task brings the new one.
    let v2 = remote.publish("20240502_05:24", Packing::TarXz);
    let c3 = unique_name("pull");
    let op = create(&d, &remote, &c3, "busybox/1");
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(remote.requests_for(v2.rootfs_path.as_deref().unwrap()), 0);
    assert_eq!(images(&d).len(), 1);

    // The instance runs from the pulled root filesystem.
    d.hutch_ok(&["start", &c2]);
    assert_eq!(d.sh_ok(&c2, "echo pulled").trim(), "pulled");
    d.hutch_ok(&["delete", "--force", &c2]);

    // An unknown alias fails as LXD's does.
    let op = create(&d, &remote, &unique_name("pull"), "nope/1");
    assert_eq!(op["status_code"], 400, "{op}");
    assert!(
        op["err"]
            .as_str()
            .unwrap()
            .contains("The requested image couldn't be found"),
        "{op}"
    );
}

#[test]
fn squashfs_items_are_unpacked() {
    if !root_or_skip("squashfs_items_are_unpacked") {
        return;
    }
    if Command::new("mksquashfs").arg("-version").output().is_err() {
        hutch_tests::skipped("squashfs_items_are_unpacked", "mksquashfs is not installed");
        return;
    }
    let remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::Squashfs);
    let d = daemon(&remote, &[]);
    let c1 = unique_name("sq");
    let op = create(&d, &remote, &c1, "busybox/1");
    assert_eq!(op["status_code"], 200, "{op}");
    let imgs = images(&d);
    assert_eq!(imgs[0]["fingerprint"], v1.fingerprint.as_str());
    assert_eq!(imgs[0]["properties"]["type"], "squashfs");
    d.hutch_ok(&["start", &c1]);
    assert_eq!(d.sh_ok(&c1, "echo squashed").trim(), "squashed");
    d.hutch_ok(&["delete", "--force", &c1]);
}

#[test]
fn bad_downloads_leave_nothing() {
    if !root_or_skip("bad_downloads_leave_nothing") {
        return;
    }
    let remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::TarXz);
    let rootfs = v1.rootfs_path.clone().unwrap();
    let d = daemon(&remote, &[]);

    // Truncated: the server sends part of the body and closes.
    remote
        .server
        .set_fault(&format!("/{rootfs}"), Fault::Truncate { after: 1000 });
    let op = create(&d, &remote, &unique_name("bad"), "busybox/1");
    assert_eq!(op["status_code"], 400, "{op}");
    let err = op["err"].as_str().unwrap();
    assert!(
        err.contains(&remote.url()) && err.contains(&rootfs),
        "{err}"
    );
    assert_nothing_left(&d);
    remote.server.clear_faults();

    // Corrupt: the bytes differ from the products file's sha256.
    let file = remote.server.root().join(&rootfs);
    let mut bytes = std::fs::read(&file).unwrap();
    let good = bytes.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let op = create(&d, &remote, &unique_name("bad"), "busybox/1");
    assert_eq!(op["status_code"], 400, "{op}");
    let err = op["err"].as_str().unwrap();
    assert!(
        err.contains("sha256 mismatch") && err.contains(&rootfs),
        "{err}"
    );
    assert_nothing_left(&d);
    std::fs::write(&file, &good).unwrap();

    // The server goes away mid-transfer.
    remote
        .server
        .set_fault(&format!("/{rootfs}"), Fault::Vanish { after: 2000 });
    let op = create(&d, &remote, &unique_name("bad"), "busybox/1");
    assert_eq!(op["status_code"], 400, "{op}");
    assert!(op["err"].as_str().unwrap().contains(&remote.url()), "{op}");
    assert_nothing_left(&d);
}

#[test]
fn hostile_fingerprints_never_become_paths() {
    if !root_or_skip("hostile_fingerprints_never_become_paths") {
        return;
    }
    let remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::TarXz);
    // The products file names a fingerprint that would lead out of the image store.
    let evil_name = unique_name("hutch-evil");
    let evil = format!("../../../../../../tmp/{evil_name}");
    let products = remote.server.root().join("streams/v1/images.json");
    let text = std::fs::read_to_string(&products).unwrap();
    assert!(text.contains(&v1.fingerprint));
    std::fs::write(&products, text.replace(&v1.fingerprint, &evil)).unwrap();
    let d = daemon(&remote, &[]);
    let op = create(&d, &remote, &unique_name("evil"), "busybox/1");
    assert_eq!(op["status_code"], 400, "{op}");
    assert!(
        op["err"].as_str().unwrap().contains("Invalid fingerprint"),
        "{op}"
    );
    assert_nothing_left(&d);
    assert!(!Path::new("/tmp").join(&evil_name).exists());
    // No file was asked for.
    assert!(
        !remote
            .server
            .requests()
            .iter()
            .any(|r| r.contains("rootfs")),
        "{:?}",
        remote.server.requests()
    );
}

#[test]
fn kill_mid_download_leaves_nothing_and_progress_is_reported() {
    if !root_or_skip("kill_mid_download_leaves_nothing_and_progress_is_reported") {
        return;
    }
    let mut remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::TarXz);
    let rootfs = v1.rootfs_path.clone().unwrap();
    remote
        .server
        .set_fault(&format!("/{rootfs}"), Fault::Stall { after: 4096 });
    let mut d = daemon(&remote, &[]);
    let body = json!({
        "name": unique_name("kill"),
        "source": {"type": "image", "mode": "pull", "server": remote.url(),
                   "protocol": "simplestreams", "alias": "busybox/1"},
    });
    let id = start_op(&d, "POST", "/1.0/instances", &body);
    // The download is held after its first bytes: the operation says how far it got.
    let mut progress = String::new();
    wait_until("download progress", Duration::from_secs(60), || {
        let (_, text) = d.http("GET", &format!("/1.0/operations/{id}"), b"");
        progress = parse(&text)["metadata"]["metadata"]["download_progress"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        progress.starts_with("rootfs: ")
    });
    assert!(
        progress.ends_with("/s)") && progress.contains("% ("),
        "{progress}"
    );
    assert!(image_debris(&d).iter().any(|p| p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".upload-")));
    d.kill();
    remote.server.stop();
    d.spawn();
    assert_nothing_left(&d);
}

#[test]
fn concurrent_launches_download_once() {
    if !root_or_skip("concurrent_launches_download_once") {
        return;
    }
    let remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::TarXz);
    let d = daemon(&remote, &[]);
    let names: Vec<String> = (0..3).map(|_| unique_name("conc")).collect();
    let ids: Vec<String> = names
        .iter()
        .map(|n| {
            let body = json!({
                "name": n,
                "source": {"type": "image", "mode": "pull", "server": remote.url(),
                           "protocol": "simplestreams", "alias": "busybox/1"},
            });
            start_op(&d, "POST", "/1.0/instances", &body)
        })
        .collect();
    for id in &ids {
        let op = wait_op(&d, id);
        assert_eq!(op["status_code"], 200, "{op}");
    }
    assert_eq!(remote.requests_for(v1.rootfs_path.as_deref().unwrap()), 1);
    assert_eq!(images(&d).len(), 1);
    let mut have = instance_names(&d);
    have.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(have, want);
}

#[test]
fn image_copy_by_alias_then_refresh_moves_the_alias() {
    if !root_or_skip("image_copy_by_alias_then_refresh_moves_the_alias") {
        return;
    }
    let remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::TarXz);
    let d = daemon(&remote, &[]);
    let body = json!({
        "source": {"type": "image", "mode": "pull", "server": remote.url(),
                   "protocol": "simplestreams", "alias": "busybox/1"},
        "aliases": [{"name": "bb", "description": ""}],
        "auto_update": true,
    });
    let op = wait_op(&d, &start_op(&d, "POST", "/1.0/images", &body));
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(op["metadata"]["fingerprint"], v1.fingerprint.as_str());
    let imgs = images(&d);
    assert_eq!(imgs[0]["cached"], false);
    assert_eq!(imgs[0]["auto_update"], true);
    assert_eq!(imgs[0]["aliases"][0]["name"], "bb");
    assert_eq!(imgs[0]["update_source"]["alias"], "busybox/1");

    // Nothing new: the refresh says so.
    let refresh = format!("/1.0/images/{}/refresh", v1.fingerprint);
    let op = wait_op(&d, &start_op(&d, "POST", &refresh, &json!({})));
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(op["metadata"]["refreshed"], false, "{op}");

    // A newer serial: the refresh pulls it, moves the alias, drops the old image.
    let v2 = remote.publish("20240502_05:24", Packing::TarXz);
    let op = wait_op(&d, &start_op(&d, "POST", &refresh, &json!({})));
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(op["metadata"]["refreshed"], true, "{op}");
    let imgs = images(&d);
    assert_eq!(imgs.len(), 1, "{imgs:?}");
    assert_eq!(imgs[0]["fingerprint"], v2.fingerprint.as_str());
    assert_eq!(imgs[0]["aliases"][0]["name"], "bb");
    assert_eq!(imgs[0]["update_source"]["alias"], "busybox/1");
    assert_eq!(imgs[0]["auto_update"], true);
}

#[test]
fn auto_update_replaces_a_cached_image_and_instances_keep_working() {
    if !root_or_skip("auto_update_replaces_a_cached_image_and_instances_keep_working") {
        return;
    }
    let remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::TarXz);
    // The image tasks look every second, and the interval counts seconds (so would the
    // expiry: it is turned off).
    let d = daemon(&remote, &[("HUTCH_IMAGE_TASKS_PERIOD", "1")]);
    d.hutch_ok(&["config", "set", "images.remote_cache_expiry", "0"]);
    d.hutch_ok(&["config", "set", "images.auto_update_interval", "1"]);
    let c1 = unique_name("auto");
    let op = create(&d, &remote, &c1, "busybox/1");
    assert_eq!(op["status_code"], 200, "{op}");
    let v2 = remote.publish("20240502_05:24", Packing::TarXz);
    let refreshed = || {
        let imgs = images(&d);
        imgs.len() == 1 && imgs[0]["fingerprint"] == v2.fingerprint.as_str()
    };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("the refreshed image", Duration::from_secs(60), refreshed)
    }))
    .is_err()
    {
        let log = std::fs::read_to_string(d.path().join("hutchd.log")).unwrap_or_default();
        panic!("no refresh; images {:?}; hutchd log:\n{log}", images(&d));
    }
    let imgs = images(&d);
    assert_eq!(imgs[0]["cached"], true);
    assert_eq!(imgs[0]["update_source"]["alias"], "busybox/1");
    assert_ne!(imgs[0]["fingerprint"], v1.fingerprint.as_str());
    // The instance made from the old image is a clone of it and still starts.
    d.hutch_ok(&["start", &c1]);
    assert_eq!(d.sh_ok(&c1, "echo still").trim(), "still");
    d.hutch_ok(&["delete", "--force", &c1]);
}

#[test]
fn unused_cached_images_expire() {
    if !root_or_skip("unused_cached_images_expire") {
        return;
    }
    let remote = Remote::new();
    remote.publish("20240501_05:24", Packing::TarXz);
    // The expiry counts seconds with the test knob.
    let d = daemon(&remote, &[("HUTCH_IMAGE_TASKS_PERIOD", "1")]);
    d.hutch_ok(&["config", "set", "images.auto_update_interval", "0"]);
    d.hutch_ok(&["config", "set", "images.remote_cache_expiry", "2"]);
    let c1 = unique_name("exp");
    let op = create(&d, &remote, &c1, "busybox/1");
    assert_eq!(op["status_code"], 200, "{op}");
    wait_until(
        "the cached image to expire",
        Duration::from_secs(60),
        || images(&d).is_empty(),
    );
    assert_eq!(instance_names(&d), vec![c1.clone()]);
    d.hutch_ok(&["start", &c1]);
    d.hutch_ok(&["delete", "--force", &c1]);
}

/// LXD's `lxc` against hutchd, with its own config dir, trusting `ca_file`.

#[test]
fn lxc_launches_from_a_simplestreams_remote() {
    let test = "lxc_launches_from_a_simplestreams_remote";
    if !root_or_skip(test) {
        return;
    }
    if Command::new("lxc").arg("--version").output().is_err() {
        hutch_tests::skipped(test, "LXD's lxc client is not installed");
        return;
    }
    let remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::TarXz);
    let d = daemon(&remote, &[]);
    let ca = remote.server.ca_file();
    let ok = |args: &[&str]| {
        let out = d.lxc_trusting(&ca, args);
        assert!(
            out.status.success(),
            "lxc {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&[
        "remote",
        "add",
        "bbimages",
        &remote.url(),
        "--protocol",
        "simplestreams",
        "--public",
    ]);
    let c1 = unique_name("lxc");
    ok(&["launch", "bbimages:busybox/1", &c1]);
    let list = ok(&["list", &c1, "--format", "csv", "-c", "ns"]);
    assert!(list.contains("RUNNING"), "{list}");
    let imgs = images(&d);
    assert_eq!(imgs[0]["fingerprint"], v1.fingerprint.as_str());
    assert_eq!(imgs[0]["cached"], true);
    // `lxc image copy` with an alias: the image is in the store already.
    ok(&[
        "image",
        "copy",
        "bbimages:busybox/1",
        "local:",
        "--alias",
        "bbl",
    ]);
    let info = ok(&["image", "info", "bbl"]);
    assert!(info.contains(&v1.fingerprint), "{info}");
    ok(&["delete", "--force", &c1]);
}

#[test]
fn pylxd_creates_from_simplestreams() {
    let test = "pylxd_creates_from_simplestreams";
    if !root_or_skip(test) {
        return;
    }
    let have_pylxd = Command::new("python3")
        .args(["-c", "import pylxd"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_pylxd {
        hutch_tests::skipped(test, "pylxd is not installed");
        return;
    }
    let remote = Remote::new();
    let v1 = remote.publish("20240501_05:24", Packing::TarXz);
    let d = daemon(&remote, &[]);
    let name = unique_name("py");
    let script = r#"
import sys
import pylxd
socket, server, name, want = sys.argv[1:5]
c = pylxd.Client(endpoint=socket)
image = c.images.create_from_simplestreams(server, "busybox/1")
assert image.fingerprint == want, image.fingerprint
inst = c.instances.create(
    {"name": name, "source": {"type": "image", "mode": "pull", "server": server,
     "protocol": "simplestreams", "alias": "busybox/1"}},
    wait=True,
)
assert inst.config["volatile.base_image"] == want, inst.config
inst.delete(wait=True)
print("pylxd ok")
"#;
    let out = output_within(
        Command::new("python3")
            .args(["-c", script])
            .arg(d.socket())
            .arg(remote.url())
            .arg(&name)
            .arg(&v1.fingerprint),
        b"",
        COMMAND_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("pylxd ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(remote.requests_for(v1.rootfs_path.as_deref().unwrap()), 1);
}

/// Unmounts what it names when dropped, so a failing test leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_pool_leaves_nothing() {
    if !root_or_skip("a_full_pool_leaves_nothing") {
        return;
    }
    let remote = Remote::new();
    remote.publish("20240501_05:24", Packing::TarXz);
    let d = daemon(&remote, &[]);
    // The pool's image volumes live on a filesystem too small for the rootfs.
    let images_dir = d.path().join("storage-pools/default/images");
    std::fs::create_dir_all(&images_dir).unwrap();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&images_dir));
    let _unmount = Unmount(images_dir.clone());
    let op = create(&d, &remote, &unique_name("full"), "busybox/1");
    assert_eq!(op["status_code"], 400, "{op}");
    assert!(op["err"].as_str().unwrap().contains(&remote.url()), "{op}");
    assert_nothing_left(&d);
}
