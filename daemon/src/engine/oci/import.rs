//! An OCI or docker-save archive uploaded as an image: flattened into a scratch root,
//! repacked as a unified image (metadata.yaml carrying the OCI properties, rootfs/), then
//! imported like any upload, so copy, export and delete treat it as every other image. A
//! failure at any step leaves no image, volume or file.

use std::collections::BTreeMap;
use std::path::Path;

use crate::daemon::AppState;
use crate::engine::images::{import_image, HashingFile, Upload};
use crate::error::{DaemonError, Result};

/// Imports the archive `archive` (an upload); returns the image's fingerprint and size.
/// `properties` (from the request) go over those the image brings.
pub async fn import_archive(
    d: &AppState,
    archive: &Path,
    filename: String,
    public: bool,
    properties: BTreeMap<String, String>,
) -> Result<(String, u64)> {
    // Named like uploads, so that startup removes what a crash leaves.
    let stem = format!(".upload-{}-oci", uuid::Uuid::new_v4());
    let scratch = d.dir.join("images").join(&stem);
    let packed = d.dir.join("images").join(format!("{stem}.tar.gz"));
    let (archive2, scratch2, packed2) = (archive.to_path_buf(), scratch.clone(), packed.clone());
    let converted = tokio::task::spawn_blocking(move || {
        let result = make_scratch(&scratch2).and_then(|()| {
            let source = hutch_oci::ArchiveSource::open(&archive2)
                .map_err(|e| DaemonError::BadRequest(crate::chain(&e)))?;
            convert(&source, &scratch2, &packed2)
        });
        let _ = std::fs::remove_dir_all(&scratch2);
        result
    })
    .await;
    let (fp, size) = match converted {
        Ok(Ok(made)) => made,
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(&packed);
            return Err(e);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&packed);
            return Err(e.into());
        }
    };
    let upload = Upload::Unified(packed);
    let imported = import_image(d, &upload, &fp, size, filename, public, properties).await;
    upload.remove();
    imported.map(|()| (fp, size))
}

/// The scratch directory, for root only.
fn make_scratch(scratch: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(scratch)
        .map_err(|e| DaemonError::io("create", scratch, e))
}

/// Flattens the image of `source` into `scratch/rootfs` (`scratch` exists) and packs it as
/// a unified image at `packed`; returns its fingerprint and size.
pub(super) fn convert(
    source: &dyn hutch_oci::BlobSource,
    scratch: &Path,
    packed: &Path,
) -> Result<(String, u64)> {
    let rootfs = scratch.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(|e| DaemonError::io("create", &rootfs, e))?;
    let limits = hutch_oci::FlattenLimits {
        max_bytes: hutch_images::UnpackLimits::default().max_bytes,
    };
    let image = hutch_oci::unpack(source, &rootfs, limits)
        .map_err(|e| DaemonError::BadRequest(crate::chain(&e)))?;
    let mut meta = hutch_images::ImageMetadata {
        architecture: image.architecture.clone(),
        creation_date: time::OffsetDateTime::now_utc().unix_timestamp(),
        expiry_date: 0,
        properties: BTreeMap::new(),
        templates: BTreeMap::new(),
    };
    meta.architecture = meta.lxd_architecture();
    meta.properties = super::properties::oci_properties(&image, &meta.architecture);
    let file = std::fs::File::create(packed).map_err(|e| DaemonError::io("create", packed, e))?;
    let out = std::io::BufWriter::with_capacity(1 << 20, HashingFile::new(file));
    let out = hutch_images::pack_unified(&rootfs, &meta, hutch_images::Compression::Gzip, out)
        .map_err(|e| DaemonError::failed("pack", "image", e))?
        .into_inner()
        .map_err(|e| DaemonError::io("write", packed, e.into_error()))?;
    out.sync(packed)
}
