//! Remote image rows: a simplestreams tree (busybox, and Debian when its rootfs is at hand,
//! both split with squashfs root filesystems as the public server publishes them) served over
//! HTTPS on loopback by the test image server, and launched from by each target through the
//! same client: the first launch (image not cached: download, verify, unpack) and a cached
//! one.
//!
//! The server's CA is kept in `--ca-dir` from run to run, so that an LXD daemon started with
//! `SSL_CERT_FILE=<ca-dir>/ca.pem` trusts it (Go reads its roots once, at start).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hutch_images::streams_tree::{StreamsFiles, StreamsImage, StreamsTree};
use hutch_tests::image_server::{ImageServer, TestCa};

use crate::target::Target;

/// The CA file every client and daemon the bench starts is given as `SSL_CERT_FILE`.
pub(crate) static CA_FILE: OnceLock<PathBuf> = OnceLock::new();

/// The name the targets know the server by.
const REMOTE: &str = "bench";

/// The served tree and what is in it.
pub(crate) struct RemoteImages {
    server: ImageServer,
    /// (alias on the server, fingerprint), busybox first.
    images: Vec<(String, String)>,
}

/// A split image of `rootfs` (a directory): metadata tarball and squashfs, made under `work`.
fn split_squashfs(work: &Path, name: &str, rootfs: &Path, meta: &str) -> Result<StreamsFiles> {
    let dir = work.join(format!("{name}-meta"));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("metadata.yaml"), meta)?;
    let meta_file = work.join(format!("{name}-lxd.tar.xz"));
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cJf")
        .arg(&meta_file)
        .arg("metadata.yaml")
        .status()?
        .success();
    if !ok {
        bail!("making the {name} metadata tarball failed");
    }
    let squashfs = work.join(format!("{name}.squashfs"));
    let ok = Command::new("mksquashfs")
        .arg(rootfs)
        .arg(&squashfs)
        .args(["-noappend", "-quiet", "-comp", "gzip"])
        .stdout(std::process::Stdio::null())
        .status()
        .context("mksquashfs (package squashfs-tools)")?
        .success();
    if !ok {
        bail!("mksquashfs of the {name} rootfs failed");
    }
    Ok(StreamsFiles::Split {
        meta: meta_file,
        rootfs: squashfs,
    })
}

/// Writes the tree and serves it. `busybox_rootfs` is a directory; `debian_rootfs` a
/// (zstd) tarball, unpacked here once.
pub(crate) fn serve(
    work: &Path,
    ca_dir: &Path,
    busybox_rootfs: &Path,
    debian_rootfs: Option<&Path>,
) -> Result<RemoteImages> {
    let ca = Arc::new(TestCa::persistent(ca_dir)?);
    let _ = CA_FILE.set(ca.ca_file());
    let arch = crate::images::lxd_arch();
    let meta = |os: &str| {
        format!("architecture: {arch}\ncreation_date: 1700000000\nproperties:\n  os: {os}\n")
    };
    let mut images = vec![StreamsImage {
        os: "busybox".into(),
        release: "1".into(),
        release_title: "1".into(),
        version: "1".into(),
        arch: arch.into(),
        variant: "default".into(),
        serial: "20261201_00:00".into(),
        aliases: vec!["busybox/1".into()],
        files: split_squashfs(work, "busybox", busybox_rootfs, &meta("busybox"))?,
    }];
    if let Some(tarball) = debian_rootfs {
        let root = work.join("debian-rootfs");
        std::fs::create_dir_all(&root)?;
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("--zstd")
            .arg("-xf")
            .arg(tarball)
            .status()?
            .success();
        if !ok {
            bail!("unpacking {} failed", tarball.display());
        }
        let files = split_squashfs(work, "debian", &root, &meta("debian"))?;
        let _ = std::fs::remove_dir_all(&root);
        images.push(StreamsImage {
            os: "Debian".into(),
            release: "bookworm".into(),
            release_title: "bookworm".into(),
            version: "12".into(),
            arch: arch.into(),
            variant: "default".into(),
            serial: "20261201_00:00".into(),
            aliases: vec!["debian/12".into()],
            files,
        });
    }
    let tree = work.join("streams");
    let published = StreamsTree::new(&tree).add_all(&images)?;
    let server = ImageServer::https_with_ca(&tree, ca);
    let images = images
        .iter()
        .zip(published)
        .map(|(i, p)| (i.aliases[0].clone(), p.fingerprint))
        .collect();
    Ok(RemoteImages { server, images })
}

impl RemoteImages {
    /// Adds the server as remote `bench` for `client` on `t`.
    pub(crate) fn add_remote(&self, t: &Target, client: &str) -> Result<()> {
        let _ = t.time(client, &["remote", "remove", REMOTE]);
        t.time(
            client,
            &[
                "remote",
                "add",
                REMOTE,
                &self.server.url(),
                "--protocol",
                "simplestreams",
                "--public",
            ],
        )
        .map(|_| ())
    }

    /// (row label, `bench:<alias>`, fingerprint) per image.
    fn rows(&self) -> Vec<(&'static str, String, &str)> {
        self.images
            .iter()
            .map(|(alias, fp)| {
                let label = if alias.starts_with("busybox") {
                    "remote launch"
                } else {
                    "remote launch debian"
                };
                (label, format!("{REMOTE}:{alias}"), fp.as_str())
            })
            .collect()
    }
}

/// The remote rows for `client` on `targets` (taking turns run by run): first launches,
/// each after the cached image was deleted, then launches from the cache.
pub(crate) fn measure(
    targets: &[&Target],
    client: &str,
    runs: usize,
    remote: &RemoteImages,
    mut record: impl FnMut(&str, Vec<Vec<Duration>>),
) -> Result<()> {
    for t in targets {
        remote.add_remote(t, client)?;
    }
    for (label, source, fp) in remote.rows() {
        let mut first = vec![Vec::new(); targets.len()];
        for run in 0..runs {
            for (i, t) in targets.iter().enumerate() {
                // LXD is driven by lxc, which has its own remote list.
                let _ = t.time(client, &["image", "delete", fp]);
                let name = format!("rf{client}{run}");
                first[i].push(t.time(client, &["launch", &source, &name])?);
                t.time(client, &["delete", &name, "--force"])?;
            }
        }
        record(label, first);
        let mut cached = vec![Vec::new(); targets.len()];
        for run in 0..runs {
            for (i, t) in targets.iter().enumerate() {
                let name = format!("rc{client}{run}");
                cached[i].push(t.time(client, &["launch", &source, &name])?);
            }
        }
        record(&format!("{label}, cached"), cached);
        for t in targets {
            for run in 0..runs {
                t.time(client, &["delete", &format!("rc{client}{run}"), "--force"])?;
            }
            let _ = t.time(client, &["image", "delete", fp]);
        }
    }
    Ok(())
}
