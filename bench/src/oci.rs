//! OCI rows (hutchd only: LXD 5.0 has no OCI remotes, and its `lxc` cannot add one): an
//! image of about 50 MB (the busybox tree as a base layer, 48 MiB of random bytes as a
//! second) pushed with `skopeo` into Debian's `docker-registry` on loopback, launched
//! through `hutch` from a remote of protocol `oci`: the first launch (manifest, parallel
//! layer pulls, digest checks, flatten, unpack) each after the image was deleted, then
//! launches from the cache (the manifest asked for, nothing downloaded).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hutch_oci::{host_arch, tree_layer, write_oci_archive, ImageToWrite, RunConfig};
use hutch_tests::registry::Registry;

use crate::target::Target;

/// The name the targets know the registry by, and the image on it.
const REMOTE: &str = "benchoci";
const IMAGE: &str = "bench/app:1";

/// A layer holding one file of `size` random bytes (so nothing compresses it away).
fn random_layer(size: usize) -> Result<Vec<u8>> {
    let mut data = vec![0u8; size];
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut urandom, &mut data)?;
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append_data(&mut h, "srv/payload", &data[..])?;
    Ok(b.into_inner()?)
}

/// Starts the registry under `work` and pushes the image; `None` (said why) when the
/// tools are missing.
pub(crate) fn serve(work: &Path, busybox_rootfs: &Path) -> Result<Option<Registry>> {
    if let Some(why) = Registry::tools_missing() {
        println!("oci rows: not measured ({why})");
        return Ok(None);
    }
    let dir = work.join("oci");
    std::fs::create_dir_all(&dir)?;
    let registry = Registry::start(&dir);
    let run = RunConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["sleep 100000".into()],
        env: vec!["PATH=/bin:/sbin:/usr/bin:/usr/sbin".into()],
        ..RunConfig::default()
    };
    let layers = vec![tree_layer(busybox_rootfs)?, random_layer(48 << 20)?];
    let archive = dir.join("app.tar");
    write_oci_archive(
        &archive,
        &ImageToWrite {
            architecture: host_arch(),
            run: &run,
            layers: &layers,
            gzip: true,
        },
    )
    .context("writing the OCI archive")?;
    registry.push(&archive, IMAGE);
    Ok(Some(registry))
}

/// The OCI rows on `target` (a hutchd) through `hutch`.
pub(crate) fn measure(
    target: &Target,
    runs: usize,
    registry: &Registry,
    mut record: impl FnMut(&str, Vec<Vec<Duration>>),
) -> Result<()> {
    let _ = target.time("hutch", &["remote", "remove", REMOTE]);
    let url = registry.url();
    target.time(
        "hutch",
        &["remote", "add", REMOTE, &url, "--protocol", "oci"],
    )?;
    let source = format!("{REMOTE}:{IMAGE}");
    // The OCI images only: the rows after these launch the busybox image.
    let delete_images = || -> Result<()> {
        let out = target
            .cmd("hutch", &["query", "/1.0/images?recursion=1"])
            .stdout(std::process::Stdio::piped())
            .output()?;
        let images: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("the image list")?;
        for image in images.as_array().into_iter().flatten() {
            if image["properties"]["type"] == "oci" {
                let fp = image["fingerprint"].as_str().unwrap_or_default();
                target.time("hutch", &["image", "delete", fp])?;
            }
        }
        Ok(())
    };
    let mut first = Vec::new();
    for run in 0..runs {
        delete_images()?;
        let name = format!("of{run}");
        first.push(target.time("hutch", &["launch", &source, &name])?);
        target.time("hutch", &["delete", &name, "--force"])?;
    }
    record("oci launch 50 MB", vec![first]);
    let mut cached = Vec::new();
    for run in 0..runs {
        cached.push(target.time("hutch", &["launch", &source, &format!("oc{run}")])?);
    }
    record("oci launch 50 MB, cached", vec![cached]);
    for run in 0..runs {
        target.time("hutch", &["delete", &format!("oc{run}"), "--force"])?;
    }
    delete_images()?;
    Ok(())
}
