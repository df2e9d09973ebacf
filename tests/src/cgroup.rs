//! `CgroupGuard`: the safety net that removes a test's cgroups, in every hierarchy, even
//! when the runtime's own cleanup did not run.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The hierarchies mounted here: the root itself on a cgroup v2 host, else each v1
/// controller directory and the hybrid `unified` one (aliases such as `cpu` -> `cpu,cpuacct`
/// are symlinks and skipped).
fn hierarchies(root: &Path) -> Vec<PathBuf> {
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Every existing cgroup directory for the relative path `rel` on this host.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_matches('/');
    if rel.is_empty() {
        return Vec::new();
    }
    hierarchies(Path::new(CGROUP_ROOT))
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the cgroup `rel` (such as `hutch-test-<unique>/c1`) and its sub-cgroups in
/// every hierarchy on drop, after thawing them and killing what runs in them; then removes
/// the parent (`hutch-test-<unique>`) if that is empty.
pub struct CgroupGuard {
    rel: String,
}

impl CgroupGuard {
    /// Guards `rel`, a path relative to each hierarchy's root.
    pub fn new(rel: &str) -> Self {
        CgroupGuard {
            rel: rel.trim_matches('/').to_string(),
        }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        // Every hierarchy's subtree, parents first. A task frozen in the v1 freezer cannot
        // die, whatever other hierarchy we kill it from: thaw everywhere, then kill.
        let cgroups: Vec<PathBuf> = cgroup_dirs(&self.rel)
            .iter()
            .flat_map(|d| subtree(d))
            .collect();
        for d in &cgroups {
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            let _ = fs::write(d.join("cgroup.freeze"), "0");
        }
        cgroups.iter().for_each(|d| kill_members(d));
        let deadline = Instant::now() + Duration::from_secs(5);
        for d in cgroups.iter().rev() {
            // Retried while killed tasks are still exiting.
            while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                kill_members(d);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(parent) = Path::new(&self.rel).parent().and_then(Path::to_str) {
            for dir in cgroup_dirs(parent) {
                // Fails (EBUSY) while other tests still have cgroups there: that is fine.
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// `dir` and every cgroup below it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let children: Vec<PathBuf> = fs::read_dir(&out[i])
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        out.extend(children);
        i += 1;
    }
    out
}

fn kill_members(dir: &Path) {
    // cgroup v2 (5.14+) kills the whole subtree at once; elsewhere, one pid at a time.
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_lists_parents_before_children() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("c");
        fs::create_dir_all(root.join("a/x")).unwrap();
        fs::create_dir_all(root.join("b")).unwrap();
        fs::write(root.join("cgroup.procs"), "").unwrap();
        let tree = subtree(&root);
        assert_eq!(tree.len(), 4);
        assert_eq!(tree[0], root);
        let pos = |p: &str| tree.iter().position(|t| t == &root.join(p)).unwrap();
        assert!(pos("a") < pos("a/x"));
    }

    #[test]
    fn v1_hierarchies_skip_alias_symlinks_and_v2_is_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["memory", "cpu,cpuacct", "unified"] {
            fs::create_dir(tmp.path().join(d)).unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", tmp.path().join("cpu")).unwrap();
        let mut h = hierarchies(tmp.path());
        h.sort();
        assert_eq!(
            h,
            ["cpu,cpuacct", "memory", "unified"].map(|d| tmp.path().join(d))
        );
        fs::write(tmp.path().join("cgroup.controllers"), "memory pids").unwrap();
        assert_eq!(hierarchies(tmp.path()), vec![tmp.path().to_path_buf()]);
    }

    #[test]
    fn guard_thaws_kills_and_removes_a_cgroup_tree_and_its_parent() {
        if !crate::require_root("guard_thaws_kills_and_removes_a_cgroup_tree_and_its_parent") {
            return;
        }
        let parent = format!("hutch-test-{}", crate::unique_name("cg"));
        let rel = format!("{parent}/c1");
        // A process that is not our child: once killed, init reaps it (our own zombie
        // would hold some hierarchies until we waited for it).
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 600 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let mut joined = 0;
        for h in hierarchies(Path::new(CGROUP_ROOT)) {
            let sub = h.join(&rel).join("sub");
            fs::create_dir_all(&sub).unwrap();
            // cpuset takes no process before its cpus and mems are set: skip it.
            if fs::write(sub.join("cgroup.procs"), pid.to_string()).is_ok() {
                joined += 1;
            }
        }
        assert!(joined > 0);
        let _ = fs::write(
            Path::new(CGROUP_ROOT)
                .join("freezer")
                .join(&rel)
                .join("freezer.state"),
            "FROZEN",
        );
        let _ = fs::write(Path::new(CGROUP_ROOT).join(&rel).join("cgroup.freeze"), "1");
        assert_eq!(
            cgroup_dirs(&rel).len(),
            hierarchies(Path::new(CGROUP_ROOT)).len()
        );
        drop(CgroupGuard::new(&rel));
        crate::wait_until("the process to die", Duration::from_secs(5), || {
            kill(Pid::from_raw(pid), None).is_err()
        });
        assert!(
            cgroup_dirs(&parent).is_empty(),
            "{:?}",
            cgroup_dirs(&parent)
        );
    }
}
