//! `/1.0/images`: upload (unified tarballs), list, get, update, delete, export, aliases.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use hutch_api::image::{Image, ImageAlias, ImageAliasPut, ImageAliasRef, ImagePut};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{accepted, created, empty, parse_json, sync, sync_etag};
use crate::daemon::AppState;
use crate::db::images::{AliasRow, ImageRow};
use crate::engine::{self, Upload};
use crate::error::{DaemonError, Result};

/// Largest image upload accepted.
const MAX_UPLOAD: u64 = 16 << 30;

pub fn routes() -> Router<AppState> {
    Router::new()
        // Images are hundreds of megabytes: no body limit (uploads stream to disk).
        .route(
            "/1.0/images",
            get(list)
                .post(upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/1.0/images/aliases", get(list_aliases).post(create_alias))
        .route(
            "/1.0/images/aliases/:name",
            get(one_alias)
                .put(put_alias)
                .patch(put_alias)
                .post(rename_alias)
                .delete(delete_alias),
        )
        .route(
            "/1.0/images/:fp",
            get(one).put(put).patch(put).delete(delete),
        )
        .route("/1.0/images/:fp/export", get(export))
}

fn image_object(d: &AppState, row: &ImageRow) -> Result<Image> {
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
    })
}

async fn list(
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let rows = d.db.images()?;
    if super::recursion(&q) > 0 {
        Ok(sync(
            rows.iter()
                .map(|r| image_object(&d, r))
                .collect::<Result<Vec<_>>>()?,
        ))
    } else {
        Ok(sync(
            rows.iter()
                .map(|r| format!("/1.0/images/{}", r.fingerprint))
                .collect::<Vec<_>>(),
        ))
    }
}

async fn one(State(d): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    let row = d.db.image_by_prefix(&fp)?;
    let obj = image_object(&d, &row)?;
    let tag = json!([
        row.auto_update,
        row.properties,
        row.public,
        row.expires_at,
        row.profiles
    ]);
    Ok(sync_etag(obj, &tag))
}

async fn put(State(d): State<AppState>, Path(fp): Path<String>, body: Bytes) -> Result<Response> {
    let mut row = d.db.image_by_prefix(&fp)?;
    let req: ImagePut = parse_json(&body)?;
    row.auto_update = req.auto_update;
    row.properties = req.properties;
    row.public = req.public;
    if !req.expires_at.is_empty() {
        row.expires_at = req.expires_at;
    }
    row.profiles = req.profiles;
    d.db.update_image(&row)?;
    Ok(empty())
}

async fn delete(State(d): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    let row = d.db.image_by_prefix(&fp)?;
    let op = d.ops.create(
        "task",
        "Deleting image",
        BTreeMap::from([(
            "images".to_string(),
            vec![format!("/1.0/images/{}", row.fingerprint)],
        )]),
        Value::Null,
    );
    let d2 = d.clone();
    d.ops.run(op.clone(), async move {
        let lock = d2.image_locks.get(&row.fingerprint);
        let _g = lock.lock().await;
        // Instances are independent clones (btrfs snapshots keep their shared extents):
        // deleting the image volume takes nothing of theirs.
        d2.db.delete_image(&row.fingerprint)?;
        let d3 = d2.clone();
        let fp = row.fingerprint.clone();
        tokio::task::spawn_blocking(move || {
            let file = d3.image_file(&fp);
            let _ = std::fs::remove_file(file.with_file_name(format!("{fp}.rootfs")));
            let _ = std::fs::remove_file(&file);
            // Its volume on every pool it was unpacked into.
            for pool in d3.pool_names() {
                d3.pool(&pool)?
                    .delete_volume(&crate::daemon::image_vol(&fp))?;
            }
            Ok::<_, DaemonError>(())
        })
        .await??;
        d2.image_locks.prune();
        d2.events.lifecycle(
            "image-deleted",
            &format!("/1.0/images/{}", row.fingerprint),
            json!({}),
        );
        Ok(None)
    });
    Ok(accepted(&op))
}

