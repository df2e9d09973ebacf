//! Serving images: simplestreams trees written by hutch (the tree writer and
//! `hutch image export-streams`), served over HTTPS on loopback by the test image server,
//! and read by LXD's `lxc` client and by hutch.

use std::path::Path;
use std::process::{Command, Output};

use hutch_images::streams_tree::{StreamsFiles, StreamsImage, StreamsTree};
use hutch_tests::{
    output_within, require_root, split_busybox, unique_name, ImageServer, TestDaemon, TestDir, Via,
    COMMAND_LIMIT,
};

fn busybox_product(serial: &str, files: StreamsFiles) -> StreamsImage {
    StreamsImage {
        os: "busybox".into(),
        release: "1".into(),
        release_title: String::new(),
        version: "1".into(),
        arch: "amd64".into(),
        variant: "default".into(),
        serial: serial.into(),
        aliases: vec!["busybox/1".into(), "busybox".into()],
        files,
    }
}

/// LXD's `lxc` client with its own config dir, trusting `ca_file`.
fn lxc(conf: &Path, ca_file: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("lxc");
    cmd.args(args)
        .env("LXD_CONF", conf)
        .env("HOME", conf)
        .env("SSL_CERT_FILE", ca_file)
        .env_remove("LXD_DIR");
    output_within(&mut cmd, b"", COMMAND_LIMIT)
}

fn lxc_ok(conf: &Path, ca_file: &Path, args: &[&str]) -> String {
    let out = lxc(conf, ca_file, args);
    assert!(
        out.status.success(),
        "lxc {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lxc_available(test: &str) -> bool {
    let ok = Command::new("lxc")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        hutch_tests::skipped(test, "LXD's lxc client is not installed");
    }
    ok
}

#[test]
fn lxc_lists_and_describes_a_tree_from_the_tree_writer() {
    let test = "lxc_lists_and_describes_a_tree_from_the_tree_writer";
    if !lxc_available(test) {
        return;
    }
    let dir = TestDir::new();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (meta, root) = split_busybox(&work, "20240501_05:24");
    let tree_dir = dir.path().join("tree");
    let tree = StreamsTree::new(&tree_dir);
    let v1 = tree
        .add(&busybox_product(
            "20240501_05:24",
            StreamsFiles::Split { meta, rootfs: root },
        ))
        .unwrap();
    let server = ImageServer::https(&tree_dir);
    let conf = dir.path().join("lxc-conf");
    let ca = server.ca_file();
    lxc_ok(
        &conf,
        &ca,
        &[
            "remote",
            "add",
            "bbstreams",
            &server.url(),
            "--protocol",
            "simplestreams",
            "--public",
        ],
    );
    let list = lxc_ok(
        &conf,
        &ca,
        &["image", "list", "bbstreams:", "--format", "csv"],
    );
    assert!(list.contains(&v1.fingerprint[..12]), "{list}");
    assert!(list.contains("busybox 1 amd64 (20240501_05:24)"), "{list}");

    // A newer serial takes the alias; the older one is still listed.
    let (meta2, root2) = split_busybox(&work, "20240502_05:24");
    let v2 = tree
        .add(&busybox_product(
            "20240502_05:24",
            StreamsFiles::Split {
                meta: meta2,
                rootfs: root2,
            },
        ))
        .unwrap();
    let info = lxc_ok(&conf, &ca, &["image", "info", "bbstreams:busybox/1"]);
    assert!(info.contains(&v2.fingerprint), "{info}");
    assert!(info.contains("serial: 20240502_05:24"), "{info}");
    let list = lxc_ok(
        &conf,
        &ca,
        &["image", "list", "bbstreams:", "--format", "csv"],
    );
    assert!(list.contains(&v1.fingerprint[..12]), "{list}");
    assert!(list.contains(&v2.fingerprint[..12]), "{list}");
    assert!(server
        .requests()
        .iter()
        .any(|p| p == "/streams/v1/images.json"));
}

/// Every fingerprint a tree's products file offers.
fn tree_fingerprints(tree: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(tree.join("streams/v1/images.json")).unwrap();
    let products: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut fps = Vec::new();
    for product in products["products"].as_object().unwrap().values() {
        for version in product["versions"].as_object().unwrap().values() {
            for item in version["items"].as_object().unwrap().values() {
                for key in ["combined_rootxz_sha256", "combined_squashfs_sha256"] {
                    if let Some(fp) = item[key].as_str() {
                        fps.push(fp.to_string());
                    }
                }
                if item["ftype"] == "lxd_combined.tar.gz" {
                    fps.push(item["sha256"].as_str().unwrap().to_string());
                }
            }
        }
    }
    fps.sort();
    fps
}

