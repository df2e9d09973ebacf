//! A client run on a terminal (through `script`, from util-linux), for the tests of
//! interactive commands such as `console`: output is collected as it comes, keys are typed
//! one read at a time.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub struct TerminalSession {
    child: Child,
    output: Receiver<String>,
    /// Everything printed so far.
    pub seen: String,
}

impl TerminalSession {
    /// Runs the shell command `cmd` on a fresh terminal with extra environment.
    pub fn start(cmd: &str, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut command = Command::new("script");
        command
            .args(["-qfec", cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("run script (util-linux)");
        let mut out = child.stdout.take().expect("stdout");
        let (tx, output) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        TerminalSession {
            child,
            output,
            seen: String::new(),
        }
    }

    /// Collects output until it contains `marker`, calling `poke` with what was seen so far
    /// between reads (to make the marker appear); panics after 20 s.
    pub fn wait_for(&mut self, marker: &str, mut poke: impl FnMut(&str)) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.seen.contains(marker) {
            assert!(
                Instant::now() < deadline,
                "{marker:?} never appeared in {:?}",
                self.seen
            );
            poke(&self.seen);
            if let Ok(chunk) = self.output.recv_timeout(Duration::from_millis(500)) {
                self.seen.push_str(&chunk);
            }
        }
    }

    /// Types each key sequence as its own read, as terminal users do (lxc looks at one
    /// read at a time for its ctrl+a q).
    pub fn type_keys(&mut self, keys: &[&[u8]]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        for k in keys {
            stdin.write_all(k).expect("type");
            stdin.flush().expect("type");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits for the program to end.
    pub fn wait(mut self) -> ExitStatus {
        self.child.wait().expect("wait for script")
    }
}
