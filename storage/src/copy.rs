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

/// Copies the tree at `src` to `dst` (which must not exist), on one filesystem.
pub fn clone_tree(src: &Path, dst: &Path) -> Result<(), StorageError> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    copy_entry(src, dst, &mut links)
}

fn copy_entry(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), StorageError> {
    let meta = fs::symlink_metadata(src).map_err(err("stat", src))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(dst).map_err(err("create directory", dst))?;
        for entry in fs::read_dir(src).map_err(err("read directory", src))? {
            let entry = entry.map_err(err("read directory", src))?;
            copy_entry(&entry.path(), &dst.join(entry.file_name()), links)?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(src).map_err(err("read link", src))?;
        std::os::unix::fs::symlink(&target, dst).map_err(err("create symlink", dst))?;
    } else if meta.nlink() > 1 && links.contains_key(&(meta.dev(), meta.ino())) {
        fs::hard_link(&links[&(meta.dev(), meta.ino())], dst).map_err(err("link", dst))?;
        return Ok(());
    } else if ft.is_file() {
        copy_file(src, dst)?;
        if meta.nlink() > 1 {
            links.insert((meta.dev(), meta.ino()), dst.to_path_buf());
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

/// A reflink (FICLONE) when the filesystem shares extents, else a plain copy.
fn copy_file(src: &Path, dst: &Path) -> Result<(), StorageError> {
    let from = File::open(src).map_err(err("open", src))?;
    let to = File::create(dst).map_err(err("create", dst))?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
    let cloned = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0;
    if !cloned {
        let mut from = from;
        let mut to = to;
        io::copy(&mut from, &mut to).map_err(err("copy", src))?;
    }
    Ok(())
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
}
