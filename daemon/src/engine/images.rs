//! Importing an image: unpacked once into its volume on the pool, kept for export, then
//! recorded. A corrupt tarball leaves neither a row nor files.

use std::path::PathBuf;

use crate::daemon::{image_vol, AppState};
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
    let staging = std::path::Path::new("images").join(format!(".{fp}.unpacking"));
    let file = d.image_file(fp);
    let stored_rootfs = file.with_file_name(format!("{fp}.rootfs"));
    let (staging2, vol2, d2) = (staging.clone(), vol.clone(), d.clone());
    let paths = match upload {
        Upload::Unified(p) => (p.clone(), None),
        Upload::Split { metadata, rootfs } => (metadata.clone(), Some(rootfs.clone())),
    };
    let (file2, stored2) = (file.clone(), stored_rootfs.clone());
    let meta = tokio::task::spawn_blocking(move || -> Result<hutch_images::ImageMetadata> {
        let bad = |e: hutch_images::ImageError| DaemonError::BadRequest(crate::chain(&e));
        let _ = d2.pool.delete_volume(&staging2);
        d2.pool.create_volume(&staging2)?;
        let target = d2.pool.path(&staging2).join("rootfs");
        let limits = hutch_images::UnpackLimits::default();
        let meta = match &paths.1 {
            None => hutch_images::unpack_unified(&paths.0, &target, limits).map_err(bad)?,
            Some(rootfs) => {
                let meta = hutch_images::read_split_metadata(&paths.0).map_err(bad)?;
                hutch_images::unpack_split_rootfs(rootfs, &target, limits).map_err(bad)?;
                meta
            }
        };
        d2.pool.rename_volume(&staging2, &vol2)?;
        // Instances are cloned from it; nothing may change it.
        d2.pool.set_readonly(&vol2, true)?;
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
            let _ = d.pool.delete_volume(&staging);
            let _ = d.pool.delete_volume(&vol);
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
        let _ = d.pool.delete_volume(&vol);
        let _ = std::fs::remove_file(&file);
        let _ = std::fs::remove_file(&stored_rootfs);
        return Err(e);
    }
    Ok(())
}
