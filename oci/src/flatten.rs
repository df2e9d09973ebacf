//! One layer applied onto a root filesystem: whiteouts remove what lower layers made,
//! opaque markers empty a directory of them, and no entry reaches outside the root (no
//! `..`, no absolute name, no write through a symlink, no hard link to outside).

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::OciError;

/// The prefix of whiteout entries, and the name of the opaque marker.
const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Bounds on what an image may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct FlattenLimits {
    /// Total bytes of file content over all layers.
    pub max_bytes: u64,
}

impl Default for FlattenLimits {
    fn default() -> Self {
        FlattenLimits {
            max_bytes: 64 << 30,
        }
    }
}

/// Applies the layer tar `reader` onto `rootfs` (an existing directory); `total` counts
/// file bytes over all layers against `limits`. Ownership, modes (setuid included),
/// times and xattrs are kept as the tar says; device nodes are skipped.
pub fn flatten_layer(
    reader: impl Read,
    rootfs: &Path,
    limits: FlattenLimits,
    total: &mut u64,
) -> Result<(), OciError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    // What this layer made: an opaque marker only hides what lower layers made.
    let mut made: HashSet<PathBuf> = HashSet::new();
    let entries = archive
        .entries()
        .map_err(|e| OciError::io("read", "layer", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| OciError::io("read", "layer", e))?;
        let raw = entry
            .path()
            .map_err(|e| OciError::invalid("layer entry name", e.to_string()))?
            .into_owned();
        let rel = relative(&raw, false)?;
        let Some(name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue; // the root itself
        };
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        check_parents(rootfs, &rel)?;
        if name == OPAQUE {
            empty_dir(rootfs, &parent, &made)?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            // `.wh..` would name the parent's parent.
            if matches!(hidden, "" | "." | "..") {
                return Err(OciError::Escape(raw.display().to_string()));
            }
            remove_any(&rootfs.join(&parent).join(hidden))?;
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() {
            // Unprivileged containers cannot use device nodes; /dev is made at start.
            tracing::debug!(entry = %rel.display(), "device node in a layer skipped");
            continue;
        }
        *total = total.saturating_add(entry.header().size().unwrap_or(0));
        if *total > limits.max_bytes {
            return Err(OciError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        let target = rootfs.join(&rel);
        let dir = rootfs.join(&parent);
        if !dir.exists() {
            // Checked above: no component of it is a symlink.
            fs::create_dir_all(&dir).map_err(|e| OciError::io("create", &dir, e))?;
        }
        if let Ok(old) = fs::symlink_metadata(&target) {
            if !(old.is_dir() && kind.is_dir()) {
                remove_any(&target)?;
            }
        }
        if kind.is_hard_link() {
            let link =
                entry.link_name().ok().flatten().ok_or_else(|| {
                    OciError::invalid(rel.display().to_string(), "no link target")
                })?;
            let link_rel = relative(&link, true)?;
            check_parents(rootfs, &link_rel)?;
            let source = rootfs.join(&link_rel);
            match fs::symlink_metadata(&source) {
                Ok(m) if !m.is_dir() => {}
                _ => {
                    return Err(OciError::invalid(
                        rel.display().to_string(),
                        format!("hard link to {} which the image lacks", link.display()),
                    ))
                }
            }
            fs::hard_link(&source, &target).map_err(|e| OciError::io("link", &target, e))?;
        } else if kind == tar::EntryType::Fifo {
            make_fifo(&target, entry.header())?;
        } else {
            entry
                .unpack(&target)
                .map_err(|e| OciError::io("unpack", &target, e))?;
        }
        made.insert(rel);
    }
    Ok(())
}

/// An entry's name as plain relative components; `..` or (unless `rooted_ok`, as for
/// hard-link targets) a leading `/` is refused.
fn relative(path: &Path, rooted_ok: bool) -> Result<PathBuf, OciError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir if rooted_ok => {}
            _ => return Err(OciError::Escape(path.display().to_string())),
        }
    }
    Ok(out)
}

/// Refuses a path whose existing parents include a symlink: nothing is ever written
/// through one, so a layer cannot plant `a -> /etc` and then write `a/passwd`.
fn check_parents(rootfs: &Path, rel: &Path) -> Result<(), OciError> {
    let mut p = rootfs.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(OciError::ThroughSymlink {
                    path: rel.display().to_string(),
                    link: p.strip_prefix(rootfs).unwrap_or(&p).display().to_string(),
                })
            }
            Ok(_) => {}
            Err(_) => break, // the rest is made fresh
        }
    }
    Ok(())
}

/// Removes a file, link or whole directory (a symlink itself, never what it points at).
fn remove_any(path: &Path) -> Result<(), OciError> {
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| OciError::io("remove", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| OciError::io("remove", path, e)),
    }
}

/// Empties directory `rel` of what lower layers made (an opaque marker).
fn empty_dir(rootfs: &Path, rel: &Path, made: &HashSet<PathBuf>) -> Result<(), OciError> {
    let dir = rootfs.join(rel);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        _ => return Ok(()),
    }
    for child in fs::read_dir(&dir).map_err(|e| OciError::io("read", &dir, e))? {
        let child = child.map_err(|e| OciError::io("read", &dir, e))?;
        if !made.contains(&rel.join(child.file_name())) {
            remove_any(&child.path())?;
        }
    }
    Ok(())
}

/// A fifo with the entry's mode and owner (the tar crate would make a regular file).
fn make_fifo(target: &Path, header: &tar::Header) -> Result<(), OciError> {
    let err = |e: std::io::Error| OciError::io("create fifo", target, e);
    let mode = header.mode().map_err(err)? & 0o7777;
    nix::unistd::mkfifo(target, nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(|e| err(e.into()))?;
    let (uid, gid) = (header.uid().map_err(err)?, header.gid().map_err(err)?);
    std::os::unix::fs::lchown(target, Some(uid as u32), Some(gid as u32)).map_err(err)?;
    fs::set_permissions(target, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(err)
}
