//! Cancelling long operations with `DELETE /1.0/operations/<id>`: a launch while its image
//! downloads (from a test server that stalls) and while it unpacks, an image download
//! (`POST /1.0/images`), a copy of a container, and `hutch launch` stopped by Ctrl-C. Each
//! ends `Cancelled` and leaves nothing: no row (asked through the API), no file or
//! volume (the state directory and the pool looked at).
//!
//! The unpack and the copy are caught mid-way without racing them: in debug builds
//! `HUTCH_TEST_HOLD=<point>` makes the daemon wait at that point (naming it in the
//! operation's metadata) until the operation is cancelled.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hutch_images::streams_tree::{Published, StreamsFiles, StreamsImage, StreamsTree};
use hutch_tests::{
    busybox_rootfs, hutch_bin, output_within, require_root, unique_name, wait_until, Fault,
    ImageServer, TestDaemon, TestDir, Via, COMMAND_LIMIT,
};
use serde_json::{json, Value};

/// A simplestreams tree served on loopback.
struct Remote {
    dir: TestDir,
    tree: StreamsTree,
    server: ImageServer,
}

impl Remote {
    /// Over plain HTTP.
    fn new() -> Remote {
        Remote::serve(ImageServer::http)
    }

    /// Over HTTPS, with a test CA (`hutch` takes simplestreams remotes over HTTPS only).
    fn https() -> Remote {
        Remote::serve(ImageServer::https)
    }

    fn serve(server: fn(&Path) -> ImageServer) -> Remote {
        let dir = TestDir::new();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(&root).unwrap();
        let tree = StreamsTree::new(&root);
        let server = server(&root);
        Remote { dir, tree, server }
    }

    /// A busybox image under `busybox/1`: split, its rootfs a tar.xz.
    fn publish_split(&self) -> Published {
        let work = self.dir.path().join("split");
        let rootfs = work.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        busybox_rootfs(&rootfs).expect("busybox rootfs");
        std::fs::write(work.join("metadata.yaml"), metadata()).unwrap();
        let meta = work.join("meta.tar.xz");
        run(Command::new("tar")
            .arg("-C")
            .arg(&work)
            .arg("-cJf")
            .arg(&meta)
            .arg("metadata.yaml"));
        let root = work.join("root.tar.xz");
        run(Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--numeric-owner", "-cJf"])
            .arg(&root)
            .arg("."));
        self.add("busybox/1", StreamsFiles::Split { meta, rootfs: root })
    }

    /// A unified image under `big/1`: busybox and `mib` MiB of random bytes, uncompressed.
    fn publish_big(&self, mib: u32) -> Published {
        let work = self.dir.path().join("big");
        let rootfs = work.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        busybox_rootfs(&rootfs).expect("busybox rootfs");
        random_file(&rootfs.join("big"), mib);
        std::fs::write(work.join("metadata.yaml"), metadata()).unwrap();
        let tarball = work.join("image.tar");
        run(Command::new("tar")
            .arg("-C")
            .arg(&work)
            .args(["--numeric-owner", "-cf"])
            .arg(&tarball)
            .args(["metadata.yaml", "rootfs"]));
        self.add("big/1", StreamsFiles::Unified { tarball })
    }

    fn add(&self, alias: &str, files: StreamsFiles) -> Published {
        let (os, _) = alias.split_once('/').unwrap();
        self.tree
            .add(&StreamsImage {
                os: os.into(),
                release: "1".into(),
                release_title: String::new(),
                version: "1".into(),
                arch: "amd64".into(),
                variant: "default".into(),
                serial: "20240501_05:24".into(),
                aliases: vec![alias.into()],
                files,
            })
            .expect("publish")
    }

    fn url(&self) -> String {
        self.server.url()
    }
}

fn metadata() -> &'static str {
    "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n"
}

fn random_file(path: &Path, mib: u32) {
    run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", path.display()))
        .args(["bs=1M", &format!("count={mib}"), "status=none"]));
}

