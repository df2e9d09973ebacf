//! The mounts a container sees: rendered as a plan by a pure function, applied in the
//! container's own mount namespace just before `pivot_root`.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, pivot_root};

use crate::cgroup::CgroupMountStep;
use crate::error::{Result, RuntimeError};
use crate::spec::ContainerSpec;
use crate::sys;

/// Host device nodes every container gets, bind-mounted into its /dev.
const STANDARD_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Kernel files of /proc no container reads: /dev/null is bound over them (as Docker
/// does); /proc/kcore is the host's memory.
const MASKED_PROC_FILES: &[&str] = &["kcore", "latency_stats", "timer_list", "sched_debug"];

/// Where the container's cgroup view is mounted, relative to the root.
const CGROUP_DIR: &str = "sys/fs/cgroup";

/// One step of preparing the root filesystem. Paths named `at`/`target` are relative to
/// the container root; `source` paths are host paths as seen before `pivot_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Stop mount events in this namespace from propagating back to the host.
    MakeRslave,
    /// Attach the prepared (idmapped) root tree on the rootfs path.
    AttachRootTree,
    /// Attach the `index`th prepared idmapped bind tree at `target`.
    AttachBindTree {
        index: usize,
        target: PathBuf,
        readonly: bool,
    },
    /// Bind the rootfs onto itself, so it is a mount point.
    BindRootfsOnItself,
    /// Mount a filesystem of `fstype` at `at`, creating the directory when missing.
    Mount {
        fstype: &'static str,
        at: PathBuf,
        flags: MsFlags,
        data: Option<String>,
    },
    /// Bind a host path (file or directory) at `target`, creating the mount point.
    Bind {
        source: PathBuf,
        target: PathBuf,
        readonly: bool,
    },
    /// Bind `at` onto itself read-only, when it exists (kernel files that may be missing).
    ProtectReadOnly { at: PathBuf },
    /// Bind `at` onto itself writable again, when it exists (a namespaced part below a
    /// read-only one).
    ProtectWritable { at: PathBuf },
    /// Bind the host's /dev/null over `at`, when it exists.
    Mask { at: PathBuf },
    /// Remount an existing mount read-only.
    RemountReadOnly {
        at: PathBuf,
        flags: MsFlags,
        data: Option<String>,
    },
    /// Create a directory.
    Mkdir { at: PathBuf },
    /// Create a symlink at `at` pointing to `to`.
    Symlink { at: PathBuf, to: String },
    /// Bind lxcfs's views (mounted on the host at `source`) over the container's proc and
    /// sys files; what to cover is decided when applied, once proc and sysfs are mounted.
    Lxcfs { source: PathBuf, nesting: bool },
    /// Make the rootfs the new `/` and drop the old one.
    PivotRoot,
}

/// How the root filesystem becomes the container's `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootMount {
    /// Attach the detached idmapped tree prepared by the monitor.
    IdmappedTree,
    /// Bind the rootfs on itself (privileged, or ownership already shifted).
    Bind,
}

