//! The image resource as the API sees it: listing, reading, updating, deleting and
//! exporting images, receiving uploads, publishing, and aliases. Each action is one method
//! of [`Engine`]; unpacking and packing live in `images`.

use std::io::Write;
use std::path::PathBuf;

use hutch_api::image::{Image, ImageAlias, ImageAliasPut, ImageAliasRef, ImagePut, ImagesPost};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::files::FileStream;
use super::images::Upload;
use super::{blocking, Engine, Versioned};
use crate::daemon::{image_vol, Daemon};
use crate::db::images::{AliasRow, ImageRow};
use crate::db::intents::IntentKind;
use crate::error::{DaemonError, Result};

/// Largest image upload accepted.
const MAX_UPLOAD: u64 = 16 << 30;

/// An image just made: what the operation's metadata reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMade {
    pub fingerprint: String,
    pub size: u64,
}

/// One file of an export: its bytes and the name LXD gives it.
#[derive(Debug)]
pub struct ExportedFile {
    pub stream: FileStream,
    pub name: String,
}

/// What `GET /1.0/images/<fp>/export` sends: one file, or the two of a split image.
#[derive(Debug)]
pub enum ImageExport {
    Unified(ExportedFile),
    Split {
        metadata: ExportedFile,
        rootfs: ExportedFile,
    },
}

/// Work that ends with an image made.
pub type ImageWork = std::pin::Pin<Box<dyn std::future::Future<Output = Result<ImageMade>> + Send>>;

/// An image upload being received into temporary files under `images/`. Dropped without
/// [`Engine::import_upload`], its files are removed.
#[derive(Debug)]
pub struct ImageUpload {
    files: Option<Upload>,
    file: std::fs::File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl ImageUpload {
    /// Appends a chunk of the current part.
    pub fn write(&mut self, chunk: &[u8]) -> Result<()> {
        self.size += chunk.len() as u64;
        if self.size > MAX_UPLOAD {
            return Err(DaemonError::BadRequest(format!(
                "Image is larger than the {MAX_UPLOAD} bytes allowed"
            )));
        }
        self.hasher.update(chunk);
        self.file
            .write_all(chunk)
            .map_err(|e| DaemonError::io("write", &self.path, e))
    }

    /// A split image: the metadata part is complete, the rootfs part follows.
    pub fn next_part(&mut self) -> Result<()> {
        let Some(Upload::Split { rootfs, .. }) = &self.files else {
            return Err(DaemonError::BadRequest("Invalid multipart image".into()));
        };
        self.file
            .sync_all()
            .map_err(|e| DaemonError::io("sync", &self.path, e))?;
        self.path = rootfs.clone();
        self.file = std::fs::File::create(&self.path)
            .map_err(|e| DaemonError::io("create", &self.path, e))?;
        Ok(())
    }
}

impl Drop for ImageUpload {
    fn drop(&mut self) {
        if let Some(files) = self.files.take() {
            files.remove();
        }
    }
}

fn image_object(d: &Daemon, row: &ImageRow) -> Result<Image> {
    let aliases =
        d.db.aliases()?
            .into_iter()
            .filter(|a| a.fingerprint == row.fingerprint)
            .map(|a| ImageAliasRef {
                name: a.name,
                description: a.description,
            })
            .collect();
    Ok(Image {
        aliases,
        architecture: row.architecture.clone(),
        auto_update: row.auto_update,
        cached: row.cached,
        fingerprint: row.fingerprint.clone(),
        filename: row.filename.clone(),
        public: row.public,
        kind: row.kind.clone(),
        size: row.size,
        profiles: row.profiles.clone(),
        properties: row.properties.clone(),
        expires_at: row.expires_at.clone(),
        created_at: row.created_at.clone(),
        last_used_at: row.last_used_at.clone(),
        uploaded_at: row.uploaded_at.clone(),
        update_source: row.update_source.clone(),
    })
}

/// What an image's ETag covers: its writable fields.
fn image_version(row: &ImageRow) -> Value {
    json!([
        row.auto_update,
        row.properties,
        row.public,
        row.expires_at,
        row.profiles
    ])
}

fn alias_object(a: AliasRow) -> ImageAlias {
    ImageAlias {
        name: a.name,
        description: a.description,
        target: a.fingerprint,
        kind: a.kind,
    }
}

impl Engine {
    /// Image URLs, or objects when `recursion` > 0.
    pub fn list_images(&self, recursion: u8) -> Result<Vec<Value>> {
        let rows = self.d.db.images()?;
        rows.iter()
            .map(|r| {
                Ok(if recursion > 0 {
                    serde_json::to_value(image_object(&self.d, r)?).unwrap_or_default()
                } else {
                    Value::String(format!("/1.0/images/{}", r.fingerprint))
                })
            })
            .collect()
    }

