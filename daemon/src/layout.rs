//! The state directory as a security boundary: one daemon per directory (an exclusive
//! lock), and LXD's modes on everything under it, so that no host user reaches a file a
//! container made, nor reads a disk, an image or the database.
//!
//! A container's root filesystem sits on the host owned by ids the container controls
//! (with idmapped mounts, by host root itself): a setuid file made inside must not be
//! reachable from outside. The walls are the modes (0711 down to the instance, 0100 on
//! the instance, 0700 on images and snapshots) and `nosuid` on the pool's mount.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the state directory cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another hutchd{} is using {dir}: stop it first", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("failed to lock {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The exclusive lock on a state directory, held for the life of the process; the file
/// names the holder's pid. The fd is close-on-exec, so monitors and helpers never hold it
/// and a restarted daemon can take it while they run.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes the lock on `dir`, or says which pid holds it.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, LockError> {
    let path = dir.join("hutchd.lock");
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on an fd this function owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(err));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(LockError::Held {
            dir: dir.to_path_buf(),
            pid: text.trim().parse().ok(),
        });
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(StateLock { _file: file })
}

/// Why a state directory cannot hold containers.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("failed to prepare the state directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An ancestor of the state directory that other users cannot search: a container's
    /// root, a host uid of its own, could not reach its root filesystem (every start would
    /// fail with EACCES on the idmapped mount).
    #[error(
        "{path} (mode {mode:o}) does not let other users search it, so containers cannot \
         reach their root filesystems in {dir}: run `chmod o+x {path}`, or use a state directory \
         elsewhere"
    )]
    Untraversable {
        path: PathBuf,
        mode: u32,
        dir: PathBuf,
    },
    /// `hutchd-helper` is not installed beside hutchd: no container could start.
    #[error(
        "{path} is missing: hutchd runs containers through hutchd-helper, installed beside it \
         (`install target/release/hutchd-helper {dir}/`)"
    )]
    NoHelper { path: PathBuf, dir: PathBuf },
}

/// `hutchd-helper`, the binary hutchd spawns for containers: beside `hutchd`.
pub fn helper_beside(hutchd: &Path) -> PathBuf {
    hutchd.with_file_name("hutchd-helper")
}

/// Checks that `hutchd-helper` is beside `hutchd`, so that a daemon without it says so at
/// start rather than at each container's.
pub fn check_helper(hutchd: &Path) -> Result<(), LayoutError> {
    let path = helper_beside(hutchd);
    if path.is_file() {
        return Ok(());
    }
    Err(LayoutError::NoHelper {
        dir: path.parent().unwrap_or(Path::new("/")).to_path_buf(),
        path,
    })
}

/// Makes the state directory (0711, as LXD: others may traverse it, not list it) and checks
/// that every directory above it lets others search it, so that containers' roots can reach
/// their root filesystems.
pub fn prepare_state_dir(dir: &Path) -> Result<(), LayoutError> {
    let io = |source| LayoutError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(io)?;
    check_ancestors(&dir.canonicalize().map_err(io)?)
}

/// Checks that every ancestor of `dir` (an absolute path without symlinks) lets others
/// search it (the `x` bit for others); names the first, from `/` down, that does not.
pub fn check_ancestors(dir: &Path) -> Result<(), LayoutError> {
    let mut above: Vec<&Path> = dir.ancestors().skip(1).collect();
    above.reverse();
    for path in above {
        let meta = std::fs::metadata(path).map_err(|source| LayoutError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o001 == 0 {
            return Err(LayoutError::Untraversable {
                path: path.to_path_buf(),
                mode,
                dir: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Sets `mode` on `path` if it exists (what is missing is made later, with its mode).
fn chmod(path: &Path, mode: u32) {
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot set mode {mode:o}");
        }
    }
}

/// Sets `mode` on every plain file directly in `dir`.
fn chmod_files_in(dir: &Path, mode: u32) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            chmod(&entry.path(), mode);
        }
    }
}

/// The modes of the state directory's own layout (LXD's), applied at every start so that
/// trees made by older versions are closed too.
pub fn secure_state_dir(dir: &Path) {
    chmod(dir, 0o711);
    for (sub, mode) in [
        ("containers", 0o711),
        ("storage-pools", 0o711),
        ("database", 0o700),
        ("images", 0o700),
        ("disks", 0o700),
        ("logs", 0o700),
    ] {
        chmod(&dir.join(sub), mode);
    }
    for file in ["local.db", "local.db-wal", "local.db-shm"] {
        chmod(&dir.join("database").join(file), 0o600);
    }
    chmod_files_in(&dir.join("images"), 0o600);
    chmod_files_in(&dir.join("disks"), 0o600);
}

/// Modes of a pool's volume directories: instances are reached through 0711 parents and
/// their own 0100 directory; images, snapshots and custom volumes are opened by root only.
pub const POOL_DIRS: &[(&str, u32)] = &[
    ("containers", 0o711),
    ("containers-snapshots", 0o700),
    ("images", 0o700),
    ("custom", 0o700),
    ("custom-snapshots", 0o700),
    // Custom volumes' backup files (engine/backup_yaml.rs): beside the volumes, not in them.
    ("custom-backups", 0o700),
    ("quarantine", 0o700),
];

/// Closes a pool: its root 0711, its volume directories as [`POOL_DIRS`] says, and, where
/// the pool is a mount of its own, `nosuid` on it (containers get setuid back on their own
/// view of their root). Returns whether the pool is mounted nosuid.
pub fn secure_pool(root: &Path) -> bool {
    chmod(root, 0o711);
    for (sub, mode) in POOL_DIRS {
        chmod(&root.join(sub), *mode);
    }
    remount_nosuid(root)
}

/// Adds `nosuid` to the mount at `path`, keeping its other flags; false when `path` is
/// not a mount point (a `dir` pool in the state directory: its modes are its walls).
fn remount_nosuid(path: &Path) -> bool {
    use nix::mount::MsFlags;
    if !is_mount_point(path) {
        return false;
    }
    match hutch_runtime::rootfs::remount_bind_with(path, MsFlags::MS_NOSUID, MsFlags::empty()) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot mount the pool nosuid");
            false
        }
    }
}

