//! Mounts plugged into and out of a running container (disk devices, device nodes), as
//! LXD hot-plugs them. The source is cloned in the host's mount namespace
//! (`open_tree(OPEN_TREE_CLONE)`), idmapped through the container's user namespace and
//! made read-only there (`mount_setattr`), then attached by a helper that entered the
//! container's mount namespace (`move_mount`): a multi-threaded process such as hutchd
//! cannot `setns` into a mount namespace, so the helper is `hutchd-helper __device-plug`, a fresh
//! single-threaded process that reads its plan on stdin.
//!
//! Mount points are walked one component at a time below the container's root, refusing
//! every symlink, and made as the container's root would make them: a container cannot
//! point a mount (or an unmount) at anything but what its path names.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::spec::BindMount;
use crate::sys;

/// One change to a running container's mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HotplugOp {
    /// Mount a host path (a directory, a file or a device node) at `target`, as a disk
    /// device is mounted at start.
    Plug(BindMount),
    /// Unmount `target`; with `remove`, remove the mount point after (the empty file a
    /// device node was mounted on).
    Unplug { target: PathBuf, remove: bool },
}

/// What the helper is asked to do, and to which container.
#[derive(Debug, Serialize, Deserialize)]
struct Plan {
    pid: i32,
    /// Init's start time: a recycled pid is refused.
    start_time: u64,
    privileged: bool,
    /// Whether the root is an idmapped mount; binds are idmapped only then, as at start.
    idmapped_root: bool,
    ops: Vec<HotplugOp>,
}

/// Applies `ops`, in order, to the running container of runtime directory `dir` through a
/// `hutchd-helper __device-plug` helper; stops at the first that fails. Blocks.
pub fn hotplug(helper_bin: &Path, dir: &Path, ops: &[HotplugOp]) -> Result<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let state = crate::container::running_state(dir).ok_or_else(|| RuntimeError::NotRunning {
        dir: dir.to_path_buf(),
    })?;
    let plan = Plan {
        pid: state.init_pid,
        start_time: state.init_start_time,
        privileged: state.privileged,
        idmapped_root: state.idmapped,
        ops: ops.to_vec(),
    };
    let exe = sys::helper_exe(helper_bin).unwrap_or_else(|| helper_bin.to_path_buf());
    let mut child = Command::new(&exe)
        .arg0(helper_bin)
        .arg("__device-plug")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::io("run", helper_bin, e))?;
    let json = serde_json::to_vec(&plan).expect("plans serialize");
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that died early shows in its exit status and stderr below.
        let _ = stdin.write_all(&json);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| RuntimeError::io("wait for", helper_bin, e))?;
    if out.status.success() {
        return Ok(());
    }
    let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(RuntimeError::DeviceFailed {
        reason: if reason.is_empty() {
            format!("device helper {}", out.status)
        } else {
            reason
        },
    })
}

/// `hutchd-helper __device-plug <dir>`: applies the plan read on stdin. Must run before any
/// thread starts.
pub fn device_plug() -> Result<()> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| RuntimeError::io("read", "stdin", e))?;
    let plan = serde_json::from_slice::<Plan>(&input).map_err(|e| RuntimeError::DeviceFailed {
        reason: format!("bad plan: {e}"),
    })?;
    apply(&plan)
}

fn apply(plan: &Plan) -> Result<()> {
    let gone = || RuntimeError::NotRunning {
        dir: PathBuf::from(format!("/proc/{}", plan.pid)),
    };
    if sys::process_start_time(plan.pid) != Some(plan.start_time) {
        return Err(gone());
    }
    let proc = PathBuf::from(format!("/proc/{}", plan.pid));
    let open =
        |p: &str| File::open(proc.join(p)).map_err(|e| RuntimeError::io("open", proc.join(p), e));
    let userns = match !plan.privileged && plan.idmapped_root {
        true => Some(OwnedFd::from(open("ns/user")?)),
        false => None,
    };
    // The sources are the host's: their trees are cloned before entering the container.
    let mut trees = Vec::new();
    for op in &plan.ops {
        trees.push(match op {
            HotplugOp::Plug(m) => Some(prepare_tree(m, userns.as_ref())?),
            HotplugOp::Unplug { .. } => None,
        });
    }
    let (uid, gid) = (
        root_id(&proc.join("uid_map"))?,
        root_id(&proc.join("gid_map"))?,
    );
    let mntns = open("ns/mnt")?;
    if sys::process_start_time(plan.pid) != Some(plan.start_time) {
        return Err(gone());
    }
    setns(&mntns, CloneFlags::CLONE_NEWNS)
        .map_err(|e| RuntimeError::sys("enter the container's mount namespace", e))?;
    // setns left this process at the container's root. What it creates is the container
    // root's, as if made inside; the mount capabilities stay.
    // SAFETY: plain syscalls with integer arguments.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
    let root = open_path(libc::AT_FDCWD, c"/", libc::O_DIRECTORY)
        .map_err(|e| RuntimeError::sys("open the container's root", e))?;
    for (op, tree) in plan.ops.iter().zip(trees) {
        match (op, tree) {
            (HotplugOp::Plug(m), Some(tree)) => {
                let target = mount_point(&root, &m.target, sys::fd_is_dir(&tree))?;
                sys::move_mount_onto(&tree, &target).map_err(|e| {
                    RuntimeError::sys(format!("mount on {}", m.target.display()), e)
                })?;
            }
            (HotplugOp::Unplug { target, remove }, _) => unplug(&root, target, *remove)?,
            _ => unreachable!("a tree per plug"),
        }
    }
    Ok(())
}