fn run(cmd: &mut Command) {
    let out = output_within(cmd, b"", COMMAND_LIMIT);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

fn op(d: &TestDaemon, id: &str) -> Value {
    let (_, text) = d.http("GET", &format!("/1.0/operations/{id}"), b"");
    parse(&text)["metadata"].clone()
}

/// Waits until the running operation `id` satisfies `ready`; returns it.
fn op_when(d: &TestDaemon, id: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let mut seen = Value::Null;
    wait_until(what, Duration::from_secs(120), || {
        seen = op(d, id);
        assert!(
            seen["status_code"].as_u64().unwrap_or(0) < 200,
            "the operation ended before {what}: {seen}"
        );
        ready(&seen)
    });
    seen
}

/// Cancels operation `id` and waits for its end; returns it.
fn cancel(d: &TestDaemon, id: &str) -> Value {
    let (status, body) = d.http("DELETE", &format!("/1.0/operations/{id}"), b"");
    assert_eq!(status, 200, "{body}");
    let (_, text) = d.http(
        "GET",
        &format!("/1.0/operations/{id}/wait?timeout=120"),
        b"",
    );
    parse(&text)["metadata"].clone()
}

fn assert_cancelled(op: &Value) {
    assert_eq!(op["status_code"], 401, "{op}");
    assert_eq!(op["status"], "Cancelled", "{op}");
    assert_eq!(op["may_cancel"], false, "{op}");
    assert!(
        op["err"].as_str().unwrap_or_default().contains("canceled"),
        "{op}"
    );
}

fn names(d: &TestDaemon, path: &str) -> Vec<String> {
    let (_, text) = d.http("GET", path, b"");
    let mut out: Vec<String> = parse(&text)["metadata"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            v.as_str()
                .map(|s| s.rsplit('/').next().unwrap().to_string())
        })
        .collect();
    out.sort();
    out
}

/// What a directory holds (names), empty when it is missing.
fn entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// No image, no instance besides `keep`: not through the API, not in `images/`, not on
/// the default pool (a `dir` pool: volumes are directories).
fn assert_nothing_left(d: &TestDaemon, keep: &[&str], what: &str) {
    let keep: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    assert_eq!(names(d, "/1.0/instances"), keep, "instances after {what}");
    let pool = d.path().join("storage-pools/default");
    assert_eq!(
        entries(&pool.join("containers")),
        keep,
        "volumes after {what}"
    );
    assert_eq!(names(d, "/1.0/images"), Vec::<String>::new(), "{what}");
    assert_eq!(
        entries(&d.path().join("images")),
        Vec::<String>::new(),
        "{what}"
    );
    assert_eq!(
        entries(&pool.join("images")),
        Vec::<String>::new(),
        "{what}"
    );
}

fn daemon(env: &[(&str, &str)]) -> TestDaemon {
    TestDaemon::start_with_env(&["--storage-backend", "dir"], env)
}

fn pull_body(remote: &Remote, alias: &str) -> Value {
    json!({"type": "image", "mode": "pull", "server": remote.url(),
           "protocol": "simplestreams", "alias": alias})
}