async fn export(State(d): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    let row = d.db.image_by_prefix(&fp)?;
    let path = d.image_file(&row.fingerprint);
    if path
        .with_file_name(format!("{}.rootfs", row.fingerprint))
        .exists()
    {
        return Err(DaemonError::BadRequest(
            "Exporting split images is not supported yet".into(),
        ));
    }
    let file = std::fs::File::open(&path).map_err(|e| DaemonError::io("open", &path, e))?;
    let body = Body::from_stream(super::file_stream(file));
    Ok((
        [
            ("Content-Type", "application/octet-stream".to_string()),
            (
                "Content-Disposition",
                format!(
                    "attachment;filename={}",
                    if row.filename.is_empty() {
                        format!("{}.tar.gz", row.fingerprint)
                    } else {
                        row.filename.clone()
                    }
                ),
            ),
        ],
        body,
    )
        .into_response())
}

/// Streams `stream` into `path`, feeding `hasher` and counting into `size`.
async fn receive<S, E>(
    stream: S,
    path: &std::path::Path,
    hasher: &mut Sha256,
    size: &mut u64,
) -> Result<()>
where
    S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut stream = stream;
    let mut file = std::fs::File::create(path).map_err(|e| DaemonError::io("create", path, e))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DaemonError::BadRequest(format!("upload failed: {e}")))?;
        *size += chunk.len() as u64;
        if *size > MAX_UPLOAD {
            return Err(DaemonError::BadRequest(format!(
                "Image is larger than the {MAX_UPLOAD} bytes allowed"
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| DaemonError::io("write", path, e))?;
    }
    file.sync_all()
        .map_err(|e| DaemonError::io("sync", path, e))
}

/// `POST /1.0/images` with a JSON body: an image from an instance or a snapshot
/// (`lxc publish`), as an operation whose metadata carries the fingerprint.
async fn publish(d: AppState, req: hutch_api::image::ImagesPost) -> Result<Response> {
    let op = d
        .ops
        .create("task", "Downloading image", BTreeMap::new(), Value::Null);
    let d2 = d.clone();
    d.ops.run(op.clone(), async move {
        let (fp, size) = engine::publish_image(&d2, req).await?;
        d2.events
            .lifecycle("image-created", &format!("/1.0/images/{fp}"), json!({}));
        Ok(Some(json!({"fingerprint": fp, "size": size.to_string()})))
    });
    Ok(accepted(&op))
}

/// `POST /1.0/images` with an image as the body: a unified tarball, or a split image as
/// multipart/form-data (`metadata` first, then `rootfs`).
async fn upload(State(d): State<AppState>, req: Request) -> Result<Response> {
    let headers = req.headers().clone();
    let ctype = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if ctype.starts_with("application/json") {
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .map_err(|e| DaemonError::BadRequest(format!("Failed to read the request: {e}")))?;
        return publish(d, parse_json(&body)?).await;
    }
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let expected = header("x-lxd-fingerprint");
    let public =
        header("x-lxd-public").is_some_and(|v| hutch_api::config::parse_bool(&v).unwrap_or(false));
    let tmp = |what: &str| {
        d.dir
            .join("images")
            .join(format!(".upload-{}-{what}", uuid::Uuid::new_v4()))
    };
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let (upload, filename, received) = if ctype.starts_with("multipart/") {
        let (metadata, rootfs) = (tmp("meta"), tmp("rootfs"));
        let mut filename = String::new();
        let received = async {
            let mut mp = Multipart::from_request(req, &())
                .await
                .map_err(|e| DaemonError::BadRequest(format!("Invalid multipart image: {e}")))?;
            let invalid = || DaemonError::BadRequest("Invalid multipart image".into());
            let meta = mp
                .next_field()
                .await
                .map_err(|_| invalid())?
                .ok_or_else(invalid)?;
            if meta.name() != Some("metadata") {
                return Err(invalid());
            }
            receive(meta, &metadata, &mut hasher, &mut size).await?;
            let root = mp
                .next_field()
                .await
                .map_err(|_| invalid())?
                .ok_or_else(invalid)?;
            match root.name() {
                Some("rootfs") => {}
                Some("rootfs.img") => {
                    return Err(DaemonError::BadRequest(
                        "Virtual-machine images are not supported".into(),
                    ))
                }
                _ => return Err(invalid()),
            }
            filename = root.file_name().unwrap_or_default().to_string();
            receive(root, &rootfs, &mut hasher, &mut size).await
        }
        .await;
        (Upload::Split { metadata, rootfs }, filename, received)
    } else {
        let file = tmp("unified");
        let received = receive(
            req.into_body().into_data_stream(),
            &file,
            &mut hasher,
            &mut size,
        )
        .await;
        (
            Upload::Unified(file),
            header("x-lxd-filename").unwrap_or_default(),
            received,
        )
    };
    if let Err(e) = received {
        upload.remove();
        return Err(e);
    }
    let fp = hex::encode(hasher.finalize());
    if let Some(want) = expected.filter(|w| !w.is_empty()) {
        if want != fp {
            upload.remove();
            return Err(DaemonError::BadRequest(format!(
                "fingerprints don't match, got {fp} expected {want}"
            )));
        }
    }
    let op = d
        .ops
        .create("task", "Downloading image", BTreeMap::new(), Value::Null);
    let d2 = d.clone();
    d.ops.run(op.clone(), async move {
        let result = engine::import_image(&d2, &upload, &fp, size, filename, public).await;
        upload.remove();
        result?;
        d2.events
            .lifecycle("image-created", &format!("/1.0/images/{fp}"), json!({}));
        Ok(Some(json!({"fingerprint": fp, "size": size.to_string()})))
    });
    Ok(accepted(&op))
}

async fn list_aliases(
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let rows = d.db.aliases()?;
    if super::recursion(&q) > 0 {
        Ok(sync(rows.into_iter().map(alias_object).collect::<Vec<_>>()))
    } else {
        Ok(sync(
            rows.iter()
                .map(|a| format!("/1.0/images/aliases/{}", a.name))
                .collect::<Vec<_>>(),
        ))
    }
}

fn alias_object(a: AliasRow) -> ImageAlias {
    ImageAlias {
        name: a.name,
        description: a.description,
        target: a.fingerprint,
        kind: a.kind,
    }
}

fn alias_or_404(d: &AppState, name: &str) -> Result<AliasRow> {
    d.db.alias(name)?
        .ok_or_else(|| DaemonError::NotFound("Image alias not found".into()))
}

async fn create_alias(State(d): State<AppState>, body: Bytes) -> Result<Response> {
    let req: ImageAlias = parse_json(&body)?;
    if req.name.is_empty() || req.name.contains('/') && req.name.starts_with('/') {
        return Err(DaemonError::BadRequest("Invalid alias name".into()));
    }
    let image = d.db.image_by_prefix(&req.target)?;
    d.db.insert_alias(&AliasRow {
        name: req.name.clone(),
        fingerprint: image.fingerprint,
        description: req.description,
        kind: "container".into(),
    })?;
    Ok(created(&format!("/1.0/images/aliases/{}", req.name)))
}

async fn one_alias(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    let a = alias_object(alias_or_404(&d, &name)?);
    let tag = json!([a.target, a.description]);
    Ok(sync_etag(a, &tag))
}

async fn put_alias(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let mut a = alias_or_404(&d, &name)?;
    let req: ImageAliasPut = parse_json(&body)?;
    if !req.target.is_empty() {
        a.fingerprint = d.db.image_by_prefix(&req.target)?.fingerprint;
    }
    a.description = req.description;
    d.db.update_alias(&a)?;
    Ok(empty())
}

async fn rename_alias(
    State(d): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    alias_or_404(&d, &name)?;
    let req: ImageAlias = parse_json(&body)?;
    if d.db.alias(&req.name)?.is_some() {
        return Err(DaemonError::Conflict(format!(
            "Alias {:?} already exists",
            req.name
        )));
    }
    d.db.rename_alias(&name, &req.name)?;
    Ok(created(&format!("/1.0/images/aliases/{}", req.name)))
}

async fn delete_alias(State(d): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    alias_or_404(&d, &name)?;
    d.db.delete_alias(&name)?;
    Ok(empty())
}
