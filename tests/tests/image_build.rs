//! `hutch image build`: images built offline on the host land in the local store as split
//! images with the public images' properties and hostname template, and they boot. Needs
//! root; the Debian test starts from the test suite's debootstrap cache
//! (`$HUTCH_TEST_CACHE`) and is skipped with HUTCH_TEST_DEBIAN=0.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use hutch_tests::{require_root, unique_name, wait_until, TestDaemon, TestDir};

/// The fingerprint `hutch image import` (and so `image build`) prints.
fn imported_fingerprint(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Image imported with fingerprint: "))
        .unwrap_or_else(|| panic!("no fingerprint in {out:?}"))
        .trim()
        .to_string()
}

fn image_json(d: &TestDaemon, name: &str) -> serde_json::Value {
    let (status, body) = d.http("GET", &format!("/1.0/images/aliases/{name}"), b"");
    assert_eq!(status, 200, "{body}");
    let alias: serde_json::Value = serde_json::from_str(&body).unwrap();
    let fp = alias["metadata"]["target"].as_str().unwrap().to_string();
    let (status, body) = d.http("GET", &format!("/1.0/images/{fp}"), b"");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["metadata"].clone()
}

#[test]
fn busybox_build_lands_in_the_store_and_launches() {
    if !require_root("busybox_build_lands_in_the_store_and_launches") {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let out = d.hutch_ok(&[
        "image",
        "build",
        "busybox",
        "--alias",
        "built-bb",
        "--serial",
        "20240501_05:24",
    ]);
    let fp = imported_fingerprint(&out);
    let image = image_json(&d, "built-bb");
    assert_eq!(image["fingerprint"], fp);
    let props = &image["properties"];
    assert_eq!(props["os"], "busybox");
    assert_eq!(props["variant"], "default");
    assert_eq!(props["serial"], "20240501_05:24");
    assert_eq!(props["architecture"], "amd64");
    assert!(
        props["description"]
            .as_str()
            .unwrap()
            .starts_with("busybox "),
        "{props}"
    );
    assert_eq!(image["architecture"], std::env::consts::ARCH);
    // A split image: the export is multipart, and its metadata part holds the templates.
    let dir = TestDir::new();
    d.hutch_ok(&["image", "export", "built-bb", dir.path().to_str().unwrap()]);
    let meta = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("meta-")
        })
        .expect("a metadata part");
    let listing = Command::new("tar").arg("-tJf").arg(&meta).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("templates/hostname.tpl"), "{listing}");
    let yaml = Command::new("tar")
        .arg("-xJOf")
        .arg(&meta)
        .arg("metadata.yaml")
        .output()
        .unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_slice(&yaml.stdout).unwrap();
    assert_eq!(
        yaml["templates"]["/etc/hostname"]["template"],
        "hostname.tpl"
    );

    let name = unique_name("bbb");
    d.hutch_ok(&["launch", "built-bb", &name]);
    assert_eq!(d.sh_ok(&name, "cat /proc/1/comm").trim(), "init");
    assert!(d.sh_ok(&name, "cat /etc/os-release").contains("ID=busybox"));
    // The image's templates, rendered at the first start.
    assert_eq!(d.sh_ok(&name, "cat /etc/hostname").trim(), name);
    assert!(d
        .sh_ok(&name, "cat /etc/hosts")
        .contains(&format!("127.0.1.1\t{name}")));
    d.hutch_ok(&["delete", "--force", &name]);
}

#[test]
fn building_needs_root_and_a_known_image() {
    if !require_root("building_needs_root_and_a_known_image") {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let err = d.hutch_err(&["image", "build", "ubuntu/24.04"]);
    assert!(err.contains("unknown image"), "{err}");
    let err = d.hutch_err(&["image", "build", "debian/9"]);
    assert!(err.contains("unknown Debian release"), "{err}");
    let err = d.hutch_err(&["image", "build", "busybox", "--variant", "cloud"]);
    assert!(err.contains("no cloud variant"), "{err}");

    // As nobody: refused before anything else, with a clear error.
    let out = Command::new(hutch_tests::hutch_bin())
        .args(["image", "build", "busybox"])
        .env("HUTCH_DIR", d.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
    let (_, body) = d.http("GET", "/1.0/images", b"");
    let images: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        images["metadata"],
        serde_json::json!([]),
        "nothing imported"
    );
}

#[test]
fn debian_build_from_the_debootstrap_cache_boots_with_networkd_dhcp() {
    let test = "debian_build_from_the_debootstrap_cache_boots_with_networkd_dhcp";
    if !require_root(test) {
        return;
    }
    if std::env::var("HUTCH_TEST_DEBIAN").as_deref() == Ok("0")
        && std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1")
    {
        hutch_tests::skipped(test, "HUTCH_TEST_DEBIAN=0");
        return;
    }
    let net = unique_name("hbd");
    let d = TestDaemon::start_with(&["--storage-backend", "dir", "--network-bridge", &net]);
    // From the test suite's debootstrap cache (filled once per machine).
    let out = d.build_debian("built-deb").expect("the Debian test cache");
    imported_fingerprint(&out);
    let props = &image_json(&d, "built-deb")["properties"];
    assert_eq!(props["os"], "Debian");
    assert_eq!(props["release"], "bookworm");
    assert_eq!(props["version"], "12");
    assert_eq!(props["variant"], "default");

    let name = unique_name("deb");
    d.hutch_ok(&["launch", "built-deb", &name]);
    let state = || {
        d.sh(&name, "systemctl is-system-running 2>/dev/null")
            .1
            .trim()
            .to_string()
    };
    wait_until(
        "systemd to finish starting",
        Duration::from_secs(90),
        || matches!(state().as_str(), "running" | "degraded"),
    );
    if state() == "degraded" {
        let failed = d.sh(&name, "systemctl --failed --no-legend").1;
        panic!("systemd is degraded: {failed}");
    }
    assert_eq!(d.sh_ok(&name, "cat /proc/1/comm").trim(), "systemd");
    assert_eq!(
        d.sh_ok(&name, "systemctl is-active systemd-networkd")
            .trim(),
        "active"
    );
    assert!(d
        .sh_ok(&name, "cat /etc/systemd/network/eth0.network")
        .contains("DHCP=yes"));
    // The resolver is resolved's stub, with the servers and search domain from the lease.
    assert_eq!(
        d.sh_ok(&name, "systemctl is-active systemd-resolved")
            .trim(),
        "active"
    );
    assert_eq!(
        d.sh_ok(&name, "readlink /etc/resolv.conf").trim(),
        "../run/systemd/resolve/stub-resolv.conf"
    );
    wait_until("a DHCP lease on eth0", Duration::from_secs(60), || {
        d.sh(&name, "ip -4 -o addr show dev eth0")
            .1
            .contains("inet ")
    });
    d.hutch_ok(&["delete", "--force", &name]);
}
