//! `hutch image build busybox|debian/<release>`: builds an image offline on this host (the
//! builder of hutch-images) and imports it into the local store as a split image, as
//! `hutch image import META ROOTFS --alias NAME` does.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use hutch_images::builder::{self, BuildOptions, Target, Variant};

use crate::http::Client;

/// `hutch image build` arguments.
#[derive(Args)]
pub struct BuildArgs {
    /// `busybox` (from the host's busybox-static) or `debian/12` (by debootstrap; also 11,
    /// 13 or a codename).
    pub image: String,
    /// Aliases for the new image.
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Debian mirror.
    #[arg(long, default_value = "http://deb.debian.org/debian")]
    pub mirror: String,
    /// `default`, or `cloud` (with cloud-init; Debian only).
    #[arg(long, default_value = "default")]
    pub variant: String,
    /// A directory caching debootstrap's result (`debian-<version>-<arch>-r2.tar.zst`): used
    /// when it holds one, filled when it does not.
    #[arg(long)]
    pub debootstrap_cache: Option<PathBuf>,
    /// The image serial (default: now, UTC, as `YYYYMMDD_HH:MM`).
    #[arg(long, default_value = "")]
    pub serial: String,
    /// Make the image public.
    #[arg(long)]
    pub public: bool,
}

/// Runs `hutch image build`.
pub fn run(client: &Client, args: BuildArgs) -> Result<()> {
    let target: Target = args.image.parse()?;
    let variant: Variant = args.variant.parse()?;
    // Fail before a long build when it cannot succeed.
    builder::require_root()?;
    client.get("/1.0")?;
    let opts = BuildOptions {
        variant,
        mirror: args.mirror,
        debootstrap_cache: args.debootstrap_cache,
        serial: args.serial,
        work_parent: None,
    };
    eprintln!("Building {}...", args.image);
    let built = builder::build(&target, &opts).with_context(|| format!("build {}", args.image))?;
    let files = [
        built.meta.to_string_lossy().into_owned(),
        built.rootfs.to_string_lossy().into_owned(),
    ];
    super::image::import_cmd(client, &files, &args.aliases, args.public)
}
