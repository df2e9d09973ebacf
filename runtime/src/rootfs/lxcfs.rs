//! lxcfs: its per-container views of `/proc` and `/sys` files bound over the container's
//! own, as LXC's lxcfs mount hook (lxcfs `share/lxc.mount.hook.in`, which LXD runs through
//! `/usr/share/lxc/config/common.conf.d`) does, so that `free`, `top`, `uptime` and `nproc`
//! inside see the container's limits rather than the host's.

use std::fs;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::error::{Result, RuntimeError};

/// Where Debian's lxcfs (its systemd unit and init script) mounts itself.
pub const DEFAULT_DIR: &str = "/var/lib/lxcfs";

/// The filesystem type lxcfs's FUSE mount shows in mountinfo.
const FSTYPE: &str = "fuse.lxcfs";

/// The CPU directory lxcfs virtualises under `sys/`.
const CPU_DIR: &str = "sys/devices/system/cpu";

/// Whether lxcfs serves at `dir`: a `fuse.lxcfs` mount is there and it answers (the mount of
/// an lxcfs that died fails the stat of `proc/meminfo`).
pub fn available(dir: &Path) -> bool {
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    is_lxcfs_mount(&mountinfo, &dir) && dir.join("proc/meminfo").is_file()
}

/// Whether `mountinfo` (the text of `/proc/self/mountinfo`) has an lxcfs mount at `dir`.
pub fn is_lxcfs_mount(mountinfo: &str, dir: &Path) -> bool {
    mountinfo.lines().any(|line| {
        let Some((mount, fs)) = line.split_once(" - ") else {
            return false;
        };
        let at = mount.split(' ').nth(4).map(unescape_octal);
        let fstype = fs.split(' ').next();
        fstype == Some(FSTYPE) && at.as_deref() == Some(dir.as_os_str().as_encoded_bytes())
    })
}

/// Undoes mountinfo's escapes of space, tab, newline and backslash (`\040` and the like).
fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The binds that give the container at `root` lxcfs's views, as (source under `lxcfs`,
/// target relative to `root`), in the hook's order: each file of lxcfs's `proc/` over the
/// container's file of that name where the container's proc has one; lxcfs's whole CPU
/// directory over `/sys/devices/system/cpu` when it serves one (it has a `uevent`), else
/// its files one by one; and, for nesting, lxcfs itself on the container's
/// `/var/lib/lxcfs` when the image has that directory. `root`'s proc and sysfs must be
/// mounted: what exists there is what is covered.
pub fn binds(lxcfs: &Path, root: &Path, nesting: bool) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    let proc = lxcfs.join("proc");
    for name in sorted_names(&proc)? {
        let target = Path::new("proc").join(&name);
        if exists_not_symlink(&root.join(&target)) {
            out.push((proc.join(&name), target));
        }
    }
    let cpu = lxcfs.join(CPU_DIR);
    if cpu.is_dir() {
        if cpu.join("uevent").is_file() {
            if exists_not_symlink(&root.join(CPU_DIR)) {
                out.push((cpu, PathBuf::from(CPU_DIR)));
            }
        } else {
            for name in sorted_names(&cpu)? {
                let target = Path::new(CPU_DIR).join(&name);
                if exists_not_symlink(&root.join(&target)) {
                    out.push((cpu.join(&name), target));
                }
            }
        }
    }
    // The image's own directory: checked component by component, as a hostile image may
    // have put a symlink on the way.
    let nested = Path::new("var/lib/lxcfs");
    if nesting && is_plain_dir_path(root, nested) {
        out.push((lxcfs.to_path_buf(), nested.to_path_buf()));
    }
    Ok(out)
}

/// Binds lxcfs's views into the container at `root` (see [`binds`]).
pub fn apply(lxcfs: &Path, root: &Path, nesting: bool) -> Result<()> {
    let none: Option<&str> = None;
    for (source, target) in binds(lxcfs, root, nesting)? {
        let target = root.join(target);
        mount(Some(&source), &target, none, MsFlags::MS_BIND, none).map_err(|e| {
            RuntimeError::sys(
                format!("bind lxcfs's {} on {}", source.display(), target.display()),
                e,
            )
        })?;
    }
    Ok(())
}

/// The names in `dir`, sorted as the hook's shell glob sorts them; only plain names.
fn sorted_names(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = fs::read_dir(dir).map_err(|e| RuntimeError::io("read lxcfs directory", dir, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| RuntimeError::io("read lxcfs directory", dir, e))?;
        let name = PathBuf::from(entry.file_name());
        if matches!(name.components().next(), Some(Component::Normal(_))) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn exists_not_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_symlink())
}

