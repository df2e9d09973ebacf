//! Mounting a pool's loop file: attached to a free loop device (auto-cleared, so unmounting
//! releases it) by ioctls, and mounted.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use crate::error::StorageError;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// Attaches `file` to a free loop device (auto-cleared, so unmounting releases it) and
/// mounts it as `fstype` at `target`, with `data` as the filesystem's options.
pub(crate) fn mount_loop(
    file: &Path,
    target: &Path,
    fstype: &str,
    data: &str,
) -> Result<(), StorageError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .map_err(|e| StorageError::io("open", file, e))?;
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| StorageError::io("open", "/dev/loop-control", e))?;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(StorageError::Sys {
                action: "find a free loop device".into(),
                source: Errno::last(),
            });
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let loopdev = File::options()
            .read(true)
            .write(true)
            .open(&dev)
            .map_err(|e| StorageError::io("open", &dev, e))?;
        // SAFETY: LOOP_SET_FD takes the backing file's fd.
        if unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) } < 0 {
            if Errno::last() == Errno::EBUSY {
                continue; // another process took it first
            }
            return Err(StorageError::Sys {
                action: format!("attach {}", dev.display()),
                source: Errno::last(),
            });
        }
        // SAFETY: all-zero is a valid loop_info64; we then set only the flags.
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        info.lo_flags = LO_FLAGS_AUTOCLEAR;
        let name = file.as_os_str().as_encoded_bytes();
        let len = name.len().min(63);
        info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_SET_STATUS64 reads a loop_info64 that lives across the call.
        if unsafe {
            libc::ioctl(
                loopdev.as_raw_fd(),
                LOOP_SET_STATUS64,
                &info as *const LoopInfo64,
            )
        } < 0
        {
            let err = Errno::last();
            // SAFETY: LOOP_CLR_FD takes no argument.
            unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_CLR_FD, 0) };
            return Err(StorageError::Sys {
                action: format!("configure {}", dev.display()),
                source: err,
            });
        }
        let mounted = mount(
            Some(dev.as_path()),
            target,
            Some(fstype),
            MsFlags::MS_NOATIME,
            Some(data),
        );
        // With auto-clear set, closing our fds after a failed mount releases the device too.
        return mounted.map_err(|e| StorageError::Sys {
            action: format!("mount {} on {}", dev.display(), target.display()),
            source: e,
        });
    }
    Err(StorageError::Sys {
        action: "attach a loop device".into(),
        source: Errno::EBUSY,
    })
}
