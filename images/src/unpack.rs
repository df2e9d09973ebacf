//! Unpacking a unified image tarball (metadata.yaml + rootfs/) safely, and keeping an
//! image's metadata.yaml and templates/ beside its rootfs (LXD's volume layout).

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use crate::{ImageError, ImageMetadata};

/// Bounds on what an image may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// Total bytes of file content.
    pub max_bytes: u64,
    /// Keep character and block device nodes (only for privileged use).
    pub allow_devices: bool,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 64 << 30,
            allow_devices: false,
        }
    }
}

/// Opens a possibly compressed tarball (gzip, xz, zstd or none, told by magic bytes).
fn open_tar(path: &Path) -> Result<tar::Archive<Box<dyn Read>>, ImageError> {
    let f = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    tar_from_reader(f, path)
}

/// A tarball read from a stream (`name` for errors), its compression told by its first
/// bytes, which are read ahead and put back in front.
fn tar_from_reader<'a, R: Read + 'a>(
    mut reader: R,
    name: &Path,
) -> Result<tar::Archive<Box<dyn Read + 'a>>, ImageError> {
    let mut magic = Vec::with_capacity(6);
    (&mut reader)
        .take(6)
        .read_to_end(&mut magic)
        .map_err(|e| ImageError::io("read", name, e))?;
    let reader =
        BufReader::with_capacity(1 << 16, std::io::Cursor::new(magic.clone()).chain(reader));
    let inner: Box<dyn Read + 'a> = match &magic[..] {
        [0x1f, 0x8b, ..] => Box::new(flate2::read::GzDecoder::new(reader)),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00] => Box::new(xz2::read::XzDecoder::new(reader)),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|e| ImageError::io("read", name, e))?,
        ),
        _ => Box::new(reader),
    };
    let mut archive = tar::Archive::new(inner);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    Ok(archive)
}

/// Path of an entry below `rootfs/`, checked to be plain relative components.
fn rootfs_relative(path: &Path) -> Option<PathBuf> {
    let mut comps = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    match comps.next() {
        Some(Component::Normal(first)) if first == "rootfs" => {}
        _ => return None,
    }
    let rest: Vec<Component> = comps.collect();
    if rest.iter().all(|c| matches!(c, Component::Normal(_))) {
        Some(rest.iter().collect())
    } else {
        None
    }
}

/// Refuses to write through a symlink the archive itself planted.
fn check_parents(dest: &Path, rel: &Path) -> Result<(), ImageError> {
    let mut p = dest.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for c in &parents[..parents.len().saturating_sub(1)] {
        p.push(c);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(ImageError::Invalid(format!(
                "{} passes through a symlink",
                rel.display()
            )));
        }
    }
    Ok(())
}

/// Bytes of metadata.yaml read, and of all of templates/ kept.
const MAX_METADATA: u64 = 1 << 20;
const MAX_TEMPLATES: u64 = 16 << 20;

