//! End-to-end: declarative stacks (`hutch apply -f stack.yaml`) against a real hutchd. A
//! three-instance stack (web with a port on loopback, app with two replicas on a stack
//! network, db with a custom volume and a healthcheck) comes up and answers, re-applies
//! as a no-op, takes a config change live, shows an image change as a replace (done with
//! --replace), keeps orphans until --remove-orphans, and goes down leaving an unrelated
//! instance alone. Malformed files, cycles and foreign objects create nothing; a failure
//! half-way is reported and a second apply finishes. Needs root; each test has its own
//! daemon and unique names, and leaves nothing behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use hutch_tests::{
    assert_no_leftovers, free_port, hutch_bin, output_within, require_root, unique_name,
    ReferenceLxd, TestDaemon, TestDir, Via, COMMAND_LIMIT,
};
use serde_json::Value;

fn daemon() -> TestDaemon {
    let d = TestDaemon::start();
    d.import_busybox(Via::Hutch);
    d
}

fn no_leftovers(d: &TestDaemon) {
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    assert_no_leftovers(&d.path().join("storage-pools/default/containers"), &prefix);
    assert_no_leftovers(&d.path().join("containers"), &prefix);
}

fn get(d: &TestDaemon, path: &str) -> (u16, Value) {
    let (status, body) = d.http("GET", path, b"");
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, v["metadata"].clone())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `hutch ARGS -f FILE`, which must succeed; stdout and stderr.
fn ok(d: &TestDaemon, args: &[&str], file: &Path) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-f", file.to_str().unwrap()]);
    let out = d.hutch(&all, b"");
    assert!(out.status.success(), "hutch {all:?} failed: {}", text(&out));
    text(&out)
}

/// `hutch ARGS -f FILE`, which must fail; stdout and stderr.
fn fails(d: &TestDaemon, args: &[&str], file: &Path) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-f", file.to_str().unwrap()]);
    let out = d.hutch(&all, b"");
    assert!(
        !out.status.success(),
        "hutch {all:?} succeeded: {}",
        text(&out)
    );
    text(&out)
}

