//! Packing a root filesystem into a unified image tarball (`metadata.yaml` and `rootfs/`),
//! as `lxc publish` makes one: numeric owners, modes and times kept, symlinks stored as
//! links (never followed), device nodes and fifos as such, sockets left out.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::str::FromStr;

use crate::{ImageError, ImageMetadata};

/// How the tarball is compressed (LXD's `compression_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl FromStr for Compression {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, ImageError> {
        match s {
            "none" => Ok(Compression::None),
            "" | "gzip" => Ok(Compression::Gzip),
            "xz" => Ok(Compression::Xz),
            "zstd" => Ok(Compression::Zstd),
            other => Err(ImageError::Invalid(format!(
                "unsupported compression algorithm {other:?} (none, gzip, xz or zstd)"
            ))),
        }
    }
}

/// Writes the unified image of `rootfs` with `meta` to `out`, compressed; returns `out`.
pub fn pack_unified<W: Write>(
    rootfs: &Path,
    meta: &ImageMetadata,
    compression: Compression,
    out: W,
) -> Result<W, ImageError> {
    pack_unified_with_templates(rootfs, None, meta, compression, out)
}

/// [`pack_unified`], with the files of `templates` (when given and present) as the
/// image's `templates/`, as `lxc publish` packs an instance made from a templated image.
pub fn pack_unified_with_templates<W: Write>(
    rootfs: &Path,
    templates: Option<&Path>,
    meta: &ImageMetadata,
    compression: Compression,
    out: W,
) -> Result<W, ImageError> {
    let templates = templates.filter(|t| t.is_dir());
    let io_err = |e: io::Error| ImageError::io("pack", rootfs, e);
    match compression {
        Compression::None => pack_tar(rootfs, templates, meta, out),
        Compression::Gzip => {
            let enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            pack_tar(rootfs, templates, meta, enc)?
                .finish()
                .map_err(io_err)
        }
        Compression::Xz => {
            let enc = xz2::write::XzEncoder::new(out, 6);
            pack_tar(rootfs, templates, meta, enc)?
                .finish()
                .map_err(io_err)
        }
        Compression::Zstd => {
            let enc = zstd::stream::write::Encoder::new(out, 3).map_err(io_err)?;
            pack_tar(rootfs, templates, meta, enc)?
                .finish()
                .map_err(io_err)
        }
    }
}

fn pack_tar<W: Write>(
    rootfs: &Path,
    templates: Option<&Path>,
    meta: &ImageMetadata,
    out: W,
) -> Result<W, ImageError> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let yaml = serde_yaml::to_string(meta)
        .map_err(|e| ImageError::Invalid(format!("metadata.yaml: {e}")))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(yaml.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(meta.creation_date.max(0) as u64);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "metadata.yaml", yaml.as_bytes())
        .map_err(|e| ImageError::io("pack", Path::new("metadata.yaml"), e))?;
    append_tree(&mut tar, rootfs, Path::new("rootfs"))?;
    if let Some(templates) = templates {
        append_tree(&mut tar, templates, Path::new("templates"))?;
    }
    tar.into_inner()
        .map_err(|e| ImageError::io("pack", rootfs, e))
}

/// Appends `dir` as `name`, then everything below it, in name order.
fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
) -> Result<(), ImageError> {
    append_entry(tar, dir, name)?;
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| ImageError::io("read", dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| ImageError::io("read", dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let child = name.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| ImageError::io("stat", &path, e))?;
        if kind.is_dir() {
            append_tree(tar, &path, &child)?;
        } else if !kind.is_socket() {
            append_entry(tar, &path, &child)?;
        }
    }
    Ok(())
}