    /// One image, by fingerprint or unique prefix.
    pub fn image(&self, fingerprint: &str) -> Result<Versioned<Image>> {
        let row = self.d.db.image_by_prefix(fingerprint)?;
        Ok(Versioned {
            object: image_object(&self.d, &row)?,
            version: image_version(&row),
        })
    }

    /// `POST /1.0/images/<fp>/secret`: a one-time secret that lets an untrusted caller (a
    /// server pulling the image) read this private image and export it once, held by a
    /// token operation naming the image.
    pub fn image_secret(
        &self,
        fingerprint: &str,
    ) -> Result<std::sync::Arc<crate::operations::OpEntry>> {
        let fp = self.d.db.image_by_prefix(fingerprint)?.fingerprint;
        let resources = std::collections::BTreeMap::from([(
            "images".to_string(),
            vec![format!("/1.0/images/{fp}")],
        )]);
        let secret = crate::operations::new_secret();
        Ok(self.d.ops.create_token_on(
            "Executing operation",
            resources,
            serde_json::json!({ "secret": secret }),
        ))
    }

    /// Whether `secret` is a live image secret of image `fingerprint` (its full
    /// fingerprint); `consume` cancels it, as an export does (secrets are single-use).
    pub fn image_secret_valid(&self, fingerprint: &str, secret: &str, consume: bool) -> bool {
        if secret.is_empty() {
            return false;
        }
        let Ok(row) = self.d.db.image_by_prefix(fingerprint) else {
            return false;
        };
        let resource = format!("/1.0/images/{}", row.fingerprint);
        let found = self.d.ops.all().into_iter().find(|op| {
            let s = op.snapshot();
            s.class == "token"
                && s.status_code == hutch_api::operation::StatusCode::Running as u16
                && s.resources
                    .get("images")
                    .is_some_and(|r| r.contains(&resource))
                && s.metadata["secret"].as_str().is_some_and(|m| {
                    m.len() == secret.len()
                        && m.bytes()
                            .zip(secret.bytes())
                            .fold(0u8, |a, (x, y)| a | (x ^ y))
                            == 0
                })
        });
        match found {
            Some(op) if consume => self.d.ops.cancel(&op),
            Some(_) => true,
            None => false,
        }
    }

    /// `PUT`/`PATCH` of an image's writable fields, as LXD's: the If-Match checked, the
    /// profiles must exist, a zero `expires_at` keeps the current one.
    pub fn update_image(
        &self,
        fingerprint: &str,
        req: ImagePut,
        if_match: Option<&str>,
    ) -> Result<()> {
        let mut row = self.d.db.image_by_prefix(fingerprint)?;
        super::check_version(if_match, &image_version(&row))?;
        for p in &req.profiles {
            if self.d.db.profile(p)?.is_none() {
                return Err(DaemonError::BadRequest(format!(
                    "Profile '{p}' doesn't exist"
                )));
            }
        }
        row.auto_update = req.auto_update;
        row.properties = req.properties;
        row.public = req.public;
        if !req.expires_at.is_empty() && !req.expires_at.starts_with("0001-01-01") {
            row.expires_at = req.expires_at;
        }
        row.profiles = req.profiles;
        self.d.db.update_image(&row)?;
        Ok(())
    }

