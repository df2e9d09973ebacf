//! Image templates (issue 14), against a real hutchd and real busybox containers: an image
//! whose metadata.yaml has templates for /etc/hostname, /etc/hosts, a `create_only` file, a
//! `start` file reading `config_get`, and a path through a symlink the image planted; they
//! are rendered at the first start, again per `when` after copy and rename, and the
//! symlink leads nowhere outside the container; the metadata and templates are read and
//! edited through `hutch config metadata|template` and LXD's `lxc`. Needs root.

use std::path::Path;
use std::process::Command;

use hutch_tests::{assert_no_leftovers, busybox_rootfs, require_root, TestDaemon};

const METADATA: &str = r#"architecture: x86_64
creation_date: 1700000000
properties:
  os: busybox
  description: busybox with templates
templates:
  /etc/hostname:
    when: [create, copy]
    template: hostname.tpl
  /etc/hosts:
    when: [create, copy, rename]
    template: hosts.tpl
  /etc/motd:
    when: [create, copy, rename]
    create_only: true
    template: motd.tpl
  /etc/greeting:
    when: [start]
    template: greeting.tpl
    properties:
      punctuation: "!"
  /etc/made/by/templates:
    when: [create]
    template: motd.tpl
  /etc/escape:
    when: [create]
    template: hostname.tpl
"#;

/// distrobuilder's hostname and hosts templates, and two of our own.
const TEMPLATES: [(&str, &str); 4] = [
    ("hostname.tpl", "{{ container.name }}\n"),
    (
        "hosts.tpl",
        "127.0.1.1\t{{ container.name }}\n127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
    ),
    (
        "motd.tpl",
        "made on {{ trigger }} for {{ instance.name }}{% if instance.privileged == \"false\" %}, unprivileged{% endif %}\n",
    ),
    (
        "greeting.tpl",
        "{{ config_get(\"user.greeting\", \"hi\") }} from {{ container.name }}{{ properties.punctuation }}\n",
    ),
];

/// The image tarball at `dest`; its /etc/escape is a symlink to `victim`, a host path.
fn templated_image(work: &Path, dest: &Path, victim: &Path) {
    let tree = work.join("templated-tree");
    busybox_rootfs(&tree.join("rootfs")).expect("build the busybox rootfs");
    std::fs::write(tree.join("metadata.yaml"), METADATA).unwrap();
    std::fs::create_dir(tree.join("templates")).unwrap();
    for (name, text) in TEMPLATES {
        std::fs::write(tree.join("templates").join(name), text).unwrap();
    }
    // Climbs far above the root, then names a host path: inside the container it can only
    // reach the container's own /tmp.
    let link = format!("../../../../../../../..{}", victim.display());
    std::os::unix::fs::symlink(link, tree.join("rootfs/etc/escape")).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-czf")
        .arg(dest)
        .args(["metadata.yaml", "templates", "rootfs"])
        .status()
        .unwrap();
    assert!(status.success(), "tar failed");
    std::fs::remove_dir_all(&tree).unwrap();
}

fn cat(d: &TestDaemon, name: &str, path: &str) -> String {
    d.sh_ok(name, &format!("cat {path}"))
}

