//! An image's `User` (`uid`, `uid:gid`, `name`, `name:group`) resolved to numeric ids
//! through the image's own /etc/passwd and /etc/group, read without following symlinks.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::OciError;

/// Most bytes of passwd or group read.
const MAX_DB: u64 = 4 << 20;

/// The uid and gid `user` names inside `rootfs`; an empty `user` is root.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32), OciError> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (name, group) = match user.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (user, None),
    };
    let passwd = read_db(rootfs, "passwd")?;
    // passwd: name:x:uid:gid:...
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == name || (name.parse::<u32>().is_ok() && f[2] == name)));
    let uid = match name.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| OciError::UnknownUser(name.to_string()))?,
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_db(rootfs, "group")?
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| OciError::UnknownGroup(g.to_string()))?,
        },
        // A user's primary group, or the uid's own number where passwd does not know it.
        None => entry.and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    Ok((uid, gid))
}

/// `/etc/<name>` of the image, empty where it is missing or is not a plain file.
fn read_db(rootfs: &Path, name: &str) -> Result<String, OciError> {
    let etc = rootfs.join("etc");
    if !fs::symlink_metadata(&etc).is_ok_and(|m| m.is_dir()) {
        return Ok(String::new());
    }
    let path = etc.join(name);
    let Ok(file) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&path)
    else {
        return Ok(String::new());
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(String::new());
    }
    let mut data = Vec::new();
    file.take(MAX_DB)
        .read_to_end(&mut data)
        .map_err(|e| OciError::io("read", &path, e))?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}
