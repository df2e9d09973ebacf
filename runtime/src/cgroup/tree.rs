//! Steps both drivers take on a cgroup directory tree: make the levels, list and kill what
//! runs below, freeze with a deadline, hand over to the container, remove depth-first.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{io_err, write, CgroupFs, EXEC_LEAF};
use crate::error::{Result, RuntimeError};

/// How long `rmdir` is retried while the last processes of a cgroup finish exiting.
const RMDIR_RETRY: Duration = Duration::from_secs(2);

/// Files a nested systemd writes in its delegated cgroup (v1 and v2 names; see
/// /sys/kernel/cgroup/delegate).
const DELEGATED_FILES: &[&str] = &[
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
    "memory.oom.group",
    "memory.reclaim",
    "tasks",
    "cgroup.clone_children",
    "notify_on_release",
];

/// Creates each level of `rel` under `mountpoint` and calls `init(parent, dir, made)` for
/// every level, `made` telling whether this call created it.
///
/// A concurrent `destroy` of a sibling may remove a shared, empty parent between our
/// `exists` and `mkdir`; then the walk starts again.
pub(super) fn make_levels(
    fs: &dyn CgroupFs,
    mountpoint: &Path,
    rel: &str,
    mut init: impl FnMut(&Path, &Path, bool) -> Result<()>,
) -> Result<()> {
    let mut attempts = 0;
    'walk: loop {
        attempts += 1;
        let mut dir = mountpoint.to_path_buf();
        for comp in Path::new(rel).components() {
            let parent = dir.clone();
            dir.push(comp);
            let made = !fs.exists(&dir);
            if made {
                match fs.mkdir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => continue 'walk,
                    Err(e) => return Err(io_err("create cgroup", &dir, e)),
                }
            }
            init(&parent, &dir, made)?;
        }
        return Ok(());
    }
}

/// `dir` and every cgroup below it, parents before children.
fn tree(fs: &dyn CgroupFs, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        match fs.subdirs(&d) {
            Ok(children) => stack.extend(children),
            // Gone already (a racing rmdir, or never made).
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &d, e)),
        }
        out.push(d);
    }
    Ok(out)
}

/// All pids in `dir` and its sub-cgroups.
pub(super) fn procs_below(fs: &dyn CgroupFs, dir: &Path) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for d in tree(fs, dir)? {
        // Threaded cgroups refuse cgroup.procs reads; their processes show in the domain.
        let procs = fs.read(&d.join("cgroup.procs")).unwrap_or_default();
        out.extend(
            procs
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// SIGKILLs what is in `dir` until it stays empty, for at most `timeout`.
pub(super) fn kill_until_empty(fs: &dyn CgroupFs, dir: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let pids = procs_below(fs, dir)?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(timed_out("the cgroup to empty", timeout));
        }
        for pid in pids {
            // ESRCH: it exited between the read and the kill.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes `mountpoint/rel` and its children, deepest first, retrying while dying
/// processes linger; then removes the parents of `rel` that are now empty.
pub(super) fn remove_tree(fs: &dyn CgroupFs, mountpoint: &Path, rel: &str) -> Result<()> {
    let dir = mountpoint.join(rel);
    for d in tree(fs, &dir)?.iter().rev() {
        let deadline = Instant::now() + RMDIR_RETRY;
        loop {
            match fs.rmdir(d) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(io_err("remove cgroup", d, e)),
            }
        }
    }
    for p in dir.ancestors().skip(1) {
        if p == mountpoint || !p.starts_with(mountpoint) {
            break;
        }
        // Still holding other containers (EBUSY, ENOTEMPTY): that is fine, stop here.
        if fs.rmdir(p).is_err() {
            break;
        }
    }
    Ok(())
}

/// Adds `pid` to `dir`, or to its exec leaf where the kernel refuses (v2's rule of no
/// processes in a cgroup that enabled controllers for its children).
pub(super) fn add_to_dir_or_leaf(fs: &dyn CgroupFs, dir: &Path, pid: i32) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    match fs.write(&procs, &pid.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EOPNOTSUPP)) => {
            let leaf = dir.join(EXEC_LEAF);
            fs.mkdir(&leaf)
                .map_err(|e| io_err("create cgroup", &leaf, e))?;
            write(fs, &leaf.join("cgroup.procs"), &pid.to_string())
        }
        Err(e) => Err(io_err("write", &procs, e)),
    }
}