#[test]
fn a_launch_cancelled_while_its_image_downloads_leaves_nothing() {
    if !require_root("a_launch_cancelled_while_its_image_downloads_leaves_nothing") {
        return;
    }
    let remote = Remote::new();
    let image = remote.publish_split();
    // The server sends the rootfs's first bytes, then nothing more.
    let rootfs = image.rootfs_path.clone().unwrap();
    remote
        .server
        .set_fault(&rootfs, Fault::Stall { after: 4096 });
    let d = daemon(&[]);
    let name = unique_name("dl");
    let body = json!({"name": name, "source": pull_body(&remote, "busybox/1")});
    let id = start_op(&d, "POST", "/1.0/instances", &body);
    let running = op_when(&d, &id, "the rootfs download", |o| {
        o["metadata"]["download_progress"]
            .as_str()
            .is_some_and(|p| p.starts_with("rootfs: "))
    });
    assert_eq!(running["may_cancel"], true, "{running}");
    assert_eq!(running["description"], "Creating instance");
    assert_cancelled(&cancel(&d, &id));
    assert_nothing_left(&d, &[], "a cancelled download");
    // The same image downloads whole afterwards.
    remote.server.clear_faults();
    let id = start_op(&d, "POST", "/1.0/instances", &body);
    let (_, text) = d.http(
        "GET",
        &format!("/1.0/operations/{id}/wait?timeout=120"),
        b"",
    );
    assert_eq!(parse(&text)["metadata"]["status_code"], 200, "{text}");
    // A cancel once the work is done is refused and changes nothing.
    let (status, _) = d.http("DELETE", &format!("/1.0/operations/{id}"), b"");
    assert_ne!(status, 200);
    assert_eq!(names(&d, "/1.0/instances"), vec![name.clone()]);
}

#[test]
fn an_image_download_cancelled_leaves_no_image() {
    if !require_root("an_image_download_cancelled_leaves_no_image") {
        return;
    }
    let remote = Remote::new();
    let image = remote.publish_split();
    let rootfs = image.rootfs_path.clone().unwrap();
    remote
        .server
        .set_fault(&rootfs, Fault::Stall { after: 4096 });
    let d = daemon(&[]);
    let body = json!({"source": pull_body(&remote, "busybox/1"), "aliases": [{"name": "bb"}]});
    let id = start_op(&d, "POST", "/1.0/images", &body);
    let running = op_when(&d, &id, "the rootfs download", |o| {
        o["metadata"]["download_progress"]
            .as_str()
            .is_some_and(|p| p.starts_with("rootfs: "))
    });
    assert_eq!(running["may_cancel"], true, "{running}");
    assert_eq!(running["description"], "Downloading image");
    assert_cancelled(&cancel(&d, &id));
    assert_nothing_left(&d, &[], "a cancelled image copy");
    assert_eq!(names(&d, "/1.0/images/aliases"), Vec::<String>::new());
}

#[test]
fn a_launch_cancelled_while_its_image_unpacks_leaves_nothing() {
    let test = "a_launch_cancelled_while_its_image_unpacks_leaves_nothing";
    if !require_root(test) {
        return;
    }
    if !cfg!(debug_assertions) {
        hutch_tests::skipped(test, "HUTCH_TEST_HOLD needs a debug build of hutchd");
        return;
    }
    let remote = Remote::new();
    let image = remote.publish_big(128);
    // Served at full speed; the daemon waits in its unpack once it is under way.
    let d = daemon(&[("HUTCH_TEST_HOLD", "unpack")]);
    let name = unique_name("unp");
    let body = json!({"name": name, "source": pull_body(&remote, "big/1")});
    let id = start_op(&d, "POST", "/1.0/instances", &body);
    let running = op_when(&d, &id, "the unpack", |o| {
        o["metadata"]["test_hold"] == "unpack"
    });
    assert_eq!(running["may_cancel"], true, "{running}");
    // Half made: the image volume is being unpacked under its staging name.
    let staging = d
        .path()
        .join("storage-pools/default/images")
        .join(format!(".{}.unpacking", image.fingerprint));
    assert!(
        staging.join("rootfs").exists(),
        "{:?}",
        entries(staging.parent().unwrap())
    );
    assert_cancelled(&cancel(&d, &id));
    assert_nothing_left(&d, &[], "a cancelled unpack");
}