/// Unpacks `tarball` (a unified LXD image) so that its `rootfs/` becomes `dest`, which must
/// not exist yet; returns its metadata. On error `dest` may hold a partial tree: the caller
/// unpacks into a temporary name and renames into place.
pub fn unpack_unified(
    tarball: &Path,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<ImageMetadata, ImageError> {
    fs::create_dir(dest).map_err(|e| ImageError::io("create", dest, e))?;
    unpack(tarball, Some(dest), rootfs_relative, true, None, limits)?
        .ok_or_else(|| ImageError::Invalid("no metadata.yaml in the tarball".into()))
}

/// Unpacks a unified image into the image volume `volume` (which exists): `rootfs/`, and
/// beside it the image's `metadata.yaml` and `templates/`, as LXD lays out an image volume,
/// so instance volumes cloned from it carry their templates.
pub fn unpack_unified_volume(
    tarball: &Path,
    volume: &Path,
    limits: UnpackLimits,
) -> Result<ImageMetadata, ImageError> {
    let rootfs = volume.join("rootfs");
    fs::create_dir(&rootfs).map_err(|e| ImageError::io("create", &rootfs, e))?;
    unpack(
        tarball,
        Some(&rootfs),
        rootfs_relative,
        true,
        Some(volume),
        limits,
    )?
    .ok_or_else(|| ImageError::Invalid("no metadata.yaml in the tarball".into()))
}

/// [`unpack_unified_volume`] of a tarball read from `reader` (`name` names it in errors):
/// the caller's reader can stop the unpack (a cancelled operation) by failing a read.
pub fn unpack_unified_volume_from(
    reader: impl Read,
    name: &Path,
    volume: &Path,
    limits: UnpackLimits,
) -> Result<ImageMetadata, ImageError> {
    let rootfs = volume.join("rootfs");
    fs::create_dir(&rootfs).map_err(|e| ImageError::io("create", &rootfs, e))?;
    let archive = tar_from_reader(reader, name)?;
    unpack_archive(
        archive,
        name,
        Some(&rootfs),
        rootfs_relative,
        true,
        Some(volume),
        limits,
    )?
    .ok_or_else(|| ImageError::Invalid("no metadata.yaml in the tarball".into()))
}

/// Reads metadata.yaml from the metadata tarball of a split image.
pub fn read_split_metadata(tarball: &Path) -> Result<ImageMetadata, ImageError> {
    unpack(tarball, None, |_| None, true, None, UnpackLimits::default())?
        .ok_or_else(|| ImageError::Invalid("no metadata.yaml in the metadata tarball".into()))
}

/// Reads the metadata tarball of a split image and keeps its `metadata.yaml` and
/// `templates/` in the image volume `volume` (which exists).
pub fn unpack_split_metadata(tarball: &Path, volume: &Path) -> Result<ImageMetadata, ImageError> {
    unpack(
        tarball,
        None,
        |_| None,
        true,
        Some(volume),
        UnpackLimits::default(),
    )?
    .ok_or_else(|| ImageError::Invalid("no metadata.yaml in the metadata tarball".into()))
}

/// Path of an entry below `templates/`, checked to be plain relative components.
fn templates_relative(path: &Path) -> Option<PathBuf> {
    let mut comps = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir));
    match comps.next() {
        Some(Component::Normal(first)) if first == "templates" => {}
        _ => return None,
    }
    let rest: Vec<Component> = comps.collect();
    rest.iter()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| rest.iter().collect())
}

/// Keeps one `templates/` entry in `keep/templates`: directories and regular files only
/// (root-owned, 0755/0644), since nothing but plain files is ever read from there; no
/// symlink is made, so nothing written here can lead outside `keep`.
fn keep_template<R: Read>(
    entry: &mut tar::Entry<R>,
    keep: &Path,
    rel: &Path,
    kept: &mut u64,
) -> Result<(), ImageError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = keep.join("templates");
    let kind = entry.header().entry_type();
    let target = dir.join(rel);
    let mkdirs = |p: &Path| {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(p)
            .map_err(|e| ImageError::io("create", p, e))
    };
    if kind.is_dir() {
        return mkdirs(&target);
    }
    if !kind.is_file() {
        return Ok(());
    }
    *kept = kept.saturating_add(entry.header().size().unwrap_or(0));
    if *kept > MAX_TEMPLATES {
        return Err(ImageError::TooLarge {
            limit: MAX_TEMPLATES,
        });
    }
    if let Some(parent) = target.parent() {
        mkdirs(parent)?;
    }
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(0o644)
        .open(&target)
        .map_err(|e| ImageError::io("create", &target, e))?;
    std::io::copy(&mut entry.by_ref().take(MAX_TEMPLATES), &mut out)
        .map_err(|e| ImageError::io("write", &target, e))?;
    Ok(())
}

/// Writes metadata.yaml as read into `keep`.
fn keep_metadata(keep: &Path, text: &str) -> Result<(), ImageError> {
    let path = keep.join("metadata.yaml");
    fs::write(&path, text).map_err(|e| ImageError::io("write", &path, e))
}

