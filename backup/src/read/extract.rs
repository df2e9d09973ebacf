//! Writes one tar entry below a volume's directory without ever following a symlink: each
//! parent is opened from the volume's root one component at a time with `O_NOFOLLOW`, and
//! the entry is made relative to its parent's descriptor, so neither a symlink the
//! archive planted nor one that replaced a directory can lead a write outside the volume.

use std::ffi::{CString, OsStr};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, mknodat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::BackupError;

/// A volume's directory, open, that entries are written below.
pub(crate) struct Volume {
    root: OwnedFd,
    path: PathBuf,
    /// Directories whose times are set once everything inside them is written.
    dir_times: Vec<(PathBuf, i64)>,
}

/// What of an entry's header is applied to what it makes.
pub(crate) struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn invalid(rel: &Path, why: &str) -> BackupError {
    BackupError::Invalid(format!("{}: {why}", rel.display()))
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Volume {
    /// Opens `path`, an existing directory (the volume the caller made).
    pub fn open(path: &Path) -> Result<Volume, BackupError> {
        let fd = openat(None, path, DIR_FLAGS, Mode::empty())
            .map_err(|e| BackupError::io("open", path, e.into()))?;
        Ok(Volume {
            root: own(fd),
            path: path.to_path_buf(),
            dir_times: Vec::new(),
        })
    }

    fn err(&self, action: &'static str, rel: &Path, e: Errno) -> BackupError {
        BackupError::io(action, self.path.join(rel), e.into())
    }

    /// The directory holding `rel`'s last component, opened without following symlinks
    /// and made where missing (tar archives need not list every directory).
    fn parent_of<'r>(&self, rel: &'r Path) -> Result<(OwnedFd, &'r OsStr), BackupError> {
        let mut comps: Vec<&OsStr> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => comps.push(n),
                _ => return Err(invalid(rel, "is not a plain relative path")),
            }
        }
        let Some(leaf) = comps.pop() else {
            return Err(invalid(rel, "is empty"));
        };
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| BackupError::io("open", &self.path, e))?;
        for c in comps {
            let fd = match openat(Some(cur.as_raw_fd()), c, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    mkdirat(Some(cur.as_raw_fd()), c, Mode::from_bits_truncate(0o755))
                        .map_err(|e| self.err("create", rel, e))?;
                    openat(Some(cur.as_raw_fd()), c, DIR_FLAGS, Mode::empty())
                        .map_err(|e| self.err("open", rel, e))?
                }
                Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                    return Err(invalid(rel, "passes through a symlink or a file"))
                }
                Err(e) => return Err(self.err("open", rel, e)),
            };
            cur = own(fd);
        }
        Ok((cur, leaf))
    }

    /// Removes what sits at `leaf` unless it is a directory (a later entry replaces an
    /// earlier one, as tar does; a directory is never replaced).
    fn clear(&self, dir: &OwnedFd, leaf: &OsStr, rel: &Path) -> Result<(), BackupError> {
        match fstatat(Some(dir.as_raw_fd()), leaf, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(self.err("stat", rel, e)),
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
                Err(invalid(rel, "would replace a directory"))
            }
            Ok(_) => unlinkat(Some(dir.as_raw_fd()), leaf, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| self.err("remove", rel, e)),
        }
    }

    pub fn dir(&mut self, rel: &Path, attrs: &Attrs) -> Result<(), BackupError> {
        if rel.as_os_str().is_empty() {
            // The volume's own directory: its owner and mode as the backup has them.
            let fd = self
                .root
                .try_clone()
                .map_err(|e| BackupError::io("open", &self.path, e))?;
            apply(&fd, attrs).map_err(|e| self.err("set the attributes of", rel, e))?;
            self.dir_times.push((PathBuf::new(), attrs.mtime));
            return Ok(());
        }
        let (parent, leaf) = self.parent_of(rel)?;
        match mkdirat(
            Some(parent.as_raw_fd()),
            leaf,
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(self.err("create", rel, e)),
        }
        let fd = match openat(Some(parent.as_raw_fd()), leaf, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => own(fd),
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(invalid(rel, "exists and is not a directory"))
            }
            Err(e) => return Err(self.err("open", rel, e)),
        };
        apply(&fd, attrs).map_err(|e| self.err("set the attributes of", rel, e))?;
        self.dir_times.push((rel.to_path_buf(), attrs.mtime));
        Ok(())
    }

    /// A regular file of `size` bytes from `data`; runs of zeros become holes.
    pub fn file(
        &mut self,
        rel: &Path,
        attrs: &Attrs,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), BackupError> {
        let (parent, leaf) = self.parent_of(rel)?;
        self.clear(&parent, leaf, rel)?;
        let fd = openat(
            Some(parent.as_raw_fd()),
            leaf,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.err("create", rel, e))?;
        let mut file = std::fs::File::from(own(fd));
        let mut buf = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            let n = data
                .read(&mut buf)
                .map_err(|e| BackupError::Invalid(format!("{}: {e}", rel.display())))?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            let io = |e| BackupError::io("write", self.path.join(rel), e);
            if chunk.iter().all(|b| *b == 0) {
                file.seek(SeekFrom::Current(n as i64)).map_err(io)?;
            } else {
                file.write_all(chunk).map_err(io)?;
            }
            written += n as u64;
        }
        if written != size {
            return Err(invalid(rel, "is truncated"));
        }
        file.set_len(size)
            .map_err(|e| BackupError::io("write", self.path.join(rel), e))?;
        let fd = OwnedFd::from(file);
        apply(&fd, attrs).map_err(|e| self.err("set the attributes of", rel, e))?;
        set_time(&fd, attrs.mtime).map_err(|e| self.err("set the time of", rel, e))
    }

    /// A symlink; its target may point anywhere (it is never followed here).
    pub fn symlink(&mut self, rel: &Path, target: &Path, attrs: &Attrs) -> Result<(), BackupError> {
        let (parent, leaf) = self.parent_of(rel)?;
        self.clear(&parent, leaf, rel)?;
        symlinkat(target, Some(parent.as_raw_fd()), leaf)
            .map_err(|e| self.err("create", rel, e))?;
        fchownat(
            Some(parent.as_raw_fd()),
            leaf,
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
            nix::unistd::FchownatFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err("chown", rel, e))?;
        let t = TimeSpec::new(attrs.mtime, 0);
        nix::sys::stat::utimensat(
            Some(parent.as_raw_fd()),
            leaf,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.err("set the time of", rel, e))
    }

    /// A hard link to `target`, an entry of the same volume written before.
    pub fn hard_link(&mut self, rel: &Path, target: &Path) -> Result<(), BackupError> {
        let (from_dir, from_leaf) = self.parent_of(target)?;
        let (parent, leaf) = self.parent_of(rel)?;
        self.clear(&parent, leaf, rel)?;
        // Without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        linkat(
            Some(from_dir.as_raw_fd()),
            from_leaf,
            Some(parent.as_raw_fd()),
            leaf,
            AtFlags::empty(),
        )
        .map_err(|e| self.err("link", rel, e))
    }

    pub fn fifo(&mut self, rel: &Path, attrs: &Attrs) -> Result<(), BackupError> {
        let (parent, leaf) = self.parent_of(rel)?;
        self.clear(&parent, leaf, rel)?;
        mknodat(
            Some(parent.as_raw_fd()),
            leaf,
            SFlag::S_IFIFO,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .map_err(|e| self.err("create", rel, e))?;
        // Opening a fifo would block: owner, mode and time by name, not following links.
        let at = Some(parent.as_raw_fd());
        fchownat(
            at,
            leaf,
            Some(Uid::from_raw(attrs.uid)),
            Some(Gid::from_raw(attrs.gid)),
            nix::unistd::FchownatFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.err("chown", rel, e))?;
        nix::sys::stat::fchmodat(
            at,
            leaf,
            Mode::from_bits_truncate(attrs.mode & 0o777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| self.err("chmod", rel, e))
    }

    /// Sets the directories' times, deepest first, now that nothing more is written
    /// inside them.
    pub fn finish(&mut self) -> Result<(), BackupError> {
        let mut times = std::mem::take(&mut self.dir_times);
        times.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, mtime) in times {
            let fd = if rel.as_os_str().is_empty() {
                self.root
                    .try_clone()
                    .map_err(|e| BackupError::io("open", &self.path, e))?
            } else {
                let (parent, leaf) = self.parent_of(&rel)?;
                match openat(Some(parent.as_raw_fd()), leaf, DIR_FLAGS, Mode::empty()) {
                    Ok(fd) => own(fd),
                    // Replaced by a later entry: nothing to date.
                    Err(_) => continue,
                }
            };
            set_time(&fd, mtime).map_err(|e| self.err("set the time of", &rel, e))?;
        }
        Ok(())
    }
}

