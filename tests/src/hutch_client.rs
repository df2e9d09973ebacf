//! A `hutch` client of its own: its own config directory (`HUTCH_CONF`: remotes,
//! client.crt, servercerts/) and no local daemon, for tests that drive remote servers over
//! HTTPS.

use std::path::Path;
use std::process::{Command, Output};

use crate::{hutch_bin, output_within, TestDir, COMMAND_LIMIT};

pub struct HutchClient {
    dir: TestDir,
}

impl Default for HutchClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HutchClient {
    pub fn new() -> HutchClient {
        HutchClient {
            dir: TestDir::new(),
        }
    }

    /// `HUTCH_CONF`.
    pub fn conf(&self) -> std::path::PathBuf {
        self.dir.path().join("conf")
    }

    /// `servercerts/<remote>.crt`.
    pub fn server_cert_path(&self, remote: &str) -> std::path::PathBuf {
        self.conf()
            .join("servercerts")
            .join(format!("{remote}.crt"))
    }

    /// Runs `hutch <args>` with `stdin`.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(hutch_bin());
        cmd.args(args)
            .env("HUTCH_CONF", self.conf())
            .env("HUTCH_DIR", self.dir.path().join("no-daemon"));
        output_within(&mut cmd, stdin, COMMAND_LIMIT)
    }

    /// `hutch <args>` that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_in(args, b"")
    }

    /// [`ok`](Self::ok) with `stdin`.
    pub fn ok_in(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "hutch {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `hutch <args>` with `stdin` that must fail; its stderr.
    pub fn err_in(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "hutch {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A file in the client's own scratch directory.
    pub fn scratch(&self, name: &str) -> std::path::PathBuf {
        let p: &Path = self.dir.path();
        p.join(name)
    }
}