    /// Checks the image exists; the work removes it (its full fingerprint is returned).
    pub fn delete_image(&self, fingerprint: &str) -> Result<(String, super::Work)> {
        let fp = self.d.db.image_by_prefix(fingerprint)?.fingerprint;
        let e = self.clone();
        let fp2 = fp.clone();
        Ok((fp, Box::pin(async move { remove_image(&e, &fp2).await })))
    }

    /// The image's files, streamed for download, named as LXD names them: a unified image
    /// is `<fingerprint><ext>`; a split one is `meta-<fingerprint><ext>` (part `metadata`)
    /// and `<fingerprint><ext>` (part `rootfs`), each extension told by the file's magic.
    pub fn export_image(&self, fingerprint: &str) -> Result<ImageExport> {
        let row = self.d.db.image_by_prefix(fingerprint)?;
        let fp = row.fingerprint;
        let path = self.d.image_file(&fp);
        let open = |path: &std::path::Path| -> Result<(FileStream, String)> {
            let mut file =
                std::fs::File::open(path).map_err(|e| DaemonError::io("open", path, e))?;
            let ext = hutch_images::detect_extension(&mut file)
                .map_err(|e| DaemonError::io("read", path, e))?;
            Ok((FileStream::new(file), format!("{fp}{ext}")))
        };
        let rootfs = path.with_file_name(format!("{fp}.rootfs"));
        if rootfs.exists() {
            let (metadata, meta_name) = open(&path)?;
            let (rootfs, rootfs_name) = open(&rootfs)?;
            return Ok(ImageExport::Split {
                metadata: ExportedFile {
                    stream: metadata,
                    name: format!("meta-{meta_name}"),
                },
                rootfs: ExportedFile {
                    stream: rootfs,
                    name: rootfs_name,
                },
            });
        }
        let (stream, name) = open(&path)?;
        Ok(ImageExport::Unified(ExportedFile { stream, name }))
    }

    /// `POST /1.0/images/<fp>/refresh`: checks the image exists; the work refreshes it from
    /// its source (an image without one fails as LXD's does) and ends with metadata
    /// `{"refreshed": bool}`.
    pub fn refresh_image(&self, fingerprint: &str) -> Result<(String, super::Work)> {
        let row = self.d.db.image_by_prefix(fingerprint)?;
        let fp = row.fingerprint.clone();
        if row.update_source.is_none() {
            let message = format!(
                "Failed to update image {fp:?} in project \"default\": Image source not found"
            );
            return Ok((
                fp,
                Box::pin(async move { Err(DaemonError::NotFound(message)) }),
            ));
        }
        let e = self.clone();
        Ok((
            fp,
            Box::pin(async move {
                let refreshed = super::image_tasks::refresh_image(&e, &row).await?;
                if let Some(op) = crate::operations::current() {
                    let mut m = serde_json::Map::new();
                    m.insert("refreshed".into(), refreshed.into());
                    op.extend_metadata(m);
                }
                Ok(())
            }),
        ))
    }