/// Renders the mount plan for `spec`. `console` is the host path of the console pty's
/// slave; `cgroup_steps` come from the cgroup driver.
pub fn plan(
    spec: &ContainerSpec,
    root: RootMount,
    console: &Path,
    cgroup_steps: &[CgroupMountStep],
    has_run_dir: bool,
) -> Vec<MountOp> {
    let rel = PathBuf::from;
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut ops = vec![MountOp::MakeRslave];
    ops.push(match root {
        RootMount::IdmappedTree => MountOp::AttachRootTree,
        RootMount::Bind => MountOp::BindRootfsOnItself,
    });

    ops.push(MountOp::Mount {
        fstype: "proc",
        at: rel("proc"),
        flags: hardened,
        data: None,
    });
    // As LXC's proc:mixed. In a user namespace the kernel refuses these writes anyway.
    ops.push(MountOp::ProtectReadOnly {
        at: rel("proc/sysrq-trigger"),
    });
    if spec.privileged {
        // Without a user namespace, /proc/sys would reach the host kernel; its net part
        // belongs to the container's own network namespace.
        ops.push(MountOp::ProtectReadOnly {
            at: rel("proc/sys"),
        });
        ops.push(MountOp::ProtectWritable {
            at: rel("proc/sys/net"),
        });
    }
    for f in MASKED_PROC_FILES {
        ops.push(MountOp::Mask {
            at: rel("proc").join(f),
        });
    }
    ops.push(MountOp::Mount {
        fstype: "sysfs",
        at: rel("sys"),
        flags: hardened | MsFlags::MS_RDONLY,
        data: None,
    });
    cgroup_ops(cgroup_steps, &mut ops);
    if let Some(source) = &spec.lxcfs {
        ops.push(MountOp::Lxcfs {
            source: source.clone(),
            nesting: spec.nesting,
        });
    }

    ops.push(MountOp::Mount {
        fstype: "tmpfs",
        at: rel("dev"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data: Some("mode=755,size=65536k".into()),
    });
    for dev in STANDARD_DEVICES {
        ops.push(MountOp::Bind {
            source: Path::new("/dev").join(dev),
            target: rel("dev").join(dev),
            readonly: false,
        });
    }
    ops.push(MountOp::Mount {
        fstype: "devpts",
        at: rel("dev/pts"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5".into()),
    });
    ops.push(MountOp::Symlink {
        at: rel("dev/ptmx"),
        to: "pts/ptmx".into(),
    });
    ops.push(MountOp::Bind {
        source: console.to_path_buf(),
        target: rel("dev/console"),
        readonly: false,
    });
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            at: rel("dev").join(name),
            to: to.into(),
        });
    }
    ops.push(MountOp::Mount {
        fstype: "tmpfs",
        at: rel("dev/shm"),
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        data: Some("mode=1777".into()),
    });
    if has_run_dir {
        ops.push(MountOp::Mount {
            fstype: "tmpfs",
            at: rel("run"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some("mode=755,size=20%".into()),
        });
    }
    for d in &spec.devices {
        ops.push(MountOp::Bind {
            source: d.source.clone(),
            target: strip_root(&d.target),
            readonly: false,
        });
    }
    // Idmapped binds are prepared by the monitor in this same order.
    let mut trees = 0;
    for m in &spec.mounts {
        if m.idmapped && root == RootMount::IdmappedTree {
            ops.push(MountOp::AttachBindTree {
                index: trees,
                target: strip_root(&m.target),
                readonly: m.readonly,
            });
            trees += 1;
            continue;
        }
        ops.push(MountOp::Bind {
            source: m.source.clone(),
            target: strip_root(&m.target),
            readonly: m.readonly,
        });
    }
    ops.push(MountOp::PivotRoot);
    ops
}

fn cgroup_ops(steps: &[CgroupMountStep], ops: &mut Vec<MountOp>) {
    let base = PathBuf::from(CGROUP_DIR);
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let tmpfs_data = Some("mode=755,size=1024k".to_string());
    for step in steps {
        ops.push(match step {
            CgroupMountStep::Tmpfs => MountOp::Mount {
                fstype: "tmpfs",
                at: base.clone(),
                flags: hardened,
                data: tmpfs_data.clone(),
            },
            CgroupMountStep::Cgroup2 { dir } => MountOp::Mount {
                fstype: "cgroup2",
                at: join_dir(&base, dir),
                flags: hardened,
                data: None,
            },
            CgroupMountStep::Bind { source, dir } => MountOp::Bind {
                source: source.clone(),
                target: join_dir(&base, dir),
                readonly: false,
            },
            CgroupMountStep::Symlink { name, target } => MountOp::Symlink {
                at: base.join(name),
                to: target.clone(),
            },
            CgroupMountStep::ReadOnlyTmpfs => MountOp::RemountReadOnly {
                at: base.clone(),
                flags: hardened,
                data: tmpfs_data.clone(),
            },
        });
    }
}

fn join_dir(base: &Path, dir: &str) -> PathBuf {
    if dir.is_empty() {
        base.to_path_buf()
    } else {
        base.join(dir)
    }
}