/// Polls `check` every few milliseconds until it holds or `timeout` passes.
pub(super) fn wait_for(
    what: &'static str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check()? {
        if Instant::now() > deadline {
            return Err(timed_out(what, timeout));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Writes `on` to the freezer file `file` and waits until `frozen`; when that does not
/// come in time, writes `off` so no half-frozen container is left behind.
pub(super) fn freeze_file(
    fs: &dyn CgroupFs,
    file: &Path,
    (on, off): (&str, &str),
    timeout: Duration,
    frozen: impl FnMut() -> Result<bool>,
) -> Result<()> {
    write(fs, file, on)?;
    let waited = wait_for("the container to freeze", timeout, frozen);
    if waited.is_err() {
        let _ = fs.write(file, off);
    }
    waited
}

/// Hands `dir` and the files a nested cgroup manager writes to `uid`:`gid`.
pub(super) fn delegate_dir(fs: &dyn CgroupFs, dir: &Path, uid: u32, gid: u32) -> Result<()> {
    fs.chown(dir, uid, gid)
        .map_err(|e| io_err("chown", dir, e))?;
    for f in DELEGATED_FILES {
        let p = dir.join(f);
        if fs.exists(&p) {
            fs.chown(&p, uid, gid).map_err(|e| io_err("chown", &p, e))?;
        }
    }
    Ok(())
}

fn timed_out(what: &'static str, timeout: Duration) -> RuntimeError {
    RuntimeError::Timeout {
        what,
        millis: timeout.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::FakeCgroupFs;

    const SHORT: Duration = Duration::from_millis(30);

    #[test]
    fn make_levels_reports_which_levels_it_made() {
        let fs = FakeCgroupFs::new();
        fs.add_dir("/cg/a");
        let mut seen = Vec::new();
        make_levels(&fs, Path::new("/cg"), "a/b/c", |parent, dir, made| {
            seen.push((parent.to_path_buf(), dir.to_path_buf(), made));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("/cg".into(), "/cg/a".into(), false),
                ("/cg/a".into(), "/cg/a/b".into(), true),
                ("/cg/a/b".into(), "/cg/a/b/c".into(), true),
            ]
        );
        assert!(fs.has_dir("/cg/a/b/c"));
    }

    #[test]
    fn procs_below_walks_sub_cgroups() {
        let fs = FakeCgroupFs::new();
        fs.add_file("/cg/c1/cgroup.procs", "10\n11\n");
        fs.add_file("/cg/c1/init.scope/cgroup.procs", "12\n");
        fs.add_dir("/cg/c1/empty");
        assert_eq!(
            procs_below(&fs, Path::new("/cg/c1")).unwrap(),
            vec![10, 11, 12]
        );
        assert!(procs_below(&fs, Path::new("/cg/none")).unwrap().is_empty());
    }

    #[test]
    fn remove_tree_goes_depth_first_and_keeps_busy_parents() {
        let fs = FakeCgroupFs::new();
        fs.add_dir("/cg/h/c1/system.slice/x.service");
        fs.add_dir("/cg/h/c2");
        remove_tree(&fs, Path::new("/cg"), "h/c1").unwrap();
        assert!(!fs.has_dir("/cg/h/c1"));
        assert!(fs.has_dir("/cg/h/c2"));
        remove_tree(&fs, Path::new("/cg"), "h/c2").unwrap();
        assert!(!fs.has_dir("/cg/h"));
        assert!(fs.has_dir("/cg"));
        remove_tree(&fs, Path::new("/cg"), "h/c2").unwrap();
    }

    #[test]
    fn wait_for_polls_until_true_and_times_out() {
        let mut n = 0;
        wait_for("x", SHORT, || {
            n += 1;
            Ok(n == 3)
        })
        .unwrap();
        assert_eq!(n, 3);
        let err = wait_for("the thing", SHORT, || Ok(false)).unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::Timeout {
                what: "the thing",
                ..
            }
        ));
    }

    #[test]
    fn a_freeze_that_never_completes_is_undone() {
        let fs = FakeCgroupFs::new();
        fs.add_file("/cg/c1/freezer.state", "THAWED");
        let file = Path::new("/cg/c1/freezer.state");
        let err = freeze_file(&fs, file, ("FROZEN", "THAWED"), SHORT, || Ok(false));
        assert!(err.is_err());
        let values: Vec<String> = fs.writes().into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, vec!["FROZEN", "THAWED"]);
    }

    #[test]
    fn exec_leaf_only_when_the_kernel_refuses() {
        let fs = FakeCgroupFs::new();
        fs.add_dir("/cg/c1");
        add_to_dir_or_leaf(&fs, Path::new("/cg/c1"), 7).unwrap();
        assert!(!fs.has_dir(format!("/cg/c1/{EXEC_LEAF}")));
        fs.fail_writes_to("/cg/c1/cgroup.procs", libc::EACCES);
        let err = add_to_dir_or_leaf(&fs, Path::new("/cg/c1"), 7).unwrap_err();
        assert!(err.to_string().contains("/cg/c1/cgroup.procs"), "{err}");
    }

    #[test]
    fn delegate_chowns_only_files_that_exist() {
        let fs = FakeCgroupFs::new();
        fs.add_file("/cg/c1/cgroup.procs", "");
        fs.add_file("/cg/c1/memory.max", "max");
        delegate_dir(&fs, Path::new("/cg/c1"), 100000, 100001).unwrap();
        assert_eq!(
            fs.chowns(),
            vec![
                ("/cg/c1".into(), 100000, 100001),
                ("/cg/c1/cgroup.procs".into(), 100000, 100001),
            ]
        );
    }
}