    /// Starts receiving an upload: one unified tarball, or (`split`) metadata then rootfs.
    pub fn begin_upload(&self, split: bool) -> Result<ImageUpload> {
        let tmp = |what: &str| {
            self.d
                .dir
                .join("images")
                .join(format!(".upload-{}-{what}", uuid::Uuid::new_v4()))
        };
        let files = if split {
            Upload::Split {
                metadata: tmp("meta"),
                rootfs: tmp("rootfs"),
            }
        } else {
            Upload::Unified(tmp("unified"))
        };
        let path = match &files {
            Upload::Unified(p) => p.clone(),
            Upload::Split { metadata, .. } => metadata.clone(),
        };
        let file = std::fs::File::create(&path).map_err(|e| DaemonError::io("create", &path, e))?;
        Ok(ImageUpload {
            files: Some(files),
            file,
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Checks a complete upload against the fingerprint the client expects; the work
    /// imports it, `properties` (`X-LXD-properties`) over those of its metadata.yaml. Its
    /// files are removed either way. An OCI or docker-save archive is converted (`oci`:
    /// the client said it is one, so anything else is refused).
    pub fn import_upload(
        &self,
        mut upload: ImageUpload,
        expected: Option<String>,
        filename: String,
        public: bool,
        properties: std::collections::BTreeMap<String, String>,
        oci: bool,
    ) -> Result<ImageWork> {
        upload
            .file
            .sync_all()
            .map_err(|e| DaemonError::io("sync", &upload.path, e))?;
        let fp = hex::encode(std::mem::take(&mut upload.hasher).finalize());
        if let Some(want) = expected.filter(|w| !w.is_empty()) {
            if want != fp {
                return Err(DaemonError::BadRequest(format!(
                    "fingerprints don't match, got {fp} expected {want}"
                )));
            }
        }
        let e = self.clone();
        Ok(Box::pin(async move {
            let files = upload.files.as_ref().expect("files until dropped");
            if let Some(made) = e
                .import_if_oci(files, oci, &filename, public, &properties)
                .await?
            {
                drop(upload);
                return Ok(made);
            }
            let size = upload.size;
            super::import_image(&e, files, &fp, size, filename, public, properties).await?;
            drop(upload);
            e.d.events
                .lifecycle("image-created", &format!("/1.0/images/{fp}"), json!({}));
            Ok(ImageMade {
                fingerprint: fp,
                size,
            })
        }))
    }

    /// Imports `files` as an OCI image when they are an OCI or docker-save archive
    /// (`required`: they must be); `None` when they are not one.
    async fn import_if_oci(
        &self,
        files: &super::images::Upload,
        required: bool,
        filename: &str,
        public: bool,
        properties: &std::collections::BTreeMap<String, String>,
    ) -> Result<Option<ImageMade>> {
        let super::images::Upload::Unified(path) = files else {
            return match required {
                true => Err(DaemonError::BadRequest(
                    "an OCI image is one archive, not a split image".into(),
                )),
                false => Ok(None),
            };
        };
        let p = path.clone();
        let oci = tokio::task::spawn_blocking(move || hutch_oci::is_oci_archive(&p)).await?;
        if !oci {
            return match required {
                true => Err(DaemonError::BadRequest(
                    "not an OCI archive: no oci-layout or manifest.json at the top of a plain tar"
                        .into(),
                )),
                false => Ok(None),
            };
        }
        let (fingerprint, size) = super::oci::import_archive(
            self,
            path,
            filename.to_string(),
            public,
            properties.clone(),
        )
        .await?;
        self.d.events.lifecycle(
            "image-created",
            &format!("/1.0/images/{fingerprint}"),
            json!({}),
        );
        Ok(Some(ImageMade { fingerprint, size }))
    }

    /// `lxc publish`: an image from a stopped instance or a snapshot; or, with an `image`
    /// source, an image pulled from a remote (`lxc image copy`).
    pub fn publish_image(&self, req: ImagesPost) -> ImageWork {
        let e = self.clone();
        if req.source.as_ref().is_some_and(|s| s.kind == "image") {
            return Box::pin(async move { e.copy_remote_image(req).await });
        }
        Box::pin(async move {
            let (fp, size) = super::publish_image(&e, req).await?;
            e.d.events
                .lifecycle("image-created", &format!("/1.0/images/{fp}"), json!({}));
            Ok(ImageMade {
                fingerprint: fp,
                size,
            })
        })
    }

    /// `POST /1.0/images` with a remote `image` source: pulled (or found in the store),
    /// then given the request's aliases.
    async fn copy_remote_image(&self, req: ImagesPost) -> Result<ImageMade> {
        let s = req.source.clone().unwrap_or_default();
        let source = super::image_pull::PullSource::new(
            &s.server,
            &s.protocol,
            &s.mode,
            &s.alias,
            &s.fingerprint,
        )?
        .with_credentials(&s.certificate, &s.secret)?;
        for alias in &req.aliases {
            if self.d.db.alias(&alias.name)?.is_some() {
                return Err(DaemonError::Conflict(format!(
                    "Alias already exists: {}",
                    alias.name
                )));
            }
        }
        let options = super::image_pull::PullOptions {
            cached: false,
            auto_update: Some(req.auto_update),
            public: req.public,
            prefer_cached: false,
        };
        let row = super::image_pull::pull_image(self, &source, options).await?;
        for alias in &req.aliases {
            self.d.db.insert_alias(&AliasRow {
                name: alias.name.clone(),
                fingerprint: row.fingerprint.clone(),
                description: alias.description.clone(),
                kind: "container".into(),
            })?;
        }
        Ok(ImageMade {
            fingerprint: row.fingerprint,
            size: row.size as u64,
        })
    }

    /// Alias URLs, or objects when `recursion` > 0.
    pub fn list_aliases(&self, recursion: u8) -> Result<Vec<Value>> {
        Ok(self
            .d
            .db
            .aliases()?
            .into_iter()
            .map(|a| {
                if recursion > 0 {
                    serde_json::to_value(alias_object(a)).unwrap_or_default()
                } else {
                    Value::String(format!("/1.0/images/aliases/{}", a.name))
                }
            })
            .collect())
    }

    fn alias_row(&self, name: &str) -> Result<AliasRow> {
        self.d
            .db
            .alias(name)?
            .ok_or_else(|| DaemonError::NotFound("Image alias not found".into()))
    }

    pub fn alias(&self, name: &str) -> Result<Versioned<ImageAlias>> {
        let a = alias_object(self.alias_row(name)?);
        let version = json!([a.target, a.description]);
        Ok(Versioned { object: a, version })
    }

    pub fn create_alias(&self, req: ImageAlias) -> Result<()> {
        if req.name.is_empty() || req.name.starts_with('/') {
            return Err(DaemonError::BadRequest("Invalid alias name".into()));
        }
        let image = self.d.db.image_by_prefix(&req.target)?;
        self.d.db.insert_alias(&AliasRow {
            name: req.name,
            fingerprint: image.fingerprint,
            description: req.description,
            kind: "container".into(),
        })
    }

    pub fn update_alias(&self, name: &str, req: ImageAliasPut) -> Result<()> {
        let mut a = self.alias_row(name)?;
        if !req.target.is_empty() {
            a.fingerprint = self.d.db.image_by_prefix(&req.target)?.fingerprint;
        }
        a.description = req.description;
        self.d.db.update_alias(&a)
    }

    pub fn rename_alias(&self, name: &str, new: &str) -> Result<()> {
        self.alias_row(name)?;
        if new.is_empty() || new.starts_with('/') {
            return Err(DaemonError::BadRequest("Invalid alias name".into()));
        }
        if self.d.db.alias(new)?.is_some() {
            return Err(DaemonError::Conflict(format!(
                "Alias {new:?} already exists"
            )));
        }
        self.d.db.rename_alias(name, new)
    }

    pub fn delete_alias(&self, name: &str) -> Result<()> {
        self.alias_row(name)?;
        self.d.db.delete_alias(name)
    }
}

/// Removes image `fp` under its lock: the delete recorded first, then finished.
pub(super) async fn remove_image(d: &super::Engine, fp: &str) -> Result<()> {
    let lock = d.image_locks.get(fp);
    let _g = lock.lock().await;
    // Instances are independent clones (btrfs snapshots keep their shared extents):
    // deleting the image volume takes nothing of theirs.
    let (d2, fp2) = (d.d.clone(), fp.to_string());
    blocking(move || {
        d2.db.record_intent(IntentKind::Image, "", &fp2)?;
        finish_delete_image(&d2, &fp2)
    })
    .await?;
    d.image_locks.prune();
    d.events
        .lifecycle("image-deleted", &format!("/1.0/images/{fp}"), json!({}));
    Ok(())
}

/// Removes an image whose delete was recorded: its files, its volume on every pool, then
/// its row and the record. Safe to run again after a crash at any step.
pub fn finish_delete_image(d: &Daemon, fp: &str) -> Result<()> {
    let file = d.image_file(fp);
    for path in [file.with_file_name(format!("{fp}.rootfs")), file] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(DaemonError::io("remove", &path, e))
            }
            _ => {}
        }
    }
    for pool in d.pool_names() {
        d.pool(&pool)?.delete_volume(&image_vol(fp))?;
    }
    d.db.delete_image(fp)?;
    d.db.clear_intent(IntentKind::Image, "", fp)
}