/// The detached mount of `m.source`: idmapped where `userns` is given and the bind asks
/// for it, read-only when asked.
fn prepare_tree(m: &BindMount, userns: Option<&OwnedFd>) -> Result<OwnedFd> {
    let src = m.source.display();
    let tree = sys::open_tree_clone(&m.source, true)
        .map_err(|e| RuntimeError::sys(format!("clone the mount tree of {src}"), e))?;
    if let (Some(ns), true) = (userns, m.idmapped) {
        sys::mount_setattr_idmap(&tree, ns, true).map_err(|e| {
            RuntimeError::sys(
                format!(
                    "idmap the mount of {src} (the filesystem may not support idmapped mounts)"
                ),
                e,
            )
        })?;
    }
    if m.readonly {
        sys::mount_setattr_readonly(&tree)
            .map_err(|e| RuntimeError::sys(format!("make the mount of {src} read-only"), e))?;
    }
    Ok(tree)
}

/// The host id that `map` (a /proc uid_map or gid_map) gives the container's id 0.
fn root_id(map: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(map).map_err(|e| RuntimeError::io("read", map, e))?;
    parse_root_id(&text).ok_or_else(|| RuntimeError::DeviceFailed {
        reason: format!("{} maps no root", map.display()),
    })
}

fn parse_root_id(text: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace().map(|v| v.parse::<u64>().ok());
        let (inside, outside, count) = (f.next()??, f.next()??, f.next()??);
        (inside == 0 && count > 0).then_some(outside as u32)
    })
}

/// The plain components of a container path.
fn components(path: &Path) -> Result<Vec<CString>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => out.push(
                CString::new(n.as_encoded_bytes()).map_err(|_| bad_target(path, "has a NUL"))?,
            ),
            _ => return Err(bad_target(path, "is not a plain absolute path")),
        }
    }
    if out.is_empty() {
        return Err(bad_target(path, "is /"));
    }
    Ok(out)
}

fn bad_target(path: &Path, why: &str) -> RuntimeError {
    RuntimeError::InvalidSpec {
        field: "mount target".into(),
        reason: format!("{} {why}", path.display()),
    }
}

/// `openat(dir, name, O_PATH | O_NOFOLLOW | flags)`.
fn open_path(dir: RawFd, name: &std::ffi::CStr, flags: i32) -> std::result::Result<OwnedFd, Errno> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC | flags,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory `name` below `dir`, made when missing and `create`; a symlink or other
/// file in its place is refused.
fn dir_at(dir: &OwnedFd, name: &std::ffi::CStr, create: bool, shown: &Path) -> Result<OwnedFd> {
    let refuse = |e: Errno| match e {
        Errno::ENOTDIR | Errno::ELOOP => RuntimeError::DeviceFailed {
            reason: format!("{}: a symlink or a file is in the way", shown.display()),
        },
        e => RuntimeError::sys(format!("open {}", shown.display()), e),
    };
    match open_path(dir.as_raw_fd(), name, libc::O_DIRECTORY) {
        Err(Errno::ENOENT) if create => {
            // SAFETY: `name` is NUL-terminated and outlives the call.
            if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) } < 0
                && Errno::last() != Errno::EEXIST
            {
                return Err(RuntimeError::sys(
                    format!("create {}", shown.display()),
                    Errno::last(),
                ));
            }
            open_path(dir.as_raw_fd(), name, libc::O_DIRECTORY).map_err(refuse)
        }
        r => r.map_err(refuse),
    }
}