fn strip_root(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

/// Applies a plan in the current (new, private) mount namespace. `tree` is the detached,
/// idmapped root tree for `AttachRootTree`; `binds` the idmapped bind trees.
pub fn apply(
    ops: &[MountOp],
    rootfs: &Path,
    tree: Option<&OwnedFd>,
    binds: &[OwnedFd],
) -> Result<()> {
    for op in ops {
        apply_one(op, rootfs, tree, binds)?;
    }
    Ok(())
}

fn apply_one(op: &MountOp, root: &Path, tree: Option<&OwnedFd>, binds: &[OwnedFd]) -> Result<()> {
    let none: Option<&str> = None;
    match op {
        MountOp::MakeRslave => mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none)
            .map_err(|e| RuntimeError::sys("make / a recursive slave", e)),
        MountOp::AttachBindTree {
            index,
            target,
            readonly,
        } => {
            let fd = binds.get(*index).ok_or_else(|| RuntimeError::StartFailed {
                reason: "missing idmapped bind tree".into(),
            })?;
            let is_dir = crate::sys::fd_is_dir(fd);
            let target = ensure_target(root, target, is_dir)?;
            sys::move_mount_to(fd, &target).map_err(|e| {
                RuntimeError::sys(format!("attach idmapped {}", target.display()), e)
            })?;
            if *readonly {
                remount_bind_readonly(&target)?;
            }
            Ok(())
        }
        MountOp::AttachRootTree => {
            let tree = tree.ok_or_else(|| RuntimeError::StartFailed {
                reason: "no idmapped root tree".into(),
            })?;
            sys::move_mount_to(tree, root)
                .map_err(|e| RuntimeError::sys(format!("attach idmapped {}", root.display()), e))
        }
        MountOp::BindRootfsOnItself => {
            mount(
                Some(root),
                root,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .map_err(|e| RuntimeError::sys(format!("bind {} on itself", root.display()), e))?;
            // The host's pool is mounted nosuid; the container's view of its root is not.
            // Inside a user namespace (the shifted fallback) the kernel keeps nosuid locked,
            // and the container runs with it: safe, only its setuid files do not work.
            if let Err(e) = remount_bind_with(root, MsFlags::empty(), MsFlags::MS_NOSUID) {
                if !matches!(
                    e,
                    RuntimeError::Sys {
                        source: nix::errno::Errno::EPERM,
                        ..
                    }
                ) {
                    return Err(e);
                }
            }
            Ok(())
        }
        MountOp::Mount {
            fstype,
            at,
            flags,
            data,
        } => {
            let target = ensure_target(root, at, true)?;
            mount(
                Some(*fstype),
                &target,
                Some(*fstype),
                *flags,
                data.as_deref(),
            )
            .map_err(|e| RuntimeError::sys(format!("mount {fstype} on {}", target.display()), e))
        }
        MountOp::Bind {
            source,
            target,
            readonly,
        } => {
            let is_dir = fs::metadata(source)
                .map_err(|e| RuntimeError::io("stat", source, e))?
                .is_dir();
            let target = ensure_target(root, target, is_dir)?;
            mount(
                Some(source.as_path()),
                &target,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .map_err(|e| {
                RuntimeError::sys(
                    format!("bind {} on {}", source.display(), target.display()),
                    e,
                )
            })?;
            if *readonly {
                remount_bind_readonly(&target)?;
            }
            Ok(())
        }
        MountOp::ProtectReadOnly { at } => {
            protect(&root.join(at), MsFlags::MS_RDONLY, MsFlags::empty())
        }
        // A bind made through a read-only mount is read-only too: cleared here.
        MountOp::ProtectWritable { at } => {
            protect(&root.join(at), MsFlags::empty(), MsFlags::MS_RDONLY)
        }
        MountOp::Mask { at } => {
            let target = root.join(at);
            if fs::symlink_metadata(&target).is_err() {
                return Ok(());
            }
            mount(Some("/dev/null"), &target, none, MsFlags::MS_BIND, none)
                .map_err(|e| RuntimeError::sys(format!("mask {}", target.display()), e))
        }
        MountOp::RemountReadOnly { at, flags, data } => {
            let target = root.join(at);
            let flags = *flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(none, &target, none, flags, data.as_deref()).map_err(|e| {
                RuntimeError::sys(format!("remount {} read-only", target.display()), e)
            })
        }
        MountOp::Mkdir { at } => ensure_target(root, at, true).map(|_| ()),
        MountOp::Symlink { at, to } => {
            let link = ensure_parent(root, at)?;
            match symlink(to, &link) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    Err(RuntimeError::io("symlink", link, e))
                }
                _ => Ok(()),
            }
        }
        MountOp::Lxcfs { source, nesting } => lxcfs::apply(source, root, *nesting),
        MountOp::PivotRoot => enter_root(root),
    }
}

