//! End-to-end: devices of running busybox containers on a real daemon and kernel. Disks
//! (host paths and custom volumes) hot-plugged into and out of privileged and
//! unprivileged containers, read-only honoured, idmapped where asked; `unix-char` nodes
//! usable inside when given and refused by the devices cgroup when not; `none` devices
//! masking a profile's; `gpu` devices where the host has a GPU (skipped by name where it
//! has none, unless `HUTCH_REQUIRE_GPU=1`); disks and nodes hot-plugged into a Debian
//! container with systemd as init. Needs root; each test has its own daemon and
//! leaves nothing behind.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use hutch_tests::{assert_no_leftovers, require_root, wait_until, TestDaemon, Via};

/// A character device node `major:minor` made on the host, mode 0600.
fn host_char_node(path: &Path, major: u64, minor: u64) {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap();
}

/// A daemon with the busybox image imported under alias `bb`.
fn daemon() -> TestDaemon {
    with_image(TestDaemon::start())
}

/// `d` with the busybox image imported under alias `bb`.
fn with_image(d: TestDaemon) -> TestDaemon {
    d.import_busybox(Via::Hutch);
    d
}

/// Nothing of the deleted containers is left: mounts, processes, cgroups.
fn no_leftovers(d: &TestDaemon) {
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
    assert_no_leftovers(&d.path().join("containers"), &prefix);
}

/// Whether `path` is a mount point inside `name`.
fn mounted(d: &TestDaemon, name: &str, path: &str) -> bool {
    let mounts = d.sh_ok(name, "cat /proc/self/mounts");
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(path))
}

/// The devices of instance `name` as the API has them.
fn devices_of(d: &TestDaemon, name: &str, key: &str) -> serde_json::Value {
    let (status, body) = d.http("GET", &format!("/1.0/instances/{name}"), b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["metadata"][key].clone()
}

#[test]
fn disks_hot_plug_into_running_containers() {
    if !require_root("disks_hot_plug_into_running_containers") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["launch", "bb", "u"]);
    d.hutch_ok(&["launch", "bb", "p", "-c", "security.privileged=true"]);
    for name in ["u", "p"] {
        let src = d.path().join(format!("src-{name}"));
        fs::create_dir(&src).unwrap();
        fs::write(src.join("hello"), "from the host\n").unwrap();
        let source = format!("source={}", src.display());
        // The unprivileged container's root writes as host root through an idmapped mount.
        let shift = if name == "u" {
            "shift=true"
        } else {
            "shift=false"
        };
        d.hutch_ok(&[
            "config",
            "device",
            "add",
            name,
            "d",
            "disk",
            &source,
            "path=/mnt/d",
            shift,
        ]);
        assert!(mounted(&d, name, "/mnt/d"), "{name}: /mnt/d is not mounted");
        assert_eq!(d.sh_ok(name, "cat /mnt/d/hello"), "from the host\n");
        d.sh_ok(name, "echo from inside > /mnt/d/inside");
        assert_eq!(
            fs::read_to_string(src.join("inside")).unwrap(),
            "from inside\n"
        );
        assert_eq!(
            fs::metadata(src.join("inside")).unwrap().uid(),
            0,
            "{name}: the container's root is host root on the disk"
        );
        // A push below the device's path lands where the container sees it.
        let local = d.path().join("pushed");
        fs::write(&local, "pushed\n").unwrap();
        d.hutch_ok(&[
            "file",
            "push",
            local.to_str().unwrap(),
            &format!("{name}/mnt/d/pushed"),
        ]);
        assert_eq!(d.sh_ok(name, "cat /mnt/d/pushed"), "pushed\n");
        assert!(src.join("pushed").exists());

        // Read-only is honoured; changing the option re-plugs the disk writable.
        d.hutch_ok(&[
            "config",
            "device",
            "add",
            name,
            "ro",
            "disk",
            &source,
            "path=/srv/ro",
            "readonly=true",
            shift,
        ]);
        assert_eq!(d.sh_ok(name, "cat /srv/ro/hello"), "from the host\n");
        let (code, out) = d.sh(name, "echo x > /srv/ro/nope");
        assert_ne!(code, 0, "{name}: a write to a read-only disk worked: {out}");
        assert!(out.contains("Read-only"), "{name}: {out}");
        assert!(!src.join("nope").exists());
        d.hutch_ok(&["config", "device", "set", name, "ro", "readonly=false"]);
        d.sh_ok(name, "echo now > /srv/ro/now");
        assert!(src.join("now").exists());

        // Unplugged live: the mount is gone, the host's files stay.
        d.hutch_ok(&["config", "device", "remove", name, "d"]);
        d.hutch_ok(&["config", "device", "remove", name, "ro"]);
        assert!(!mounted(&d, name, "/mnt/d"), "{name}: /mnt/d still mounted");
        assert!(
            !mounted(&d, name, "/srv/ro"),
            "{name}: /srv/ro still mounted"
        );
        let (code, _) = d.sh(name, "test -e /mnt/d/hello");
        assert_ne!(code, 0, "{name}: the disk's files are still seen");
        assert!(src.join("hello").exists());
    }
    d.hutch_ok(&["delete", "-f", "u", "p"]);
    no_leftovers(&d);
}

