//! `hutch` over HTTPS to a remote daemon: remotes added by token (lxc's certificate add
//! token) and by URL with `--accept-certificate --password`, servers whose certificate is
//! not the expected one refused, then instance commands, exec and file transfer through
//! `REMOTE:NAME`, and `config trust` on the remote. The remote is a hutchd with its HTTPS
//! listener, and the reference LXD (the API's final word) for the same flow.

use std::path::Path;
use std::process::Command;

use hutch_tests::{
    busybox_image, require_root, unique_name, HutchClient, ReferenceLxd, TestDaemon, TestDir,
};

/// The token in `config trust add`'s output (its last line).
fn token_of(out: &str) -> String {
    assert!(out.contains("certificate add token:"), "{out}");
    out.lines().last().unwrap_or_default().trim().to_string()
}

/// The JSON of a token, with `fingerprint` replaced, encoded again.
fn with_fingerprint(token: &str, fp: &str) -> String {
    let raw = b64_decode(token);
    let mut v: serde_json::Value = serde_json::from_slice(&raw).expect("token json");
    v["fingerprint"] = serde_json::json!(fp);
    b64_encode(v.to_string().as_bytes())
}

fn b64_decode(text: &str) -> Vec<u8> {
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("base64 -d");
    out.stdout
}

fn b64_encode(data: &[u8]) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .expect("base64");
    String::from_utf8(out.stdout).unwrap()
}

/// The sha256 fingerprint of a PEM certificate (openssl).
fn fingerprint_of(pem: &str, work: &Path) -> String {
    let f = work.join("cert.pem");
    std::fs::write(&f, pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&f)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_lowercase()
}

