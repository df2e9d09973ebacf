//! Importing an image: unpacked once into its volume on the pool, kept for export, then
//! recorded. A corrupt tarball leaves neither a row nor files.

use std::path::{Path, PathBuf};

use hutch_storage::StorageDriver;

use crate::daemon::{image_vol, AppState, Daemon};
use crate::db::images::ImageRow;
use crate::error::{DaemonError, Result};

/// What an upload brought: one unified tarball, or the two files of a split image.
pub enum Upload {
    Unified(PathBuf),
    Split { metadata: PathBuf, rootfs: PathBuf },
}

impl Upload {
    /// Removes the uploaded files.
    pub fn remove(&self) {
        match self {
            Upload::Unified(p) => {
                let _ = std::fs::remove_file(p);
            }
            Upload::Split { metadata, rootfs } => {
                let _ = std::fs::remove_file(metadata);
                let _ = std::fs::remove_file(rootfs);
            }
        }
    }
}

/// Unpacks the image once into its volume (temporary name, renamed when complete), keeps
/// the uploaded files for export, then records it. A corrupt tarball leaves neither a row
/// nor files.
pub async fn import_image(
    d: &AppState,
    upload: &Upload,
    fp: &str,
    size: u64,
    filename: String,
    public: bool,
) -> Result<()> {
    if d.db.image_by_prefix(fp).is_ok_and(|r| r.fingerprint == fp) {
        return Err(DaemonError::Conflict(
            "Image with same fingerprint already exists".into(),
        ));
    }
    let vol = image_vol(fp);
    let pool = d.default_pool()?;
    let file = d.image_file(fp);
    let stored_rootfs = file.with_file_name(format!("{fp}.rootfs"));
    let paths = match upload {
        Upload::Unified(p) => (p.clone(), None),
        Upload::Split { metadata, rootfs } => (metadata.clone(), Some(rootfs.clone())),
    };
    let (file2, stored2, pool2, fp2) = (
        file.clone(),
        stored_rootfs.clone(),
        pool.clone(),
        fp.to_string(),
    );
    let meta = tokio::task::spawn_blocking(move || -> Result<hutch_images::ImageMetadata> {
        let meta = unpack_into(&*pool2, &fp2, &paths.0, paths.1.as_deref())?;
        std::fs::rename(&paths.0, &file2).map_err(|e| DaemonError::io("store", &file2, e))?;
        if let Some(rootfs) = &paths.1 {
            std::fs::rename(rootfs, &stored2).map_err(|e| DaemonError::io("store", &stored2, e))?;
        }
        Ok(meta)
    })
    .await
    .map_err(|e| DaemonError::Internal(e.to_string()))?;
    let meta = match meta {
        Ok(m) => m,
        Err(e) => {
            let _ = pool.delete_volume(&vol);
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(&stored_rootfs);
            return Err(e);
        }
    };
    let now = crate::now();
    let created_at = time::OffsetDateTime::from_unix_timestamp(meta.creation_date)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| now.clone());
    let row = ImageRow {
        fingerprint: fp.to_string(),
        filename,
        size: size as i64,
        architecture: meta.lxd_architecture(),
        kind: "container".into(),
        public,
        auto_update: false,
        cached: false,
        properties: meta.properties.clone(),
        profiles: vec!["default".into()],
        created_at,
        uploaded_at: now,
        last_used_at: "0001-01-01T00:00:00Z".into(),
        expires_at: "0001-01-01T00:00:00Z".into(),
    };
    if let Err(e) = d.db.insert_image(&row) {
        let _ = pool.delete_volume(&vol);
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&stored_rootfs);
        return Err(e);
    }
    Ok(())
}

/// Unpacks an image (a unified tarball, or split metadata and rootfs) into its read-only
/// volume on `pool`: under a temporary name, renamed when complete, so a failure or a crash
/// leaves no image volume that looks whole.
fn unpack_into(
    pool: &dyn StorageDriver,
    fp: &str,
    file: &Path,
    split_rootfs: Option<&Path>,
) -> Result<hutch_images::ImageMetadata> {
    let bad = |e: hutch_images::ImageError| DaemonError::BadRequest(crate::chain(&e));
    let vol = image_vol(fp);
    let staging = Path::new("images").join(format!(".{fp}.unpacking"));
    let _ = pool.delete_volume(&staging);
    let unpacked = (|| {
        pool.create_volume(&staging)?;
        let target = pool.path(&staging).join("rootfs");
        let limits = hutch_images::UnpackLimits::default();
        let meta = match split_rootfs {
            None => hutch_images::unpack_unified(file, &target, limits).map_err(bad)?,
            Some(rootfs) => {
                let meta = hutch_images::read_split_metadata(file).map_err(bad)?;
                hutch_images::unpack_split_rootfs(rootfs, &target, limits).map_err(bad)?;
                meta
            }
        };
        pool.rename_volume(&staging, &vol)?;
        // Instances are cloned from it; nothing may change it.
        pool.set_readonly(&vol, true)?;
        Ok(meta)
    })();
    if unpacked.is_err() {
        let _ = pool.delete_volume(&staging);
    }
    unpacked
}

/// Makes sure image `fp` has its volume on `pool` (images are unpacked into the default
/// pool at import, and into another pool the first time an instance is made there).
pub fn ensure_image_volume(d: &Daemon, pool: &dyn StorageDriver, fp: &str) -> Result<()> {
    if pool.path(&image_vol(fp)).exists() {
        return Ok(());
    }
    let file = d.image_file(fp);
    let rootfs = file.with_file_name(format!("{fp}.rootfs"));
    let split = rootfs.exists().then_some(rootfs.as_path());
    unpack_into(pool, fp, &file, split).map(|_| ())
}