/// The mount point `target` (a directory, or an empty file for a file or a node), made
/// with its parents as needed, opened without following any symlink.
fn mount_point(root: &OwnedFd, target: &Path, dir: bool) -> Result<OwnedFd> {
    let names = components(target)?;
    let (last, parents) = names.split_last().expect("components are not empty");
    let mut cur = root
        .try_clone()
        .map_err(|e| RuntimeError::io("dup", "/", e))?;
    for n in parents {
        cur = dir_at(&cur, n, true, target)?;
    }
    if dir {
        return dir_at(&cur, last, true, target);
    }
    // SAFETY: `last` is NUL-terminated and outlives the call.
    let made = unsafe {
        libc::openat(
            cur.as_raw_fd(),
            last.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    if made >= 0 {
        // SAFETY: closes the fd just made.
        unsafe { libc::close(made) };
    } else if Errno::last() != Errno::EEXIST {
        return Err(RuntimeError::sys(
            format!("create {}", target.display()),
            Errno::last(),
        ));
    }
    let fd = open_path(cur.as_raw_fd(), last, 0)
        .map_err(|e| RuntimeError::sys(format!("open {}", target.display()), e))?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd())
        .map_err(|e| RuntimeError::sys(format!("stat {}", target.display()), e))?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR | libc::S_IFLNK => Err(RuntimeError::DeviceFailed {
            reason: format!(
                "{}: a symlink or a directory is in the way",
                target.display()
            ),
        }),
        _ => Ok(fd),
    }
}

/// Unmounts `target` (lazily: a process inside may hold it), its parents walked without
/// following symlinks; nothing mounted there is no error.
fn unplug(root: &OwnedFd, target: &Path, remove: bool) -> Result<()> {
    let names = components(target)?;
    let (last, parents) = names.split_last().expect("components are not empty");
    let mut cur = root
        .try_clone()
        .map_err(|e| RuntimeError::io("dup", "/", e))?;
    for n in parents {
        match dir_at(&cur, n, false, target) {
            Ok(d) => cur = d,
            Err(RuntimeError::Sys {
                source: Errno::ENOENT,
                ..
            }) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    nix::unistd::fchdir(cur.as_raw_fd())
        .map_err(|e| RuntimeError::sys(format!("enter the parent of {}", target.display()), e))?;
    // SAFETY: `last` is NUL-terminated and outlives the call.
    let rc = unsafe { libc::umount2(last.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    if rc < 0 && !matches!(Errno::last(), Errno::EINVAL | Errno::ENOENT) {
        return Err(RuntimeError::sys(
            format!("unmount {}", target.display()),
            Errno::last(),
        ));
    }
    if remove {
        // SAFETY: `last` is NUL-terminated and outlives the call.
        let rc = unsafe { libc::unlinkat(cur.as_raw_fd(), last.as_ptr(), 0) };
        if rc < 0 && !matches!(Errno::last(), Errno::ENOENT | Errno::EBUSY) {
            return Err(RuntimeError::sys(
                format!("remove {}", target.display()),
                Errno::last(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_ids_come_from_the_map() {
        assert_eq!(parse_root_id("         0          0 4294967295\n"), Some(0));
        assert_eq!(parse_root_id("0 1000000 65536\n"), Some(1_000_000));
        assert_eq!(parse_root_id("1 5 10\n"), None);
        assert_eq!(parse_root_id(""), None);
    }

    #[test]
    fn targets_must_be_plain_paths() {
        assert!(components(Path::new("/")).is_err());
        assert!(components(Path::new("/a/../b")).is_err());
        assert_eq!(components(Path::new("/mnt/d")).unwrap().len(), 2);
    }

    fn open_root(dir: &Path) -> OwnedFd {
        let c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        open_path(libc::AT_FDCWD, &c, libc::O_DIRECTORY).unwrap()
    }

    #[test]
    fn mount_points_are_made_below_the_root_and_symlinks_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = open_root(tmp.path());
        mount_point(&root, Path::new("/mnt/a/b"), true).unwrap();
        assert!(tmp.path().join("mnt/a/b").is_dir());
        mount_point(&root, Path::new("/dev/node"), false).unwrap();
        assert!(tmp.path().join("dev/node").is_file());
        // Made again, what is there is used.
        mount_point(&root, Path::new("/mnt/a/b"), true).unwrap();
        std::os::unix::fs::symlink("/", tmp.path().join("mnt/up")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("mnt/file")).unwrap();
        for (target, dir) in [("/mnt/up/x", true), ("/mnt/up", true), ("/mnt/file", false)] {
            let err = mount_point(&root, Path::new(target), dir).unwrap_err();
            assert!(err.to_string().contains("in the way"), "{target}: {err}");
        }
        // A directory where a file is wanted, and a file where a directory is.
        assert!(mount_point(&root, Path::new("/mnt/a"), false).is_err());
        assert!(mount_point(&root, Path::new("/dev/node/x"), true).is_err());
    }

    #[test]
    fn plans_round_trip() {
        let plan = Plan {
            pid: 1,
            start_time: 2,
            privileged: false,
            idmapped_root: true,
            ops: vec![
                HotplugOp::Plug(BindMount {
                    source: "/srv".into(),
                    target: "/mnt".into(),
                    readonly: true,
                    idmapped: false,
                }),
                HotplugOp::Unplug {
                    target: "/dev/x".into(),
                    remove: true,
                },
            ],
        };
        let back: Plan = serde_json::from_slice(&serde_json::to_vec(&plan).unwrap()).unwrap();
        assert_eq!(back.ops, plan.ops);
    }
}