/// Unpacks the rootfs of a split image (a tarball rooted at `/`, or a squashfs) into
/// `dest`, which must not exist yet.
pub fn unpack_split_rootfs(
    rootfs: &Path,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<(), ImageError> {
    let mut f = File::open(rootfs).map_err(|e| ImageError::io("open", rootfs, e))?;
    if crate::detect_extension(&mut f).map_err(|e| ImageError::io("read", rootfs, e))?
        == ".squashfs"
    {
        return unpack_squashfs(rootfs, dest, limits, &|| false);
    }
    fs::create_dir(dest).map_err(|e| ImageError::io("create", dest, e))?;
    unpack(rootfs, Some(dest), plain_relative, false, None, limits).map(|_| ())
}

/// Unpacks a split image's tar rootfs as it arrives from `reader` (named `name` in
/// errors) into `dest`, which must not exist yet: a download can be unpacked while it is
/// received. Squashfs cannot be read this way.
pub fn unpack_split_rootfs_stream(
    reader: impl Read,
    name: &Path,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<(), ImageError> {
    fs::create_dir(dest).map_err(|e| ImageError::io("create", dest, e))?;
    let archive = tar_from_reader(reader, name)?;
    unpack_archive(
        archive,
        name,
        Some(dest),
        plain_relative,
        false,
        None,
        limits,
    )
    .map(|_| ())
}

/// A squashfs root filesystem (`rootfs`) unpacked into `dest` (which must not exist) by
/// `unsquashfs`, killed once `stop` says so (a cancelled operation).
pub fn unpack_squashfs_until(
    rootfs: &Path,
    dest: &Path,
    limits: UnpackLimits,
    stop: &dyn Fn() -> bool,
) -> Result<(), ImageError> {
    unpack_squashfs(rootfs, dest, limits, stop)
}

/// A squashfs root filesystem, unpacked by `unsquashfs` (as LXD does). squashfs-tools
/// 4.5.1 and later refuse names that escape the destination and writes through symlinks;
/// device nodes are removed afterwards unless allowed, and the size is checked.
fn unpack_squashfs(
    file: &Path,
    dest: &Path,
    limits: UnpackLimits,
    stop: &dyn Fn() -> bool,
) -> Result<(), ImageError> {
    let out = run_until(
        std::process::Command::new("unsquashfs")
            .args(["-n", "-q", "-d"])
            .arg(dest)
            .arg(file)
            .stdin(std::process::Stdio::null()),
        stop,
    )
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::MissingTool {
            format: "squashfs",
            tool: "unsquashfs",
            package: "squashfs-tools",
        },
        _ => ImageError::io("run unsquashfs on", file, e),
    })?;
    if !out.status.success() {
        return Err(ImageError::Invalid(format!(
            "unsquashfs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut total = 0u64;
    check_tree(dest, limits, &mut total)
}

/// Runs `cmd` to its end (stderr kept), or kills it once `stop` says so.
fn run_until(
    cmd: &mut std::process::Command,
    stop: &dyn Fn() -> bool,
) -> std::io::Result<std::process::Output> {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Drained aside, so that a chatty tool never blocks on a full pipe.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = e.read_to_end(&mut text);
            text
        })
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if stop() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("operation canceled"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok(std::process::Output {
        status,
        stdout: Vec::new(),
        stderr,
    })
}

/// Walks an unpacked tree: removes device nodes (unless allowed) and counts file bytes
/// against the limit.
fn check_tree(dir: &Path, limits: UnpackLimits, total: &mut u64) -> Result<(), ImageError> {
    use std::os::unix::fs::FileTypeExt;
    for entry in fs::read_dir(dir).map_err(|e| ImageError::io("read", dir, e))? {
        let entry = entry.map_err(|e| ImageError::io("read", dir, e))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|e| ImageError::io("stat", &path, e))?;
        let kind = meta.file_type();
        if (kind.is_char_device() || kind.is_block_device()) && !limits.allow_devices {
            fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))?;
        } else if kind.is_dir() {
            check_tree(&path, limits, total)?;
        } else if kind.is_file() {
            *total = total.saturating_add(meta.len());
            if *total > limits.max_bytes {
                return Err(ImageError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
        }
    }
    Ok(())
}

/// A path rooted at `/` made relative, refusing `..`.
fn plain_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Walks a tarball: metadata.yaml at its top is parsed when `read_metadata`; entries that
/// `map` places below `dest` are unpacked (when `dest` is given); metadata.yaml and
/// templates/ are kept in `keep` (when given); the rest is skipped.
fn unpack(
    tarball: &Path,
    dest: Option<&Path>,
    map: fn(&Path) -> Option<PathBuf>,
    read_metadata: bool,
    keep: Option<&Path>,
    limits: UnpackLimits,
) -> Result<Option<ImageMetadata>, ImageError> {
    let archive = open_tar(tarball)?;
    unpack_archive(archive, tarball, dest, map, read_metadata, keep, limits)
}

/// [`unpack`] of an opened archive (`tarball` names it in errors).
fn unpack_archive<R: Read>(
    mut archive: tar::Archive<R>,
    tarball: &Path,
    dest: Option<&Path>,
    map: fn(&Path) -> Option<PathBuf>,
    read_metadata: bool,
    keep: Option<&Path>,
    limits: UnpackLimits,
) -> Result<Option<ImageMetadata>, ImageError> {
    let mut metadata = None;
    let mut total: u64 = 0;
    let mut kept: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| ImageError::io("read", tarball, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ImageError::Invalid(format!("corrupt tarball: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| ImageError::Invalid(format!("bad path in tarball: {e}")))?
            .into_owned();
        let clean: PathBuf = path
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        if read_metadata && clean == Path::new("metadata.yaml") {
            let mut text = String::new();
            entry
                .by_ref()
                .take(MAX_METADATA)
                .read_to_string(&mut text)
                .map_err(|e| ImageError::Invalid(format!("metadata.yaml: {e}")))?;
            metadata = Some(ImageMetadata::parse(&text)?);
            if let Some(keep) = keep {
                keep_metadata(keep, &text)?;
            }
            continue;
        }
        if let Some(keep) = keep {
            if let Some(rel) = templates_relative(&path) {
                if !rel.as_os_str().is_empty() {
                    keep_template(&mut entry, keep, &rel, &mut kept)?;
                }
                continue;
            }
        }
        let Some(dest) = dest else { continue };
        let Some(rel) = map(&path) else {
            if path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(ImageError::Invalid(format!(
                    "{} escapes the image",
                    path.display()
                )));
            }
            continue; // templates/ and other metadata files
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        if (kind.is_character_special() || kind.is_block_special()) && !limits.allow_devices {
            continue;
        }
        total = total.saturating_add(entry.header().size().unwrap_or(0));
        if total > limits.max_bytes {
            return Err(ImageError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        check_parents(dest, &rel)?;
        let target = dest.join(&rel);
        // Tarballs need not list every directory (tar makes the missing ones).
        if let Some(parent) = target.parent() {
            if !parent.exists() {
                fs::create_dir_all(parent).map_err(|e| ImageError::io("create", parent, e))?;
            }
        }
        if kind.is_hard_link() {
            let link = entry.link_name().ok().flatten().ok_or_else(|| {
                ImageError::Invalid(format!("{} has no link target", rel.display()))
            })?;
            let link_rel = map(&link).ok_or_else(|| {
                ImageError::Invalid(format!("{} links outside the image", rel.display()))
            })?;
            check_parents(dest, &link_rel)?;
            fs::hard_link(dest.join(&link_rel), &target)
                .map_err(|e| ImageError::io("link", &target, e))?;
            continue;
        }
        if kind == tar::EntryType::Fifo {
            // The tar crate would make a regular file of it.
            make_fifo(&target, entry.header())?;
            continue;
        }
        entry
            .unpack(&target)
            .map_err(|e| ImageError::io("unpack", &target, e))?;
    }
    Ok(metadata)
}

/// A fifo with the entry's mode and owner.
fn make_fifo(target: &Path, header: &tar::Header) -> Result<(), ImageError> {
    let err = |e: std::io::Error| ImageError::io("create fifo", target, e);
    let mode = header.mode().map_err(err)? & 0o7777;
    let _ = fs::remove_file(target);
    nix::unistd::mkfifo(target, nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(|e| err(e.into()))?;
    let (uid, gid) = (header.uid().map_err(err)?, header.gid().map_err(err)?);
    std::os::unix::fs::lchown(target, Some(uid as u32), Some(gid as u32)).map_err(err)?;
    fs::set_permissions(target, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(
        entries: &[(&str, &[u8])],
        links: &[(&str, &str, tar::EntryType)],
    ) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(file.reopen().unwrap(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(if name.ends_with('/') { 0o755 } else { 0o644 });
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(if name.ends_with('/') {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        for (name, target, kind) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(0);
            h.set_mode(0o777);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
        file
    }

    const META: &[u8] = b"architecture: x86_64\ncreation_date: 1\nproperties:\n  os: busybox\n";

    #[test]
    fn a_unified_image_unpacks_its_rootfs() {
        let t = build(
            &[
                ("metadata.yaml", META),
                ("rootfs/", b""),
                ("rootfs/etc/", b""),
                ("rootfs/etc/hostname", b"x\n"),
            ],
            &[("rootfs/etc/h2", "rootfs/etc/hostname", tar::EntryType::Link)],
        );
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rootfs");
        let meta = unpack_unified(t.path(), &dest, UnpackLimits::default()).unwrap();
        assert_eq!(meta.properties["os"], "busybox");
        assert_eq!(fs::read(dest.join("etc/hostname")).unwrap(), b"x\n");
        assert_eq!(fs::read(dest.join("etc/h2")).unwrap(), b"x\n");
    }

    #[test]
    fn escapes_through_symlinks_are_refused() {
        let t = build(
            &[("metadata.yaml", META), ("rootfs/", b"")],
            &[("rootfs/evil", "/etc", tar::EntryType::Symlink)],
        );
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rootfs");
        unpack_unified(t.path(), &dest, UnpackLimits::default()).unwrap();
        // The symlink itself is fine; writing through it is not.
        let t = build(
            &[("metadata.yaml", META), ("rootfs/evil/passwd", b"x")],
            &[],
        );
        let dest2 = dir.path().join("r2");
        fs::create_dir(&dest2).unwrap();
        std::os::unix::fs::symlink("/etc", dest2.join("evil")).unwrap();
        assert!(check_parents(&dest2, Path::new("evil/passwd")).is_err());
        drop(t);
    }

    #[test]
    fn missing_metadata_and_oversize_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let t = build(&[("rootfs/a", b"x")], &[]);
        assert!(
            unpack_unified(t.path(), &dir.path().join("a"), UnpackLimits::default())
                .unwrap_err()
                .to_string()
                .contains("metadata.yaml")
        );
        let t = build(
            &[("metadata.yaml", META), ("rootfs/big", &[0u8; 4096])],
            &[],
        );
        let err = unpack_unified(
            t.path(),
            &dir.path().join("b"),
            UnpackLimits {
                max_bytes: 100,
                allow_devices: false,
            },
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }));
        let garbage = tempfile::NamedTempFile::new().unwrap();
        fs::write(garbage.path(), b"\x1f\x8bnot really gzip").unwrap();
        assert!(unpack_unified(
            garbage.path(),
            &dir.path().join("c"),
            UnpackLimits::default()
        )
        .is_err());
    }

    #[test]
    fn zstd_rootfs_tarballs_unpack() {
        // The same tar, recompressed with zstd (LXD accepts .tar.zst rootfs files too).
        let gz = build(
            &[("./", b""), ("./etc/", b""), ("./etc/hostname", b"z\n")],
            &[],
        );
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(File::open(gz.path()).unwrap())
            .read_to_end(&mut tar)
            .unwrap();
        let zst = tempfile::NamedTempFile::new().unwrap();
        fs::write(zst.path(), zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rootfs");
        unpack_split_rootfs(zst.path(), &dest, UnpackLimits::default()).unwrap();
        assert_eq!(fs::read(dest.join("etc/hostname")).unwrap(), b"z\n");
    }

    #[test]
    fn split_images_unpack_their_rootfs_from_the_root() {
        let meta = build(&[("metadata.yaml", META), ("templates/", b"")], &[]);
        assert_eq!(
            read_split_metadata(meta.path()).unwrap().properties["os"],
            "busybox"
        );
        let root = build(
            &[
                ("./", b""),
                ("./etc/", b""),
                ("./etc/hostname", b"h\n"),
                ("metadata.yaml", b"part of the rootfs"),
            ],
            &[],
        );
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rootfs");
        unpack_split_rootfs(root.path(), &dest, UnpackLimits::default()).unwrap();
        assert_eq!(fs::read(dest.join("etc/hostname")).unwrap(), b"h\n");
        assert_eq!(
            fs::read(dest.join("metadata.yaml")).unwrap(),
            b"part of the rootfs"
        );
        assert_eq!(plain_relative(Path::new("/a/../b")), None);
    }

    #[test]
    fn squashfs_rootfs_unpack_with_unsquashfs() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("etc")).unwrap();
        fs::write(src.path().join("etc/hostname"), b"sq\n").unwrap();
        let work = tempfile::tempdir().unwrap();
        let image = work.path().join("root.squashfs");
        let made = std::process::Command::new("mksquashfs")
            .arg(src.path())
            .arg(&image)
            .args(["-noappend", "-quiet", "-no-progress"])
            .output();
        if !made.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("skipping squashfs_rootfs_unpack_with_unsquashfs: no mksquashfs");
            return;
        }
        let dest = work.path().join("rootfs");
        unpack_split_rootfs(&image, &dest, UnpackLimits::default()).unwrap();
        assert_eq!(fs::read(dest.join("etc/hostname")).unwrap(), b"sq\n");
        let err = unpack_split_rootfs(
            &image,
            &work.path().join("small"),
            UnpackLimits {
                max_bytes: 1,
                allow_devices: false,
            },
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
        // A corrupt squashfs is an invalid image, not a host failure.
        fs::write(&image, b"hsqs but nothing else").unwrap();
        let err = unpack_split_rootfs(&image, &work.path().join("bad"), UnpackLimits::default())
            .unwrap_err();
        assert!(matches!(err, ImageError::Invalid(_)), "{err}");
    }

    const META_TPL: &[u8] = b"architecture: x86_64\ncreation_date: 1\ntemplates:\n  /etc/hostname:\n    when: [create]\n    template: hostname.tpl\n";

    #[test]
    fn a_unified_image_volume_keeps_metadata_and_templates() {
        let t = build(
            &[
                ("./metadata.yaml", META_TPL),
                ("./templates/", b""),
                ("./templates/hostname.tpl", b"{{ container.name }}\n"),
                ("templates/sub/x.tpl", b"x"),
                ("rootfs/etc/hostname", b"x\n"),
            ],
            &[
                ("templates/evil", "/etc/shadow", tar::EntryType::Symlink),
                (
                    "templates/hard",
                    "rootfs/etc/hostname",
                    tar::EntryType::Link,
                ),
            ],
        );
        let vol = tempfile::tempdir().unwrap();
        let meta = unpack_unified_volume(t.path(), vol.path(), UnpackLimits::default()).unwrap();
        assert_eq!(meta.templates["/etc/hostname"].template, "hostname.tpl");
        assert_eq!(
            fs::read(vol.path().join("metadata.yaml")).unwrap(),
            META_TPL
        );
        assert_eq!(
            fs::read(vol.path().join("templates/hostname.tpl")).unwrap(),
            b"{{ container.name }}\n"
        );
        assert_eq!(
            fs::read(vol.path().join("templates/sub/x.tpl")).unwrap(),
            b"x"
        );
        assert_eq!(
            fs::read(vol.path().join("rootfs/etc/hostname")).unwrap(),
            b"x\n"
        );
        // Links are not kept: templates are read as plain files only.
        assert!(fs::symlink_metadata(vol.path().join("templates/evil")).is_err());
        assert!(fs::symlink_metadata(vol.path().join("templates/hard")).is_err());
        assert!(!vol.path().join("rootfs/templates").exists());
    }

    #[test]
    fn template_paths_cannot_escape() {
        // The tar crate refuses to write `..`; the name goes into the header by hand.
        let t = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(t.reopen().unwrap());
        for (name, data) in [
            ("metadata.yaml", META_TPL),
            ("templates/../../escaped", b"x"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.finish().unwrap();
        let work = tempfile::tempdir().unwrap();
        let vol = work.path().join("vol");
        fs::create_dir(&vol).unwrap();
        let err = unpack_unified_volume(t.path(), &vol, UnpackLimits::default()).unwrap_err();
        assert!(matches!(err, ImageError::Invalid(_)), "{err}");
        assert!(!work.path().join("escaped").exists());
        assert_eq!(templates_relative(Path::new("templates/a/../b")), None);
        assert_eq!(
            templates_relative(Path::new("./templates/a.tpl")),
            Some(PathBuf::from("a.tpl"))
        );
    }

    #[test]
    fn oversized_templates_are_refused() {
        let big = vec![b'x'; (MAX_TEMPLATES / 2 + 1) as usize];
        let t = build(
            &[
                ("metadata.yaml", META_TPL),
                ("templates/a", &big),
                ("templates/b", &big),
            ],
            &[],
        );
        let vol = tempfile::tempdir().unwrap();
        let err = unpack_unified_volume(t.path(), vol.path(), UnpackLimits::default()).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn split_metadata_is_kept_in_the_volume() {
        let t = build(
            &[
                ("metadata.yaml", META_TPL),
                ("templates/hostname.tpl", b"{{ container.name }}\n"),
            ],
            &[],
        );
        let vol = tempfile::tempdir().unwrap();
        let meta = unpack_split_metadata(t.path(), vol.path()).unwrap();
        assert_eq!(meta.templates.len(), 1);
        assert_eq!(
            fs::read(vol.path().join("metadata.yaml")).unwrap(),
            META_TPL
        );
        assert!(vol.path().join("templates/hostname.tpl").is_file());
        assert!(!vol.path().join("rootfs").exists());
    }

    #[test]
    fn rootfs_paths_must_be_plain() {
        assert_eq!(
            rootfs_relative(Path::new("./rootfs/bin/sh")),
            Some(PathBuf::from("bin/sh"))
        );
        assert_eq!(rootfs_relative(Path::new("rootfs/../etc")), None);
        assert_eq!(rootfs_relative(Path::new("/rootfs/x")), None);
        assert_eq!(rootfs_relative(Path::new("templates/x")), None);
    }
}
