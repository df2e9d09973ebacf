//! LXD-protocol image servers: hutchd pulls public images from a reference LXD (unified and
//! split, by alias and by fingerprint, for a launch and for `POST /1.0/images`), pinned to
//! the server's certificate, caches them, refreshes them from their alias, and leaves
//! nothing behind when a pull fails (wrong certificate, private image, unreachable
//! server, an export that is cut short or is not the image it claims). Over hutchd's HTTPS
//! listener, hutchd also pulls public images from another hutchd, and LXD pulls from
//! hutchd (`lxc image copy h1:<alias> local:`).

use std::path::PathBuf;

use hutch_tests::{
    busybox_image, require_root, split_busybox, unique_name, ReferenceLxd, TestDaemon, TestDir,
};
use serde_json::{json, Value};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Starts an async request; returns the operation id.
fn start_op(d: &TestDaemon, method: &str, path: &str, body: &Value) -> String {
    let (status, text) = d.http(method, path, body.to_string().as_bytes());
    assert_eq!(status, 202, "{method} {path}: {text}");
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

/// An image source on the LXD-protocol server at `server`.
fn source(server: &str, certificate: &str, name: Name) -> Value {
    let mut s = json!({"type": "image", "mode": "pull", "server": server,
                       "protocol": "lxd", "certificate": certificate});
    match name {
        Name::Alias(a) => s["alias"] = json!(a),
        Name::Fingerprint(f) => s["fingerprint"] = json!(f),
    }
    s
}

#[derive(Clone, Copy)]
enum Name<'a> {
    Alias(&'a str),
    Fingerprint(&'a str),
}

/// `POST /1.0/instances` from `source`; the finished operation.
fn create(d: &TestDaemon, name: &str, source: Value) -> Value {
    let id = start_op(
        d,
        "POST",
        "/1.0/instances",
        &json!({"name": name, "source": source}),
    );
    wait_op(d, &id)
}

/// `POST /1.0/images` from `source`; the finished operation.
fn copy_image(d: &TestDaemon, source: Value, extra: Value) -> Value {
    let mut body = json!({"source": source});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let id = start_op(d, "POST", "/1.0/images", &body);
    wait_op(d, &id)
}

fn images(d: &TestDaemon) -> Vec<Value> {
    let (_, text) = d.http("GET", "/1.0/images?recursion=1", b"");
    parse(&text)["metadata"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn image(d: &TestDaemon, fp: &str) -> Value {
    let (status, text) = d.http("GET", &format!("/1.0/images/{fp}"), b"");
    assert_eq!(status, 200, "{text}");
    parse(&text)["metadata"].clone()
}

/// The image an alias of `d` names.
fn aliased(d: &TestDaemon, alias: &str) -> Value {
    let (status, text) = d.http("GET", &format!("/1.0/images/aliases/{alias}"), b"");
    assert_eq!(status, 200, "{text}");
    image(d, parse(&text)["metadata"]["target"].as_str().unwrap())
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

/// The failed operation's error, which must contain `want` (in any case).
fn assert_failed(op: &Value, want: &str) {
    assert_ne!(op["status_code"], 200, "{op}");
    let err = op["err"].as_str().unwrap_or_default().to_lowercase();
    assert!(err.contains(&want.to_lowercase()), "{want:?} not in {op}");
}

fn started(d: &TestDaemon, name: &str) {
    d.hutch_ok(&["start", name]);
    assert_eq!(d.sh_ok(name, "echo booted").trim(), "booted");
    d.hutch_ok(&["delete", "--force", name]);
}

/// Images imported into a reference LXD: a unified one and a split one.
struct LxdImages {
    work: TestDir,
    unified: String,
    split: String,
}

/// Imports `args` (`image import ...`) into `lxd`; the fingerprint `alias` names.
fn lxd_import(lxd: &ReferenceLxd, args: &[&str], alias: &str) -> String {
    lxd.lxc_ok(args);
    let text = lxd.lxc_ok(&["query", &format!("/1.0/images/aliases/{alias}")]);
    parse(&text)["target"].as_str().unwrap().to_string()
}

impl LxdImages {
    /// A unified busybox image under `uni`, a split one under `split`, both public
    /// unless `public` is false.
    fn import(lxd: &ReferenceLxd, public: bool) -> LxdImages {
        let work = TestDir::new();
        let unified = work.path().join("bb.tar.gz");
        busybox_image(work.path(), &unified).expect("unified busybox image");
        let (meta, root) = split_busybox(work.path(), "1");
        let visibility: &[&str] = if public { &["--public"] } else { &[] };
        let path = |p: &PathBuf| p.to_str().unwrap().to_string();
        let (u, m, r) = (path(&unified), path(&meta), path(&root));
        let mut args = vec!["image", "import", u.as_str(), "--alias", "uni"];
        args.extend(visibility);
        let unified = lxd_import(lxd, &args, "uni");
        let mut args = vec![
            "image",
            "import",
            m.as_str(),
            r.as_str(),
            "--alias",
            "split",
        ];
        args.extend(visibility);
        let split = lxd_import(lxd, &args, "split");
        LxdImages {
            work,
            unified,
            split,
        }
    }
}

fn reference_lxd(test: &str) -> Option<ReferenceLxd> {
    if !require_root(test) {
        return None;
    }
    ReferenceLxd::start(test)
}

fn hutchd() -> TestDaemon {
    TestDaemon::start_with(&["--storage-backend", "dir"])
}

#[test]
fn launches_pull_public_lxd_images_by_alias_and_fingerprint_then_use_the_cache() {
    let Some(lxd) = reference_lxd(
        "launches_pull_public_lxd_images_by_alias_and_fingerprint_then_use_the_cache",
    ) else {
        return;
    };
    let imgs = LxdImages::import(&lxd, true);
    let cert = lxd.server_cert();
    let d = hutchd();

    // A unified image by alias: cached, refreshed from the alias with the certificate.
    let c1 = unique_name("lxdp");
    let op = create(&d, &c1, source(&lxd.url, &cert, Name::Alias("uni")));
    assert_eq!(op["status_code"], 200, "{op}");
    let got = image(&d, &imgs.unified);
    assert_eq!(got["cached"], true);
    assert_eq!(got["update_source"]["alias"], "uni");
    assert_eq!(got["update_source"]["protocol"], "lxd");
    assert_eq!(got["update_source"]["server"], lxd.url.as_str());
    assert_eq!(got["update_source"]["certificate"], cert.as_str());
    assert_eq!(got["properties"]["os"], "busybox");
    started(&d, &c1);

    // A split image by a fingerprint prefix: not an alias, so nothing to refresh from.
    let c2 = unique_name("lxdp");
    let op = create(
        &d,
        &c2,
        source(&lxd.url, &cert, Name::Fingerprint(&imgs.split[..12])),
    );
    assert_eq!(op["status_code"], 200, "{op}");
    let split = image(&d, &imgs.split);
    assert!(split["update_source"].is_null(), "{split}");
    assert!(d
        .path()
        .join(format!("images/{}.rootfs", imgs.split))
        .exists());
    started(&d, &c2);

    // Second launches use the store: no new image, the stored ones untouched.
    let before = images(&d);
    let c3 = unique_name("lxdp");
    let op = create(&d, &c3, source(&lxd.url, &cert, Name::Alias("split")));
    assert_eq!(op["status_code"], 200, "{op}");
    let c4 = unique_name("lxdp");
    let op = create(&d, &c4, source(&lxd.url, &cert, Name::Alias("uni")));
    assert_eq!(op["status_code"], 200, "{op}");
    let uploaded = |imgs: &[Value]| {
        let mut v: Vec<String> = imgs
            .iter()
            .map(|i| format!("{} {}", i["fingerprint"], i["uploaded_at"]))
            .collect();
        v.sort();
        v
    };
    assert_eq!(uploaded(&images(&d)), uploaded(&before));
    started(&d, &c3);
    d.hutch_ok(&["delete", "--force", &c4]);
    drop(imgs.work);
}

#[test]
fn image_copies_from_lxd_refresh_from_their_alias() {
    let Some(lxd) = reference_lxd("image_copies_from_lxd_refresh_from_their_alias") else {
        return;
    };
    let imgs = LxdImages::import(&lxd, true);
    let cert = lxd.server_cert();
    let d = hutchd();

    // By fingerprint, unified, with an alias of our own.
    let op = copy_image(
        &d,
        source(&lxd.url, &cert, Name::Fingerprint(&imgs.unified)),
        json!({"aliases": [{"name": "mine"}]}),
    );
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(op["metadata"]["fingerprint"], imgs.unified.as_str());
    let got = aliased(&d, "mine");
    assert_eq!(got["cached"], false);
    let c1 = unique_name("lxdc");
    d.hutch_ok(&["launch", "mine", &c1]);
    assert_eq!(d.sh_ok(&c1, "echo copied").trim(), "copied");
    d.hutch_ok(&["delete", "--force", &c1]);

    // By alias, split, auto-updating: a new version behind the alias on LXD is brought
    // by a refresh, which moves our alias too.
    let op = copy_image(
        &d,
        source(&lxd.url, &cert, Name::Alias("split")),
        json!({"aliases": [{"name": "bb-split"}], "auto_update": true}),
    );
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(aliased(&d, "bb-split")["fingerprint"], imgs.split.as_str());
    let (meta, root) = split_busybox(imgs.work.path(), "2");
    lxd.lxc_ok(&["image", "alias", "delete", "split"]);
    let newer = lxd_import(
        &lxd,
        &[
            "image",
            "import",
            meta.to_str().unwrap(),
            root.to_str().unwrap(),
            "--public",
            "--alias",
            "split",
        ],
        "split",
    );
    assert_ne!(newer, imgs.split);
    let id = start_op(
        &d,
        "POST",
        &format!("/1.0/images/{}/refresh", imgs.split),
        &json!({}),
    );
    let op = wait_op(&d, &id);
    assert_eq!(op["status_code"], 200, "{op}");
    let now = aliased(&d, "bb-split");
    assert_eq!(now["fingerprint"], newer.as_str());
    assert_eq!(now["update_source"]["protocol"], "lxd");
    assert_eq!(now["properties"]["serial"], "2");
    let (status, _) = d.http("GET", &format!("/1.0/images/{}", imgs.split), b"");
    assert_eq!(status, 404);
}

#[test]
fn failed_pulls_from_lxd_leave_nothing() {
    let Some(lxd) = reference_lxd("failed_pulls_from_lxd_leave_nothing") else {
        return;
    };
    let public = LxdImages::import(&lxd, true);
    let d = hutchd();

    // Another server's certificate: the TLS handshake fails, nothing is made.
    let wrong = d.server_cert();
    let op = create(
        &d,
        &unique_name("lxdf"),
        source(&lxd.url, &wrong, Name::Alias("uni")),
    );
    assert_failed(&op, "remote image info");
    assert_nothing_left(&d);
    let op = copy_image(
        &d,
        source(&lxd.url, &wrong, Name::Fingerprint(&public.split)),
        json!({}),
    );
    assert_failed(&op, "remote image info");
    assert_nothing_left(&d);

    // Not a certificate at all: refused before anything starts.
    let body = json!({"name": unique_name("lxdf"),
                      "source": source(&lxd.url, "junk", Name::Alias("uni"))});
    let (status, text) = d.http("POST", "/1.0/instances", body.to_string().as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("Invalid certificate"), "{text}");

    // Nothing listening there.
    let gone = format!("https://127.0.0.1:{}", hutch_tests::free_port());
    let op = create(
        &d,
        &unique_name("lxdf"),
        source(&gone, &lxd.server_cert(), Name::Alias("uni")),
    );
    assert_failed(&op, "remote image info");
    assert_nothing_left(&d);

    // No such image.
    let op = create(
        &d,
        &unique_name("lxdf"),
        source(&lxd.url, &lxd.server_cert(), Name::Alias("nope")),
    );
    assert_failed(&op, "not found");
    assert_nothing_left(&d);
}

#[test]
fn private_lxd_images_need_their_secret() {
    let Some(lxd) = reference_lxd("private_lxd_images_need_their_secret") else {
        return;
    };
    let private = LxdImages::import(&lxd, false);
    let cert = lxd.server_cert();
    let d = hutchd();

    // Without a secret, a private image is not there, by alias or by fingerprint.
    for name in [Name::Alias("uni"), Name::Fingerprint(&private.unified)] {
        let op = create(&d, &unique_name("lxds"), source(&lxd.url, &cert, name));
        assert_failed(&op, "not found");
        assert_nothing_left(&d);
    }

    // With the one-time secret LXD hands out, it is pulled (a split one here).
    let text = lxd.lxc_ok(&[
        "query",
        "-X",
        "POST",
        &format!("/1.0/images/{}/secret", private.split),
    ]);
    let secret = parse(&text)["metadata"]["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no secret in {text}"))
        .to_string();
    let mut src = source(&lxd.url, &cert, Name::Fingerprint(&private.split));
    src["secret"] = json!(secret);
    let op = copy_image(&d, src, json!({}));
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(
        image(&d, &private.split)["fingerprint"],
        private.split.as_str()
    );
}

/// A busybox image in `d` under `alias`, unified or split, made public; its fingerprint.
fn public_hutchd_image(d: &TestDaemon, alias: &str, split: bool) -> String {
    let work = TestDir::new();
    let out = if split {
        let (meta, root) = split_busybox(work.path(), alias);
        d.hutch_ok(&[
            "image",
            "import",
            meta.to_str().unwrap(),
            root.to_str().unwrap(),
            "--alias",
            alias,
        ])
    } else {
        let file = work.path().join("bb.tar.gz");
        busybox_image(work.path(), &file).expect("busybox image");
        d.hutch_ok(&["image", "import", file.to_str().unwrap(), "--alias", alias])
    };
    assert!(out.contains("fingerprint"), "{out}");
    let (_, text) = d.http("GET", &format!("/1.0/images/aliases/{alias}"), b"");
    let fp = parse(&text)["metadata"]["target"]
        .as_str()
        .unwrap()
        .to_string();
    // Public, as `hutch image edit` makes it.
    let mut put = image(d, &fp);
    put["public"] = json!(true);
    let (status, text) = d.http(
        "PUT",
        &format!("/1.0/images/{fp}"),
        put.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    fp
}

#[test]
fn hutchd_pulls_public_images_from_another_hutchd() {
    let test = "hutchd_pulls_public_images_from_another_hutchd";
    if !require_root(test) {
        return;
    }
    let server = hutchd();
    let url = server.enable_https();
    let unified = public_hutchd_image(&server, "uni", false);
    let split = public_hutchd_image(&server, "split", true);
    let cert = server.server_cert();
    let d = hutchd();
    let c1 = unique_name("hh");
    let op = create(&d, &c1, source(&url, &cert, Name::Alias("uni")));
    assert_eq!(op["status_code"], 200, "{op}");
    assert_eq!(image(&d, &unified)["update_source"]["protocol"], "lxd");
    started(&d, &c1);
    let op = copy_image(
        &d,
        source(&url, &cert, Name::Fingerprint(&split)),
        json!({"aliases": [{"name": "s"}]}),
    );
    assert_eq!(op["status_code"], 200, "{op}");
    let c2 = unique_name("hh");
    d.hutch_ok(&["launch", "s", &c2]);
    assert_eq!(d.sh_ok(&c2, "echo split").trim(), "split");
    d.hutch_ok(&["delete", "--force", &c2]);

    // An image that is not public is not there for an untrusted caller.
    let work = TestDir::new();
    let file = work.path().join("bb.tar.gz");
    busybox_image(work.path(), &file).expect("busybox image");
    server.hutch_ok(&["image", "import", file.to_str().unwrap(), "--alias", "priv"]);
    let op = copy_image(&d, source(&url, &cert, Name::Alias("priv")), json!({}));
    assert_failed(&op, "not found");
}

#[test]
fn lxd_copies_public_images_from_hutchd() {
    let test = "lxd_copies_public_images_from_hutchd";
    let Some(lxd) = reference_lxd(test) else {
        return;
    };
    let d = hutchd();
    let url = d.enable_https();
    let unified = public_hutchd_image(&d, "uni", false);
    let split = public_hutchd_image(&d, "split", true);
    lxd.lxc_ok(&[
        "remote",
        "add",
        "h1",
        &url,
        "--public",
        "--accept-certificate",
    ]);
    for (alias, fp) in [("uni", &unified), ("split", &split)] {
        lxd.lxc_ok(&[
            "image",
            "copy",
            &format!("h1:{alias}"),
            "local:",
            "--alias",
            alias,
        ]);
        let text = lxd.lxc_ok(&["query", &format!("/1.0/images/aliases/{alias}")]);
        assert_eq!(parse(&text)["target"], fp.as_str());
        let name = unique_name("lxdh");
        lxd.lxc_ok(&["init", alias, &name]);
        lxd.lxc_ok(&["delete", &name]);
    }
}

/// A hostile LXD-protocol server over HTTPS (a certificate from a test CA): it answers
/// the image API for one image, claiming `fingerprint`, and sends `export` as that image's
/// export (other bytes than the fingerprint names, a body cut short).
struct FakeLxd {
    url: String,
    ca: hutch_tests::TestCa,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the fake server sends for the export.
struct FakeExport {
    content_type: String,
    /// Content-Length to announce (the whole body's, even when less is sent).
    length: Option<usize>,
    body: Vec<u8>,
    /// How much of `body` is sent before the connection is closed.
    send: usize,
}

impl FakeLxd {
    fn start(fingerprint: &str, export: FakeExport) -> FakeLxd {
        use std::io::{BufRead, BufReader, Write};
        let ca = hutch_tests::TestCa::new();
        let (chain, key) = ca.server_cert();
        let config = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fp = fingerprint.to_string();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(30)));
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
                let mut line = String::new();
                if tls.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                loop {
                    let mut h = String::new();
                    if tls.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                }
                let json = |status: &str, body: Value| {
                    let text = body.to_string();
                    format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len()).into_bytes()
                };
                let reply = if path == "/1.0/images/aliases/bb" {
                    json(
                        "200 OK",
                        json!({"type": "sync", "metadata": {"name": "bb", "target": fp, "type": "container"}}),
                    )
                } else if path == format!("/1.0/images/{fp}") {
                    json(
                        "200 OK",
                        json!({"type": "sync", "metadata": {
                        "fingerprint": fp, "architecture": "x86_64", "type": "container",
                        "public": true, "size": export.body.len(), "filename": "bb.tar.gz",
                        "properties": {"os": "busybox"}}}),
                    )
                } else if path == format!("/1.0/images/{fp}/export") {
                    let mut head = format!("HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Disposition: attachment; filename=bb.tar.gz\r\nConnection: close\r\n", export.content_type);
                    if let Some(n) = export.length {
                        head.push_str(&format!("Content-Length: {n}\r\n"));
                    }
                    head.push_str("\r\n");
                    let mut out = head.into_bytes();
                    out.extend_from_slice(&export.body[..export.send]);
                    out
                } else {
                    json(
                        "404 Not Found",
                        json!({"type": "error", "error": "Image not found", "error_code": 404}),
                    )
                };
                let tls = tls.get_mut();
                let _ = tls.write_all(&reply);
                tls.conn.send_close_notify();
                let _ = tls.flush();
                let _ = tls.sock.shutdown(std::net::Shutdown::Both);
            }
        });
        FakeLxd {
            url: format!("https://{addr}"),
            ca,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeLxd {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.url.trim_start_matches("https://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// A split image as a multipart export body (Go's writer's layout).
fn multipart(boundary: &str, meta: &[u8], root: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (name, data)) in [("metadata", meta), ("rootfs", root)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.tar.xz\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        out.extend_from_slice(data);
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[test]
fn bad_exports_leave_nothing() {
    if !require_root("bad_exports_leave_nothing") {
        return;
    }
    let work = TestDir::new();
    let unified_file = work.path().join("bb.tar.gz");
    busybox_image(work.path(), &unified_file).expect("busybox image");
    let unified = std::fs::read(&unified_file).unwrap();
    let (meta, root) = split_busybox(work.path(), "1");
    let (meta, root) = (std::fs::read(meta).unwrap(), std::fs::read(root).unwrap());
    let split_fp = sha256_hex(&[&meta, &root]);
    let split_body = multipart("xYz", &meta, &root);
    let cut = meta.len() + (root.len() / 2);
    let cases = [
        // Whole, but not the image the fingerprint names.
        (
            "doesn't match",
            sha256_hex(&[b"another image"]),
            FakeExport {
                content_type: "application/octet-stream".into(),
                length: Some(unified.len()),
                send: unified.len(),
                body: unified.clone(),
            },
        ),
        // Cut short while announcing its whole length.
        (
            "download",
            sha256_hex(&[&unified]),
            FakeExport {
                content_type: "application/octet-stream".into(),
                length: Some(unified.len()),
                send: unified.len() / 2,
                body: unified.clone(),
            },
        ),
        // A split image cut in its rootfs (mid-unpack), no length announced.
        (
            "closing delimiter",
            split_fp.clone(),
            FakeExport {
                content_type: "multipart/form-data; boundary=xYz".into(),
                length: None,
                send: cut,
                body: split_body.clone(),
            },
        ),
        // Parts in the wrong order.
        (
            "Invalid multipart image",
            split_fp.clone(),
            FakeExport {
                content_type: "multipart/form-data; boundary=xYz".into(),
                length: None,
                send: split_body.len(),
                body: split_body
                    .replace_first(b"name=\"metadata\"", b"name=\"rootfs\"\x20\x20\x20"),
            },
        ),
    ];
    for (want, fp, export) in cases {
        let fake = FakeLxd::start(&fp, export);
        let ca = fake.ca.ca_file();
        let d = TestDaemon::start_with_env(
            &["--storage-backend", "dir"],
            &[("SSL_CERT_FILE", ca.to_str().unwrap())],
        );
        // No certificate: the server is checked against the CAs (the test's here).
        let op = create(
            &d,
            &unique_name("bad"),
            source(&fake.url, "", Name::Alias("bb")),
        );
        assert_failed(&op, want);
        assert_nothing_left(&d);
    }

    // The same server whole and honest: the pull works (the fake is a fair LXD).
    let fake = FakeLxd::start(
        &split_fp,
        FakeExport {
            content_type: "multipart/form-data; boundary=xYz".into(),
            length: Some(split_body.len()),
            send: split_body.len(),
            body: split_body,
        },
    );
    let ca = fake.ca.ca_file();
    let d = TestDaemon::start_with_env(
        &["--storage-backend", "dir"],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    let name = unique_name("good");
    let op = create(&d, &name, source(&fake.url, "", Name::Alias("bb")));
    assert_eq!(op["status_code"], 200, "{op}");
    started(&d, &name);
}

/// Byte-string replacement of the first occurrence, same length.
trait ReplaceFirst {
    fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceFirst for Vec<u8> {
    fn replace_first(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = self
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern");
        let mut out = self.clone();
        out.splice(at..at + from.len(), to.iter().copied());
        out
    }
}

#[test]
fn lxc_launches_on_hutchd_from_an_lxd_remote() {
    let Some(lxd) = reference_lxd("lxc_launches_on_hutchd_from_an_lxd_remote") else {
        return;
    };
    let imgs = LxdImages::import(&lxd, true);
    let d = hutchd();
    // LXD's own client, driving hutchd, with the reference LXD as a public remote: it
    // sends the source with the remote's certificate, as it would to LXD.
    d.lxc_ok(&[
        "remote",
        "add",
        "lx",
        &lxd.url,
        "--public",
        "--accept-certificate",
    ]);
    let name = unique_name("lxcl");
    d.lxc_ok(&["launch", "lx:split", &name]);
    assert_eq!(d.sh_ok(&name, "echo launched").trim(), "launched");
    let got = image(&d, &imgs.split);
    assert_eq!(got["update_source"]["protocol"], "lxd");
    assert_eq!(
        got["update_source"]["certificate"],
        lxd.server_cert().as_str()
    );
    d.lxc_ok(&["delete", "--force", &name]);
    d.lxc_ok(&["image", "copy", "lx:uni", "local:", "--alias", "u"]);
    assert_eq!(aliased(&d, "u")["fingerprint"], imgs.unified.as_str());
}