#[test]
fn a_symlink_planted_inside_never_leads_a_mount_elsewhere() {
    if !require_root("a_symlink_planted_inside_never_leads_a_mount_elsewhere") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["launch", "bb", "u"]);
    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    let source = format!("source={}", src.display());
    let file = d.path().join("file");
    fs::write(&file, "host file\n").unwrap();
    let file_source = format!("source={}", file.display());
    d.sh_ok(
        "u",
        "mkdir -p /mnt && ln -s /etc /mnt/evil && ln -s /etc/hostname /mnt/file",
    );
    for (source, path) in [
        (&source, "path=/mnt/evil/x"),
        (&source, "path=/mnt/evil"),
        (&file_source, "path=/mnt/file"),
    ] {
        let err = d.hutch_err(&["config", "device", "add", "u", "d", "disk", source, path]);
        assert!(err.contains("symlink"), "{path}: {err}");
        assert!(
            devices_of(&d, "u", "devices").get("d").is_none(),
            "a device that could not be plugged was kept"
        );
    }
    assert!(!mounted(&d, "u", "/etc/x") && !mounted(&d, "u", "/etc/hostname"));
    // Over the API, what the container planted is the request's failure (400), not the
    // daemon's.
    let body = format!(
        r#"{{"devices": {{"d": {{"type": "disk", "source": "{}", "path": "/mnt/evil"}}}}}}"#,
        src.display()
    );
    let (code, answer) = d.http("PATCH", "/1.0/instances/u", body.as_bytes());
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("symlink"), "{answer}");
    // A source that is not there fails the add, and nothing of it stays.
    let missing = format!("source={}", d.path().join("missing").display());
    let err = d.hutch_err(&[
        "config",
        "device",
        "add",
        "u",
        "d",
        "disk",
        &missing,
        "path=/mnt/m",
    ]);
    assert!(err.contains("missing"), "{err}");
    assert!(devices_of(&d, "u", "devices").get("d").is_none());
    assert!(!mounted(&d, "u", "/mnt/m"));
    // A file source is mounted on a file.
    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "u",
        "f",
        "disk",
        &file_source,
        "path=/srv/f",
    ]);
    assert_eq!(d.sh_ok("u", "cat /srv/f"), "host file\n");
    d.hutch_ok(&["delete", "-f", "u"]);
    no_leftovers(&d);
}

#[test]
fn custom_volumes_attach_and_detach_live() {
    if !require_root("custom_volumes_attach_and_detach_live") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["launch", "bb", "u"]);
    d.lxc_ok(&["storage", "volume", "create", "default", "shared"]);
    d.lxc_ok(&[
        "storage", "volume", "attach", "default", "shared", "u", "/data",
    ]);
    assert!(mounted(&d, "u", "/data"));
    d.sh_ok("u", "echo kept > /data/f && chown 1000:1000 /data/f");
    assert_eq!(d.sh_ok("u", "stat -c %u /data/f"), "1000\n");
    d.lxc_ok(&["storage", "volume", "detach", "default", "shared", "u"]);
    assert!(!mounted(&d, "u", "/data"));
    // Attached again (by hutch this time), it holds what was written.
    d.hutch_ok(&[
        "storage", "volume", "attach", "default", "shared", "u", "/data",
    ]);
    assert_eq!(d.sh_ok("u", "cat /data/f"), "kept\n");
    d.hutch_ok(&["delete", "-f", "u"]);
    d.lxc_ok(&["storage", "volume", "delete", "default", "shared"]);
    no_leftovers(&d);
}