/// Whether every component of `rel` under `root` is a directory and none is a symlink.
fn is_plain_dir_path(root: &Path, rel: &Path) -> bool {
    let mut path = root.to_path_buf();
    rel.components().all(|c| {
        path.push(c);
        matches!(c, Component::Normal(_))
            && fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_dir())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
    }

    /// An lxcfs tree and a container root, as plain directories.
    fn layout(lxcfs_files: &[&str], root_files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in lxcfs_files {
            touch(&dir.path().join("lxcfs").join(f));
        }
        for f in root_files {
            touch(&dir.path().join("root").join(f));
        }
        fs::create_dir_all(dir.path().join("root/proc")).unwrap();
        dir
    }

    #[test]
    fn proc_files_are_bound_in_glob_order_where_the_container_has_them() {
        let d = layout(
            &[
                "proc/uptime",
                "proc/meminfo",
                "proc/cpuinfo",
                "proc/slabinfo",
                "proc/swaps",
            ],
            &["proc/meminfo", "proc/uptime", "proc/cpuinfo", "proc/swaps"],
        );
        let (lxcfs, root) = (d.path().join("lxcfs"), d.path().join("root"));
        let b = binds(&lxcfs, &root, false).unwrap();
        let targets: Vec<_> = b.iter().map(|(_, t)| t.display().to_string()).collect();
        // No slabinfo in this container's proc: skipped, as the hook's `[ -e ]` does.
        assert_eq!(
            targets,
            ["proc/cpuinfo", "proc/meminfo", "proc/swaps", "proc/uptime"]
        );
        assert_eq!(b[1].0, lxcfs.join("proc/meminfo"));
    }

    #[test]
    fn the_cpu_directory_goes_whole_when_lxcfs_serves_it_whole() {
        let d = layout(
            &[
                "proc/meminfo",
                "sys/devices/system/cpu/online",
                "sys/devices/system/cpu/uevent",
            ],
            &["proc/meminfo", "sys/devices/system/cpu/online"],
        );
        let (lxcfs, root) = (d.path().join("lxcfs"), d.path().join("root"));
        let b = binds(&lxcfs, &root, false).unwrap();
        assert_eq!(
            b.last().unwrap(),
            &(
                lxcfs.join("sys/devices/system/cpu"),
                PathBuf::from("sys/devices/system/cpu")
            )
        );
    }

    #[test]
    fn older_lxcfs_cpu_files_go_one_by_one() {
        let d = layout(
            &["proc/meminfo", "sys/devices/system/cpu/online"],
            &[
                "proc/meminfo",
                "sys/devices/system/cpu/online",
                "sys/devices/system/cpu/possible",
            ],
        );
        let (lxcfs, root) = (d.path().join("lxcfs"), d.path().join("root"));
        let b = binds(&lxcfs, &root, false).unwrap();
        assert_eq!(
            b.last().unwrap(),
            &(
                lxcfs.join("sys/devices/system/cpu/online"),
                PathBuf::from("sys/devices/system/cpu/online")
            )
        );
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn symlinks_in_the_container_are_never_mount_points() {
        let d = layout(&["proc/meminfo", "proc/stat"], &["proc/stat"]);
        let (lxcfs, root) = (d.path().join("lxcfs"), d.path().join("root"));
        std::os::unix::fs::symlink("/etc/shadow", root.join("proc/meminfo")).unwrap();
        // The image's /var/lib is a symlink out of its root: no nested lxcfs there.
        fs::create_dir_all(d.path().join("elsewhere/lxcfs")).unwrap();
        fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink(d.path().join("elsewhere"), root.join("var/lib")).unwrap();
        let b = binds(&lxcfs, &root, true).unwrap();
        let targets: Vec<_> = b.iter().map(|(_, t)| t.display().to_string()).collect();
        assert_eq!(targets, ["proc/stat"]);
    }

    #[test]
    fn nesting_gets_lxcfs_itself_where_the_image_has_its_directory() {
        let d = layout(&["proc/meminfo"], &["proc/meminfo"]);
        let (lxcfs, root) = (d.path().join("lxcfs"), d.path().join("root"));
        fs::create_dir_all(root.join("var/lib/lxcfs")).unwrap();
        assert_eq!(binds(&lxcfs, &root, false).unwrap().len(), 1);
        let b = binds(&lxcfs, &root, true).unwrap();
        assert_eq!(b[1], (lxcfs.clone(), PathBuf::from("var/lib/lxcfs")));
    }

    #[test]
    fn an_lxcfs_that_does_not_answer_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let err = binds(&d.path().join("gone"), d.path(), false).unwrap_err();
        assert!(err.to_string().contains("lxcfs"), "{err}");
    }

    #[test]
    fn mountinfo_names_the_lxcfs_mount() {
        let text = "\
24 1 0:22 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n\
36 24 0:30 / /var/lib/lxcfs rw,nosuid,nodev,relatime shared:15 - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other\n\
37 24 0:31 / /tmp/a\\040b rw,relatime shared:16 - fuse.lxcfs lxcfs rw\n\
38 24 0:32 / /mnt/other rw,relatime shared:17 - fuse.sshfs host: rw\n";
        assert!(is_lxcfs_mount(text, Path::new("/var/lib/lxcfs")));
        assert!(is_lxcfs_mount(text, Path::new("/tmp/a b")));
        assert!(!is_lxcfs_mount(text, Path::new("/mnt/other")));
        assert!(!is_lxcfs_mount(text, Path::new("/var/lib")));
        assert!(!available(Path::new("/nonexistent/lxcfs")));
    }
}
