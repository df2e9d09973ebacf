//! Importing an image: unpacked once into its volume on the pool, kept for export, then
//! recorded. A corrupt tarball leaves neither a row nor files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hutch_api::operation::StatusCode;
use hutch_storage::StorageDriver;

use super::cancel::Cancel;
use super::revert::Revert;
use crate::daemon::{image_vol, AppState, Daemon};
use crate::db::images::ImageRow;
use crate::error::{DaemonError, Result};

/// What an upload brought: one unified tarball, or the two files of a split image.
#[derive(Debug)]
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
    properties: BTreeMap<String, String>,
) -> Result<()> {
    // Checked and made under the image's lock: of two imports of one image, the second
    // finds the first's and touches nothing of it.
    let lock = d.image_locks.get(fp);
    let _g = lock.lock().await;
    if d.db.image_by_prefix(fp).is_ok_and(|r| r.fingerprint == fp) {
        return Err(DaemonError::Conflict(
            "Image with same fingerprint already exists".into(),
        ));
    }
    store_image(d, upload, fp, false, move |meta, now| {
        let created_at = time::OffsetDateTime::from_unix_timestamp(meta.creation_date)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| now.to_string());
        ImageRow {
            fingerprint: fp.to_string(),
            filename,
            size: size as i64,
            architecture: meta.lxd_architecture(),
            kind: "container".into(),
            public,
            auto_update: false,
            cached: false,
            // `X-LXD-properties` of the upload win over metadata.yaml's, as in LXD.
            properties: meta
                .properties
                .clone()
                .into_iter()
                .chain(properties)
                .collect(),
            profiles: vec!["default".into()],
            created_at,
            uploaded_at: now.to_string(),
            last_used_at: "0001-01-01T00:00:00Z".into(),
            expires_at: "0001-01-01T00:00:00Z".into(),
            update_source: None,
        }
    })
    .await
}

/// Unpacks image `fp` from its files into its volume, moves the files into the store and
/// records the row `make_row` makes from its metadata (and the time now); `prepared`: the
/// rootfs is already unpacked in the staging volume ([`staging_vol`]). The caller holds
/// the image's lock and has checked it is new. A failure at any step leaves no volume,
/// file or row.
pub(super) async fn store_image(
    d: &AppState,
    upload: &Upload,
    fp: &str,
    prepared: bool,
    make_row: impl FnOnce(&hutch_images::ImageMetadata, &str) -> ImageRow,
) -> Result<()> {
    let vol = image_vol(fp);
    let pool = d.default_pool()?;
    let file = d.image_file(fp);
    let stored_rootfs = file.with_file_name(format!("{fp}.rootfs"));
    let paths = match upload {
        Upload::Unified(p) => (p.clone(), None),
        Upload::Split { metadata, rootfs } => (metadata.clone(), Some(rootfs.clone())),
    };
    // Undone in full if any step fails: the volume and the stored files.
    let mut revert = Revert::new();
    {
        let (pool, vol, file, stored) = (
            pool.clone(),
            vol.clone(),
            file.clone(),
            stored_rootfs.clone(),
        );
        revert.add(move || {
            let _ = pool.delete_volume(&vol);
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(&stored);
        });
    }
    let (file2, stored2, pool2, fp2) = (
        file.clone(),
        stored_rootfs.clone(),
        pool.clone(),
        fp.to_string(),
    );
    let cancel = Cancel::current();
    let meta = tokio::task::spawn_blocking(move || -> Result<hutch_images::ImageMetadata> {
        let meta = unpack_into(
            &*pool2,
            &fp2,
            &paths.0,
            paths.1.as_deref(),
            prepared,
            &cancel,
        )?;
        cancel.check()?;
        use std::os::unix::fs::PermissionsExt;
        let private = || std::fs::Permissions::from_mode(0o600);
        std::fs::rename(&paths.0, &file2).map_err(|e| DaemonError::io("store", &file2, e))?;
        let _ = std::fs::set_permissions(&file2, private());
        if let Some(rootfs) = &paths.1 {
            std::fs::rename(rootfs, &stored2).map_err(|e| DaemonError::io("store", &stored2, e))?;
            let _ = std::fs::set_permissions(&stored2, private());
        }
        Ok(meta)
    })
    .await??;
    let row = make_row(&meta, &crate::now());
    d.db.insert_image(&row)?;
    revert.success();
    Ok(())
}

/// The volume an image is unpacked into before it is renamed to its own; startup removes
/// leftovers of these.
pub(super) fn staging_vol(fp: &str) -> PathBuf {
    Path::new("images").join(format!(".{fp}.unpacking"))
}

