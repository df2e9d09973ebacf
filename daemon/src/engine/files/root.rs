//! The tree of an instance that holds a path, reached from the host through
//! `openat2(RESOLVE_IN_ROOT)` on its root filesystem, so no path or symlink can lead out
//! of it, and no process is spawned per file. Owners are container ids (the root filesystem is stored unshifted
//! and presented through an idmapped mount). While the instance runs, a path below one of
//! its disk devices is reached in that device's source, as the container sees it.

use std::ffi::CString;
use std::fs::File;
#[cfg(test)]
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;

use hutch_runtime::IdMap;

use crate::daemon::Daemon;
use crate::engine;
use crate::error::{DaemonError, Result};

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Directory => "directory",
            FileKind::Symlink => "symlink",
        }
    }
}

/// Owner, mode and kind of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub kind: FileKind,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub modified: i64,
}

/// The tree that holds a path of an instance (its root filesystem, or the source of the
/// disk device mounted over the path), opened once per request.
pub struct InstanceRoot {
    fd: OwnedFd,
    /// Where the tree appears in the instance: `/` for the root filesystem.
    mount_point: String,
    /// The ids on the tree are host ids (a host directory bound without idmapping into an
    /// unprivileged container): container ids go through this map.
    shift: Option<IdMap>,
    readonly: bool,
}

fn errno_to(path: &str, e: Errno) -> DaemonError {
    match e {
        Errno::ENOENT | Errno::ENOTDIR => DaemonError::NotFound(format!("{path}: not found")),
        Errno::EEXIST => DaemonError::Conflict(format!("{path}: already exists")),
        Errno::ENOTEMPTY => DaemonError::BadRequest(format!("{path}: directory not empty")),
        Errno::EISDIR => DaemonError::BadRequest(format!("{path}: is a directory")),
        Errno::EXDEV | Errno::ELOOP => {
            DaemonError::BadRequest(format!("{path}: leads outside the instance"))
        }
        other => DaemonError::failed("open", path, std::io::Error::from(other)),
    }
}

/// Splits an absolute container path into parent and final name; `/` has no name.
fn split(path: &str) -> Result<(PathBuf, String)> {
    let p = Path::new(path);
    if p.components().any(|c| matches!(c, Component::ParentDir)) && !p.is_absolute() {
        return Err(DaemonError::BadRequest(format!("Invalid path {path:?}")));
    }
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| DaemonError::BadRequest(format!("Invalid path {path:?}")))?;
    let parent = p.parent().unwrap_or(Path::new("/")).to_path_buf();
    Ok((parent, name))
}

/// The id the kernel shows for ids a user namespace does not map.
const OVERFLOW_ID: u32 = 65534;

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)
        .map_err(|e| DaemonError::io("open", dir, e))?;
    Ok(f.into())
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| DaemonError::BadRequest("path contains NUL".into()))
}

impl InstanceRoot {
    /// The tree holding `path` of instance `name`, and `path` within that tree.
    pub fn open(d: &Daemon, name: &str, path: &str) -> Result<(Self, String)> {
        let path = normalize(Path::new(path));
        let row = d.db.instance_or_404(name)?;
        if engine::runtime_info(d, name).pid > 0 {
            let expanded = engine::spec::expand(d, &row)?;
            let privileged = engine::spec::flag(&expanded.config, "security.privileged");
            let mounts = engine::spec::disk_mounts(d, &expanded.devices)?;
            // The deepest mount point at or above the path: the one the container sees.
            let holder = mounts
                .iter()
                .filter_map(|m| {
                    let rest = Path::new(&path).strip_prefix(&m.target).ok()?;
                    Some((m, rest.to_path_buf()))
                })
                .max_by_key(|(m, _)| m.target.components().count());
            if let Some((m, rest)) = holder {
                let root = InstanceRoot {
                    fd: open_dir(&m.source)?,
                    mount_point: m.target.display().to_string(),
                    shift: match (privileged, m.idmapped) {
                        (false, false) => engine::idmaps::instance_idmap(d, &row, &expanded)?,
                        _ => None,
                    },
                    readonly: m.readonly,
                };
                return Ok((root, format!("/{}", rest.display())));
            }
        }
        let root = d.instance_volume(name)?.join("rootfs");
        let root = InstanceRoot {
            fd: open_dir(&root)?,
            mount_point: "/".into(),
            shift: None,
            readonly: false,
        };
        Ok((root, path))
    }

    /// Refuses changes on a read-only disk device.
    fn writable(&self, path: &str) -> Result<()> {
        if self.readonly {
            return Err(DaemonError::BadRequest(format!(
                "{path}: on a read-only disk device ({})",
                self.mount_point
            )));
        }
        Ok(())
    }