fn instance_names(d: &TestDaemon) -> Vec<String> {
    let (_, list) = get(d, "/1.0/instances");
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn custom_volumes(d: &TestDaemon) -> Vec<String> {
    let (_, list) = get(d, "/1.0/storage-pools/default/volumes?recursion=1");
    list.as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "custom")
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

fn http_get(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or(out)
}

/// A folder for the stack file, its `.env` and the files it pushes.
fn stack_dir(d: &TestDaemon) -> PathBuf {
    let dir = d.path().join("stack");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stack_file(net: &str, stack: &str, port: u16, app_count: u32) -> String {
    format!(
        r#"name: {stack}
networks:
  {net}:
    config:
      ipv4.address: auto
      ipv4.nat: "false"
      ipv6.address: none
volumes:
  dbdata: {{}}
profiles:
  {stack}-small:
    config: {{user.tier: small}}
instances:
  db:
    image: bb
    volumes: {{dbdata: /data}}
    provision:
      - echo ready > /data/marker
    healthcheck: {{command: "test -e /data/marker", interval: 100ms, retries: 100}}
  app:
    image: bb
    count: {app_count}
    profiles: [default, {stack}-small]
    networks: [{net}]
    depends_on: {{db: {{condition: healthy}}}}
  web:
    image: ${{WEB_IMAGE:-bb}}
    config: {{user.color: "${{COLOR}}"}}
    ports: ["127.0.0.1:{port}:80"]
    depends_on: [app]
    files:
      - {{source: site/index.html, target: /www/index.html, mode: "0644"}}
    provision:
      - echo once >> /provisioned.log
      - httpd -p 127.0.0.1:80 -h /www
"#
    )
}

#[test]
fn a_stack_comes_up_updates_live_and_goes_down() {
    if !require_root("a_stack_comes_up_updates_live_and_goes_down") {
        return;
    }
    let d = daemon();
    // The same image under a second alias: a change of `image` in the file.
    let (_, alias) = get(&d, "/1.0/images/aliases/bb");
    let fp = alias["target"].as_str().unwrap().to_string();
    d.hutch_ok(&["image", "alias", "create", "bb2", &fp]);
    d.hutch_ok(&["launch", "bb", "other"]);
    let net = unique_name("stn");
    let stack = unique_name("shop");
    let port = free_port();
    let dir = stack_dir(&d);
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("site/index.html"), "hello-from-the-stack\n").unwrap();
    std::fs::write(dir.join(".env"), "COLOR=blue\n").unwrap();
    let file = dir.join("stack.yaml");
    std::fs::write(&file, stack_file(&net, &stack, port, 2)).unwrap();

    let plan = ok(&d, &["diff"], &file);
    for line in [
        format!("create   network  {net}"),
        "create   volume   default/dbdata".into(),
        format!("create   profile  {stack}-small"),
        "create   instance app-1".into(),
        "create   instance web".into(),
    ] {
        assert!(plan.contains(&line), "{line} in {plan}");
    }
    assert_eq!(instance_names(&d), ["other"], "diff changed nothing");

    let out = ok(&d, &["apply"], &file);
    assert!(out.contains("Done:"), "{out}");
    assert_eq!(instance_names(&d), ["app-1", "app-2", "db", "other", "web"]);
    assert_eq!(http_get(port), "hello-from-the-stack");
    assert_eq!(d.sh_ok("db", "cat /data/marker").trim(), "ready");
    let (_, vol) = get(&d, "/1.0/storage-pools/default/volumes/custom/dbdata");
    assert_eq!(vol["config"]["user.hutch.stack"], stack.as_str());
    let (_, n) = get(&d, &format!("/1.0/networks/{net}"));
    assert_eq!(n["config"]["user.hutch.stack"], stack.as_str());
    let (_, app) = get(&d, "/1.0/instances/app-2");
    assert_eq!(
        app["profiles"],
        serde_json::json!(["default", format!("{stack}-small")])
    );
    assert_eq!(app["devices"]["eth0"]["network"], net.as_str());
    let (_, other) = get(&d, "/1.0/instances/other");
    assert!(other["config"].get("user.hutch.stack").is_none());

    // Again, unchanged: nothing to do, and it says so.
    let out = ok(&d, &["apply"], &file);
    assert!(out.contains("is up to date: nothing to do"), "{out}");
    let ps = ok(&d, &["ps", "--format", "csv"], &file);
    assert!(
        ps.contains(&format!(
            "web,web,RUNNING,,tcp:127.0.0.1:{port}->tcp:127.0.0.1:80"
        )),
        "{ps}"
    );
    assert!(ps.contains("app-2,app,RUNNING"), "{ps}");
    assert!(!ps.contains("other"), "{ps}");

    // A config change, applied live: same init process, provisioning not run again.
    let (_, st) = get(&d, "/1.0/instances/web/state");
    let pid = st["pid"].clone();
    std::fs::write(dir.join(".env"), "COLOR=green\n").unwrap();
    let plan = ok(&d, &["apply", "--dry-run"], &file);
    assert!(plan.contains("update   instance web"), "{plan}");
    assert!(
        plan.contains(r#"config.user.color: "blue" -> "green""#),
        "{plan}"
    );
    let (_, web) = get(&d, "/1.0/instances/web");
    assert_eq!(
        web["config"]["user.color"], "blue",
        "--dry-run changed nothing"
    );
    ok(&d, &["apply"], &file);
    let (_, web) = get(&d, "/1.0/instances/web");
    assert_eq!(web["config"]["user.color"], "green");
    let (_, st) = get(&d, "/1.0/instances/web/state");
    assert_eq!(st["pid"], pid, "web was not restarted");
    assert_eq!(d.sh_ok("web", "cat /provisioned.log").trim(), "once");
    assert_eq!(http_get(port), "hello-from-the-stack");

    // An image change is a replace, done only with --replace.
    std::fs::write(dir.join(".env"), "COLOR=green\nWEB_IMAGE=bb2\n").unwrap();
    let plan = ok(&d, &["diff"], &file);
    assert!(plan.contains("replace  instance web"), "{plan}");
    assert!(plan.contains(r#"image: "bb" -> "bb2""#), "{plan}");
    let out = fails(&d, &["apply"], &file);
    assert!(out.contains("apply --replace"), "{out}");
    let (_, web) = get(&d, "/1.0/instances/web");
    assert_eq!(web["config"]["user.hutch.image"], "bb");
    ok(&d, &["apply", "--replace"], &file);
    let (_, web) = get(&d, "/1.0/instances/web");
    assert_eq!(web["config"]["user.hutch.image"], "bb2");
    assert_eq!(http_get(port), "hello-from-the-stack");
    assert!(ok(&d, &["apply"], &file).contains("nothing to do"));

    // One replica fewer: app-2 is an orphan, kept until --remove-orphans.
    std::fs::write(&file, stack_file(&net, &stack, port, 1)).unwrap();
    let plan = ok(&d, &["diff"], &file);
    assert!(plan.contains("delete   instance app-2"), "{plan}");
    let out = ok(&d, &["apply"], &file);
    assert!(
        out.contains("Kept:") && out.contains("instance app-2"),
        "{out}"
    );
    assert!(instance_names(&d).contains(&"app-2".to_string()));
    ok(&d, &["apply", "--remove-orphans"], &file);
    assert_eq!(instance_names(&d), ["app-1", "db", "other", "web"]);

    // Down: the stack's instances, profile and network; the volume stays, `other` too.
    let out = ok(&d, &["down"], &file);
    assert!(out.contains("down --volumes"), "{out}");
    assert_eq!(instance_names(&d), ["other"]);
    assert_eq!(get(&d, &format!("/1.0/profiles/{stack}-small")).0, 404);
    assert_eq!(get(&d, &format!("/1.0/networks/{net}")).0, 404);
    assert!(!Path::new("/sys/class/net").join(&net).exists());
    assert_eq!(custom_volumes(&d), ["dbdata"]);
    assert_eq!(get(&d, "/1.0/instances/other/state").1["status"], "Running");
    ok(&d, &["down", "--volumes"], &file);
    assert!(custom_volumes(&d).is_empty());
    assert!(ok(&d, &["down"], &file).contains("nothing to remove"));

    d.hutch_ok(&["delete", "--force", "other"]);
    no_leftovers(&d);
}

#[test]
fn bad_files_cycles_and_foreign_objects_create_nothing() {
    if !require_root("bad_files_cycles_and_foreign_objects_create_nothing") {
        return;
    }
    let d = daemon();
    d.hutch_ok(&["init", "bb", "web"]);
    let dir = stack_dir(&d);
    let file = dir.join("stack.yaml");
    let cases = [
        (
            "name: s1\nvolumes: {v1: {}}\ninstances:\n  db:\n    image: [bb\n",
            "stack.yaml:6:1: YAML syntax error",
        ),
        (
            "name: s1\nvolumes: {v1: {}}\ninstances:\n  db:\n    imgae: bb\n",
            "stack.yaml:5:5: instances.db.imgae: unknown field `imgae`",
        ),
        (
            "name: s1\nvolumes: {v1: {}}\ninstances:\n  a: {image: bb, depends_on: [b]}\n  b: {image: bb, depends_on: [a]}\n",
            "dependency cycle: a -> b -> a",
        ),
        (
            "name: s1\nvolumes: {v1: {}}\ninstances:\n  db: {image: bb}\n  web: {image: bb}\n",
            "instance web not part of this stack",
        ),
    ];
    for (content, want) in cases {
        std::fs::write(&file, content).unwrap();
        for cmd in ["apply", "diff"] {
            let out = fails(&d, &[cmd], &file);
            assert!(out.contains(want), "{cmd} {content}: {out}");
        }
        assert_eq!(instance_names(&d), ["web"], "{content}");
        assert!(custom_volumes(&d).is_empty(), "{content}");
    }
    let (_, web) = get(&d, "/1.0/instances/web");
    assert!(web["config"].get("user.hutch.stack").is_none());
    // `down` of a stack with that name leaves the unlabelled instance alone.
    assert!(ok(&d, &["down", "--volumes"], &file).contains("nothing to remove"));
    assert_eq!(instance_names(&d), ["web"]);
    d.hutch_ok(&["delete", "web"]);
    no_leftovers(&d);
}

#[test]
fn a_failure_half_way_is_reported_and_a_second_apply_finishes() {
    if !require_root("a_failure_half_way_is_reported_and_a_second_apply_finishes") {
        return;
    }
    let d = daemon();
    let dir = stack_dir(&d);
    let file = dir.join("stack.yaml");
    let content = |image: &str| {
        format!("name: half\nvolumes: {{data: {{}}}}\ninstances:\n  first:\n    image: bb\n    volumes: {{data: /data}}\n    provision: [\"echo 1 >> /data/runs\"]\n  second:\n    image: {image}\n    depends_on: [first]\n  third:\n    image: bb\n    depends_on: [second]\n    provision: [\"exit ${{THIRD_EXIT:-0}}\"]\n")
    };
    // An image that does not exist, after `first` was made.
    std::fs::write(&file, content("no-such-image")).unwrap();
    let out = fails(&d, &["apply"], &file);
    assert!(
        out.contains("Done:") && out.contains("create instance first"),
        "{out}"
    );
    assert!(
        out.contains("Failed:") && out.contains("create instance second"),
        "{out}"
    );
    assert!(out.contains("no-such-image"), "{out}");
    assert!(
        out.contains("Not done:") && out.contains("create instance third"),
        "{out}"
    );
    assert!(out.contains("apply again"), "{out}");
    assert_eq!(instance_names(&d), ["first"]);

    // The image fixed; now `third`'s provisioning fails after it was made and started.
    std::fs::write(&file, content("bb")).unwrap();
    std::fs::write(dir.join(".env"), "THIRD_EXIT=3\n").unwrap();
    let plan = ok(&d, &["diff"], &file);
    assert!(!plan.contains("instance first"), "first is done: {plan}");
    let out = fails(&d, &["apply"], &file);
    assert!(
        out.contains("create instance third: provision command 1"),
        "{out}"
    );
    assert!(out.contains("exited 3"), "{out}");
    assert_eq!(instance_names(&d), ["first", "second", "third"]);

    // Fixed again: the second apply finishes `third` (no new instance).
    std::fs::write(dir.join(".env"), "THIRD_EXIT=0\n").unwrap();
    let plan = ok(&d, &["diff"], &file);
    assert!(plan.contains("update   instance third"), "{plan}");
    assert!(plan.contains(r#"provisioned: "no" -> "yes""#), "{plan}");
    ok(&d, &["apply"], &file);
    assert_eq!(instance_names(&d), ["first", "second", "third"]);
    assert_eq!(custom_volumes(&d), ["data"]);
    assert_eq!(
        d.sh_ok("first", "cat /data/runs").trim(),
        "1",
        "provisioned once"
    );
    assert!(ok(&d, &["apply"], &file).contains("nothing to do"));
    ok(&d, &["down", "--volumes"], &file);
    assert!(instance_names(&d).is_empty());
    assert!(custom_volumes(&d).is_empty());
    no_leftovers(&d);
}

/// The same client-side apply against the reference LXD (its unix socket as `HUTCH_DIR`):
/// a volume, a profile and an instance with a port come up, answer, re-apply as a no-op,
/// and go down.
#[test]
fn the_same_stack_applies_to_a_reference_lxd() {
    let test = "the_same_stack_applies_to_a_reference_lxd";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = ReferenceLxd::start(test) else {
        return;
    };
    lxd.import_busybox();
    let work = TestDir::new();
    let file = work.path().join("stack.yaml");
    let port = free_port();
    std::fs::write(
        &file,
        format!("name: onlxd\nvolumes: {{data: {{}}}}\nprofiles: {{onlxd-p: {{config: {{user.x: \"1\"}}}}}}\ninstances:\n  web:\n    image: bb\n    profiles: [default, onlxd-p]\n    volumes: {{data: /data}}\n    ports: [\"127.0.0.1:{port}:80\"]\n    provision:\n      - mkdir -p /www && echo hello-lxd > /www/index.html\n      - httpd -p 127.0.0.1:80 -h /www\n"),
    )
    .unwrap();
    let hutch = |args: &[&str]| -> String {
        let mut cmd = std::process::Command::new(hutch_bin());
        cmd.args(args)
            .args(["-f", file.to_str().unwrap()])
            .env("HUTCH_DIR", lxd.lxd_dir())
            .env("HUTCH_CONF", work.path().join("conf"));
        let out = output_within(&mut cmd, b"", COMMAND_LIMIT);
        assert!(
            out.status.success(),
            "hutch {args:?} on LXD: {}\n{}",
            text(&out),
            lxd.log()
        );
        text(&out)
    };
    hutch(&["apply"]);
    assert_eq!(http_get(port), "hello-lxd");
    let listed = lxd.lxc_ok(&["list", "-f", "csv", "-c", "n"]);
    assert_eq!(listed.trim(), "web");
    let out = hutch(&["apply"]);
    assert!(out.contains("is up to date: nothing to do"), "{out}");
    assert!(hutch(&["ps", "--format", "csv"]).contains("web,web,RUNNING"));
    hutch(&["down", "--volumes"]);
    assert_eq!(lxd.lxc_ok(&["list", "-f", "csv", "-c", "n"]).trim(), "");
    let vols = lxd.lxc_ok(&["storage", "volume", "list", "default", "-f", "csv"]);
    assert!(!vols.contains("custom,data"), "{vols}");
}