/// The image an alias points to, found in the alias list (hutchd refuses a `/` in an alias
/// name inside the URL, which LXD allows).
fn alias_target(d: &TestDaemon, alias: &str) -> String {
    let (status, body) = d.http("GET", "/1.0/images/aliases?recursion=1", b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let found = v["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == alias)
        .unwrap_or_else(|| panic!("no alias {alias} in {body}"));
    found["target"].as_str().unwrap().to_string()
}

#[test]
fn export_streams_writes_local_images_that_lxc_lists() {
    let test = "export_streams_writes_local_images_that_lxc_lists";
    if !require_root(test) || !lxc_available(test) {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    d.import_busybox(Via::Hutch);
    let dir = TestDir::new();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let (meta, root) = split_busybox(&work, "20240601_00:00");
    d.hutch_ok(&[
        "image",
        "import",
        meta.to_str().unwrap(),
        root.to_str().unwrap(),
        "--alias",
        "bbsplit",
    ]);
    // An image without an alias is left out by default.
    let (other_meta, other_root) = split_busybox(&work, "20240602_00:00");
    d.hutch_ok(&[
        "image",
        "import",
        other_meta.to_str().unwrap(),
        other_root.to_str().unwrap(),
    ]);
    let unified_fp = alias_target(&d, "bb");
    let split_fp = alias_target(&d, "bbsplit");

    let tree = dir.path().join("tree");
    let out = d.hutch_ok(&["image", "export-streams", tree.to_str().unwrap()]);
    assert!(out.contains("(2 images)"), "{out}");
    let mut expected = vec![unified_fp.clone(), split_fp.clone()];
    expected.sort();
    // The tree's fingerprints are the local ones: the exports are byte for byte.
    assert_eq!(tree_fingerprints(&tree), expected);
    // Nothing temporary is left in the tree.
    let names: Vec<String> = std::fs::read_dir(&tree)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "images" || n == "streams"),
        "{names:?}"
    );
    // Again: the same images are already there, nothing changes.
    let before = std::fs::read(tree.join("streams/v1/images.json")).unwrap();
    d.hutch_ok(&["image", "export-streams", tree.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(tree.join("streams/v1/images.json")).unwrap(),
        before
    );

    let server = ImageServer::https(&tree);
    let conf = dir.path().join("lxc-conf");
    let ca = server.ca_file();
    lxc_ok(
        &conf,
        &ca,
        &[
            "remote",
            "add",
            "exported",
            &server.url(),
            "--protocol",
            "simplestreams",
            "--public",
        ],
    );
    let list = lxc_ok(
        &conf,
        &ca,
        &["image", "list", "exported:", "--format", "csv"],
    );
    assert!(list.contains(&unified_fp[..12]), "{list}");
    assert!(list.contains(&split_fp[..12]), "{list}");
    let info = lxc_ok(&conf, &ca, &["image", "info", "exported:bbsplit"]);
    assert!(info.contains(&split_fp), "{info}");
    let info = lxc_ok(&conf, &ca, &["image", "info", "exported:bb"]);
    assert!(info.contains(&unified_fp), "{info}");

    // Named images only; an unknown name writes nothing.
    let one = dir.path().join("one");
    d.hutch_ok(&[
        "image",
        "export-streams",
        one.to_str().unwrap(),
        "local:bbsplit",
    ]);
    assert_eq!(tree_fingerprints(&one), [split_fp]);
    let none = dir.path().join("none");
    let err = d.hutch_err(&["image", "export-streams", none.to_str().unwrap(), "nosuch"]);
    assert!(err.contains("not found"), "{err}");
    assert!(!none.join("streams").exists());
}

fn parse(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// `POST /1.0/instances` pulling `alias` from the simplestreams server at `url`; the
/// finished operation.
fn create_from(d: &TestDaemon, url: &str, name: &str, alias: &str) -> serde_json::Value {
    let body = serde_json::json!({
        "name": name,
        "source": {"type": "image", "mode": "pull", "server": url,
                   "protocol": "simplestreams", "alias": alias},
    });
    let (status, text) = d.http("POST", "/1.0/instances", body.to_string().as_bytes());
    assert_eq!(status, 202, "{text}");
    let id = parse(&text)["metadata"]["id"].as_str().unwrap().to_string();
    let (_, text) = d.http(
        "GET",
        &format!("/1.0/operations/{id}/wait?timeout=120"),
        b"",
    );
    parse(&text)["metadata"].clone()
}

#[test]
fn an_exported_tree_feeds_a_second_hutchd_lxc_and_the_simplestreams_client() {
    let test = "an_exported_tree_feeds_a_second_hutchd_lxc_and_the_simplestreams_client";
    if !require_root(test) {
        return;
    }
    // The first daemon: a built (split, templated) image and the unified test image.
    let source = TestDaemon::start_with(&["--storage-backend", "dir"]);
    source.import_busybox(Via::Hutch);
    let out = source.hutch_ok(&["image", "build", "busybox", "--alias", "built/bb"]);
    assert!(out.contains("Image imported with fingerprint"), "{out}");
    let built_fp = alias_target(&source, "built/bb");
    let unified_fp = alias_target(&source, "bb");
    let dir = TestDir::new();
    let tree = dir.path().join("tree");
    source.hutch_ok(&["image", "export-streams", tree.to_str().unwrap()]);
    drop(source);

    let server = ImageServer::https(&tree);
    let ca = server.ca_file();

    // hutch's simplestreams client reads the tree as LXD would.
    std::env::set_var("SSL_CERT_FILE", &ca);
    let client = hutch_images::simplestreams::SimpleStreams::new(&server.url()).unwrap();
    let remote = client.resolve("built/bb").expect("resolve built/bb");
    assert_eq!(remote.fingerprint, built_fp);
    assert_eq!(remote.properties["os"], "busybox");
    assert_eq!(remote.properties["type"], "root.tar.xz");
    assert!(remote.rootfs.is_some());
    let remote = client.resolve("bb").expect("resolve bb");
    assert_eq!(remote.fingerprint, unified_fp);
    assert!(remote.rootfs.is_none());

    // A second hutchd pulls both by alias and runs them.
    let consumer = TestDaemon::start_with_env(
        &["--storage-backend", "dir"],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    for (alias, fp) in [("built/bb", &built_fp), ("bb", &unified_fp)] {
        let name = unique_name("exp");
        let op = create_from(&consumer, &server.url(), &name, alias);
        assert_eq!(op["status_code"], 200, "{alias}: {op}");
        let (_, inst) = consumer.http("GET", &format!("/1.0/instances/{name}"), b"");
        assert_eq!(
            parse(&inst)["metadata"]["config"]["volatile.base_image"],
            fp.as_str()
        );
        consumer.hutch_ok(&["start", &name]);
        assert_eq!(consumer.sh_ok(&name, "echo served").trim(), "served");
        consumer.hutch_ok(&["delete", "--force", &name]);
    }

    // LXD's lxc launches from it through the second hutchd.
    if lxc_available(test) {
        let lxc_in = |args: &[&str]| {
            let out = consumer.lxc_trusting(&ca, args);
            assert!(
                out.status.success(),
                "lxc {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        lxc_in(&[
            "remote",
            "add",
            "exported",
            &server.url(),
            "--protocol",
            "simplestreams",
            "--public",
        ]);
        let name = unique_name("lxe");
        lxc_in(&["launch", "exported:built/bb", &name]);
        let list = lxc_in(&["list", &name, "--format", "csv", "-c", "ns"]);
        assert!(list.contains("RUNNING"), "{list}");
        lxc_in(&["delete", "--force", &name]);
    }
}

#[test]
fn an_exported_debian_build_boots_from_a_second_hutchd() {
    let test = "an_exported_debian_build_boots_from_a_second_hutchd";
    if !require_root(test) {
        return;
    }
    if std::env::var("HUTCH_TEST_DEBIAN").as_deref() == Ok("0")
        && std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1")
    {
        hutch_tests::skipped(test, "HUTCH_TEST_DEBIAN=0");
        return;
    }
    // The builder starts from the test suite's debootstrap cache (filled once per machine).
    let source = TestDaemon::start_with(&["--storage-backend", "dir"]);
    source
        .build_debian("debian/12")
        .expect("the Debian test cache");
    let fp = alias_target(&source, "debian/12");
    let dir = TestDir::new();
    let tree = dir.path().join("tree");
    source.hutch_ok(&[
        "image",
        "export-streams",
        tree.to_str().unwrap(),
        "debian/12",
    ]);
    drop(source);
    let text = std::fs::read_to_string(tree.join("streams/v1/images.json")).unwrap();
    let products = parse(&text);
    let product = &products["products"][format!(
        "debian:bookworm:{}:default",
        std::env::consts::ARCH.replace("x86_64", "amd64")
    )
    .as_str()];
    assert_eq!(product["os"], "Debian", "{text}");
    assert_eq!(product["aliases"], "debian/12");

    let server = ImageServer::https(&tree);
    let ca = server.ca_file();
    let consumer = TestDaemon::start_with_env(
        &["--storage-backend", "dir"],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    let name = unique_name("deb");
    let op = create_from(&consumer, &server.url(), &name, "debian/12");
    assert_eq!(op["status_code"], 200, "{op}");
    let (_, inst) = consumer.http("GET", &format!("/1.0/instances/{name}"), b"");
    let config = &parse(&inst)["metadata"]["config"];
    assert_eq!(config["volatile.base_image"], fp.as_str());
    assert_eq!(config["image.os"], "Debian");
    assert_eq!(config["image.release"], "bookworm");
    consumer.hutch_ok(&["start", &name]);
    let state = || {
        consumer
            .sh(&name, "systemctl is-system-running 2>/dev/null")
            .1
            .trim()
            .to_string()
    };
    hutch_tests::wait_until(
        "systemd to finish starting",
        std::time::Duration::from_secs(90),
        || matches!(state().as_str(), "running" | "degraded"),
    );
    assert_eq!(
        state(),
        "running",
        "{}",
        consumer.sh(&name, "systemctl --failed").1
    );
    consumer.hutch_ok(&["delete", "--force", &name]);
}
