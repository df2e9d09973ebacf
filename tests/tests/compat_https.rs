//! Compatibility over HTTPS: LXD's `lxc` and pylxd reach hutchd on `core.https_address`
//! with their own client certificates, trusted by token (`lxc config trust add`, then
//! `lxc remote add NAME TOKEN`), by trust password (`lxc remote add --password`) and by
//! a certificate the admin added; then list, launch and exec (websockets over TLS).
//! Needs root; pylxd is optional (skipped without it).

use std::path::Path;
use std::process::{Command, Output};

use hutch_tests::daemon::Via;
use hutch_tests::{require_root, unique_name, TestDaemon};

/// `lxc` with the client config in `conf` (its own client certificate), against `d`'s
/// socket as its local remote.
fn lxc_in(d: &TestDaemon, conf: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("lxc");
    cmd.args(args)
        .env("LXD_DIR", d.path())
        .env("LXD_CONF", conf)
        .env("HOME", d.path());
    hutch_tests::output_within(&mut cmd, b"", hutch_tests::COMMAND_LIMIT)
}

fn lxc_in_ok(d: &TestDaemon, conf: &Path, args: &[&str]) -> String {
    let out = lxc_in(d, conf, args);
    assert!(
        out.status.success(),
        "lxc {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lxc_remotes_by_token_and_password_list_launch_and_exec() {
    if !require_root("lxc_remotes_by_token_and_password_list_launch_and_exec") {
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox(Via::Lxc);
    let url = d.enable_https();
    let remote_conf = d.path().join("lxc-remote-conf");

    // The admin issues a token on the socket; another client redeems it.
    let out = d.lxc_ok(&["config", "trust", "add", "--name", "x"]);
    let token = out
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .expect("a token")
        .to_string();
    assert!(out.contains("certificate add token"), "{out}");
    let tokens = d.lxc_ok(&["config", "trust", "list-tokens", "--format", "csv"]);
    assert!(tokens.contains('x'), "{tokens}");
    lxc_in_ok(&d, &remote_conf, &["remote", "add", "h1", &token]);
    let tokens = d.lxc_ok(&["config", "trust", "list-tokens", "--format", "csv"]);
    assert!(!tokens.contains(&token), "the token is used up: {tokens}");
    let trusted = d.lxc_ok(&["config", "trust", "list", "--format", "csv"]);
    assert!(trusted.contains("x,"), "{trusted}");

    let name = unique_name("hs");
    lxc_in_ok(&d, &remote_conf, &["list", "h1:", "--format", "csv"]);
    lxc_in_ok(
        &d,
        &remote_conf,
        &["launch", "h1:bb", &format!("h1:{name}")],
    );
    let list = lxc_in_ok(
        &d,
        &remote_conf,
        &["list", "h1:", "--format", "csv", "-c", "ns"],
    );
    assert!(list.contains(&format!("{name},RUNNING")), "{list}");
    lxc_in_ok(
        &d,
        &remote_conf,
        &["exec", &format!("h1:{name}"), "--", "true"],
    );
    let echoed = lxc_in_ok(
        &d,
        &remote_conf,
        &[
            "exec",
            &format!("h1:{name}"),
            "--",
            "sh",
            "-c",
            "echo over-tls",
        ],
    );
    assert_eq!(echoed.trim(), "over-tls");
    let failed = lxc_in(
        &d,
        &remote_conf,
        &["exec", &format!("h1:{name}"), "--", "sh", "-c", "exit 7"],
    );
    assert_eq!(failed.status.code(), Some(7));

    // By trust password, from a third client.
    d.lxc_ok(&["config", "set", "core.trust_password", "pw-x"]);
    let password_conf = d.path().join("lxc-password-conf");
    let wrong = lxc_in(
        &d,
        &password_conf,
        &[
            "remote",
            "add",
            "h2",
            &url,
            "--accept-certificate",
            "--password",
            "nope",
        ],
    );
    assert!(!wrong.status.success(), "a wrong password");
    lxc_in_ok(
        &d,
        &password_conf,
        &[
            "remote",
            "add",
            "h2",
            &url,
            "--accept-certificate",
            "--password",
            "pw-x",
        ],
    );
    let list = lxc_in_ok(
        &d,
        &password_conf,
        &["list", "h2:", "--format", "csv", "-c", "n"],
    );
    assert!(list.contains(&name), "{list}");

    lxc_in_ok(
        &d,
        &remote_conf,
        &["delete", "--force", &format!("h1:{name}")],
    );
}

#[test]
fn pylxd_over_https_lists_creates_and_starts() {
    if !require_root("pylxd_over_https_lists_creates_and_starts") {
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
        hutch_tests::skipped(
            "pylxd_over_https_lists_creates_and_starts",
            "pylxd is not installed",
        );
        return;
    }
    let d = TestDaemon::start();
    d.import_busybox(Via::Hutch);
    let url = d.enable_https();
    let id = hutch_tls::Identity::generate(hutch_tls::Kind::Client).unwrap();
    let (crt, key) = (d.path().join("py.crt"), d.path().join("py.key"));
    std::fs::write(&crt, &id.cert_pem).unwrap();
    std::fs::write(&key, &id.key_pem).unwrap();
    let body = serde_json::json!({
        "certificate": hutch_tls::base64_encode(&id.cert_der),
        "name": "pylxd",
        "type": "client",
    });
    let (status, out) = d.http("POST", "/1.0/certificates", body.to_string().as_bytes());
    assert_eq!(status, 201, "{out}");
    let name = unique_name("hp");
    let script = r#"
import sys, warnings
warnings.filterwarnings("ignore")
import pylxd
url, crt, key, name = sys.argv[1:5]
c = pylxd.Client(endpoint=url, cert=(crt, key), verify=False)
assert c.trusted, "the client certificate is trusted"
assert name not in [i.name for i in c.instances.all()]
inst = c.instances.create({"name": name, "source": {"type": "image", "alias": "bb"}}, wait=True)
inst.start(wait=True)
inst.sync()
assert inst.status == "Running", inst.status
r = inst.execute(["sh", "-c", "echo out"])
assert (r.exit_code, r.stdout) == (0, "out\n"), r
assert name in [i.name for i in c.instances.all()]
inst.stop(wait=True, force=True)
inst.delete(wait=True)
untrusted = pylxd.Client(endpoint=url, verify=False)
assert not untrusted.trusted
print("pylxd https ok")
"#;
    let out = hutch_tests::output_within(
        Command::new("python3")
            // requests lets these override `verify=False` (psf/requests#3829).
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .args(["-c", script])
            .arg(&url)
            .arg(&crt)
            .arg(&key)
            .arg(&name),
        b"",
        hutch_tests::COMMAND_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("pylxd https ok"),
        "{stdout}\n{stderr}"
    );
}
