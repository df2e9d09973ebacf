//! API gaps `lxc` trips on, and the `hutch image` commands that match `lxc image`: split
//! images imported by both clients (tarball and squashfs root filesystems), launched,
//! exported as two files; bad multipart bodies refused; `lxc copy --instance-only`;
//! `image show|edit|info|list|alias|refresh` through hutch and lxc, outputs compared.
//! Needs root (containers boot) and LXD's `lxc`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use hutch_tests::{busybox_image, require_root, TestDaemon};
use serde_json::Value;

/// sha256 of the files one after the other: LXD's fingerprint of a split image.
fn sha256_of(parts: &[&Path]) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("cat \"$@\" | sha256sum")
        .arg("sh")
        .args(parts)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A split busybox image: `meta.tar.xz`, `rootfs.tar.gz` and a second root filesystem of
/// the same tree in `work`: `rootfs.squashfs` with `squashfs`, else `rootfs.tar.xz`; that
/// second one's path.
fn split_image(work: &Path, squashfs: bool) -> PathBuf {
    fs::create_dir_all(work).unwrap();
    hutch_tests::busybox_rootfs(&work.join("rootfs")).unwrap();
    fs::write(
        work.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n  description: split busybox\n",
    )
    .unwrap();
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(work)
            .arg("-cJf")
            .arg(work.join("meta.tar.xz"))
            .arg("metadata.yaml"),
    );
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(work.join("rootfs"))
            .arg("-czf")
            .arg(work.join("rootfs.tar.gz"))
            .arg("."),
    );
    if !squashfs {
        let txz = work.join("rootfs.tar.xz");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(work.join("rootfs"))
                .arg("-cJf")
                .arg(&txz)
                .arg("."),
        );
        return txz;
    }
    let sqfs = work.join("rootfs.squashfs");
    run_ok(
        Command::new("mksquashfs")
            .arg(work.join("rootfs"))
            .arg(&sqfs)
            .args(["-noappend", "-quiet", "-no-progress", "-all-root"]),
    );
    sqfs
}

