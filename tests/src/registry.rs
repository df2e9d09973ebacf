//! An OCI registry on loopback for tests and the bench: Debian's `docker-registry`
//! (distribution v2) on a free port with its storage under a given directory, and
//! `skopeo copy` to push OCI archives into it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_until};

const REGISTRY: &str = "/usr/bin/docker-registry";

/// A registry process, killed and reaped when dropped (the test failing or not).
pub struct Registry {
    child: Child,
    pub port: u16,
    log: PathBuf,
    /// `https` when it serves TLS.
    scheme: &'static str,
}

impl Registry {
    /// Why a registry cannot run here (a tool missing), if it cannot.
    pub fn tools_missing() -> Option<&'static str> {
        if !Path::new(REGISTRY).exists() {
            return Some("docker-registry is not installed");
        }
        let skopeo = Command::new("skopeo").arg("--version").output();
        if !skopeo.is_ok_and(|o| o.status.success()) {
            return Some("skopeo is not installed");
        }
        None
    }

    /// Starts `docker-registry` on a free loopback port, storage and log under `dir`.
    pub fn start(dir: &Path) -> Registry {
        Registry::start_with(dir, "")
    }

    /// One serving HTTPS with a certificate for 127.0.0.1 signed by `ca`.
    pub fn start_tls(dir: &Path, ca: &crate::TestCa) -> Registry {
        use base64::Engine as _;
        let pem = |label: &str, der: &[u8]| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect();
            format!(
                "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
                lines.join("\n")
            )
        };
        let (chain, key) = ca.server_cert();
        let chain: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        let (cert_file, key_file) = (dir.join("registry-cert.pem"), dir.join("registry-key.pem"));
        fs::write(&cert_file, chain).expect("registry certificate");
        fs::write(&key_file, pem("PRIVATE KEY", key.secret_der())).expect("registry key");
        // Under `http:` (the line before is its `addr`).
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert_file.display(),
            key_file.display()
        );
        let mut registry = Registry::start_with(dir, &tls);
        registry.scheme = "https";
        registry
    }

    /// The same, with more of its YAML config (`auth:`...).
    pub fn start_with(dir: &Path, more_config: &str) -> Registry {
        let port = free_port();
        let storage = dir.join("registry-storage");
        fs::create_dir_all(&storage).expect("registry storage");
        let config = dir.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n{more_config}",
                storage.display()
            ),
        )
        .expect("registry config");
        let log = dir.join("registry.log");
        let out = fs::File::create(&log).expect("registry log");
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            child,
            port,
            log,
            scheme: "http",
        };
        wait_until("the registry answers", Duration::from_secs(60), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        registry
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// How many blob requests of `repo` the registry logged so far.
    pub fn blob_requests(&self, repo: &str) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("GET /v2/{repo}/blobs/")))
            .count()
    }

    /// `skopeo copy` of the OCI archive `archive` into the registry as `repo:tag`.
    pub fn push(&self, archive: &Path, repo_tag: &str) {
        self.skopeo_copy(&[], &[], archive, repo_tag)
    }

    /// `skopeo [global] copy [copy_options]` of `archive` into the registry as `repo:tag`
    /// (`--override-arch …` as a global option, `--dest-creds …` as a copy option).
    pub fn skopeo_copy(
        &self,
        global: &[&str],
        copy_options: &[&str],
        archive: &Path,
        repo_tag: &str,
    ) {
        let out = Command::new("skopeo")
            .arg("--insecure-policy")
            .args(global)
            .args(["copy", "--dest-tls-verify=false", "-q"])
            .args(copy_options)
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://127.0.0.1:{}/{repo_tag}", self.port))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