/// The error `cat` gives for the node at `path` inside `name`.
fn cat_error(d: &TestDaemon, name: &str, path: &str) -> String {
    let (code, out) = d.sh(name, &format!("cat {path} >/dev/null"));
    assert_ne!(code, 0, "{name}: cat {path} worked");
    out
}

#[test]
fn unix_char_devices_are_usable_when_given_and_refused_when_not() {
    if !require_root("unix_char_devices_are_usable_when_given_and_refused_when_not") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["launch", "bb", "u"]);
    d.hutch_ok(&["launch", "bb", "p", "-c", "security.privileged=true"]);
    // A copy of /dev/zero's node, made on the host.
    let nodes = d.path().join("nodes");
    fs::create_dir(&nodes).unwrap();
    let zero = nodes.join("zero");
    host_char_node(&zero, 1, 5);
    // 1:200 has no driver: opened, it is ENXIO where the devices cgroup lets it through,
    // EPERM where it does not.
    d.sh_ok("p", "mknod /root/n200 c 1 200");
    assert!(cat_error(&d, "p", "/root/n200").contains("Operation not permitted"));
    for name in ["u", "p"] {
        d.hutch_ok(&[
            "config",
            "device",
            "add",
            name,
            "z",
            "unix-char",
            &format!("source={}", zero.display()),
            "path=/dev/hostzero",
            "uid=1000",
            "gid=1000",
            "mode=0640",
        ]);
        assert_eq!(
            d.sh_ok(name, "stat -c '%F %t:%T %a %u %g' /dev/hostzero"),
            "character special file 1:5 640 1000 1000\n"
        );
        assert_eq!(
            d.sh_ok(name, "head -c 3 /dev/hostzero | od -An -tx1")
                .trim(),
            "00 00 00"
        );
        d.hutch_ok(&[
            "config",
            "device",
            "add",
            name,
            "n",
            "unix-char",
            "major=1",
            "minor=200",
            "path=/dev/n200",
        ]);
        assert!(cat_error(&d, name, "/dev/n200").contains("No such device or address"));
    }
    // Block devices too (240 is a major no driver has: ENXIO once allowed).
    d.sh_ok("p", "mknod /root/b240 b 240 0");
    assert!(cat_error(&d, "p", "/root/b240").contains("Operation not permitted"));
    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "p",
        "b",
        "unix-block",
        "major=240",
        "minor=0",
        "path=/dev/b240",
    ]);
    assert_eq!(d.sh_ok("p", "stat -c %F /dev/b240"), "block special file\n");
    assert!(cat_error(&d, "p", "/dev/b240").contains("No such device or address"));
    d.hutch_ok(&["config", "device", "remove", "p", "b"]);
    assert!(cat_error(&d, "p", "/root/b240").contains("Operation not permitted"));
    // The cgroup lets 1:200 through now, for the node root made too.
    assert!(cat_error(&d, "p", "/root/n200").contains("No such device or address"));
    // Nodes survive a restart.
    d.hutch_ok(&["restart", "-f", "u"]);
    assert_eq!(
        d.sh_ok("u", "head -c 3 /dev/hostzero | od -An -tx1").trim(),
        "00 00 00"
    );
    assert!(cat_error(&d, "u", "/dev/n200").contains("No such device or address"));
    // Unplugged live: the nodes are gone and the cgroup refuses 1:200 again.
    for name in ["u", "p"] {
        d.hutch_ok(&["config", "device", "remove", name, "n"]);
        d.hutch_ok(&["config", "device", "remove", name, "z"]);
        let (code, out) = d.sh(name, "test -e /dev/n200 || test -e /dev/hostzero");
        assert_ne!(code, 0, "{name}: a node is left: {out}");
        assert!(!mounted(&d, name, "/dev/hostzero"));
    }
    assert!(cat_error(&d, "p", "/root/n200").contains("Operation not permitted"));
    // A device whose host node went while it was plugged still unplugs, and is denied.
    let host_n200 = nodes.join("n200");
    host_char_node(&host_n200, 1, 200);
    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "p",
        "g",
        "unix-char",
        &format!("source={}", host_n200.display()),
        "path=/dev/g200",
    ]);
    assert!(cat_error(&d, "p", "/dev/g200").contains("No such device or address"));
    fs::remove_file(&host_n200).unwrap();
    d.hutch_ok(&["config", "device", "remove", "p", "g"]);
    assert!(!mounted(&d, "p", "/dev/g200"));
    assert!(cat_error(&d, "p", "/root/n200").contains("Operation not permitted"));
    // /dev/null, whose rule the denial overlapped with none, still works.
    d.sh_ok("p", "echo x > /dev/null");
    // A missing source is an error unless the device is not required.
    let missing = format!("source={}", nodes.join("missing").display());
    let err = d.hutch_err(&["config", "device", "add", "u", "m", "unix-char", &missing]);
    assert!(err.contains("does not exist"), "{err}");
    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "u",
        "m",
        "unix-char",
        &missing,
        "required=false",
    ]);
    d.hutch_ok(&["delete", "-f", "u", "p"]);
    no_leftovers(&d);
}