/// The whole flow against one server: `token` is a fresh certificate add token of it,
/// `url` its HTTPS address, `server_pem` its certificate; `trust_password` set on it.
/// `image` is an alias the server has; `run_instances` says whether containers run there.
fn remote_flow(
    test: &str,
    token: &str,
    url: &str,
    server_pem: &str,
    password_for_second_client: Option<&str>,
    image: Option<&str>,
) {
    let h = HutchClient::new();
    let work = TestDir::new();
    let fp = fingerprint_of(server_pem, work.path());
    assert_eq!(fp.len(), 64);

    // A token whose fingerprint is not the server's: refused, nothing stored.
    let forged = with_fingerprint(token, &"0".repeat(64));
    let err = h.err_in(&["remote", "add", "h1", &forged], b"");
    assert!(
        err.contains("Certificate fingerprint mismatch between certificate token and server"),
        "{err}"
    );
    assert!(!h.server_cert_path("h1").exists());
    assert!(!h.ok(&["remote", "list", "-f", "csv"]).contains("h1,"));

    // The real token: the certificate stored, the client trusted.
    h.ok(&["remote", "add", "h1", token]);
    let stored = std::fs::read_to_string(h.server_cert_path("h1")).expect("servercerts/h1.crt");
    assert_eq!(fingerprint_of(&stored, work.path()), fp);
    let list = h.ok(&["remote", "list", "-f", "csv"]);
    assert!(
        list.contains(&format!("h1,{url},lxd,tls,NO,NO,NO")),
        "{list}"
    );
    assert!(h.conf().join("client.crt").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(h.conf().join("client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A token is single-use.
    let h_again = HutchClient::new();
    let err = h_again.err_in(&["remote", "add", "h1", token], b"");
    assert!(err.contains("Failed to create certificate"), "{err}");
    assert!(!h_again.server_cert_path("h1").exists());

    // Instance commands through REMOTE:NAME.
    h.ok(&["list", "h1:", "-f", "csv"]);
    let trust = h.ok(&["config", "trust", "list", "h1:", "-f", "csv"]);
    let client_fp = {
        let pem = std::fs::read_to_string(h.conf().join("client.crt")).unwrap();
        fingerprint_of(&pem, work.path())
    };
    assert!(trust.contains(&client_fp[..12]), "{trust}");
    if let Some(image) = image {
        let c1 = unique_name("c1");
        h.ok(&["launch", &format!("h1:{image}"), &format!("h1:{c1}")]);
        let listed = h.ok(&["list", "h1:", "-c", "ns", "-f", "csv"]);
        assert!(listed.contains(&format!("{c1},RUNNING")), "{listed}");
        let out = h.ok(&["exec", &format!("h1:{c1}"), "--", "echo", "over-https"]);
        assert_eq!(out, "over-https\n");
        let local = work.path().join("hello.txt");
        std::fs::write(&local, "hello over https\n").unwrap();
        h.ok(&[
            "file",
            "push",
            local.to_str().unwrap(),
            &format!("h1:{c1}/root/hello.txt"),
        ]);
        let back = work.path().join("back.txt");
        h.ok(&[
            "file",
            "pull",
            &format!("h1:{c1}/root/hello.txt"),
            back.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read_to_string(&back).unwrap(),
            "hello over https\n"
        );
        h.ok(&["snapshot", &format!("h1:{c1}"), "snap0"]);
        h.ok(&["delete", "--force", &format!("h1:{c1}")]);
        assert!(!h.ok(&["list", "h1:", "-f", "csv"]).contains(&c1));
    } else {
        hutch_tests::skipped(test, "no image on the server: instance commands not run");
    }

    // A stored certificate that no longer matches the server: refused.
    let other = work.path().join("other.crt");
    std::fs::copy(h.conf().join("client.crt"), &other).unwrap();
    let saved = std::fs::read(h.server_cert_path("h1")).unwrap();
    std::fs::copy(&other, h.server_cert_path("h1")).unwrap();
    let err = h.err_in(&["list", "h1:"], b"");
    assert!(err.contains("certificate"), "{err}");
    std::fs::write(h.server_cert_path("h1"), saved).unwrap();

    // A second client by URL and password: a "no" to the fingerprint stores nothing;
    // --accept-certificate with the password is trusted.
    if let Some(password) = password_for_second_client {
        let h2 = HutchClient::new();
        let err = h2.err_in(&["remote", "add", "s", url, "--password", password], b"n\n");
        assert!(err.contains("Server certificate NACKed by user"), "{err}");
        assert!(!h2.server_cert_path("s").exists());
        let out = h2.ok_in(
            &["remote", "add", "s", url, "--password", password],
            format!("{fp}\n").as_bytes(),
        );
        assert!(
            out.contains(&format!("Certificate fingerprint: {fp}")),
            "{out}"
        );
        assert!(
            out.contains("Client certificate now trusted by server: s"),
            "{out}"
        );
        h2.ok(&["list", "s:"]);
        let h3 = HutchClient::new();
        let out = h3.ok(&[
            "remote",
            "add",
            "s3",
            url,
            "--accept-certificate",
            "--password",
            password,
        ]);
        assert!(!out.contains("Certificate fingerprint"), "{out}");
        let refused = HutchClient::new();
        let err = refused.err_in(
            &[
                "remote",
                "add",
                "bad",
                url,
                "--accept-certificate",
                "--password",
                "wrong",
            ],
            b"",
        );
        assert!(
            err.lines()
                .last()
                .unwrap_or_default()
                .starts_with("Error: "),
            "{err}"
        );
        // Nothing half-made: no remote, no stored certificate.
        assert!(!refused.server_cert_path("bad").exists());
        assert!(!refused
            .ok(&["remote", "list", "-f", "csv"])
            .contains("bad,"));
        // `config trust remove` of the second client: it is no longer trusted.
        let h2_fp = fingerprint_of(
            &std::fs::read_to_string(h2.conf().join("client.crt")).unwrap(),
            work.path(),
        );
        h.ok(&["config", "trust", "remove", &format!("h1:{h2_fp}")]);
        let trust = h.ok(&["config", "trust", "list", "h1:", "-f", "csv"]);
        assert!(!trust.contains(&h2_fp[..12]), "{trust}");
        let err = h2.err_in(&["list", "s:"], b"");
        assert!(
            err.lines()
                .last()
                .unwrap_or_default()
                .starts_with("Error: "),
            "{err}"
        );
    }

    // A certificate added from its file, shown, renamed by edit, removed.
    let extra = extra_certificate(work.path());
    h.ok(&[
        "config",
        "trust",
        "add",
        "h1:",
        extra.to_str().unwrap(),
        "--name",
        "extra",
    ]);
    let extra_fp = fingerprint_of(&std::fs::read_to_string(&extra).unwrap(), work.path());
    let shown = h.ok(&["config", "trust", "show", &format!("h1:{extra_fp}")]);
    assert!(shown.starts_with("name: extra\ntype: client\n"), "{shown}");
    assert!(
        shown.ends_with(&format!("fingerprint: {extra_fp}\n")),
        "{shown}"
    );
    h.ok_in(
        &["config", "trust", "edit", &format!("h1:{extra_fp}")],
        shown.replace("name: extra", "name: renamed").as_bytes(),
    );
    let trust = h.ok(&["config", "trust", "list", "h1:", "-f", "csv"]);
    assert!(
        trust.contains("client,renamed,root@extra") && trust.contains(&extra_fp[..12]),
        "{trust}"
    );
    h.ok(&["config", "trust", "remove", &format!("h1:{extra_fp}")]);
    assert!(!h
        .ok(&["config", "trust", "list", "h1:", "-f", "csv"])
        .contains("renamed"));

    // Tokens made by hutch on the remote: listed, revoked.
    let out = h.ok(&["config", "trust", "add", "h1:", "--name", "later"]);
    let later = token_of(&out);
    let tokens = h.ok(&["config", "trust", "list-tokens", "h1:", "-f", "csv"]);
    assert!(tokens.contains(&format!("later,{later},")), "{tokens}");
    let out = h.ok(&["config", "trust", "revoke-token", "h1:later"]);
    assert_eq!(out, "Certificate add token for later deleted\n");
    let tokens = h.ok(&["config", "trust", "list-tokens", "h1:", "-f", "csv"]);
    assert!(!tokens.contains("later"), "{tokens}");
    let err = HutchClient::new().err_in(&["remote", "add", "x", &later], b"");
    assert!(
        err.lines()
            .last()
            .unwrap_or_default()
            .starts_with("Error: "),
        "{err}"
    );
}

#[test]
fn hutch_remote_to_reference_lxd() {
    let test = "hutch_remote_to_reference_lxd";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = ReferenceLxd::start(test) else {
        return;
    };
    lxd.lxc_ok(&["config", "set", "core.trust_password", "sekret"]);
    let work = TestDir::new();
    let image = work.path().join("bb.tar.gz");
    busybox_image(work.path(), &image).expect("busybox image");
    lxd.lxc_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    let token = token_of(&lxd.lxc_ok(&["config", "trust", "add", "--name", "hutchc"]));
    remote_flow(
        test,
        &token,
        &lxd.url,
        &lxd.server_cert(),
        Some("sekret"),
        Some("bb"),
    );
}

/// hutchd's HTTPS listener, driven by hutch: the token made by `hutch config trust add`
/// on the local socket.
#[test]
fn hutch_remote_to_hutchd() {
    let test = "hutch_remote_to_hutchd";
    if !require_root(test) {
        return;
    }
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    if !d.has_extensions(&["certificate_token"]) {
        hutch_tests::skipped(
            test,
            "this hutchd has no trust tokens yet (the daemon half of issue 15)",
        );
        return;
    }
    let url = d.enable_https();
    d.hutch_ok(&["config", "set", "core.trust_password", "sekret"]);
    d.import_busybox(hutch_tests::Via::Hutch);
    let token = token_of(&d.hutch_ok(&["config", "trust", "add", "--name", "hutchc"]));
    remote_flow(
        test,
        &token,
        &url,
        &d.server_cert(),
        Some("sekret"),
        Some("bb"),
    );
}

/// A fresh self-signed client certificate (openssl), PEM at the returned path.
fn extra_certificate(work: &Path) -> std::path::PathBuf {
    let crt = work.join("extra.crt");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:secp384r1",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=root@extra",
        ])
        .arg("-keyout")
        .arg(work.join("extra.key"))
        .arg("-out")
        .arg(&crt)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl req");
    assert!(status.success(), "openssl req failed");
    crt
}

/// Images from an LXD-protocol remote into the local hutchd, as lxc asks for them: the
/// local daemon pulls with the remote's stored certificate, and for a private image with
/// the secret hutch asks the remote for. `image list REMOTE:` reads the remote.
#[test]
fn images_from_an_lxd_remote_into_hutchd() {
    let test = "images_from_an_lxd_remote_into_hutchd";
    if !require_root(test) {
        return;
    }
    let Some(lxd) = ReferenceLxd::start(test) else {
        return;
    };
    let work = TestDir::new();
    let image = work.path().join("bb.tar.gz");
    busybox_image(work.path(), &image).expect("busybox image");
    // Private, as `lxc image import` makes it: pulled with a secret.
    lxd.lxc_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    let d = TestDaemon::start_with(&["--storage-backend", "dir"]);
    let token = token_of(&lxd.lxc_ok(&["config", "trust", "add", "--name", "hutchd-user"]));
    d.hutch_ok(&["remote", "add", "h1", &token]);
    let listed = d.hutch_ok(&["image", "list", "h1:", "-c", "l", "-f", "csv"]);
    assert!(listed.contains("bb"), "{listed}");
    d.hutch_ok(&["image", "copy", "h1:bb", "local:", "--alias", "from-lxd"]);
    let local = d.hutch_ok(&["image", "list", "-c", "l", "-f", "csv"]);
    assert!(local.contains("from-lxd"), "{local}");
    let c1 = unique_name("c1");
    d.hutch_ok(&["launch", "h1:bb", &c1]);
    assert_eq!(
        d.hutch_ok(&["exec", &c1, "--", "echo", "pulled"]),
        "pulled\n"
    );
    d.hutch_ok(&["delete", "--force", &c1]);
}
