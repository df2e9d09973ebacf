//! End-to-end: `hutchd init` (`--auto` and LXD's `--preseed`) against a running daemon,
//! through its API, and with none running; a bad preseed that changes nothing; and state
//! directories that containers' roots must be able to traverse. Needs root; every pool,
//! bridge and process goes away with its test.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hutch_tests::daemon::cgroup_prefix;
use hutch_tests::network::{assert_no_network_leftovers, link_exists};
use hutch_tests::{
    assert_no_leftovers, busybox_image, hutchd_bin, output_within, require_root, unique_name,
    TestDaemon, TestDir, COMMAND_LIMIT,
};
use serde_json::Value;

/// `hutchd --dir DIR init ARGS`, with `stdin`.
fn init(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(hutchd_bin());
    cmd.arg("--dir").arg(dir).arg("init").args(args);
    output_within(&mut cmd, stdin.as_bytes(), COMMAND_LIMIT)
}

/// `init` that must succeed; returns its stdout.
fn init_ok(dir: &Path, args: &[&str], stdin: &str) -> String {
    let out = init(dir, args, stdin);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(
        out.status.success(),
        "hutchd init {args:?} failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The metadata of `GET path`, or `None` on 404.
fn get(d: &TestDaemon, path: &str) -> Option<Value> {
    let (code, body) = d.http("GET", path, b"");
    if code == 404 {
        return None;
    }
    assert_eq!(code, 200, "GET {path}: {body}");
    Some(serde_json::from_str::<Value>(&body).expect("json")["metadata"].clone())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Imports the busybox image as `bb`.
fn import_busybox(d: &TestDaemon) {
    let image = d.path().join("bb.tar.gz");
    busybox_image(d.path(), &image).expect("build the image");
    d.hutch_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
}

/// A `10.x.y.1/24` no route of this host covers (never routed outside: the bridge has
/// no uplink of its own and the test sends nothing).
fn free_subnet() -> String {
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id();
    for i in 0..1000u32 {
        let v = seed.wrapping_add(i.wrapping_mul(7919));
        let (x, y) = (100 + v % 150, (v / 150) % 250 + 1);
        if !routes.contains(&format!("10.{x}.{y}.")) && !routes.contains(&format!("10.{x}.0.0/16"))
        {
            return format!("10.{x}.{y}.1/24");
        }
    }
    panic!("no free 10.x.y.0/24 on this host");
}

/// The bug this suite was written for: `init --auto` while the daemon runs wrote the
/// database behind its back, and the daemon kept serving a `dir` pool over the btrfs
/// mount (every launch a full copy). Through the API, the daemon itself makes the pool.
#[test]
fn init_auto_against_a_running_daemon_goes_through_its_api() {
    if !require_root("init_auto_against_a_running_daemon_goes_through_its_api") {
        return;
    }
    let mut d = TestDaemon::uninitialised();
    d.spawn();
    let out = init_ok(d.path(), &["--auto", "--network-bridge", "none"], "");
    assert!(
        out.contains("created storage pool \"default\"")
            && out.contains("storage pool \"default\" (btrfs)"),
        "{out}"
    );
    let pool = get(&d, "/1.0/storage-pools/default").expect("the pool");
    assert_eq!(
        pool["driver"], "btrfs",
        "the running daemon serves the new pool"
    );
    let list = d.lxc_ok(&["storage", "list", "--format", "csv"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("default,") && l.contains(",btrfs,")),
        "lxc storage list: {list}"
    );
    let profile = get(&d, "/1.0/profiles/default").unwrap();
    assert_eq!(profile["devices"]["root"]["pool"], "default");

    // A launch clones the image volume: the instance volume is a btrfs subvolume.
    import_busybox(&d);
    d.hutch_ok(&["launch", "bb", "c1"]);
    let vol = d.path().join("storage-pools/default/containers/c1");
    let show = Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(&vol)
        .output()
        .expect("run btrfs");
    assert!(
        show.status.success(),
        "{} is not a subvolume: {}",
        vol.display(),
        String::from_utf8_lossy(&show.stderr)
    );

    // Again: nothing changes, and storage flags are refused now that a pool exists.
    let again = init_ok(d.path(), &["--auto", "--network-bridge", "none"], "");
    assert!(!again.contains("created"), "{again}");
    let refused = init(d.path(), &["--auto", "--storage-backend", "dir"], "");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("storage has already been configured"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    d.hutch_ok(&["delete", "c1", "--force"]);
    let prefix = cgroup_prefix(d.path());
    let dir = d.path().to_path_buf();
    drop(d);
    assert_no_leftovers(&dir, &prefix);
}

/// LXD's preseed: a pool, a network and profile changes; applied twice, the second run
/// changes nothing.
fn preseed_text(net: &str, subnet: &str) -> String {
    format!(
        r#"
storage_pools:
- name: default
  driver: dir
networks:
- name: {net}
  type: bridge
  config:
    ipv4.address: {subnet}
    ipv4.nat: true
    ipv6.address: none
profiles:
- name: default
  devices:
    root:
      type: disk
      path: /
      pool: default
    eth0:
      type: nic
      network: {net}
      name: eth0
- name: seeded
  description: made by a preseed
  config:
    user.seeded: yes
"#
    )
}

fn check_preseeded(d: &TestDaemon, net: &str, subnet: &str) {
    assert_eq!(
        get(d, "/1.0/storage-pools/default").unwrap()["driver"],
        "dir"
    );
    let n = get(d, &format!("/1.0/networks/{net}")).expect("the network");
    assert_eq!(n["managed"], true);
    assert_eq!(n["config"]["ipv4.address"], subnet);
    assert!(link_exists(net), "the bridge is up");
    let default = get(d, "/1.0/profiles/default").unwrap();
    assert_eq!(default["devices"]["eth0"]["network"], net);
    assert_eq!(default["devices"]["root"]["pool"], "default");
    let seeded = get(d, "/1.0/profiles/seeded").expect("the new profile");
    assert_eq!(seeded["config"]["user.seeded"], "yes");
    assert_eq!(seeded["description"], "made by a preseed");
}

#[test]
fn preseed_against_a_running_daemon_and_with_none() {
    if !require_root("preseed_against_a_running_daemon_and_with_none") {
        return;
    }
    for running in [true, false] {
        let net = unique_name("ini");
        let subnet = free_subnet();
        let seed = preseed_text(&net, &subnet);
        let mut d = TestDaemon::uninitialised();
        if running {
            d.spawn();
        }
        let out = init_ok(d.path(), &["--preseed"], &seed);
        for line in [
            format!("created network \"{net}\""),
            "created storage pool \"default\"".into(),
            "updated profile \"default\"".into(),
            "created profile \"seeded\"".into(),
        ] {
            assert!(out.contains(&line), "running={running}: {line:?} in {out}");
        }
        if !running {
            d.spawn();
        }
        check_preseeded(&d, &net, &subnet);

        // Applied again (to the running daemon now): everything is as it says.
        let again = init_ok(d.path(), &["--preseed"], &seed);
        assert!(
            again.lines().all(|l| l.ends_with("unchanged")),
            "running={running}: {again}"
        );
        // An update merges: a new key on the network, the rest kept.
        let update = format!("networks:\n- name: {net}\n  config:\n    user.note: hi\n");
        assert!(init_ok(d.path(), &["--preseed"], &update).contains("updated network"));
        let n = get(&d, &format!("/1.0/networks/{net}")).unwrap();
        assert_eq!(n["config"]["user.note"], "hi");
        assert_eq!(n["config"]["ipv4.address"], subnet);

        let prefix = cgroup_prefix(d.path());
        drop(d);
        assert_no_network_leftovers(&prefix, &[&net]);
    }
}

#[test]
fn a_bad_preseed_changes_nothing() {
    if !require_root("a_bad_preseed_changes_nothing") {
        return;
    }
    let net = unique_name("ini");
    let subnet = free_subnet();
    // A typo: refused before anything is asked of anyone.
    let typo = format!(
        "networks:\n- name: {net}\n  config:\n    ipv4.address: {subnet}\nstorage_pools:\n- name: p1\n  drvier: dir\n"
    );
    let fresh = TestDir::new();
    let state = fresh.path().join("state");
    let out = init(&state, &["--preseed"], &typo);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("failed to parse the preseed") && err.contains("unknown field `drvier`"),
        "{err}"
    );
    assert!(!state.join("database").exists(), "nothing was opened");

    let mut d = TestDaemon::uninitialised();
    d.spawn();
    let out = init(d.path(), &["--preseed"], &typo);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `drvier`"));
    assert!(get(&d, &format!("/1.0/networks/{net}")).is_none());
    assert!(get(&d, "/1.0/storage-pools/p1").is_none());

    // Refused by the server half-way: the network made before the pool is taken back.
    let refused = format!(
        "networks:\n- name: {net}\n  config:\n    ipv4.address: {subnet}\n    ipv6.address: none\nstorage_pools:\n- name: p1\n  driver: nope\n"
    );
    let out = init(d.path(), &["--preseed"], &refused);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("failed to apply storage pool \"p1\""), "{err}");
    assert!(err.contains(&format!("undid: network \"{net}\"")), "{err}");
    assert!(get(&d, &format!("/1.0/networks/{net}")).is_none());
    assert!(!link_exists(&net), "the bridge is gone");
    assert_eq!(
        get(&d, "/1.0/storage-pools").unwrap(),
        serde_json::json!([]),
        "no pool"
    );
    let prefix = cgroup_prefix(d.path());
    drop(d);
    assert_no_network_leftovers(&prefix, &[&net]);
}

/// `mktemp -d` makes 0700 directories: the daemon opens its state directory to 0711 (as
/// LXD) so that containers' roots reach their root filesystems.
#[test]
fn a_0700_state_dir_is_opened_and_runs_containers() {
    if !require_root("a_0700_state_dir_is_opened_and_runs_containers") {
        return;
    }
    let mut d = TestDaemon::uninitialised();
    set_mode(d.path(), 0o700);
    init_ok(
        d.path(),
        &[
            "--auto",
            "--storage-backend",
            "dir",
            "--network-bridge",
            "none",
        ],
        "",
    );
    assert_eq!(mode(d.path()), 0o711, "init opens it");
    set_mode(d.path(), 0o700);
    d.spawn();
    assert_eq!(mode(d.path()), 0o711, "the daemon opens it");
    import_busybox(&d);
    d.hutch_ok(&["launch", "bb", "c1"]);
    assert_eq!(d.hutch_ok(&["exec", "c1", "--", "echo", "ok"]).trim(), "ok");
    d.hutch_ok(&["delete", "c1", "--force"]);
    let prefix = cgroup_prefix(d.path());
    let dir = d.path().to_path_buf();
    drop(d);
    assert_no_leftovers(&dir, &prefix);
}

/// A state directory under a parent others cannot search (`/root`, a 0700 `mktemp -d`)
/// is refused at start, naming the parent and the fix; `init` refuses it too.
#[test]
fn a_state_dir_under_a_closed_parent_is_refused() {
    if !require_root("a_state_dir_under_a_closed_parent_is_refused") {
        return;
    }
    let parent = TestDir::new();
    set_mode(parent.path(), 0o700);
    let state = parent.path().join("state");
    let want = format!("chmod o+x {}", parent.path().display());

    let mut cmd = Command::new(hutchd_bin());
    cmd.arg("--dir").arg(&state);
    let out = output_within(&mut cmd, b"", Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the daemon started: {err}");
    assert!(err.contains(&want), "{err}");
    assert!(!state.join("unix.socket").exists());

    let out = init(&state, &["--auto", "--network-bridge", "none"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&want), "{err}");
    assert!(!state.join("database").exists(), "nothing was made");
    assert_no_leftovers(parent.path(), &cgroup_prefix(&state));
}

/// `--network-address`/`--network-port`/`--trust-password`, as `lxd init --auto` takes
/// them: the running daemon listens on HTTPS and trusts a client that gives the password.
#[test]
fn init_auto_network_address_serves_https() {
    let test = "init_auto_network_address_serves_https";
    if !require_root(test) {
        return;
    }
    let mut d = TestDaemon::uninitialised();
    d.spawn();
    let refused = init(d.path(), &["--auto", "--network-port", "8443"], "");
    assert!(!refused.status.success());
    let port = hutch_tests::free_port().to_string();
    init_ok(
        d.path(),
        &[
            "--auto",
            "--storage-backend",
            "dir",
            "--network-bridge",
            "none",
            "--network-address",
            "127.0.0.1",
            "--network-port",
            &port,
            "--trust-password",
            "s3cret",
        ],
        "",
    );
    let server = get(&d, "/1.0").unwrap();
    assert_eq!(
        server["config"]["core.https_address"],
        format!("127.0.0.1:{port}")
    );
    assert_eq!(server["config"]["core.trust_password"], true);
    // LXD's own client adds the remote with the password and lists through it.
    let url = format!("https://127.0.0.1:{port}");
    d.lxc_ok(&[
        "remote",
        "add",
        "h",
        &url,
        "--accept-certificate",
        "--password",
        "s3cret",
    ]);
    d.lxc_ok(&["list", "h:"]);
    let prefix = cgroup_prefix(d.path());
    let dir = d.path().to_path_buf();
    drop(d);
    assert_no_leftovers(&dir, &prefix);
}