#[test]
fn unix_char_devices_change_the_cgroup2_device_filter_live() {
    if !require_root("unix_char_devices_change_the_cgroup2_device_filter_live") {
        return;
    }
    // The daemon sees the cgroup2 hierarchy alone: devices are a BPF filter there.
    let d = with_image(TestDaemon::start_cgroup2_only());
    d.hutch_ok(&["launch", "bb", "p", "-c", "security.privileged=true"]);
    d.sh_ok("p", "mknod /root/n200 c 1 200");
    assert!(cat_error(&d, "p", "/root/n200").contains("Operation not permitted"));
    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "p",
        "n",
        "unix-char",
        "major=1",
        "minor=200",
        "path=/dev/n200",
    ]);
    assert!(cat_error(&d, "p", "/dev/n200").contains("No such device or address"));
    assert!(cat_error(&d, "p", "/root/n200").contains("No such device or address"));
    // Given at start, the filter has it from the first.
    d.hutch_ok(&["restart", "-f", "p"]);
    assert!(cat_error(&d, "p", "/dev/n200").contains("No such device or address"));
    d.hutch_ok(&["config", "device", "remove", "p", "n"]);
    d.sh_ok("p", "mknod /root/n200 c 1 200 || true");
    assert!(cat_error(&d, "p", "/root/n200").contains("Operation not permitted"));
    d.sh_ok("p", "echo x > /dev/null && head -c 1 /dev/zero >/dev/null");
    d.hutch_ok(&["delete", "-f", "p"]);
    no_leftovers(&d);
}

#[test]
fn bad_device_options_are_refused_by_name() {
    if !require_root("bad_device_options_are_refused_by_name") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["init", "bb", "s"]);
    for (args, named) in [
        (
            &["d", "disk", "source=/srv", "path=/mnt", "readonly=ture"][..],
            "readonly",
        ),
        (&["d", "unix-char", "path=/dev/x", "mode=999"][..], "mode"),
        (
            &["d", "unix-char", "path=/dev/x", "major=1"][..],
            "major and minor",
        ),
        (&["d", "unix-block", "bogus=1"][..], "bogus"),
        (&["d", "gpu", "gputype=mig"][..], "gputype"),
        (&["d", "gpu", "vendorid=nvidia"][..], "vendorid"),
    ] {
        let mut full = vec!["config", "device", "add", "s"];
        full.extend_from_slice(args);
        let err = d.hutch_err(&full);
        assert!(err.contains(named), "{args:?}: {err}");
    }
    d.hutch_ok(&["delete", "-f", "s"]);
    no_leftovers(&d);
}

