//! A real hutchd for a test: its own state directory, its own socket, and the `lxc`
//! client pointed at it. Dropping it stops its containers and the daemon.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{hutchd_bin, output_within, wait_until, TestDir, COMMAND_LIMIT};

/// A running hutchd in a fresh `HUTCH_DIR`.
pub struct TestDaemon {
    pub dir: TestDir,
    child: Option<Child>,
    /// Extra environment of the daemon process.
    env: Vec<(String, String)>,
    /// The daemon runs in a mount namespace where /sys/fs/cgroup is the cgroup2 hierarchy
    /// alone, as on a unified-only host.
    cgroup2_only: bool,
    /// The network namespace (`ip netns` name) the daemon runs in, when not the host's.
    netns: Option<String>,
}

/// `hutchd`, or with `cgroup2_only`, hutchd in a new mount namespace whose /sys/fs/cgroup
/// is the cgroup2 hierarchy alone.
fn hutchd_command(cgroup2_only: bool) -> Command {
    hutchd_command_of(&hutchd_bin(), cgroup2_only)
}

fn hutchd_command_of(bin: &Path, cgroup2_only: bool) -> Command {
    if !cgroup2_only {
        return Command::new(bin);
    }
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            r#"umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec "$0" "$@""#,
        )
        .arg(bin);
    c
}

impl TestDaemon {
    /// `hutchd init --auto`, then the daemon, waiting for its socket.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like `start`, with extra `hutchd init --auto` arguments
    /// (`--storage-backend dir`). No network is made unless `--network-bridge` is given
    /// (bridge names are global: tests pick unique ones).
    pub fn start_with(init_args: &[&str]) -> Self {
        Self::start_with_env(init_args, &[])
    }

    /// Like `start_with`, the daemon running with `env` added to its environment.
    pub fn start_with_env(init_args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_full(init_args, env, false)
    }

    /// A daemon (dir pool) that sees the cgroup2 hierarchy alone at /sys/fs/cgroup, in a
    /// mount namespace of its own, as on a unified-only host; on a hybrid host that
    /// hierarchy has no controllers, so limits are not available.
    pub fn start_cgroup2_only() -> Self {
        Self::start_full(&["--storage-backend", "dir"], &[], true)
    }

    /// A daemon (dir pool) in network namespace `netns` (a [`TestNet`](crate::network::TestNet)'s),
    /// as on a host of its own.
    pub fn start_in_netns(netns: &str) -> Self {
        Self::start_in(&["--storage-backend", "dir"], &[], false, Some(netns))
    }

    fn start_full(init_args: &[&str], env: &[(&str, &str)], cgroup2_only: bool) -> Self {
        Self::start_in(init_args, env, cgroup2_only, None)
    }

    fn start_in(
        init_args: &[&str],
        env: &[(&str, &str)],
        cgroup2_only: bool,
        netns: Option<&str>,
    ) -> Self {
        let dir = TestDir::new();
        let network = if init_args.contains(&"--network-bridge") {
            &[][..]
        } else {
            &["--network-bridge", "none"][..]
        };
        let status = hutchd_command(cgroup2_only)
            .arg("--dir")
            .arg(dir.path())
            .args(["init", "--auto"])
            .args(init_args)
            .args(network)
            .stdout(Stdio::null())
            .status()
            .expect("run hutchd init");
        assert!(status.success(), "hutchd init --auto failed");
        let mut d = TestDaemon {
            dir,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cgroup2_only,
            netns: netns.map(str::to_string),
        };
        d.spawn();
        d
    }

    /// A fresh state directory that `hutchd init` has not touched, and no daemon yet
    /// (`spawn` starts one): for the tests of init itself.
    pub fn uninitialised() -> Self {
        TestDaemon {
            dir: TestDir::new(),
            child: None,
            env: Vec::new(),
            cgroup2_only: false,
            netns: None,
        }
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("unix.socket")
    }

    /// Starts the daemon process (again, after `kill`).
    pub fn spawn(&mut self) {
        self.spawn_binary(&hutchd_bin());
    }