/// Binds `target` onto itself, when it exists (kernel files that may be missing), and
/// remounts the bind with `add` set and `clear` cleared.
fn protect(target: &Path, add: MsFlags, clear: MsFlags) -> Result<()> {
    if fs::symlink_metadata(target).is_err() {
        return Ok(());
    }
    let none: Option<&str> = None;
    mount(Some(target), target, none, MsFlags::MS_BIND, none)
        .map_err(|e| RuntimeError::sys(format!("bind {} on itself", target.display()), e))?;
    remount_bind_with(target, add, clear)
}

/// A read-only bind must be remounted, keeping the flags the kernel locked on it.
fn remount_bind_readonly(target: &Path) -> Result<()> {
    remount_bind_with(target, MsFlags::MS_RDONLY, MsFlags::empty())
}

/// Remounts the bind at `target` with `add` set and `clear` cleared, keeping its other
/// flags (the kernel refuses a remount that would drop a flag it locked).
pub fn remount_bind_with(target: &Path, add: MsFlags, clear: MsFlags) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(target)
        .map_err(|e| RuntimeError::sys(format!("statvfs {}", target.display()), e))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | add;
    use nix::sys::statvfs::FsFlags;
    for (have, keep) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(have) {
            flags |= keep;
        }
    }
    flags.remove(clear);
    let none: Option<&str> = None;
    mount(none, target, none, flags, none)
        .map_err(|e| RuntimeError::sys(format!("remount {}", target.display()), e))
}

/// Creates the parents of `rel` under `root`, refusing any symlink on the way, so a
/// hostile image cannot point a mount target outside its root.
fn ensure_parent(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for comp in &parents[..parents.len().saturating_sub(1)] {
        let Component::Normal(name) = comp else {
            return Err(RuntimeError::InvalidSpec {
                field: "mount target".into(),
                reason: format!("{} is not a plain path", rel.display()),
            });
        };
        path.push(name);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(not_a_dir(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&path)
                    .map_err(|e| RuntimeError::io("create directory", &path, e))?;
            }
            Err(e) => return Err(RuntimeError::io("stat", &path, e)),
        }
    }
    Ok(root.join(rel))
}

/// Creates the mount point `rel` under `root` (a directory or an empty file).
fn ensure_target(root: &Path, rel: &Path, dir: bool) -> Result<PathBuf> {
    let path = ensure_parent(root, rel)?;
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() == dir && !m.file_type().is_symlink() => Ok(path),
        Ok(_) => Err(not_a_dir(&path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let made = if dir {
                fs::DirBuilder::new().mode(0o755).create(&path)
            } else {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&path)
                    .map(|_| ())
            };
            made.map_err(|e| RuntimeError::io("create mount point", &path, e))?;
            Ok(path)
        }
        Err(e) => Err(RuntimeError::io("stat", &path, e)),
    }
}

fn not_a_dir(path: &Path) -> RuntimeError {
    RuntimeError::io(
        "use as mount point",
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a symlink or wrong file type is in the way",
        ),
    )
}

/// `pivot_root(".", ".")` then detach the old root: no directory for it is needed.
fn enter_root(root: &Path) -> Result<()> {
    chdir(root).map_err(|e| RuntimeError::sys(format!("chdir {}", root.display()), e))?;
    pivot_root(".", ".")
        .map_err(|e| RuntimeError::sys(format!("pivot_root into {}", root.display()), e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| RuntimeError::sys("detach the old root", e))?;
    chdir("/").map_err(|e| RuntimeError::sys("chdir /", e))
}

/// Whether the image has a /run directory (then it gets a tmpfs there).
pub fn has_run_dir(rootfs: &Path) -> bool {
    fs::symlink_metadata(rootfs.join("run"))
        .map(|m| m.is_dir())
        .unwrap_or(false)
}

pub mod lxcfs;
#[cfg(test)]
mod tests;
