//! Compatibility: pylxd (the Python client automation uses) drives hutchd unchanged.
//! Needs root and pylxd (`scripts/test.sh` installs it with pip).

use std::process::Command;

use hutch_tests::{busybox_image, require_root, TestDaemon};

#[test]
fn pylxd_drives_hutchd() {
    if !require_root("pylxd_drives_hutchd") {
        return;
    }
    let have_pylxd = Command::new("python3")
        .args(["-c", "import pylxd"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_pylxd {
        assert!(
            std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1"),
            "pylxd is not installed (pip install pylxd)"
        );
        hutch_tests::skipped("pylxd_drives_hutchd", "pylxd is not installed");
        return;
    }
    let d = TestDaemon::start();
    let image = d.path().join("bb.tar.gz");
    busybox_image(d.path(), &image).expect("build the image");
    d.hutch_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/pylxd_smoke.py");
    let out = hutch_tests::output_within(
        Command::new("python3")
            .arg(script)
            .arg(d.socket())
            .arg("bb")
            .arg(hutch_tests::unique_name("hpy")),
        b"",
        hutch_tests::COMMAND_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("pylxd ok"),
        "{stdout}\n{stderr}"
    );
    // Against LXD, pylxd's exec websockets end silently: hutchd ends them the same way
    // (ws4py logs `Terminating websocket ... BrokenPipeError` when they are not).
    assert_eq!(stderr, "", "pylxd wrote to stderr");
}
