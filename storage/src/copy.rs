//! Copying a tree (reflinks where the filesystem has them, else a copy that keeps owners,
//! modes, times, symlinks, hard links and special files): the `dir` driver's clone.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::StorageError;

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Asked before each file and each block a copy writes, with the bytes copied so far:
/// true stops the copy (its operation was cancelled), which then fails.
pub type StopCheck<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// The stop test of a copy nobody stops.
pub fn never(_copied: u64) -> bool {
    false
}

/// Copies the tree at `src` to `dst` (which must not exist), on one filesystem.
pub fn clone_tree(src: &Path, dst: &Path) -> Result<(), StorageError> {
    clone_tree_until(src, dst, &never)
}

/// [`clone_tree`], stopping with an error once `stop` says so; the caller removes the
/// partial tree.
pub fn clone_tree_until(src: &Path, dst: &Path, stop: StopCheck) -> Result<(), StorageError> {
    let mut copy = Copying {
        links: HashMap::new(),
        copied: 0,
        stop,
    };
    copy_entry(src, dst, &mut copy)
}

/// A copy in progress: hard links met so far, bytes written, and its stop test.
struct Copying<'a> {
    links: HashMap<(u64, u64), PathBuf>,
    copied: u64,
    stop: StopCheck<'a>,
}

impl Copying<'_> {
    fn check(&self, path: &Path) -> Result<(), StorageError> {
        if (self.stop)(self.copied) {
            return Err(StorageError::Io {
                action: "copy",
                path: path.to_path_buf(),
                source: io::Error::other("operation canceled"),
            });
        }
        Ok(())
    }
}

fn copy_entry(src: &Path, dst: &Path, copy: &mut Copying) -> Result<(), StorageError> {
    copy.check(src)?;
    let meta = fs::symlink_metadata(src).map_err(err("stat", src))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(dst).map_err(err("create directory", dst))?;
        for entry in fs::read_dir(src).map_err(err("read directory", src))? {
            let entry = entry.map_err(err("read directory", src))?;
            copy_entry(&entry.path(), &dst.join(entry.file_name()), copy)?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(err("read link", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(err("create symlink", dst))?;
    } else if meta.nlink() > 1 && copy.links.contains_key(&(meta.dev(), meta.ino())) {
        fs::hard_link(&copy.links[&(meta.dev(), meta.ino())], dst).map_err(err("link", dst))?;
        return Ok(());
    } else if ft.is_file() {
        copy_file(src, dst, copy)?;
        if meta.nlink() > 1 {
            copy.links
                .insert((meta.dev(), meta.ino()), dst.to_path_buf());
        }
    } else {
        // Fifos, sockets and device nodes: recreate the node.
        nix::sys::stat::mknod(
            dst,
            nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT),
            nix::sys::stat::Mode::from_bits_truncate(meta.mode()),
            meta.rdev(),
        )
        .map_err(|e| StorageError::Io {
            action: "create node",
            path: dst.to_path_buf(),
            source: e.into(),
        })?;
    }
    lchown(dst, Some(meta.uid()), Some(meta.gid())).map_err(err("chown", dst))?;
    if !ft.is_symlink() {
        // After chown, which clears setuid bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(err("chmod", dst))?;
        let times = [
            nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec()),
            nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        ];
        let _ = nix::sys::stat::utimensat(
            None,
            dst,
            &times[0],
            &times[1],
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(())
}

/// Bytes copied between two looks at the stop test.
const BLOCK: usize = 8 << 20;

/// A reflink (FICLONE) when the filesystem shares extents, else a copy in blocks (in the
/// kernel where it can), with the stop test asked before each.
fn copy_file(src: &Path, dst: &Path, copy: &mut Copying) -> Result<(), StorageError> {
    let from = File::open(src).map_err(err("open", src))?;
    let to = File::create(dst).map_err(err("create", dst))?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
    let cloned = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0;
    if cloned {
        copy.copied += fs::metadata(dst).map(|m| m.len()).unwrap_or(0);
        return Ok(());
    }
    let mut in_kernel = true;
    let mut buf = Vec::new();
    let (mut from, mut to) = (from, to);
    loop {
        copy.check(src)?;
        let n = if in_kernel {
            // SAFETY: both fds are open; null offsets use and advance the files' own.
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    std::ptr::null_mut(),
                    to.as_raw_fd(),
                    std::ptr::null_mut(),
                    BLOCK,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Not between these files: copy through user space from here on.
                    Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => {
                        in_kernel = false;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => return Err(err("copy", src)(e)),
                }
            }
            n as usize
        } else {
            use std::io::{Read, Write};
            buf.resize(1 << 20, 0);
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(err("copy", src)(e)),
            };
            to.write_all(&buf[..n]).map_err(err("write", dst))?;
            n
        };
        if n == 0 {
            return Ok(());
        }
        copy.copied += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_are_copied_with_links_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("bin/tool"), fs::Permissions::from_mode(0o751)).unwrap();
        fs::hard_link(src.join("bin/tool"), src.join("bin/tool2")).unwrap();
        std::os::unix::fs::symlink("tool", src.join("bin/link")).unwrap();
        let dst = dir.path().join("dst");
        clone_tree(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::metadata(dst.join("bin/tool")).unwrap().mode() & 0o7777,
            0o751
        );
        assert_eq!(
            fs::metadata(dst.join("bin/tool")).unwrap().ino(),
            fs::metadata(dst.join("bin/tool2")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(dst.join("bin/link")).unwrap(),
            Path::new("tool")
        );
        assert!(
            clone_tree(&src, &dst).is_err(),
            "an existing destination is refused"
        );
    }

    #[test]
    fn a_copy_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("big"), vec![7u8; 3 * BLOCK]).unwrap();
        fs::write(src.join("small"), b"x").unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let stop = |copied: u64| {
            seen.lock().unwrap().push(copied);
            copied >= BLOCK as u64
        };
        let dst = dir.path().join("dst");
        let e = clone_tree_until(&src, &dst, &stop).unwrap_err();
        assert!(
            matches!(&e, StorageError::Io { source, .. } if source.to_string() == "operation canceled"),
            "{e}"
        );
        assert!(fs::metadata(dst.join("big")).unwrap().len() < 3 * BLOCK as u64);
        // Whole when nobody stops it.
        let whole = dir.path().join("whole");
        clone_tree(&src, &whole).unwrap();
        assert_eq!(fs::read(whole.join("big")).unwrap().len(), 3 * BLOCK);
    }
}
