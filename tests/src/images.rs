//! Test root filesystems, made by the scripts in `tests/images/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("images")
        .join(name)
}

fn run_script(name: &str, dest: &Path) -> anyhow::Result<()> {
    let path = script(name);
    let out = Command::new("bash")
        .arg(&path)
        .arg(dest)
        .output()
        .with_context(|| format!("failed to run {}", path.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{name} {} failed ({}): {}",
        dest.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Builds a busybox-init root filesystem at `dest` (offline, from busybox-static, in well
/// under a second); `dest` must be missing or empty.
pub fn busybox_rootfs(dest: &Path) -> anyhow::Result<()> {
    run_script("busybox.sh", dest)
}

/// Unpacks a Debian 12 (systemd) root filesystem at `dest`, as root. The first call on a
/// machine debootstraps it (about 40 s) and caches it in `$HUTCH_TEST_CACHE` (default
/// /var/cache/hutch-tests); later calls take about a second.
pub fn debian_rootfs(dest: &Path) -> anyhow::Result<()> {
    run_script("debian.sh", dest)
}

/// A split busybox image in `work`: (metadata tarball, rootfs tarball), both xz, its
/// metadata carrying `serial`.
pub fn split_busybox(work: &Path, serial: &str) -> (PathBuf, PathBuf) {
    let tree = work.join(format!("bb-{serial}"));
    std::fs::create_dir_all(&tree).unwrap();
    let rootfs = tree.join("rootfs");
    crate::busybox_rootfs(&rootfs).expect("busybox rootfs");
    std::fs::write(
        tree.join("metadata.yaml"),
        format!(
            "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: busybox\n  release: \"1\"\n  serial: \"{serial}\"\n  description: busybox test image\n"
        ),
    )
    .unwrap();
    let meta = work.join(format!("meta-{serial}.tar.xz"));
    let root = work.join(format!("root-{serial}.tar.xz"));
    for (out, dir, what) in [(&meta, &tree, "metadata.yaml"), (&root, &rootfs, ".")] {
        let status = Command::new("tar")
            .arg("-C")
            .arg(dir)
            .args(["--numeric-owner", "-cJf"])
            .arg(out)
            .arg(what)
            .status()
            .unwrap();
        assert!(status.success(), "tar {what}");
    }
    std::fs::remove_dir_all(&tree).unwrap();
    (meta, root)
}