    /// The ids to store for container ids `uid`/`gid`.
    fn ids_on_disk(&self, path: &str, uid: u32, gid: u32) -> Result<(u32, u32)> {
        let Some(map) = &self.shift else {
            return Ok((uid, gid));
        };
        match (map.host_uid(uid), map.host_gid(gid)) {
            (Some(u), Some(g)) => Ok((u, g)),
            _ => Err(DaemonError::BadRequest(format!(
                "{path}: uid {uid} or gid {gid} is outside the container's id map"
            ))),
        }
    }

    /// The container ids of stored ids; unmapped ones show as the overflow id, as inside.
    fn ids_in_container(&self, uid: u32, gid: u32) -> (u32, u32) {
        match &self.shift {
            None => (uid, gid),
            Some(map) => (
                map.inside_uid(uid).unwrap_or(OVERFLOW_ID),
                map.inside_gid(gid).unwrap_or(OVERFLOW_ID),
            ),
        }
    }

    /// openat2 below the root: `..` and absolute symlinks stay inside it.
    fn open_at(&self, path: &str, flags: i32, mode: u32) -> std::result::Result<OwnedFd, Errno> {
        open_in_root(&self.fd, path, flags, mode)
    }

    fn parent_dir(&self, path: &str) -> Result<(OwnedFd, String)> {
        let (parent, name) = split(path)?;
        let p = parent.to_string_lossy().into_owned();
        let fd = self
            .open_at(&p, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| errno_to(&p, e))?;
        Ok((fd, name))
    }