    /// Starts the daemon process from another copy of hutchd (an upgrade in place).
    pub fn spawn_binary(&mut self, bin: &Path) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::File::create(self.path().join("hutchd.log")).expect("daemon log");
        let mut command = match &self.netns {
            // Its network alone (ip netns exec would remount /sys, hiding the cgroups).
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(bin);
                c
            }
            None => hutchd_command_of(bin, self.cgroup2_only),
        };
        let child = command
            .arg("--dir")
            .arg(self.path())
            .arg("--verbose")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn hutchd");
        self.child = Some(child);
        let sock = self.socket();
        wait_until("hutchd's socket", Duration::from_secs(10), || {
            UnixStream::connect(&sock).is_ok()
        });
    }

    /// Replaces the extra environment of the next `spawn` (a fault point, say).
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Waits for the daemon process to end by itself (a fault point killed it); panics
    /// after `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) {
        let child = self.child.as_mut().expect("a daemon was spawned");
        let deadline = std::time::Instant::now() + limit;
        while child.try_wait().expect("wait for hutchd").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "hutchd did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = None;
    }

    /// Stops the daemon as a service manager would (SIGTERM: it finishes its writes and
    /// leaves containers running), waiting for it to exit.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.wait_for_exit(COMMAND_LIMIT);
    }

    /// `kill -9` of the daemon: containers must not notice.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Runs `lxc` (Debian's lxd-client) against this daemon.
    pub fn lxc(&self, args: &[&str]) -> Output {
        self.lxc_with_stdin(args, b"")
    }

    pub fn lxc_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new("lxc");
        cmd.args(args)
            .env("LXD_DIR", self.path())
            .env("LXD_CONF", self.path().join("lxc-conf"))
            .env("HOME", self.path());
        output_within(&mut cmd, stdin, COMMAND_LIMIT)
    }

    /// Runs LXD's `lxc` against this daemon, trusting the CA in `ca_file` (Go reads
    /// `SSL_CERT_FILE`): for remotes served by a test image server.
    pub fn lxc_trusting(&self, ca_file: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new("lxc");
        cmd.args(args)
            .env("LXD_DIR", self.path())
            .env("LXD_CONF", self.path().join("lxc-conf"))
            .env("HOME", self.path())
            .env("SSL_CERT_FILE", ca_file);
        output_within(&mut cmd, b"", COMMAND_LIMIT)
    }

    /// Runs the `hutch` client against this daemon.
    pub fn hutch(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(crate::hutch_bin());
        // Its own client config, as `lxc` gets one: remotes a test adds stay in the test.
        cmd.args(args)
            .env("HUTCH_DIR", self.path())
            .env("HUTCH_CONF", self.path().join("hutch-conf"));
        output_within(&mut cmd, stdin, COMMAND_LIMIT)
    }

    /// `hutch ...` that must succeed; returns its stdout.
    pub fn hutch_ok(&self, args: &[&str]) -> String {
        let out = self.hutch(args, b"");
        assert!(
            out.status.success(),
            "hutch {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lxc ...` that must succeed; returns its stdout.
    pub fn lxc_ok(&self, args: &[&str]) -> String {
        let out = self.lxc(args);
        assert!(
            out.status.success(),
            "lxc {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Builds the busybox test image and imports it under alias `bb`, through `via`.
    pub fn import_busybox(&self, via: Via) {
        let image = self.path().join("bb.tar.gz");
        busybox_image(self.path(), &image).expect("build the image");
        let args = ["image", "import", image.to_str().unwrap(), "--alias", "bb"];
        let out = match via {
            Via::Hutch => self.hutch_ok(&args),
            Via::Lxc => self.lxc_ok(&args),
        };
        assert!(out.contains("Image imported with fingerprint"), "{out}");
    }

    /// Builds the Debian 12 image with `hutch image build` (systemd, networkd's DHCP,
    /// resolved) from the test suite's debootstrap cache, under alias `alias`. `Err` when
    /// the cache is missing and cannot be made here (it needs the Debian mirror once);
    /// else what the build printed.
    pub fn build_debian(&self, alias: &str) -> anyhow::Result<String> {
        let scratch = self.path().join("debian-cache-fill");
        crate::debian_rootfs(&scratch)?;
        // The builder reads the cache `debian.sh` wrote; the unpacked tree is not needed.
        let _ = std::fs::remove_dir_all(&scratch);
        let cache =
            std::env::var("HUTCH_TEST_CACHE").unwrap_or_else(|_| "/var/cache/hutch-tests".into());
        let out = self.hutch_ok(&[
            "image",
            "build",
            "debian/12",
            "--debootstrap-cache",
            &cache,
            "--alias",
            alias,
        ]);
        assert!(out.contains("Image imported with fingerprint"), "{out}");
        Ok(out)
    }

    /// `hutch ...` that must fail; returns its stderr.
    pub fn hutch_err(&self, args: &[&str]) -> String {
        let out = self.hutch(args, b"");
        assert!(!out.status.success(), "hutch {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `lxc ...` that must fail; returns its stderr.
    pub fn lxc_err(&self, args: &[&str]) -> String {
        let out = self.lxc(args);
        assert!(!out.status.success(), "lxc {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `script` with `sh -c` in instance `name`; (exit code, stdout + stderr).
    pub fn sh(&self, name: &str, script: &str) -> (i32, String) {
        let out = self.hutch(&["exec", name, "--", "sh", "-c", script], b"");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// [`sh`](Self::sh) that must exit 0; its output.
    pub fn sh_ok(&self, name: &str, script: &str) -> String {
        let (code, out) = self.sh(name, script);
        assert_eq!(code, 0, "{name}: {script}: {out}");
        out
    }

    /// Sets `core.https_address` to a free loopback port and returns the API's base URL
    /// (`https://127.0.0.1:PORT`), once the listener answers.
    pub fn enable_https(&self) -> String {
        self.enable_https_on("127.0.0.1", crate::free_port())
    }

    /// Listens for HTTPS on `address:port` (one the host reaches: loopback, or the
    /// daemon's own in a test network); returns the URL.
    pub fn enable_https_on(&self, address: &str, port: u16) -> String {
        let body = format!(r#"{{"config":{{"core.https_address":"{address}:{port}"}}}}"#);
        let (status, out) = self.http("PATCH", "/1.0", body.as_bytes());
        assert_eq!(status, 200, "set core.https_address: {out}");
        crate::wait_until("the HTTPS listener", Duration::from_secs(10), || {
            std::net::TcpStream::connect((address, port)).is_ok()
        });
        format!("https://{address}:{port}")
    }

    /// Whether the daemon advertises every one of `names` in `api_extensions`.
    pub fn has_extensions(&self, names: &[&str]) -> bool {
        let (status, body) = self.http("GET", "/1.0", b"");
        assert_eq!(status, 200, "GET /1.0: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("GET /1.0 json");
        let have = v["metadata"]["api_extensions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        names.iter().all(|n| have.iter().any(|x| x == n))
    }

    /// The daemon's certificate (`server.crt`), PEM.
    pub fn server_cert(&self) -> String {
        std::fs::read_to_string(self.path().join("server.crt")).expect("read server.crt")
    }

    /// One raw HTTP/1.1 request on the unix socket; returns status and body.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        self.http_with(method, path, &[], body)
    }

    /// A raw request with extra headers.
    pub fn http_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut s = UnixStream::connect(self.socket()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let extra: String = headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\r\n"))
            .collect();
        let head = format!("{method} {path} HTTP/1.1\r\nHost: unix.socket\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n", body.len());
        // A server may answer (an error) and close before it has read the whole body: the
        // answer is still there to read.
        if let Err(e) = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "send: {e}");
        }
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, dechunk(&body))
    }
}

/// Undoes chunked transfer encoding when present (good enough for JSON bodies).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
        // Stop every container this daemon started, through its monitor.
        if let Ok(entries) = std::fs::read_dir(self.path().join("containers")) {
            for e in entries.flatten() {
                let _ = hutch_runtime::container::stop(&e.path(), Duration::from_secs(1), true);
            }
        }
        // Cgroups of this daemon are named after its state directory.
        let prefix = cgroup_prefix(self.path());
        for dir in crate::cgroup_dirs(&prefix) {
            let _ = std::fs::remove_dir(&dir);
        }
        crate::network::remove_daemon_networks(self.path(), &prefix);
        // zpools on this daemon's loop files are named `<prefix>-<pool>`.
        if Path::new("/sys/module/zfs").exists() {
            for e in std::fs::read_dir(self.path().join("disks"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pool) = name.strip_suffix(".img") {
                    let _ = Command::new("zpool")
                        .args(["destroy", "-f", &format!("{prefix}-{pool}")])
                        .status();
                }
            }
        }
    }
}

/// The daemon's cgroup prefix (as hutchd computes it from its state directory).
pub fn cgroup_prefix(dir: &Path) -> String {
    let mut hash: u32 = 2166136261;
    for b in dir.as_os_str().as_encoded_bytes() {
        hash = (hash ^ *b as u32).wrapping_mul(16777619);
    }
    format!("hutch-{hash:08x}")
}

/// The client a test drives a daemon with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Hutch,
    Lxc,
}

/// A unified busybox image tarball (metadata.yaml + rootfs/) at `dest`.
pub fn busybox_image(work: &Path, dest: &Path) -> anyhow::Result<()> {
    let tree = work.join("image-tree");
    std::fs::create_dir_all(&tree)?;
    crate::busybox_rootfs(&tree.join("rootfs"))?;
    std::fs::write(tree.join("metadata.yaml"), "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n  description: busybox test image\n")?;
    let status = Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-czf")
        .arg(dest)
        .args(["metadata.yaml", "rootfs"])
        .status()?;
    anyhow::ensure!(status.success(), "tar failed");
    std::fs::remove_dir_all(&tree)?;
    Ok(())
}