#[test]
fn a_copy_cancelled_mid_way_leaves_no_target() {
    let test = "a_copy_cancelled_mid_way_leaves_no_target";
    if !require_root(test) {
        return;
    }
    if !cfg!(debug_assertions) {
        hutch_tests::skipped(test, "HUTCH_TEST_HOLD needs a debug build of hutchd");
        return;
    }
    let d = daemon(&[("HUTCH_TEST_HOLD", "copy")]);
    d.import_busybox(Via::Hutch);
    let src = unique_name("src");
    d.hutch_ok(&["init", "bb", &src]);
    // 300 MB in the source: a dir pool copies it byte by byte.
    let volume = d.path().join("storage-pools/default/containers").join(&src);
    random_file(&volume.join("rootfs/big"), 300);
    let dst = unique_name("dst");
    let body = json!({"name": dst, "source": {"type": "copy", "source": src}});
    let id = start_op(&d, "POST", "/1.0/instances", &body);
    let running = op_when(&d, &id, "the copy", |o| {
        o["metadata"]["test_hold"] == "copy"
    });
    assert_eq!(running["may_cancel"], true, "{running}");
    let pool = d.path().join("storage-pools/default/containers");
    assert!(
        entries(&pool).contains(&format!(".{dst}.copying")),
        "{:?}",
        entries(&pool)
    );
    assert_cancelled(&cancel(&d, &id));
    let (status, _) = d.http("GET", &format!("/1.0/instances/{dst}"), b"");
    assert_eq!(status, 404);
    assert_eq!(names(&d, "/1.0/instances"), vec![src.clone()]);
    assert_eq!(entries(&pool), vec![src.clone()]);
    // The source is whole.
    assert_eq!(
        std::fs::metadata(volume.join("rootfs/big")).unwrap().len(),
        300 << 20
    );
}

#[test]
fn ctrl_c_of_hutch_launch_cancels_the_launch() {
    if !require_root("ctrl_c_of_hutch_launch_cancels_the_launch") {
        return;
    }
    let remote = Remote::https();
    let image = remote.publish_split();
    let rootfs = image.rootfs_path.clone().unwrap();
    remote
        .server
        .set_fault(&rootfs, Fault::Stall { after: 4096 });
    let ca = remote.server.ca_file();
    let d = daemon(&[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let hutch = || {
        let mut cmd = Command::new(hutch_bin());
        cmd.env("HUTCH_DIR", d.path())
            .env("HUTCH_CONF", d.path().join("hutch-conf"))
            .env("SSL_CERT_FILE", &ca);
        cmd
    };
    let added = output_within(
        hutch().args([
            "remote",
            "add",
            "slow",
            &remote.url(),
            "--protocol",
            "simplestreams",
        ]),
        b"",
        COMMAND_LIMIT,
    );
    assert!(added.status.success(), "{added:?}");
    let name = unique_name("int");
    let mut hutch = hutch()
        .args(["launch", "slow:busybox/1", &name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hutch");
    // The launch's operation, once its download is under way.
    let mut id = String::new();
    wait_until("the launch's download", Duration::from_secs(120), || {
        let (_, text) = d.http("GET", "/1.0/operations?recursion=1", b"");
        let running = parse(&text)["metadata"]["running"].clone();
        let found = running.as_array().and_then(|ops| {
            ops.iter()
                .find(|o| {
                    o["description"] == "Creating instance"
                        && o["metadata"]["download_progress"]
                            .as_str()
                            .is_some_and(|p| p.starts_with("rootfs: "))
                })
                .cloned()
        });
        if let Some(o) = found {
            id = o["id"].as_str().unwrap().to_string();
        }
        !id.is_empty()
    });
    let pid = nix::unistd::Pid::from_raw(hutch.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut status = None;
    wait_until("hutch to exit", Duration::from_secs(120), || {
        status = hutch.try_wait().unwrap();
        status.is_some()
    });
    let out = hutch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.unwrap().code(), Some(130), "{stderr}");
    assert!(stderr.contains("Cancelling..."), "{stderr}");
    assert!(stderr.contains("Operation cancelled"), "{stderr}");
    assert_cancelled(&op(&d, &id));
    assert_nothing_left(&d, &[], "a launch stopped by Ctrl-C");
}