    /// Kind, owner and mode of `path` (not following a final symlink).
    pub fn stat(&self, path: &str) -> Result<FileInfo> {
        let fd = self
            .open_at(path, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| errno_to(path, e))?;
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| errno_to(path, e))?;
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFREG => FileKind::File,
            _ => {
                return Err(DaemonError::BadRequest(format!(
                    "{path}: is {}, not a file, directory or symlink",
                    kind_name(st.st_mode)
                )));
            }
        };
        let (uid, gid) = self.ids_in_container(st.st_uid, st.st_gid);
        Ok(FileInfo {
            kind,
            uid,
            gid,
            mode: st.st_mode & 0o7777,
            modified: st.st_mtime,
        })
    }

    /// Opens a regular file for reading. Anything else (a FIFO, a device node, a socket,
    /// swapped in since a `stat`) is refused before it is opened for reading, so nothing
    /// the container made can block the caller or act on a device.
    pub fn read(&self, path: &str) -> Result<File> {
        let fd = self
            .open_at(path, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| errno_to(path, e))?;
        reopen_regular(path, &fd, libc::O_RDONLY)
    }

    /// Names in a directory, sorted.
    pub fn list(&self, path: &str) -> Result<Vec<String>> {
        let fd = self
            .open_at(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(|e| errno_to(path, e))?;
        let dir = nix::dir::Dir::from_fd(fd.as_raw_fd()).map_err(|e| errno_to(path, e))?;
        std::mem::forget(fd); // Dir owns and closes the fd now.
        let mut names: Vec<String> = dir
            .into_iter()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        Ok(names)
    }

    /// The target of a symlink, resolved inside the instance to an absolute path.
    pub fn read_link(&self, path: &str) -> Result<String> {
        let (parent, name) = self.parent_dir(path)?;
        let target = nix::fcntl::readlinkat(Some(parent.as_raw_fd()), name.as_str())
            .map_err(|e| errno_to(path, e))?;
        let target = target.to_string_lossy().into_owned();
        if target.starts_with('/') {
            return Ok(target);
        }
        let (dir, _) = split(path)?;
        let dir = Path::new(&self.mount_point).join(dir.strip_prefix("/").unwrap_or(&dir));
        Ok(normalize(&dir.join(target)))
    }

    /// Opens a file for writing: created with `mode`/`uid`/`gid` when new (LXD applies
    /// them only then), truncated or appended to when it exists. Also says whether it was
    /// created.
    pub fn open_write(
        &self,
        path: &str,
        uid: u32,
        gid: u32,
        mode: u32,
        append: bool,
    ) -> Result<(File, bool)> {
        self.writable(path)?;
        let (uid, gid) = self.ids_on_disk(path, uid, gid)?;
        let (parent, name) = self.parent_dir(path)?;
        let c = cstr(&name)?;
        let create = libc::O_WRONLY
            | libc::O_CREAT
            | libc::O_EXCL
            | libc::O_NOFOLLOW
            | libc::O_NONBLOCK
            | libc::O_CLOEXEC;
        // SAFETY: openat with a valid dirfd and NUL-terminated name.
        let fd = unsafe { libc::openat(parent.as_raw_fd(), c.as_ptr(), create, mode) };
        if fd >= 0 {
            // SAFETY: a new fd from openat.
            let file = unsafe { File::from_raw_fd(fd) };
            nix::unistd::fchown(file.as_raw_fd(), Some(uid.into()), Some(gid.into()))
                .map_err(|e| errno_to(path, e))?;
            nix::sys::stat::fchmod(
                file.as_raw_fd(),
                nix::sys::stat::Mode::from_bits_truncate(mode),
            )
            .map_err(|e| errno_to(path, e))?;
            return Ok((file, true));
        }
        if Errno::last() != Errno::EEXIST {
            return Err(errno_to(path, Errno::last()));
        }
        // What exists is looked at through an O_PATH fd first (which neither blocks on a
        // FIFO nor opens a device), and only a regular file is then opened for writing.
        // SAFETY: as above.
        let fd = unsafe {
            libc::openat(
                parent.as_raw_fd(),
                c.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(errno_to(path, Errno::last()));
        }
        // SAFETY: a new fd from openat that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let flags = libc::O_WRONLY
            | if append {
                libc::O_APPEND
            } else {
                libc::O_TRUNC
            };
        Ok((reopen_regular(path, &fd, flags)?, false))
    }

    /// Writes a whole file (see `open_write`).
    #[cfg(test)]
    pub fn write(
        &self,
        path: &str,
        data: &[u8],
        uid: u32,
        gid: u32,
        mode: u32,
        append: bool,
    ) -> Result<()> {
        self.open_write(path, uid, gid, mode, append)?
            .0
            .write_all(data)
            .map_err(|e| DaemonError::io("write", path, e))
    }

    /// Creates a directory; an existing one is fine.
    pub fn mkdir(&self, path: &str, uid: u32, gid: u32, mode: u32) -> Result<()> {
        self.writable(path)?;
        let (uid, gid) = self.ids_on_disk(path, uid, gid)?;
        let (parent, name) = self.parent_dir(path)?;
        match nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            name.as_str(),
            nix::sys::stat::Mode::from_bits_truncate(mode),
        ) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return Ok(()),
            Err(e) => return Err(errno_to(path, e)),
        }
        let fd = self
            .open_at(
                path,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .map_err(|e| errno_to(path, e))?;
        nix::unistd::fchown(fd.as_raw_fd(), Some(uid.into()), Some(gid.into()))
            .map_err(|e| errno_to(path, e))?;
        nix::sys::stat::fchmod(
            fd.as_raw_fd(),
            nix::sys::stat::Mode::from_bits_truncate(mode),
        )
        .map_err(|e| errno_to(path, e))
    }

    /// Creates a symlink; an identical existing one is fine.
    pub fn symlink(&self, path: &str, target: &str, uid: u32, gid: u32) -> Result<()> {
        self.writable(path)?;
        let (uid, gid) = self.ids_on_disk(path, uid, gid)?;
        let (parent, name) = self.parent_dir(path)?;
        match nix::unistd::symlinkat(target, Some(parent.as_raw_fd()), name.as_str()) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                let existing = nix::fcntl::readlinkat(Some(parent.as_raw_fd()), name.as_str())
                    .map_err(|e| errno_to(path, e))?;
                return if existing.to_string_lossy() == target {
                    Ok(())
                } else {
                    Err(errno_to(path, Errno::EEXIST))
                };
            }
            Err(e) => return Err(errno_to(path, e)),
        }
        nix::unistd::fchownat(
            Some(parent.as_raw_fd()),
            name.as_str(),
            Some(uid.into()),
            Some(gid.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| errno_to(path, e))
    }

    /// Removes a file, a symlink, an empty directory, or a FIFO, socket or device node.
    pub fn remove(&self, path: &str) -> Result<()> {
        self.writable(path)?;
        let fd = self
            .open_at(path, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| errno_to(path, e))?;
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| errno_to(path, e))?;
        let (parent, name) = self.parent_dir(path)?;
        let flag = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        nix::unistd::unlinkat(Some(parent.as_raw_fd()), name.as_str(), flag)
            .map_err(|e| errno_to(path, e))
    }
}

/// Opens the regular file behind an `O_PATH` fd with `flags`, through
/// `/proc/self/fd`: the very inode that was checked, never a FIFO or a device node put in
/// its place. `O_NONBLOCK` (no effect on a regular file) keeps even a kernel that let one
/// through from blocking.
fn reopen_regular(path: &str, fd: &OwnedFd, flags: i32) -> Result<File> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| errno_to(path, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(DaemonError::BadRequest(format!(
            "{path}: is {}, not a regular file",
            kind_name(st.st_mode)
        )));
    }
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let file = File::options()
        .read(flags & libc::O_ACCMODE == libc::O_RDONLY)
        .write(flags & libc::O_ACCMODE == libc::O_WRONLY)
        .custom_flags(
            (flags & !libc::O_ACCMODE) | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
        .open(&proc)
        .map_err(|e| DaemonError::io("reopen", path, e))?;
    // /proc/self/fd/N of an O_PATH fd is that very inode: nothing can be swapped in.
    Ok(file)
}