#[test]
fn a_none_device_masks_a_profile_device_live() {
    if !require_root("a_none_device_masks_a_profile_device_live") {
        return;
    }
    let d = daemon();
    let src = d.path().join("profile-src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "p\n").unwrap();
    d.lxc_ok(&["profile", "create", "withdisk"]);
    d.lxc_ok(&[
        "profile",
        "device",
        "add",
        "withdisk",
        "pd",
        "disk",
        &format!("source={}", src.display()),
        "path=/mnt/p",
    ]);
    d.lxc_ok(&["launch", "bb", "m", "-p", "default", "-p", "withdisk"]);
    assert_eq!(d.sh_ok("m", "cat /mnt/p/f"), "p\n");
    d.hutch_ok(&["config", "device", "add", "m", "pd", "none"]);
    assert!(devices_of(&d, "m", "expanded_devices").get("pd").is_none());
    assert!(
        !mounted(&d, "m", "/mnt/p"),
        "the masked disk is still mounted"
    );
    // Masked at start too.
    d.hutch_ok(&["restart", "-f", "m"]);
    assert!(!mounted(&d, "m", "/mnt/p"));
    d.hutch_ok(&["config", "device", "remove", "m", "pd"]);
    assert_eq!(d.sh_ok("m", "cat /mnt/p/f"), "p\n");
    d.hutch_ok(&["delete", "-f", "m"]);
    d.lxc_ok(&["profile", "delete", "withdisk"]);
    no_leftovers(&d);
}

/// The PCI address of a display controller with device nodes, if the host has one.
fn host_gpu() -> Option<String> {
    let bus = Path::new("/sys/bus/pci/devices");
    for e in fs::read_dir(bus).ok()?.flatten() {
        let class = fs::read_to_string(e.path().join("class")).unwrap_or_default();
        if !class.starts_with("0x03") {
            continue;
        }
        let vendor = fs::read_to_string(e.path().join("vendor")).unwrap_or_default();
        let nvidia = vendor.trim() == "0x10de" && Path::new("/dev/nvidiactl").exists();
        if nvidia || e.path().join("drm").exists() {
            return Some(e.file_name().to_string_lossy().into_owned());
        }
    }
    None
}

#[test]
fn gpu_devices_pass_the_cards_nodes() {
    if !require_root("gpu_devices_pass_the_cards_nodes") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["launch", "bb", "u"]);
    let Some(pci) = host_gpu() else {
        assert!(
            std::env::var("HUTCH_REQUIRE_GPU").as_deref() != Ok("1"),
            "gpu_devices_pass_the_cards_nodes: HUTCH_REQUIRE_GPU=1 but this host has no GPU"
        );
        // Without a GPU, asking for one is a clear error, live or at start.
        let err = d.hutch_err(&["config", "device", "add", "u", "g", "gpu"]);
        assert!(err.contains("no GPU found on this host"), "{err}");
        d.hutch_ok(&["init", "bb", "s"]);
        d.hutch_ok(&["config", "device", "add", "s", "g", "gpu", "vendorid=10de"]);
        let err = d.hutch_err(&["start", "s"]);
        assert!(err.contains("no GPU matching vendorid=10de"), "{err}");
        d.hutch_ok(&["delete", "-f", "u", "s"]);
        no_leftovers(&d);
        hutch_tests::skipped(
            "gpu_devices_pass_the_cards_nodes",
            "no GPU on this host (only the error for a missing GPU was checked)",
        );
        return;
    };
    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "u",
        "g",
        "gpu",
        &format!("pci={pci}"),
        "mode=0666",
    ]);
    let nvidia = Path::new("/dev/nvidiactl").exists();
    let node = if nvidia { "/dev/nvidiactl" } else { "/dev/dri" };
    let listing = d.sh_ok("u", "ls -l /dev/dri /dev/nvidia* 2>/dev/null; true");
    eprintln!("gpu nodes inside: {listing}");
    if nvidia {
        // Opened for reading and writing as the driver's tools do.
        d.sh_ok("u", "exec 3<>/dev/nvidiactl");
        d.sh_ok("u", "ls /dev/nvidia[0-9]*");
    } else {
        d.sh_ok("u", &format!("test -c {node}/$(ls {node} | head -n1)"));
    }
    d.hutch_ok(&["config", "device", "remove", "u", "g"]);
    let (code, _) = d.sh("u", &format!("test -e {node}"));
    assert_ne!(code, 0, "{node} still there after the unplug");
    if nvidia && Path::new("/usr/bin/nvidia-smi").exists() {
        d.hutch_ok(&["launch", "bb", "n", "-c", "nvidia.runtime=true"]);
        d.hutch_ok(&[
            "config",
            "device",
            "add",
            "n",
            "g",
            "gpu",
            &format!("pci={pci}"),
        ]);
        d.sh_ok( "n", "test -f /usr/bin/nvidia-smi && ls /usr/lib/*/libnvidia-ml.so* /usr/lib*/libnvidia-ml.so* 2>/dev/null | head -n1 | grep -q .");
        d.hutch_ok(&["delete", "-f", "n"]);
    }
    d.hutch_ok(&["delete", "-f", "u"]);
    no_leftovers(&d);
}

