//! The container's user namespace, made before anything else, and its idmapped root tree.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{lchown, MetadataExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult};

use crate::error::{Result, RuntimeError};
use crate::idmap::IdMap;
use crate::sys;

/// Extended attribute on a root filesystem whose ownership was shifted once, instead of
/// being presented through an idmapped mount; it holds the uid map text it was shifted to.
pub const SHIFTED_XATTR: &str = "trusted.hutch.shifted";

/// Creates a user namespace with `map` and returns a handle on it. A short-lived child
/// unshares it; the namespace lives on as long as the returned fd.
pub fn create(map: &IdMap) -> Result<OwnedFd> {
    let (ready_r, ready_w) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::sys("create pipe", e))?;
    let (done_r, done_w) =
        pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::sys("create pipe", e))?;
    // SAFETY: the monitor is single-threaded when it creates a container; the child only
    // calls async-signal-safe functions before _exit.
    match unsafe { fork() }.map_err(|e| RuntimeError::sys("fork", e))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = fs::File::from(ready_w).write_all(if ok { b"1" } else { b"0" });
            let _ = fs::File::from(done_r).read(&mut [0u8; 1]);
            // SAFETY: _exit is always safe; it skips destructors that belong to the parent.
            unsafe { libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let result = map_child(child.as_raw(), map, ready_r);
            drop(done_w);
            let _ = waitpid(child, None);
            result
        }
    }
}

fn map_child(pid: i32, map: &IdMap, ready: OwnedFd) -> Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let n = fs::File::from(ready)
        .read(&mut byte)
        .map_err(|e| RuntimeError::io("read", "userns pipe", e))?;
    if n != 1 || byte[0] != b'1' {
        return Err(RuntimeError::StartFailed {
            reason: "could not create a user namespace".into(),
        });
    }
    let proc = format!("/proc/{pid}");
    for (file, text) in [
        ("uid_map", map.uid_map_text()),
        ("gid_map", map.gid_map_text()),
    ] {
        let path = format!("{proc}/{file}");
        fs::write(&path, text).map_err(|e| RuntimeError::io("write", path, e))?;
    }
    let ns = format!("{proc}/ns/user");
    fs::File::open(&ns)
        .map(OwnedFd::from)
        .map_err(|e| RuntimeError::io("open", ns, e))
}

/// How the root filesystem is presented to the container.
#[derive(Debug)]
pub enum RootTree {
    /// A detached mount of the rootfs, idmapped through the container's user namespace.
    Idmapped(OwnedFd),
    /// The filesystem cannot be idmapped; its ownership was shifted into the host range.
    Shifted,
}

/// Prepares the root tree: an idmapped detached mount where the filesystem allows it,
/// else a one-time ownership shift recorded in an xattr.
pub fn prepare_root(rootfs: &Path, userns: &OwnedFd, map: &IdMap) -> Result<RootTree> {
    let tree = sys::open_tree_clone(rootfs, true)
        .map_err(|e| RuntimeError::sys(format!("clone mount tree of {}", rootfs.display()), e))?;
    match sys::mount_setattr_idmap(&tree, userns, true) {
        Ok(()) => Ok(RootTree::Idmapped(tree)),
        Err(Errno::EINVAL | Errno::EPERM | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            shift_once(rootfs, map)?;
            Ok(RootTree::Shifted)
        }
        Err(e) => Err(RuntimeError::sys(
            format!("idmap the mount of {}", rootfs.display()),
            e,
        )),
    }
}

/// Shifts ownership of every file under `rootfs` into the host range of `map`, unless the
/// xattr says it was already shifted to this very map.
pub fn shift_once(rootfs: &Path, map: &IdMap) -> Result<()> {
    let want = map.uid_map_text() + &map.gid_map_text();
    if read_xattr(rootfs, SHIFTED_XATTR).as_deref() == Some(want.as_bytes()) {
        return Ok(());
    }
    if read_xattr(rootfs, SHIFTED_XATTR).is_some() {
        return Err(RuntimeError::StartFailed {
            reason: format!("{} was shifted to another id map", rootfs.display()),
        });
    }
    shift_tree(rootfs, map)?;
    write_xattr(rootfs, SHIFTED_XATTR, want.as_bytes())
}

/// Maps the owner of every inode below `root` (not following symlinks or crossing mounts)
/// from container ids to host ids.
pub fn shift_tree(root: &Path, map: &IdMap) -> Result<()> {
    let dev = fs::symlink_metadata(root)
        .map_err(|e| RuntimeError::io("stat", root, e))?
        .dev();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| RuntimeError::io("stat", &path, e))?;
        if meta.dev() != dev {
            continue;
        }
        let uid = map.host_uid(meta.uid()).unwrap_or(meta.uid());
        let gid = map.host_gid(meta.gid()).unwrap_or(meta.gid());
        // chown clears setuid bits, so restore the mode of anything that is not a symlink.
        lchown(&path, Some(uid), Some(gid)).map_err(|e| RuntimeError::io("chown", &path, e))?;
        if !meta.file_type().is_symlink() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| RuntimeError::io("chmod", &path, e))?;
        }
        if meta.is_dir() {
            for entry in
                fs::read_dir(&path).map_err(|e| RuntimeError::io("read directory", &path, e))?
            {
                stack.push(
                    entry
                        .map_err(|e| RuntimeError::io("read directory", &path, e))?
                        .path(),
                );
            }
        }
    }
    Ok(())
}

fn read_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: the strings are NUL-terminated and buf is valid for buf.len() bytes.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

fn write_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| RuntimeError::io("encode", path, Errno::EINVAL.into()))?;
    let n = std::ffi::CString::new(name).expect("xattr name has no NUL");
    // SAFETY: the strings are NUL-terminated and value is valid for value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        return Err(RuntimeError::io(
            "set xattr on",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Joins `userns` and becomes its root, keeping full capabilities inside it.
pub fn enter(userns: &OwnedFd) -> Result<()> {
    nix::sched::setns(userns.as_fd(), CloneFlags::CLONE_NEWUSER)
        .map_err(|e| RuntimeError::sys("join the user namespace", e))?;
    become_root()
}

/// Sets all uids and gids to 0 of the current user namespace and drops supplementary groups.
pub fn become_root() -> Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| RuntimeError::sys("setresgid 0", e))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| RuntimeError::sys("setresuid 0", e))?;
    setgroups(&[]).map_err(|e| RuntimeError::sys("setgroups", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn shift_tree_maps_owners_and_keeps_modes() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("HUTCH_REQUIRED_TESTS").as_deref() != Ok("1"),
                "needs root"
            );
            eprintln!("skipping shift_tree_maps_owners_and_keeps_modes: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/su"), b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        lchown(root.join("bin/su"), Some(0), Some(5)).unwrap();
        fs::set_permissions(root.join("bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
        symlink("su", root.join("bin/link")).unwrap();
        let map = IdMap::single(1_000_000, 65536);
        shift_tree(&root, &map).unwrap();
        let m = fs::metadata(root.join("bin/su")).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (1_000_000, 1_000_005, 0o4755)
        );
        assert_eq!(
            fs::symlink_metadata(root.join("bin/link")).unwrap().uid(),
            1_000_000
        );
    }
}