/// What a file of `mode` is, for messages.
fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symlink",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "of an unknown kind",
    }
}

/// Lexically resolves `.` and `..` of an absolute path.
fn normalize(p: &Path) -> String {
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    format!("/{}", out.join("/"))
}

/// openat2 below `root`: `..` and every symlink (absolute ones too) resolve inside it, and
/// magic links (/proc/self/fd/N) are refused. The one way the daemon opens a path inside a
/// container's (hostile) root filesystem.
pub(crate) fn open_in_root(
    root: &impl AsRawFd,
    path: &str,
    flags: i32,
    mode: u32,
) -> std::result::Result<OwnedFd, Errno> {
    let c = CString::new(path).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is plain data; all zeroes is its empty value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `how` and `c` live across the call; the size matches the struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &Path) -> InstanceRoot {
        InstanceRoot {
            fd: open_dir(dir).unwrap(),
            mount_point: "/".into(),
            shift: None,
            readonly: false,
        }
    }

    #[test]
    fn files_round_trip_and_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("escape")).unwrap();
        std::os::unix::fs::symlink("../../..", dir.path().join("etc/up")).unwrap();
        let r = root(dir.path());
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        r.write("/etc/motd", b"hello", me.0, me.1, 0o640, false)
            .unwrap();
        r.write("/etc/motd", b" again", me.0, me.1, 0o600, true)
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("etc/motd")).unwrap(),
            b"hello again"
        );
        let info = r.stat("/etc/motd").unwrap();
        assert_eq!((info.kind, info.mode), (FileKind::File, 0o640));
        // Symlinks resolve inside the root: /escape/etc/motd is our file, not the host's.
        let mut s = String::new();
        std::io::Read::read_to_string(&mut r.read("/escape/etc/motd").unwrap(), &mut s).unwrap();
        assert_eq!(s, "hello again");
        r.write("/etc/up/etc/escaped", b"x", me.0, me.1, 0o644, false)
            .unwrap();
        assert!(dir.path().join("etc/escaped").exists());
        assert_eq!(r.read_link("/etc/up").unwrap(), "/");
        r.mkdir("/srv", me.0, me.1, 0o750).unwrap();
        r.mkdir("/srv", me.0, me.1, 0o750).unwrap();
        assert_eq!(r.list("/").unwrap(), vec!["escape", "etc", "srv"]);
        r.symlink("/srv/l", "/etc/motd", me.0, me.1).unwrap();
        assert_eq!(r.stat("/srv/l").unwrap().kind, FileKind::Symlink);
        r.remove("/srv/l").unwrap();
        r.remove("/srv").unwrap();
        assert!(matches!(r.stat("/srv"), Err(DaemonError::NotFound(_))));
        assert!(matches!(r.remove("/etc"), Err(DaemonError::BadRequest(_))));
    }

    #[test]
    fn fifos_and_sockets_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        std::os::unix::fs::symlink("file", dir.path().join("link")).unwrap();
        let r = root(dir.path());
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        // No reader and no writer on the FIFO: a blocking open would never return.
        for p in ["/fifo", "/sock"] {
            let e = r.read(p).unwrap_err();
            assert!(matches!(e, DaemonError::BadRequest(_)), "{e}");
            let e = r.write(p, b"x", me.0, me.1, 0o644, false).unwrap_err();
            assert!(matches!(e, DaemonError::BadRequest(_)), "{e}");
            assert!(matches!(r.stat(p), Err(DaemonError::BadRequest(_))));
        }
        assert!(r
            .read("/fifo")
            .unwrap_err()
            .to_string()
            .contains("is a FIFO"));
        // A final symlink is not followed for reading or writing.
        assert!(r.read("/link").is_err());
        assert!(r.write("/link", b"y", me.0, me.1, 0o644, false).is_err());
        assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), b"x");
        // A regular file still reads and is rewritten in place.
        r.write("/file", b"yz", me.0, me.1, 0o644, false).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut r.read("/file").unwrap(), &mut s).unwrap();
        assert_eq!(s, "yz");
        // The FIFO can be deleted like any entry.
        r.remove("/fifo").unwrap();
        assert!(!dir.path().join("fifo").exists());
    }
}
