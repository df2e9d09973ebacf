//! The reference LXD (Debian's `lxd` 5.0), started per test in its own `LXD_DIR` with a
//! `dir` pool, no network, and HTTPS on a free loopback port, for the interoperability
//! tests. Where LXD is not installed, [`ReferenceLxd::start`] says so by the test's name and
//! returns None.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{output_within, skipped, TestDir, COMMAND_LIMIT};

pub struct ReferenceLxd {
    daemon: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    // Removed after the daemon is gone.
    dir: TestDir,
    /// Last: another test's reference LXD starts after this test's are gone.
    _turn: Turn,
}

/// One test at a time per test binary runs reference LXDs: two of them importing btrfs
/// streams side by side on a loaded 2-core machine stalled one for minutes in CI. A test may
/// start several (a copy between two LXDs), so the turn is held per thread, counted, and
/// given up when that thread's last reference LXD is gone.
static TURN: std::sync::Mutex<(Option<std::thread::ThreadId>, usize)> =
    std::sync::Mutex::new((None, 0));
static TURN_FREED: std::sync::Condvar = std::sync::Condvar::new();

struct Turn;

impl Turn {
    fn take() -> Turn {
        let me = std::thread::current().id();
        let mut held = TURN.lock().unwrap_or_else(|e| e.into_inner());
        while held.0.is_some_and(|owner| owner != me) {
            held = TURN_FREED.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.0 = Some(me);
        held.1 += 1;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut held = TURN.lock().unwrap_or_else(|e| e.into_inner());
        held.1 = held.1.saturating_sub(1);
        if held.1 == 0 {
            held.0 = None;
            TURN_FREED.notify_all();
        }
    }
}

impl ReferenceLxd {
    /// A fresh LXD, or None (said by `test`'s name) when `lxd` is not installed.
    pub fn start(test: &str) -> Option<ReferenceLxd> {
        if !Path::new("/usr/bin/lxd").exists() && !Path::new("/usr/sbin/lxd").exists() {
            skipped(
                test,
                "the reference LXD is not installed (apt-get install lxd)",
            );
            return None;
        }
        let turn = Turn::take();
        let dir = TestDir::new();
        let lxd_dir = dir.path().join("lxd");
        std::fs::create_dir_all(dir.path().join("pool")).expect("pool dir");
        std::fs::create_dir_all(&lxd_dir).expect("LXD_DIR");
        let daemon = Command::new("lxd")
            .args(["--group", "root", "--logfile"])
            .arg(dir.path().join("lxd.log"))
            .env("LXD_DIR", &lxd_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lxd");
        let mut lxd = ReferenceLxd {
            daemon: Some(daemon),
            url: String::new(),
            dir,
            _turn: turn,
        };
        let out = lxd.lxd(&["waitready", "--timeout", "60"], b"");
        assert!(out.status.success(), "lxd waitready: {}", lxd.log());
        let port = crate::free_port();
        let preseed = format!(
            "config:\n  core.https_address: 127.0.0.1:{port}\nstorage_pools:\n- name: default\n  driver: dir\n  config:\n    source: {}\nprofiles:\n- name: default\n  devices:\n    root:\n      path: /\n      pool: default\n      type: disk\n",
            lxd.dir.path().join("pool").display()
        );
        let out = lxd.lxd(&["init", "--preseed"], preseed.as_bytes());
        assert!(
            out.status.success(),
            "lxd init: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lxd.url = format!("https://127.0.0.1:{port}");
        Some(lxd)
    }

    /// `LXD_DIR`.
    pub fn lxd_dir(&self) -> PathBuf {
        self.dir.path().join("lxd")
    }

    /// LXD's `server.crt`, PEM.
    pub fn server_cert(&self) -> String {
        std::fs::read_to_string(self.lxd_dir().join("server.crt")).expect("LXD server.crt")
    }

    /// Runs `lxd <args>` (waitready, init, shutdown...) on this LXD.
    pub fn lxd(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new("lxd");
        cmd.args(args).env("LXD_DIR", self.lxd_dir());
        output_within(&mut cmd, stdin, COMMAND_LIMIT)
    }

    /// Runs LXD's `lxc` on this LXD's socket, with a client config of its own (so remotes
    /// it adds stay in this test).
    pub fn lxc(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("lxc");
        cmd.args(args)
            .env("LXD_DIR", self.lxd_dir())
            .env("LXD_CONF", self.dir.path().join("lxc-conf"))
            .env("HOME", self.dir.path());
        output_within(&mut cmd, b"", COMMAND_LIMIT)
    }

    /// Builds the busybox test image and imports it into this LXD as `bb`.
    pub fn import_busybox(&self) {
        let image = self.lxd_dir().join("bb.tar.gz");
        crate::busybox_image(&self.lxd_dir(), &image).expect("busybox image");
        self.lxc_ok(&["image", "import", image.to_str().unwrap(), "--alias", "bb"]);
    }

    /// [`lxc`](Self::lxc) that must succeed; its stdout.
    pub fn lxc_ok(&self, args: &[&str]) -> String {
        let out = self.lxc(args);
        assert!(
            out.status.success(),
            "lxc {args:?} on LXD: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The end of LXD's log, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("lxd.log")).unwrap_or_default();
        let start = text.len().saturating_sub(4000);
        text[start..].to_string()
    }
}

impl Drop for ReferenceLxd {
    fn drop(&mut self) {
        // Stops the instances too; then the process must be gone before the directory goes.
        let _ = self.lxd(&["shutdown", "--timeout", "30"], b"");
        if let Some(mut child) = self.daemon.take() {
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