/// Owner, then mode (chown clears set-id bits), then extended attributes.
fn apply(fd: &OwnedFd, attrs: &Attrs) -> Result<(), Errno> {
    fchown(
        fd.as_raw_fd(),
        Some(Uid::from_raw(attrs.uid)),
        Some(Gid::from_raw(attrs.gid)),
    )?;
    fchmod(
        fd.as_raw_fd(),
        Mode::from_bits_truncate(attrs.mode & 0o7777),
    )?;
    for (name, value) in &attrs.xattrs {
        let Ok(cname) = CString::new(name.clone()) else {
            continue;
        };
        // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the given
        // length, all alive for the call.
        let r = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r != 0 {
            let e = Errno::last();
            // A filesystem without xattrs of that class loses them, as tar warns and goes on.
            if e != Errno::EOPNOTSUPP {
                return Err(e);
            }
        }
    }
    Ok(())
}

fn set_time(fd: &OwnedFd, mtime: i64) -> Result<(), Errno> {
    let t = TimeSpec::new(mtime, 0);
    futimens(fd.as_raw_fd(), &t, &t)
}

/// The extended attributes a backup may restore: the user's own, file capabilities and
/// ACLs (what a root filesystem carries); others (`trusted.*`, `security.selinux`) are
/// the host's business.
pub(crate) fn restorable_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}