#[test]
fn disks_and_char_devices_hot_plug_into_a_debian_container() {
    let test = "disks_and_char_devices_hot_plug_into_a_debian_container";
    if !require_root(test) {
        return;
    }
    if std::env::var("HUTCH_TEST_DEBIAN").as_deref() == Ok("0")
        && std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1")
    {
        hutch_tests::skipped(test, "HUTCH_TEST_DEBIAN=0");
        return;
    }
    // Debian 12 with systemd as init (udev-less /dev, mount units watching /proc/self/
    // mountinfo), unprivileged, through the daemon as a user has it.
    let d = TestDaemon::start();
    if let Err(e) = d.build_debian("deb") {
        if std::env::var("HUTCH_REQUIRED_TESTS").as_deref() == Ok("1") {
            panic!("{test}: the Debian image cannot be built: {e}");
        }
        hutch_tests::skipped(test, &format!("the Debian image cannot be built: {e}"));
        return;
    }
    d.hutch_ok(&["launch", "deb", "deb"]);
    wait_until("systemd in the container", Duration::from_secs(60), || {
        d.sh("deb", "cat /proc/1/comm").1 == "systemd\n"
    });

    let src = d.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("hello"), "hello debian\n").unwrap();
    let source = format!("source={}", src.display());
    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "deb",
        "d",
        "disk",
        &source,
        "path=/mnt/hot/d",
        "shift=true",
    ]);
    assert!(
        mounted(&d, "deb", "/mnt/hot/d"),
        "/mnt/hot/d is not mounted"
    );
    assert_eq!(d.sh_ok("deb", "cat /mnt/hot/d/hello"), "hello debian\n");
    d.sh_ok("deb", "echo written > /mnt/hot/d/inside");
    assert_eq!(fs::read_to_string(src.join("inside")).unwrap(), "written\n");
    assert_eq!(
        fs::metadata(src.join("inside")).unwrap().uid(),
        0,
        "the container's root is host root on a shifted disk"
    );
    // The mount point was made as the container's root would have made it.
    assert_eq!(d.sh_ok("deb", "stat -c %U /mnt/hot"), "root\n");

    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "deb",
        "ro",
        "disk",
        &source,
        "path=/srv/ro",
        "readonly=true",
        "shift=true",
    ]);
    assert_eq!(d.sh_ok("deb", "cat /srv/ro/hello"), "hello debian\n");
    let (code, out) = d.sh("deb", "echo x > /srv/ro/nope");
    assert_ne!(code, 0, "a write to a read-only disk worked: {out}");
    assert!(out.contains("Read-only"), "{out}");
    assert!(!src.join("nope").exists());

    d.hutch_ok(&["config", "device", "remove", "deb", "d"]);
    d.hutch_ok(&["config", "device", "remove", "deb", "ro"]);
    for path in ["/mnt/hot/d", "/srv/ro"] {
        assert!(!mounted(&d, "deb", path), "{path} still mounted");
    }
    let (code, _) = d.sh("deb", "test -e /mnt/hot/d/hello");
    assert_ne!(code, 0, "the disk's files are still seen");
    assert!(src.join("hello").exists());

    // A copy of /dev/zero's node, made on the host.
    let zero = d.path().join("zero");
    host_char_node(&zero, 1, 5);
    d.hutch_ok(&[
        "config",
        "device",
        "add",
        "deb",
        "z",
        "unix-char",
        &format!("source={}", zero.display()),
        "path=/dev/hostzero",
        "mode=0666",
    ]);
    assert_eq!(
        d.sh_ok("deb", "stat -c '%F %t:%T %a' /dev/hostzero"),
        "character special file 1:5 666\n"
    );
    assert_eq!(
        d.sh_ok("deb", "head -c 3 /dev/hostzero | od -An -tx1")
            .trim(),
        "00 00 00"
    );
    d.hutch_ok(&["config", "device", "remove", "deb", "z"]);
    let (code, out) = d.sh("deb", "test -e /dev/hostzero");
    assert_ne!(code, 0, "/dev/hostzero is still there: {out}");

    d.hutch_ok(&["delete", "-f", "deb"]);
    no_leftovers(&d);
}