/// One entry, its header made from its own metadata (numeric ids, no user names).
fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
) -> Result<(), ImageError> {
    let err = |e: io::Error| ImageError::io("pack", path, e);
    let md = fs::symlink_metadata(path).map_err(err)?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&md, tar::HeaderMode::Complete);
    let kind = md.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(path).map_err(err)?;
        tar.append_link(&mut header, name, target).map_err(err)
    } else if kind.is_file() {
        let file = File::open(path).map_err(err)?;
        tar.append_data(&mut header, name, file).map_err(err)
    } else {
        header.set_size(0);
        tar.append_data(&mut header, name, io::empty()).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn meta() -> ImageMetadata {
        ImageMetadata {
            architecture: "x86_64".into(),
            creation_date: 1_700_000_000,
            expiry_date: 0,
            properties: BTreeMap::from([("os".to_string(), "busybox".to_string())]),
            ..Default::default()
        }
    }

    #[test]
    fn packed_images_unpack_to_the_same_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        fs::create_dir_all(root.join("etc/deep/er")).unwrap();
        fs::write(root.join("etc/hostname"), "box\n").unwrap();
        fs::set_permissions(root.join("etc/hostname"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("/etc/hostname", root.join("link")).unwrap();
        symlink("../../outside", root.join("etc/deep/rel")).unwrap();
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
        for compression in ["none", "gzip", "xz", "zstd"] {
            let file = tmp.path().join(format!("image-{compression}.tar"));
            let out = File::create(&file).unwrap();
            pack_unified(&root, &meta(), compression.parse().unwrap(), out).unwrap();
            let dest = tmp.path().join(format!("unpacked-{compression}"));
            let got = crate::unpack_unified(&file, &dest, crate::UnpackLimits::default()).unwrap();
            assert_eq!(got, meta(), "{compression}");
            assert_eq!(
                fs::read_to_string(dest.join("etc/hostname")).unwrap(),
                "box\n"
            );
            let mode = fs::metadata(dest.join("etc/hostname"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(
                fs::read_link(dest.join("link")).unwrap(),
                Path::new("/etc/hostname"),
                "symlinks stay links"
            );
            assert_eq!(
                fs::read_link(dest.join("etc/deep/rel")).unwrap(),
                Path::new("../../outside")
            );
            assert!(dest.join("etc/deep/er").is_dir());
            assert!(fs::symlink_metadata(dest.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo());
            assert!(!dest.join("sock").exists(), "sockets are left out");
        }
    }

    #[test]
    fn templates_are_packed_beside_the_rootfs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        fs::create_dir_all(root.join("etc")).unwrap();
        let templates = tmp.path().join("templates");
        fs::create_dir(&templates).unwrap();
        fs::write(templates.join("hostname.tpl"), "{{ container.name }}\n").unwrap();
        let mut m = meta();
        m.templates.insert(
            "/etc/hostname".into(),
            crate::Template {
                when: vec!["create".into()],
                template: "hostname.tpl".into(),
                ..Default::default()
            },
        );
        let file = tmp.path().join("image.tar.gz");
        let out = File::create(&file).unwrap();
        pack_unified_with_templates(&root, Some(&templates), &m, Compression::Gzip, out).unwrap();
        let vol = tmp.path().join("vol");
        fs::create_dir(&vol).unwrap();
        let got =
            crate::unpack_unified_volume(&file, &vol, crate::UnpackLimits::default()).unwrap();
        assert_eq!(got.templates, m.templates);
        assert_eq!(
            fs::read(vol.join("templates/hostname.tpl")).unwrap(),
            b"{{ container.name }}\n"
        );
        // No templates directory: an image without templates/.
        let out = Vec::new();
        let plain = pack_unified_with_templates(
            &root,
            Some(&tmp.path().join("none")),
            &meta(),
            Compression::None,
            out,
        )
        .unwrap();
        assert!(!String::from_utf8_lossy(&plain).contains("templates/"));
    }

    #[test]
    fn unknown_compressions_are_refused() {
        assert!("bzip2".parse::<Compression>().is_err());
        assert_eq!("".parse::<Compression>().unwrap(), Compression::Gzip);
    }
}
