//! The images the benchmark launches: busybox built from the host's binary, and the
//! Debian split image when a rootfs is at hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::target::Target;
use crate::Args;

/// The Debian split image (metadata tarball, rootfs tarball), if a rootfs is at hand.
pub(crate) fn debian_image(args: &Args, work: &Path) -> Result<Option<(PathBuf, PathBuf)>> {
    let cache = std::env::var_os("HUTCH_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/hutch-tests"));
    let rootfs = match &args.debian_rootfs {
        Some(p) => p.clone(),
        None => cache.join(format!("debian-12-{}-r2.tar.zst", lxd_arch())),
    };
    if !rootfs.exists() {
        return Ok(None);
    }
    let meta_dir = work.join("debian-meta");
    std::fs::create_dir_all(&meta_dir)?;
    std::fs::write(
        meta_dir.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: debian\n  release: bookworm\n",
    )?;
    let meta = work.join("debian-meta.tar.gz");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&meta_dir)
        .arg("-czf")
        .arg(&meta)
        .arg("metadata.yaml")
        .status()?
        .success();
    if !ok {
        bail!("making the Debian metadata tarball failed");
    }
    Ok(Some((meta, rootfs)))
}

/// Debian's name for this architecture, as the test suite names its cache.
pub(crate) fn lxd_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Imports the busybox image as `bb` into `t` (replacing one of that alias, on LXD).
pub(crate) fn import_busybox(t: &Target, image: &Path) -> Result<()> {
    // `hutch` for hutchd (no lxc needed to benchmark it alone); LXD is always driven by lxc.
    let _ = t.time("hutch", &["image", "delete", "bb"]);
    t.time(
        "hutch",
        &[
            "image",
            "import",
            image.to_str().unwrap_or_default(),
            "--alias",
            "bb",
        ],
    )?;
    Ok(())
}

/// Imports the Debian image as `deb` into `t` (with lxc: both daemons take split images).
pub(crate) fn import_debian(t: &Target, image: &(PathBuf, PathBuf)) -> Result<()> {
    let _ = t.time("lxc", &["image", "delete", "deb"]);
    t.time(
        "lxc",
        &[
            "image",
            "import",
            image.0.to_str().unwrap_or_default(),
            image.1.to_str().unwrap_or_default(),
            "--alias",
            "deb",
        ],
    )?;
    Ok(())
}

pub(crate) fn busybox_image(repo: &Path, work: &Path) -> Result<PathBuf> {
    let tree = work.join("image");
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    let ok = Command::new("bash")
        .arg(repo.join("tests/images/busybox.sh"))
        .arg(tree.join("rootfs"))
        .status()?
        .success();
    if !ok {
        bail!("building the busybox image failed");
    }
    std::fs::write(
        tree.join("metadata.yaml"),
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n",
    )?;
    let file = work.join("busybox.tar.gz");
    Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-czf")
        .arg(&file)
        .args(["metadata.yaml", "rootfs"])
        .status()?;
    Ok(file)
}
