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