/// The file names in a directory, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// One raw request on the socket with the given content type; the status and body.
fn post_raw(d: &TestDaemon, ctype: &str, body: &[u8]) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    let head = format!(
        "POST /1.0/images HTTP/1.1\r\nHost: unix.socket\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn split_images_through_lxc_and_hutch() {
    if !require_root("split_images_through_lxc_and_hutch") {
        return;
    }
    let have_squashfs = Command::new("mksquashfs")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_squashfs {
        assert!(
            std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1"),
            "mksquashfs is not installed (apt-get install squashfs-tools)"
        );
        // The rest holds for any second rootfs: a tar.xz stands in.
        hutch_tests::skipped(
            "split_images_through_lxc_and_hutch (its squashfs rootfs part)",
            "no mksquashfs (squashfs-tools)",
        );
    }
    let d = TestDaemon::start();
    let work = d.path().join("split");
    // `sqfs`: the squashfs rootfs, or where mksquashfs is missing a tar.xz.
    let sqfs = split_image(&work, have_squashfs);
    let sq_ext = if have_squashfs { "squashfs" } else { "tar.xz" };
    let (meta, tgz) = (work.join("meta.tar.xz"), work.join("rootfs.tar.gz"));
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // Imported by lxc (tarball rootfs) and by hutch (the second rootfs): LXD's fingerprints.
    let fp_lxc = sha256_of(&[&meta, &tgz]);
    let out = d.lxc_ok(&["image", "import", &s(&meta), &s(&tgz), "--alias", "lx"]);
    assert!(out.contains(&fp_lxc), "{out}");
    let fp_sq = sha256_of(&[&meta, &sqfs]);
    let out = d.hutch_ok(&[
        "image",
        "import",
        &s(&meta),
        &s(&sqfs),
        "local:",
        "variant=squash fs",
        "--alias",
        "hs",
    ]);
    assert_eq!(out, format!("Image imported with fingerprint: {fp_sq}\n"));
    // Properties given on the command line (X-LXD-properties) join metadata.yaml's.
    assert_eq!(
        d.lxc_ok(&["image", "get-property", "hs", "variant"]),
        "squash fs\n"
    );
    // hutch imports a tarball rootfs too (the same image: refused as a duplicate).
    let dup = d.hutch(&["image", "import", &s(&meta), &s(&tgz)], b"");
    assert!(!dup.status.success());
    assert!(stderr_of(&dup).contains("already exists"), "{dup:?}");

    // Both launch.
    d.hutch_ok(&["launch", "hs", "sq1"]);
    d.lxc_ok(&["launch", "lx", "lx1"]);
    for c in ["sq1", "lx1"] {
        assert_eq!(
            d.hutch_ok(&["exec", c, "--", "cat", "/proc/1/comm"]).trim(),
            "init"
        );
        d.hutch_ok(&["delete", "--force", c]);
    }

    // Exported as two files, as LXD names them, with the bytes imported.
    for (client, fp, rootfs, ext) in [
        ("lxc", &fp_lxc, &tgz, "tar.gz"),
        ("hutch", &fp_lxc, &tgz, "tar.gz"),
        ("lxc", &fp_sq, &sqfs, sq_ext),
        ("hutch", &fp_sq, &sqfs, sq_ext),
    ] {
        let dir = d.path().join(format!("export-{client}-{ext}"));
        fs::create_dir(&dir).unwrap();
        let args = ["image", "export", &fp[..12], dir.to_str().unwrap()];
        if client == "lxc" {
            d.lxc_ok(&args);
        } else {
            assert_eq!(d.hutch_ok(&args), "Image exported successfully!\n");
        }
        let (m, r) = (format!("meta-{fp}.tar.xz"), format!("{fp}.{ext}"));
        let mut want = vec![m.clone(), r.clone()];
        want.sort();
        assert_eq!(names_in(&dir), want, "{client}");
        assert_eq!(fs::read(dir.join(&m)).unwrap(), fs::read(&meta).unwrap());
        assert_eq!(fs::read(dir.join(&r)).unwrap(), fs::read(rootfs).unwrap());
    }
    // To a file name: TARGET and TARGET.root, as lxc writes them.
    for client in ["lxc", "hutch"] {
        let to = d.path().join(format!("named-{client}"));
        let args = ["image", "export", "lx", to.to_str().unwrap()];
        if client == "lxc" {
            d.lxc_ok(&args);
        } else {
            d.hutch_ok(&args);
        }
        assert_eq!(fs::read(&to).unwrap(), fs::read(&meta).unwrap());
        let root = d.path().join(format!("named-{client}.root"));
        assert_eq!(fs::read(root).unwrap(), fs::read(&tgz).unwrap());
    }

    // Bad multipart bodies: 400, and nothing is left of them.
    let part = |name: &str, data: &[u8]| {
        let mut v = format!("--B\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
        v.extend_from_slice(data);
        v.extend_from_slice(b"\r\n");
        v
    };
    let meta_bytes = fs::read(&meta).unwrap();
    let mut only_meta = part("metadata", &meta_bytes);
    only_meta.extend_from_slice(b"--B--\r\n");
    let mut swapped = part("rootfs", b"x");
    swapped.extend(part("metadata", &meta_bytes));
    swapped.extend_from_slice(b"--B--\r\n");
    let mut cut = part("metadata", &meta_bytes);
    cut.extend_from_slice(&part("rootfs", &fs::read(&tgz).unwrap())[..4096]);
    for body in [only_meta, swapped, cut, b"garbage".to_vec()] {
        let (status, resp) = post_raw(&d, "multipart/form-data; boundary=B", &body);
        assert_eq!(status, 400, "{resp}");
    }
    // A client that hangs up half-way: its upload files are removed.
    {
        let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
        let head = "POST /1.0/images HTTP/1.1\r\nHost: unix.socket\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000000\r\n\r\n";
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&part("metadata", &meta_bytes)).unwrap();
        let uploading = || {
            names_in(&d.path().join("images"))
                .iter()
                .any(|n| n.starts_with(".upload-"))
        };
        hutch_tests::wait_until(
            "the upload to start",
            std::time::Duration::from_secs(30),
            uploading,
        );
        drop(s);
        hutch_tests::wait_until(
            "the upload files to go",
            std::time::Duration::from_secs(30),
            || !uploading(),
        );
    }
    let mut images = names_in(&d.path().join("images"));
    images.retain(|n| !n.starts_with('.'));
    let mut want = vec![
        fp_lxc.clone(),
        format!("{fp_lxc}.rootfs"),
        fp_sq.clone(),
        format!("{fp_sq}.rootfs"),
    ];
    want.sort();
    assert_eq!(images, want);
    assert!(!names_in(&d.path().join("images"))
        .iter()
        .any(|n| n.starts_with(".upload")));
    let listed: Value = serde_json::from_str(&d.lxc_ok(&["query", "/1.0/images"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // show, info, list and alias list print as lxc prints them.
    assert_eq!(
        d.hutch_ok(&["image", "show", "lx"]),
        d.lxc_ok(&["image", "show", "lx"])
    );
    // lxc prints the properties in Go's map order: compared as sets of lines.
    let lines = |s: String| {
        let mut v: Vec<String> = s.lines().map(String::from).collect();
        v.sort();
        v
    };
    assert_eq!(
        lines(d.hutch_ok(&["image", "info", "hs"])),
        lines(d.lxc_ok(&["image", "info", "hs"]))
    );
    // csv: the table's cells are the same, its header centring is output.rs's matter.
    assert_eq!(
        d.hutch_ok(&["image", "list", "--format", "csv"]),
        d.lxc_ok(&["image", "list", "--format", "csv"]),
    );
    assert_eq!(
        d.hutch_ok(&[
            "image",
            "list",
            "local:",
            "os=busybox",
            "-c",
            "lLfFpdastu",
            "--format",
            "csv"
        ]),
        d.lxc_ok(&[
            "image",
            "list",
            "local:",
            "os=busybox",
            "-c",
            "lLfFpdastu",
            "--format",
            "csv"
        ])
    );

    // edit from stdin through hutch; lxc reads the change back, and the other way.
    let edited = "auto_update: false\nproperties:\n  description: edited by hutch\n  os: busybox\npublic: true\nexpires_at: 0001-01-01T00:00:00Z\nprofiles:\n- default\n";
    let out = d.hutch(&["image", "edit", "lx"], edited.as_bytes());
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(d.lxc_ok(&["image", "show", "lx"]), edited);
    let by_lxc = edited.replace("edited by hutch", "edited by lxc");
    let out = d.lxc_with_stdin(&["image", "edit", "lx"], by_lxc.as_bytes());
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(d.hutch_ok(&["image", "show", "lx"]), by_lxc);
    let bad = d.hutch(&["image", "edit", "lx"], b"public: [not, a, bool]\n");
    assert!(!bad.status.success());
    assert!(stderr_of(&bad).starts_with("Error: "), "{bad:?}");
    assert_eq!(d.hutch_ok(&["image", "show", "lx"]), by_lxc, "unchanged");

    // Properties one by one: set by hutch, read by lxc, and the other way.
    d.hutch_ok(&["image", "set-property", "lx", "release", "edge"]);
    assert_eq!(
        d.lxc_ok(&["image", "get-property", "lx", "release"]),
        "edge\n"
    );
    d.lxc_ok(&["image", "unset-property", "lx", "release"]);
    assert_eq!(
        d.hutch_ok(&["image", "get-property", "lx", "release"]),
        "\n"
    );
    let (h, l) = (
        d.hutch(&["image", "get-property", "lx", "nope"], b""),
        d.lxc(&["image", "get-property", "lx", "nope"]),
    );
    assert_eq!(
        (stderr_of(&h), h.status.code()),
        (stderr_of(&l), l.status.code())
    );

    // alias rename through hutch; both list the aliases alike.
    d.hutch_ok(&["image", "alias", "rename", "lx", "lx2"]);
    d.lxc_ok(&["image", "alias", "rename", "hs", "hs2"]);
    let listed = d.hutch_ok(&["image", "alias", "list", "--format", "csv"]);
    assert_eq!(
        listed,
        d.lxc_ok(&["image", "alias", "list", "--format", "csv"])
    );
    assert!(listed.contains("lx2") && listed.contains("hs2"), "{listed}");
    // copy to local: adds the aliases (the image is already there).
    d.hutch_ok(&["image", "copy", "lx2", "local:", "--alias", "lx3"]);
    assert!(d.lxc_ok(&["image", "info", "lx3"]).contains(&fp_lxc));
    // An image server is no target, for either client.
    let remote = d.hutch(&["image", "copy", "lx2", "images:"], b"");
    assert_eq!(
        stderr_of(&remote),
        stderr_of(&d.lxc(&["image", "copy", "lx2", "images:"]))
    );
    assert!(
        stderr_of(&remote).contains("The remote isn't a private LXD server"),
        "{remote:?}"
    );

    // refresh of an image without a source fails the same way with both.
    let (h, l) = (
        d.hutch(&["image", "refresh", "lx2"], b""),
        d.lxc(&["image", "refresh", "lx2"]),
    );
    assert!(!h.status.success() && !l.status.success());
    assert_eq!(stderr_of(&h), stderr_of(&l));
    assert!(stderr_of(&h).contains("Image source not found"), "{h:?}");

    d.hutch_ok(&["image", "delete", "lx2"]);
    d.lxc_ok(&["image", "delete", "hs2"]);
    assert_eq!(names_in(&d.path().join("images")), Vec::<String>::new());
}

#[test]
fn lxc_copy_instance_only_leaves_the_snapshots() {
    if !require_root("lxc_copy_instance_only_leaves_the_snapshots") {
        return;
    }
    let d = TestDaemon::start();
    let image = d.path().join("bb.tar.gz");
    busybox_image(d.path(), &image).expect("build the image");
    d.lxc_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    let server: Value = serde_json::from_str(&d.lxc_ok(&["query", "/1.0"])).unwrap();
    for ext in ["container_only_migration", "snapshot_expiry_creation"] {
        assert!(
            server["api_extensions"]
                .as_array()
                .unwrap()
                .contains(&Value::from(ext)),
            "{ext}"
        );
    }
    d.lxc_ok(&["init", "bb", "c1"]);
    d.lxc_ok(&["snapshot", "c1", "s1"]);
    // --no-expiry sends the zero time (snapshot_expiry_creation): it never expires.
    d.lxc_ok(&["snapshot", "c1", "s2", "--no-expiry"]);
    let s2: Value =
        serde_json::from_str(&d.lxc_ok(&["query", "/1.0/instances/c1/snapshots/s2"])).unwrap();
    assert!(s2["expires_at"].as_str().unwrap().starts_with("0001-01-01"));
    d.lxc_ok(&["copy", "c1", "c2", "--instance-only"]);
    d.lxc_ok(&["copy", "c1", "c3"]);
    let snaps = |c: &str| -> Value {
        serde_json::from_str(&d.lxc_ok(&["query", &format!("/1.0/instances/{c}/snapshots")]))
            .unwrap()
    };
    assert_eq!(snaps("c2"), serde_json::json!([]));
    assert_eq!(
        snaps("c3"),
        serde_json::json!([
            "/1.0/instances/c3/snapshots/s1",
            "/1.0/instances/c3/snapshots/s2"
        ])
    );
    // The copy without snapshots boots.
    d.lxc_ok(&["start", "c2"]);
    assert_eq!(
        d.lxc_ok(&["exec", "c2", "--", "cat", "/proc/1/comm"])
            .trim(),
        "init"
    );
    d.lxc_ok(&["delete", "--force", "c1", "c2", "c3"]);
}
