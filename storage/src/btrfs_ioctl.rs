//! The three subvolume calls on every launch, copy, snapshot and delete, made directly: the
//! same ioctls `btrfs subvolume create|snapshot|delete` makes (linux/btrfs.h), without
//! starting the tool (1–2 ms a call here, most of a snapshot's time).

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
/// `BTRFS_PATH_NAME_MAX`: the name field of `btrfs_ioctl_vol_args` holds this plus a NUL.
const PATH_NAME_MAX: usize = 4087;
/// `BTRFS_SUBVOL_NAME_MAX`: the name field of `btrfs_ioctl_vol_args_v2`, plus a NUL.
const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_SUBVOL_RDONLY`: the snapshot is made read-only.
const SUBVOL_RDONLY: u64 = 1 << 1;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2`, with the unions as their largest member.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

nix::ioctl_write_ptr!(subvol_create, BTRFS_IOCTL_MAGIC, 14, VolArgs);
nix::ioctl_write_ptr!(snap_destroy, BTRFS_IOCTL_MAGIC, 15, VolArgs);
nix::ioctl_write_ptr!(snap_create_v2, BTRFS_IOCTL_MAGIC, 23, VolArgsV2);

/// Creates an empty subvolume at `path` (its parent must exist).
pub fn create_subvolume(path: &Path) -> std::io::Result<()> {
    let (parent, name) = split(path)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    };
    fill(&mut args.name, name)?;
    // SAFETY: `args` is a whole, NUL-terminated btrfs_ioctl_vol_args the kernel only reads.
    unsafe { subvol_create(parent.as_raw_fd(), &args) }?;
    Ok(())
}

/// Snapshots subvolume `from` as `to` (whose parent must exist), read-only if asked.
pub fn snapshot_subvolume(from: &Path, to: &Path, readonly: bool) -> std::io::Result<()> {
    let source = open_dir(from)?;
    let (parent, name) = split(to)?;
    let mut args = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: if readonly { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    };
    fill(&mut args.name, name)?;
    // SAFETY: as above; `source` stays open across the call.
    unsafe { snap_create_v2(parent.as_raw_fd(), &args) }?;
    Ok(())
}

/// Deletes subvolume `path` (read-only or not); what it nests must be deleted first.
pub fn delete_subvolume(path: &Path) -> std::io::Result<()> {
    let (parent, name) = split(path)?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; PATH_NAME_MAX + 1],
    };
    fill(&mut args.name, name)?;
    // SAFETY: as above.
    unsafe { snap_destroy(parent.as_raw_fd(), &args) }?;
    Ok(())
}

fn open_dir(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// The open parent directory of `path` and its last component.
fn split(path: &Path) -> std::io::Result<(File, &OsStr)> {
    let invalid = || std::io::Error::from_raw_os_error(libc::EINVAL);
    let name = path.file_name().ok_or_else(invalid)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((open_dir(parent)?, name))
}

/// Copies `name` into a zeroed field, refusing one too long for it (the NUL stays).
fn fill(field: &mut [u8], name: &OsStr) -> std::io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() >= field.len() || bytes.contains(&0) {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    field[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_structs_are_the_kernels_size() {
        // Both are 4096 bytes in linux/btrfs.h; the ioctl numbers encode the size.
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
    }

    #[test]
    fn names_too_long_are_refused_before_the_kernel() {
        let mut field = [0u8; 8];
        assert!(fill(&mut field, OsStr::new("1234567")).is_ok());
        assert_eq!(&field[..8], b"1234567\0");
        let err = fill(&mut field, OsStr::new("12345678")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
    }

    #[test]
    fn a_path_without_a_name_is_invalid() {
        let err = create_subvolume(Path::new("/")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn on_a_filesystem_that_is_not_btrfs_the_kernel_refuses() {
        // tmpfs or ext4 under the test's directory: no such ioctl there.
        let dir = tempfile::tempdir().unwrap();
        let err = create_subvolume(&dir.path().join("v")).unwrap_err();
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::ENOTTY) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
            ),
            "{err}"
        );
        assert!(!dir.path().join("v").exists());
    }
}