/// Whether `path` is the mount point of a mount (per /proc/self/mountinfo).
pub fn is_mount_point(path: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    text.lines()
        .any(|l| l.split_whitespace().nth(4).is_some_and(|m| m == want))
}

/// An instance's volume directory: mode 0100, owned by the container's root on the host
/// (who must traverse it to reach the root filesystem from inside the user namespace),
/// or by host root for a privileged container. Nobody else gets past it.
pub fn secure_instance_dir(vol: &Path, owner: (u32, u32)) {
    if let Err(e) = std::os::unix::fs::lchown(vol, Some(owner.0), Some(owner.1)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %vol.display(), error = %e, "cannot own the instance directory");
        }
    }
    chmod(vol, 0o100);
}

/// Writes `data` to `path`, readable by root alone, in a directory only root can list:
/// for files holding secrets (a kept session's websocket secrets), which a local user who
/// can traverse `HUTCH_DIR` must not read.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // One made by an older hutchd may be wider.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_state_dir(dir.path()).unwrap();
        match lock_state_dir(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("second lock: {other:?}"),
        }
        drop(held);
        lock_state_dir(dir.path()).expect("free again once dropped");
        assert_eq!(mode(&dir.path().join("hutchd.lock")), 0o600);
    }

    #[test]
    fn a_closed_ancestor_is_named_with_the_fix() {
        let top = tempfile::tempdir().unwrap();
        // tempfile makes 0700 directories: open this one, close one below.
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let closed = top.path().join("closed");
        let dir = closed.join("inner/state");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let real = dir.canonicalize().unwrap();
        match check_ancestors(&real) {
            Err(e @ LayoutError::Untraversable { .. }) => {
                let text = e.to_string();
                let closed = closed.canonicalize().unwrap();
                assert!(
                    text.contains(&format!("chmod o+x {}", closed.display())),
                    "{text}"
                );
                assert!(text.starts_with(&format!("{} (mode 700)", closed.display())));
            }
            other => panic!("a 0700 ancestor passed: {other:?}"),
        }
        // Opened, the same tree passes; the state directory's own mode is not an
        // ancestor's business (it is made 0711 by prepare_state_dir).
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_ancestors(&real).expect("every ancestor searchable");
    }

    #[test]
    fn the_state_dir_is_made_0711() {
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let made = top.path().join("new");
        prepare_state_dir(&made).unwrap();
        assert_eq!(mode(&made), 0o711);
        // `mktemp -d` makes 0700 directories: opened to 0711 too.
        let tight = top.path().join("tight");
        std::fs::create_dir(&tight).unwrap();
        std::fs::set_permissions(&tight, std::fs::Permissions::from_mode(0o700)).unwrap();
        prepare_state_dir(&tight).unwrap();
        assert_eq!(mode(&tight), 0o711);
        // Under a closed parent, it refuses, naming the parent.
        std::fs::set_permissions(&tight, std::fs::Permissions::from_mode(0o700)).unwrap();
        let below = tight.join("state");
        let err = prepare_state_dir(&below).unwrap_err();
        assert!(
            matches!(&err, LayoutError::Untraversable { path, .. } if *path == tight.canonicalize().unwrap()),
            "{err}"
        );
    }

    #[test]
    fn the_layout_gets_lxd_modes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "containers",
            "database",
            "images",
            "disks",
            "storage-pools/p/containers",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("database/local.db"), "").unwrap();
        std::fs::write(d.join("images/abc"), "").unwrap();
        std::fs::write(d.join("disks/p.img"), "").unwrap();
        secure_state_dir(d);
        assert!(
            !secure_pool(&d.join("storage-pools/p")),
            "not a mount point"
        );
        assert_eq!(mode(d), 0o711);
        assert_eq!(mode(&d.join("containers")), 0o711);
        assert_eq!(mode(&d.join("database")), 0o700);
        assert_eq!(mode(&d.join("database/local.db")), 0o600);
        assert_eq!(mode(&d.join("images/abc")), 0o600);
        assert_eq!(mode(&d.join("disks/p.img")), 0o600);
        assert_eq!(mode(&d.join("storage-pools/p")), 0o711);
        assert_eq!(mode(&d.join("storage-pools/p/containers")), 0o711);
    }
}
