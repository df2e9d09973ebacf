//! The builder's files: its work directory (removed without ever crossing a mount),
//! the metadata tarball, the rootfs tarball, and serials.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{require_tool, run, BuildError, BuildMetadata};

/// A fresh work directory, removed on drop (mounts below it are taken away first).
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn new(parent: &Path) -> Result<Self, BuildError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!("hutch-build-{}-{nanos:x}", std::process::id()));
        fs::create_dir_all(&path).map_err(|e| BuildError::io("create", &path, e))?;
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            eprintln!("warning: {e}");
        }
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes spaces and the like as octal.
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts
}

/// Removes `dir`, first unmounting anything a killed debootstrap left mounted below it; a
/// tree that still has a mount is left in place rather than emptied through it.
pub fn remove_tree(dir: &Path) -> Result<(), BuildError> {
    if !dir.exists() {
        return Ok(());
    }
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        return Err(BuildError::Invalid(format!(
            "left {} in place: still mounted below it: {left:?}",
            dir.display()
        )));
    }
    fs::remove_dir_all(dir).map_err(|e| BuildError::io("remove", dir, e))
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now (UTC) as `YYYYMMDD_HH:MM`, as the public image servers write serials.
pub fn serial_now() -> String {
    serial_of(unix_now())
}

/// `YYYYMMDD_HH:MM` of a Unix time.
pub fn serial_of(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}_{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// The metadata tarball: `metadata.yaml` and `templates/<name>`, xz-compressed.
pub fn write_meta_tarball(
    out: &Path,
    meta: &BuildMetadata,
    templates: &[(&str, &str)],
) -> Result<(), BuildError> {
    let yaml = serde_yaml::to_string(meta)
        .map_err(|e| BuildError::Invalid(format!("metadata.yaml: {e}")))?;
    let io = |e| BuildError::io("write", out, e);
    let file = fs::File::create(out).map_err(io)?;
    let mut tar = tar::Builder::new(xz2::write::XzEncoder::new(file, 6));
    let mtime = meta.creation_date.max(0) as u64;
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(mtime);
    tar.append_data(&mut dir, "templates/", std::io::empty())
        .map_err(io)?;
    let entries = std::iter::once(("metadata.yaml".to_string(), yaml.as_str())).chain(
        templates
            .iter()
            .map(|(n, c)| (format!("templates/{n}"), *c)),
    );
    for (name, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        h.set_mtime(mtime);
        tar.append_data(&mut h, name, content.as_bytes())
            .map_err(io)?;
    }
    let mut xz = tar.into_inner().map_err(io)?;
    xz.flush().map_err(io)?;
    xz.finish().map_err(io)?.sync_all().map_err(io)
}

/// Packs `root` as a tarball rooted at `/` (numeric owners, xattrs, device nodes, hard
/// links kept, as `tar` keeps them), zstd-compressed when the host has zstd (fast on a few
/// hundred MB), gzip otherwise. Returns its path in `dir`.
pub fn pack_rootfs(root: &Path, dir: &Path) -> Result<PathBuf, BuildError> {
    require_tool("tar", "tar")?;
    let (name, compress) = if require_tool("zstd", "zstd").is_ok() {
        ("rootfs.tar.zst", "--zstd")
    } else {
        ("rootfs.tar.gz", "--gzip")
    };
    let out = dir.join(name);
    run(
        Command::new("tar")
            .arg("-C")
            .arg(root)
            .args([
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "--sort=name",
                compress,
                "-cf",
            ])
            .arg(&out)
            .arg("."),
        "packing the root filesystem with tar",
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn serials_are_utc_dates_as_the_public_servers_write_them() {
        assert_eq!(serial_of(0), "19700101_00:00");
        assert_eq!(serial_of(1_714_541_040), "20240501_05:24");
        assert_eq!(serial_of(951_782_400), "20000229_00:00");
        assert_eq!(serial_now().len(), "20240501_05:24".len());
    }

    #[test]
    fn the_meta_tarball_holds_metadata_and_templates() {
        let dir = tempfile::tempdir().unwrap();
        let (files, templates) = super::super::standard_templates();
        let meta = BuildMetadata {
            architecture: "x86_64".into(),
            creation_date: 1_714_541_040,
            properties: Default::default(),
            templates,
        };
        let out = dir.path().join("meta.tar.xz");
        write_meta_tarball(&out, &meta, &files).unwrap();
        let mut names = Vec::new();
        let mut yaml = String::new();
        let mut tar = tar::Archive::new(xz2::read::XzDecoder::new(fs::File::open(&out).unwrap()));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name == "metadata.yaml" {
                entry.read_to_string(&mut yaml).unwrap();
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "templates/",
                "metadata.yaml",
                "templates/hostname.tpl",
                "templates/hosts.tpl"
            ]
        );
        assert!(yaml.contains("/etc/hostname"), "{yaml}");
        // The store reads the metadata of a split image from it.
        let parsed = crate::read_split_metadata(&out).unwrap();
        assert_eq!(parsed.architecture, "x86_64");
    }

    #[test]
    fn work_dirs_go_away_on_drop() {
        let parent = tempfile::tempdir().unwrap();
        let path = {
            let w = WorkDir::new(parent.path()).unwrap();
            fs::create_dir_all(w.path().join("a/b")).unwrap();
            fs::write(w.path().join("a/b/c"), b"x").unwrap();
            w.path().to_path_buf()
        };
        assert!(!path.exists());
    }
}
