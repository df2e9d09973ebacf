//! OCI images for hutch: an image read from a local archive (an OCI image layout in a tar,
//! or a `docker save` tarball), every blob checked against its digest, and its layers
//! flattened into one plain root filesystem, whiteouts applied, nothing hostile followed.
//!
//! Reading goes through [`BlobSource`], so a registry client can supply blobs later the
//! same way an archive does.

mod archive;
mod auth;
mod dir;
mod error;
mod flatten;
mod image;
mod user;
mod write;

pub use archive::ArchiveSource;
pub use auth::{auth_files, find_credentials, Credentials};
pub use dir::DirSource;
pub use error::OciError;
pub use flatten::{flatten_layer, FlattenLimits};
pub use image::{
    apply_layer, host_arch, read_image, BlobSource, Layer, LayerCheck, OciImage, RunConfig,
};
pub use user::resolve_user;
pub use write::{tree_layer, write_docker_archive, write_oci_archive, ImageToWrite};

/// Reads the image in archive `path` (OCI layout or docker-save) and flattens it into
/// `rootfs` (an existing, empty directory). On error `rootfs` may hold a partial tree: the
/// caller works in a staging directory and removes it.
pub fn unpack_archive(
    path: &std::path::Path,
    rootfs: &std::path::Path,
    limits: FlattenLimits,
) -> Result<OciImage, OciError> {
    unpack(&ArchiveSource::open(path)?, rootfs, limits)
}

/// Reads the image of `source` and flattens it into `rootfs`, as [`unpack_archive`].
pub fn unpack(
    source: &dyn BlobSource,
    rootfs: &std::path::Path,
    limits: FlattenLimits,
) -> Result<OciImage, OciError> {
    let image = read_image(source)?;
    let mut total = 0u64;
    for layer in &image.layers {
        apply_layer(source, layer, rootfs, limits, &mut total)?;
    }
    Ok(image)
}

/// Whether `path` looks like an OCI or docker-save archive (a tar with `oci-layout` or
/// `manifest.json` at its top and no `metadata.yaml`).
pub fn is_oci_archive(path: &std::path::Path) -> bool {
    archive::looks_like_oci(path)
}