/// Unpacks an image (a unified tarball, or split metadata and rootfs) into its read-only
/// volume on `pool`: under a temporary name, renamed when complete, so a failure or a crash
/// leaves no image volume that looks whole. `prepared`: a split image's rootfs is already
/// in the staging volume (unpacked while it downloaded).
fn unpack_into(
    pool: &dyn StorageDriver,
    fp: &str,
    file: &Path,
    split_rootfs: Option<&Path>,
    prepared: bool,
    cancel: &Cancel,
) -> Result<hutch_images::ImageMetadata> {
    let bad = |e: hutch_images::ImageError| DaemonError::BadRequest(crate::chain(&e));
    let vol = image_vol(fp);
    let staging = staging_vol(fp);
    if !prepared {
        let _ = pool.delete_volume(&staging);
    }
    let unpacked = (|| {
        if !prepared {
            pool.create_volume(&staging)?;
        }
        let target = pool.path(&staging).join("rootfs");
        let limits = hutch_images::UnpackLimits::default();
        // metadata.yaml and templates/ are kept beside rootfs/, as LXD keeps them.
        let meta = match split_rootfs {
            None => {
                // Read through the cancel: a cancelled operation stops the unpack.
                let f = std::fs::File::open(file).map_err(|e| DaemonError::io("open", file, e))?;
                let reader = cancel.reader(f, Some("unpack"));
                hutch_images::unpack_unified_volume_from(reader, file, &pool.path(&staging), limits)
                    .map_err(bad)?
            }
            Some(rootfs) => {
                let meta =
                    hutch_images::unpack_split_metadata(file, &pool.path(&staging)).map_err(bad)?;
                if !prepared {
                    unpack_rootfs(rootfs, &target, limits, cancel).map_err(bad)?;
                }
                meta
            }
        };
        cancel.check()?;
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

/// A split image's rootfs unpacked into `target`: a tarball read through the cancel, a
/// squashfs by `unsquashfs`, killed by a cancel.
fn unpack_rootfs(
    rootfs: &Path,
    target: &Path,
    limits: hutch_images::UnpackLimits,
    cancel: &Cancel,
) -> std::result::Result<(), hutch_images::ImageError> {
    let io = |e| hutch_images::ImageError::io("read", rootfs, e);
    let mut f = std::fs::File::open(rootfs).map_err(io)?;
    if hutch_images::detect_extension(&mut f).map_err(io)? == ".squashfs" {
        return hutch_images::unpack_squashfs_until(rootfs, target, limits, &|| {
            cancel.is_cancelled()
        });
    }
    let reader = cancel.reader(f, Some("unpack"));
    hutch_images::unpack_split_rootfs_stream(reader, rootfs, target, limits)
}

/// Makes sure image `fp` has its volume on `pool` (images are unpacked into the default
/// pool at import, and into another pool the first time an instance is made there).
/// A cancel stops the unpack and removes it.
pub fn ensure_image_volume(
    d: &Daemon,
    pool: &dyn StorageDriver,
    fp: &str,
    cancel: &Cancel,
) -> Result<()> {
    if pool.path(&image_vol(fp)).exists() {
        return Ok(());
    }
    // Called on a blocking thread; two creates on a new pool unpack the image once.
    let lock = d.image_locks.get(fp);
    let _g = lock.blocking_lock();
    if pool.path(&image_vol(fp)).exists() {
        return Ok(());
    }
    let file = d.image_file(fp);
    let rootfs = file.with_file_name(format!("{fp}.rootfs"));
    let split = rootfs.exists().then_some(rootfs.as_path());
    unpack_into(pool, fp, &file, split, false, cancel).map(|_| ())
}

/// Writes through to a file, hashing and counting what goes by: the fingerprint of a
/// published image is known when its last byte is written.
/// A file being written whose sha256 and size are counted as it is.
pub(super) struct HashingFile {
    file: std::fs::File,
    hasher: sha2::Sha256,
    size: u64,
}

impl HashingFile {
    pub(super) fn new(file: std::fs::File) -> Self {
        HashingFile {
            file,
            hasher: sha2::Sha256::default(),
            size: 0,
        }
    }

    /// Syncs the file (`path` names it); returns its fingerprint and size.
    pub(super) fn sync(self, path: &Path) -> Result<(String, u64)> {
        self.file
            .sync_all()
            .map_err(|e| DaemonError::io("sync", path, e))?;
        Ok((hex::encode(sha2::Digest::finalize(self.hasher)), self.size))
    }
}

impl std::io::Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// `lxc publish`: packs the root filesystem of a stopped instance, or of a snapshot, into
/// a unified image tarball, then imports that as an upload; aliases are made last.
/// Returns the fingerprint and size. A failure leaves no image, file or alias.
pub async fn publish_image(
    d: &AppState,
    req: hutch_api::image::ImagesPost,
) -> Result<(String, u64)> {
    let bad = |m: &str| DaemonError::BadRequest(m.to_string());
    let source = req.source.clone().unwrap_or_default();
    let (instance, snapshot) = match source.kind.as_str() {
        "instance" | "container" if !source.name.contains('/') => (source.name.clone(), None),
        "instance" | "container" => return Err(bad("This is a snapshot")),
        "snapshot" => match source.name.split_once('/') {
            Some((i, s)) => (i.to_string(), Some(s.to_string())),
            None => return Err(bad("Not a snapshot")),
        },
        "virtual-machine" => return Err(bad("Virtual-machine images are not supported")),
        "url" => return Err(bad("Images from URLs are not supported")),
        "" => return Err(bad("No source provided")),
        _ => return Err(bad("Bad type")),
    };
    // The request's algorithm, else the server's `images.compression_algorithm`.
    let algorithm = if req.compression_algorithm.is_empty() {
        hutch_api::server_config::server_config_value(
            &d.db.server_config()?,
            "images.compression_algorithm",
        )
        .to_string()
    } else {
        req.compression_algorithm.clone()
    };
    let compression: hutch_images::Compression = algorithm
        .parse()
        .map_err(|e: hutch_images::ImageError| DaemonError::BadRequest(e.to_string()))?;
    for alias in &req.aliases {
        if d.db.alias(&alias.name)?.is_some() {
            return Err(DaemonError::Conflict(format!(
                "Alias already exists: {}",
                alias.name
            )));
        }
    }
    let lock = d.instance_lock(&instance);
    let _g = lock.lock().await;
    let row = d.db.instance_or_404(&instance)?;
    let rootfs = match &snapshot {
        None => {
            if super::runtime_status(d, &instance).0 != StatusCode::Stopped {
                return Err(bad(
                    "The instance is currently running: stop it first (lxc publish --force does)",
                ));
            }
            d.instance_volume(&instance)?.join("rootfs")
        }
        Some(snap) => {
            d.db.snapshot(&instance, snap)?;
            d.instance_pool(&instance)?
                .path(&crate::daemon::snapshot_vol(&instance, snap))
                .join("rootfs")
        }
    };
    // The properties of the image it came from (its `image.*` keys), unless given anew.
    let properties = if req.properties.is_empty() {
        row.config
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("image.")?.to_string(), v.clone())))
            .collect()
    } else {
        req.properties.clone()
    };
    let meta = hutch_images::ImageMetadata {
        architecture: row.architecture.clone(),
        creation_date: time::OffsetDateTime::now_utc().unix_timestamp(),
        expiry_date: 0,
        properties,
        templates: super::templates::volume_templates(&rootfs),
    };
    // Named like an upload, so that a crash leaves debris that startup removes.
    let tmp = d
        .dir
        .join("images")
        .join(format!(".upload-{}-publish", uuid::Uuid::new_v4()));
    let tmp2 = tmp.clone();
    let packed = tokio::task::spawn_blocking(move || -> Result<(String, u64)> {
        let file = std::fs::File::create(&tmp2).map_err(|e| DaemonError::io("create", &tmp2, e))?;
        let out = std::io::BufWriter::with_capacity(
            1 << 20,
            HashingFile {
                file,
                hasher: sha2::Sha256::default(),
                size: 0,
            },
        );
        // The instance's templates go with it, as LXD publishes them.
        let templates = rootfs.parent().map(|v| v.join("templates"));
        let out = hutch_images::pack_unified_with_templates(
            &rootfs,
            templates.as_deref(),
            &meta,
            compression,
            out,
        )
        .map_err(|e| DaemonError::failed("pack", "image", e))?
        .into_inner()
        .map_err(|e| DaemonError::io("write", &tmp2, e.into_error()))?;
        out.file
            .sync_all()
            .map_err(|e| DaemonError::io("sync", &tmp2, e))?;
        Ok((hex::encode(sha2::Digest::finalize(out.hasher)), out.size))
    })
    .await?;
    let upload = Upload::Unified(tmp);
    let (fp, size) = match packed {
        Ok(p) => p,
        Err(e) => {
            upload.remove();
            return Err(e);
        }
    };
    let imported = import_image(
        d,
        &upload,
        &fp,
        size,
        req.filename.clone(),
        req.public,
        BTreeMap::new(),
    )
    .await;
    upload.remove();
    imported?;
    for alias in &req.aliases {
        d.db.insert_alias(&crate::db::images::AliasRow {
            name: alias.name.clone(),
            fingerprint: fp.clone(),
            description: alias.description.clone(),
            kind: "container".into(),
        })?;
    }
    Ok((fp, size))
}
