//! `TestDir`: a temporary directory that takes everything a test left in it with it on
//! drop (processes, mounts, files), and the /proc readers that find those.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::unique_name;

/// A fresh directory `/tmp/hutch-test-<unique>`. On drop, even after a panic, it kills the
/// processes that live in it, lazily unmounts everything below it (deepest first) and
/// removes it; it never removes through a mount it could not take away.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates the directory; panics if it cannot.
    pub fn new() -> Self {
        let path = PathBuf::from(format!("/tmp/hutch-test-{}", unique_name("d")));
        if let Err(e) = fs::create_dir(&path) {
            panic!("failed to create {}: {e}", path.display());
        }
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        kill_processes_under(&self.path);
        unmount_all_under(&self.path);
        let left = mounts_under(&self.path);
        if !left.is_empty() {
            eprintln!(
                "warning: leaving {} in place, still mounted: {left:?}",
                self.path.display()
            );
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("warning: failed to remove {}: {e}", self.path.display());
        }
    }
}

/// SIGKILLs what `processes_under` finds until nothing is left (for at most 5 s).
fn kill_processes_under(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = processes_under(dir);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Detaches every mount below `dir`; several rounds, for mounts stacked on one point.
fn unmount_all_under(dir: &Path) {
    for _ in 0..8 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let _ = umount2(&m, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW);
        }
    }
}

/// Mount points at or below `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read("/proc/self/mountinfo").unwrap_or_default();
    parse_mounts_under(&info, dir)
}

/// The mount points (field 5 of each mountinfo line) at or below `dir`, deepest first.
fn parse_mounts_under(mountinfo: &[u8], dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape_octal)
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Undoes the kernel's `\ooo` escapes (space, tab, newline, backslash) in a mountinfo path.
fn unescape_octal(s: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let oct = s.get(i + 1..i + 4);
        if s[i] == b'\\' && oct.is_some_and(|o| o.iter().all(|d| (b'0'..=b'7').contains(d))) {
            let o = oct.unwrap_or_default();
            out.push(((o[0] - b'0') << 6) | ((o[1] - b'0') << 3) | (o[2] - b'0'));
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Processes (other than this one) whose root, cwd or executable lies below `dir`, or
/// whose command line names it.
pub fn processes_under(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let needle = dir.as_os_str().as_bytes();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let p = entry.path();
        let inside = ["root", "cwd", "exe"]
            .iter()
            .any(|l| fs::read_link(p.join(l)).is_ok_and(|t| t.starts_with(dir)));
        let named =
            fs::read(p.join("cmdline")).is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle));
        if inside || named {
            out.push(pid);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    use super::*;

    const INFO: &[u8] = b"\
1 0 0:1 / / rw - ext4 /dev/vda rw
2 1 0:2 / /tmp/t rw - tmpfs tmpfs rw
3 2 0:3 / /tmp/t/a\\040b rw - tmpfs tmpfs rw
4 3 0:4 / /tmp/t/a\\040b/c\\011d\\134e\\012f rw - proc proc rw
5 1 0:5 /tmp/t/x /tmp/tt rw - tmpfs tmpfs rw
6 1 0:6 / /tmp/t2 rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_at_and_below_a_dir_are_found_deepest_first_with_escapes() {
        assert_eq!(
            parse_mounts_under(INFO, Path::new("/tmp/t")),
            vec![
                PathBuf::from("/tmp/t/a b/c\td\\e\nf"),
                PathBuf::from("/tmp/t/a b"),
                PathBuf::from("/tmp/t"),
            ]
        );
    }

    #[test]
    fn sibling_prefixes_and_mount_roots_do_not_count() {
        assert!(parse_mounts_under(INFO, Path::new("/tmp/t/x")).is_empty());
        assert_eq!(
            parse_mounts_under(INFO, Path::new("/tmp/t2")),
            vec![PathBuf::from("/tmp/t2")]
        );
    }

    #[test]
    fn unescape_leaves_lone_backslashes_and_non_utf8_bytes() {
        assert_eq!(unescape_octal(b"/a\\9b\\04"), PathBuf::from("/a\\9b\\04"));
        let p = unescape_octal(b"/x\\377\xfe");
        assert_eq!(p.as_os_str().as_bytes(), b"/x\xff\xfe");
    }

    #[test]
    fn dropping_a_test_dir_kills_its_processes_and_removes_it() {
        let dir = TestDir::new();
        let path = dir.path().to_path_buf();
        assert!(path.starts_with("/tmp") && path.is_dir());
        fs::create_dir_all(path.join("a/b")).unwrap();
        fs::write(path.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("/", path.join("a/root")).unwrap();
        let mut child = Command::new("sleep")
            .arg("600")
            .current_dir(path.join("a"))
            .spawn()
            .unwrap();
        assert_eq!(processes_under(&path), vec![child.id() as i32]);
        drop(dir);
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        assert!(!path.exists());
        assert!(Path::new("/tmp").is_dir());
    }

    #[test]
    fn dropping_a_test_dir_unmounts_nested_stacked_and_bind_mounts_first() {
        if !crate::require_root("dropping_a_test_dir_unmounts_nested_stacked_and_bind_mounts_first")
        {
            return;
        }
        use nix::mount::{mount, MsFlags};
        let tmpfs = |at: &Path| {
            mount(
                Some("tmpfs"),
                at,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap()
        };
        // A bind mount of something outside: removing through it would delete the sentinel.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("sentinel"), "keep").unwrap();
        let dir = TestDir::new();
        let path = dir.path().to_path_buf();
        let a = path.join("a b");
        fs::create_dir(&a).unwrap();
        tmpfs(&a);
        tmpfs(&a);
        fs::create_dir(a.join("n")).unwrap();
        tmpfs(&a.join("n"));
        fs::create_dir(a.join("n/bind")).unwrap();
        let flags = MsFlags::MS_BIND;
        mount(
            Some(outside.path()),
            &a.join("n/bind"),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .unwrap();
        let mut child = Command::new("sleep")
            .arg("600")
            .current_dir(a.join("n"))
            .spawn()
            .unwrap();
        assert_eq!(mounts_under(&path).len(), 4);
        drop(dir);
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        assert!(mounts_under(&path).is_empty());
        assert!(!path.exists());
        assert!(outside.path().join("sentinel").exists());
    }
}