/// The instance's `volatile.apply_template`, or "" when unset.
fn pending_trigger(d: &TestDaemon, name: &str) -> String {
    let (status, body) = d.http("GET", &format!("/1.0/instances/{name}"), b"");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["metadata"]["config"]["volatile.apply_template"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn templates_render_on_create_copy_rename_and_start() {
    if !require_root("templates_render_on_create_copy_rename_and_start") {
        return;
    }
    let d = TestDaemon::start();
    // A host path the symlink names; nothing may ever appear there.
    let victim = Path::new("/tmp").join(hutch_tests::unique_name("hutch-template-victim"));
    let image = d.path().join("templated.tar.gz");
    templated_image(d.path(), &image, &victim);
    d.hutch_ok(&["image", "import", image.to_str().unwrap(), "--alias", "tpl"]);

    // Created, not started: the trigger waits for the first start.
    d.hutch_ok(&["init", "tpl", "c1", "-c", "user.greeting=hello"]);
    assert_eq!(pending_trigger(&d, "c1"), "create");
    let rootfs = d.path().join("storage-pools/default/containers/c1");
    assert!(rootfs.join("metadata.yaml").is_file());
    assert!(rootfs.join("templates/hostname.tpl").is_file());
    assert!(!rootfs.join("rootfs/etc/greeting").exists());

    d.hutch_ok(&["start", "c1"]);
    assert_eq!(pending_trigger(&d, "c1"), "");
    assert_eq!(cat(&d, "c1", "/etc/hostname"), "c1\n");
    assert!(cat(&d, "c1", "/etc/hosts").starts_with("127.0.1.1\tc1\n127.0.0.1\tlocalhost\n"));
    assert_eq!(
        cat(&d, "c1", "/etc/motd"),
        "made on create for c1, unprivileged\n"
    );
    assert_eq!(cat(&d, "c1", "/etc/greeting"), "hello from c1!\n");
    // New files and the directories above them belong to the container's root, 0644/0755.
    assert_eq!(
        d.sh_ok(
            "c1",
            "stat -c '%u:%g %a' /etc/made/by/templates /etc/made/by /etc/greeting"
        ),
        "0:0 644\n0:0 755\n0:0 644\n"
    );
    // The symlink was followed inside the container only.
    assert!(
        !victim.exists(),
        "a template was written outside the container"
    );
    assert_eq!(cat(&d, "c1", &victim.display().to_string()), "c1\n");

    // The container changes its files; the next start renders only the `start` template.
    d.sh_ok(
        "c1",
        "echo mine > /etc/motd && echo mine > /etc/hostname && echo x > /etc/greeting",
    );
    d.hutch_ok(&["restart", "c1", "--force"]);
    assert_eq!(cat(&d, "c1", "/etc/hostname"), "mine\n");
    assert_eq!(cat(&d, "c1", "/etc/greeting"), "hello from c1!\n");
    d.hutch_ok(&["stop", "c1", "--force"]);

    // A copy renders its `copy` templates; `create_only` keeps the file it already has.
    d.hutch_ok(&["copy", "c1", "c2"]);
    assert_eq!(pending_trigger(&d, "c2"), "copy");
    d.hutch_ok(&["config", "set", "c2", "user.greeting", "bonjour"]);
    d.hutch_ok(&["start", "c2"]);
    assert_eq!(cat(&d, "c2", "/etc/hostname"), "c2\n");
    assert!(cat(&d, "c2", "/etc/hosts").starts_with("127.0.1.1\tc2\n"));
    assert_eq!(cat(&d, "c2", "/etc/motd"), "mine\n");
    assert_eq!(cat(&d, "c2", "/etc/greeting"), "bonjour from c2!\n");
    d.hutch_ok(&["stop", "c2", "--force"]);

    // A rename renders the `rename` ones only: /etc/hosts, not /etc/hostname.
    d.hutch_ok(&["rename", "c2", "c3"]);
    assert_eq!(pending_trigger(&d, "c3"), "rename");
    d.hutch_ok(&["start", "c3"]);
    assert_eq!(pending_trigger(&d, "c3"), "");
    assert_eq!(cat(&d, "c3", "/etc/hostname"), "c2\n");
    assert!(cat(&d, "c3", "/etc/hosts").starts_with("127.0.1.1\tc3\n"));
    assert_eq!(cat(&d, "c3", "/etc/greeting"), "bonjour from c3!\n");
    // The original is untouched by its copy's life.
    d.hutch_ok(&["start", "c1"]);
    assert_eq!(
        cat(&d, "c1", "/etc/hosts").lines().next(),
        Some("127.0.1.1\tc1")
    );

    assert!(
        !victim.exists(),
        "a template was written outside the container"
    );
    // The instance's metadata and templates, through hutch and through LXD's lxc.
    let meta = d.hutch_ok(&["config", "metadata", "show", "c1"]);
    assert!(
        meta.contains("/etc/hostname:") && meta.contains("template: hostname.tpl"),
        "{meta}"
    );
    let list = d.hutch_ok(&["config", "template", "list", "c1"]);
    assert_eq!(list, "greeting.tpl\nhostname.tpl\nhosts.tpl\nmotd.tpl\n");
    assert_eq!(
        d.hutch_ok(&["config", "template", "show", "c1", "hostname.tpl"]),
        "{{ container.name }}\n"
    );
    let meta = d.lxc_ok(&["config", "metadata", "show", "c1"]);
    assert!(meta.contains("template: greeting.tpl"), "{meta}");
    assert!(d
        .lxc_ok(&["config", "template", "list", "c1"])
        .contains("motd.tpl"));
    assert_eq!(
        d.lxc_ok(&["config", "template", "show", "c1", "hosts.tpl"]),
        TEMPLATES[1].1
    );
    // An edited template is what the next start renders.
    let out = d.hutch(
        &["config", "template", "edit", "c1", "greeting.tpl"],
        b"edited for {{ instance.name }}\n",
    );
    assert!(out.status.success(), "{out:?}");
    d.hutch_ok(&["restart", "c1", "--force"]);
    assert_eq!(cat(&d, "c1", "/etc/greeting"), "edited for c1\n");

    // A published image carries the instance's templates (as edited): its instances get
    // their own names.
    d.hutch_ok(&["stop", "c1", "--force"]);
    d.hutch_ok(&["publish", "c1", "--alias", "republished"]);
    d.hutch_ok(&["launch", "republished", "p1"]);
    assert_eq!(cat(&d, "p1", "/etc/hostname"), "p1\n");
    assert_eq!(cat(&d, "p1", "/etc/greeting"), "edited for p1\n");
    // create_only: the file the image's rootfs already holds stays.
    assert_eq!(cat(&d, "p1", "/etc/motd"), "mine\n");

    d.hutch_ok(&["delete", "c1", "c3", "p1", "--force"]);
    let prefix = hutch_tests::daemon::cgroup_prefix(d.path());
    for name in ["c1", "c3", "p1"] {
        assert_no_leftovers(
            &d.path().join("storage-pools/default/containers"),
            &format!("{prefix}/{name}"),
        );
    }
}

#[test]
fn a_broken_template_fails_the_start_and_names_the_template() {
    if !require_root("a_broken_template_fails_the_start_and_names_the_template") {
        return;
    }
    let d = TestDaemon::start();
    let tree = d.path().join("broken-tree");
    busybox_rootfs(&tree.join("rootfs")).expect("build the busybox rootfs");
    std::fs::write(
        tree.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1\ntemplates:\n  /etc/hostname:\n    when: [create]\n    template: broken.tpl\n",
    )
    .unwrap();
    std::fs::create_dir(tree.join("templates")).unwrap();
    std::fs::write(tree.join("templates/broken.tpl"), "{% if %}\n").unwrap();
    let image = d.path().join("broken.tar.gz");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-czf")
        .arg(&image)
        .args(["metadata.yaml", "templates", "rootfs"])
        .status()
        .unwrap();
    assert!(status.success());
    d.hutch_ok(&[
        "image",
        "import",
        image.to_str().unwrap(),
        "--alias",
        "broken",
    ]);
    d.hutch_ok(&["init", "broken", "b1"]);
    let err = d.hutch_err(&["start", "b1"]);
    assert!(err.contains("broken.tpl"), "{err}");
    // Nothing half-made: the trigger is still pending, the file untouched.
    assert_eq!(pending_trigger(&d, "b1"), "create");
    d.hutch_ok(&["delete", "b1", "--force"]);
}

#[test]
fn split_images_keep_their_templates() {
    if !require_root("split_images_keep_their_templates") {
        return;
    }
    let d = TestDaemon::start();
    let work = d.path().join("split");
    busybox_rootfs(&work.join("rootfs")).expect("build the busybox rootfs");
    std::fs::write(
        work.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1\ntemplates:\n  /etc/hostname:\n    when: [create, copy]\n    template: hostname.tpl\n",
    )
    .unwrap();
    std::fs::create_dir(work.join("templates")).unwrap();
    std::fs::write(work.join("templates/hostname.tpl"), TEMPLATES[0].1).unwrap();
    let tar = |args: &[&str], dir: &Path| {
        let status = Command::new("tar")
            .arg("-C")
            .arg(dir)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "tar {args:?}");
    };
    let meta = work.join("meta.tar.xz");
    let rootfs = work.join("rootfs.tar.gz");
    tar(
        &["-cJf", meta.to_str().unwrap(), "metadata.yaml", "templates"],
        &work,
    );
    tar(
        &["-czf", rootfs.to_str().unwrap(), "."],
        &work.join("rootfs"),
    );
    d.hutch_ok(&[
        "image",
        "import",
        meta.to_str().unwrap(),
        rootfs.to_str().unwrap(),
        "--alias",
        "split",
    ]);
    d.hutch_ok(&["launch", "split", "s1"]);
    assert_eq!(cat(&d, "s1", "/etc/hostname"), "s1\n");
    d.hutch_ok(&["delete", "s1", "--force"]);
}
