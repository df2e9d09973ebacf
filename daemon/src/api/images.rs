//! `/1.0/images`: upload (unified and split tarballs), publish, list, get, update, delete,
//! export, aliases. The handlers stream bodies and call one engine method each.

use std::collections::{BTreeMap, HashMap};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use hutch_api::image::{ImageAlias, ImageAliasPut, ImagePut};
use serde_json::{json, Value};

use super::{accepted, created, empty, operation, parse_json, recursion, sync, versioned};
use crate::daemon::AppState;
use crate::engine::{ImageUpload, ImageWork};
use crate::error::{DaemonError, Result};

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

fn image_resources(fp: &str) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([("images".to_string(), vec![format!("/1.0/images/{fp}")])])
}

async fn list(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    Ok(sync(e.list_images(recursion(&q))?))
}

async fn one(State(e): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    Ok(versioned(e.image(&fp)?))
}

async fn put(State(e): State<AppState>, Path(fp): Path<String>, body: Bytes) -> Result<Response> {
    e.update_image(&fp, parse_json::<ImagePut>(&body)?)?;
    Ok(empty())
}

async fn delete(State(e): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    let (fp, work) = e.delete_image(&fp)?;
    Ok(operation(&e, "Deleting image", image_resources(&fp), work))
}

async fn export(State(e): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    let (file, filename) = e.export_image(&fp)?;
    Ok((
        [
            ("Content-Type", "application/octet-stream".to_string()),
            (
                "Content-Disposition",
                format!("attachment;filename={filename}"),
            ),
        ],
        Body::from_stream(file),
    )
        .into_response())
}

/// Runs work that makes an image as an operation whose metadata names the image.
fn image_operation(e: &AppState, work: ImageWork) -> Response {
    let op = e
        .operations()
        .create("task", "Downloading image", BTreeMap::new(), Value::Null);
    e.operations().run(op.clone(), async move {
        let made = work.await?;
        Ok(Some(
            json!({"fingerprint": made.fingerprint, "size": made.size.to_string()}),
        ))
    });
    accepted(&op)
}

/// Feeds a body stream into the upload.
async fn receive<S, E>(stream: S, upload: &mut ImageUpload) -> Result<()>
where
    S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut stream = stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| DaemonError::BadRequest(format!("upload failed: {e}")))?;
        upload.write(&chunk)?;
    }
    Ok(())
}

fn header(headers: &HeaderMap, k: &str) -> Option<String> {
    headers
        .get(k)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `POST /1.0/images`: with a JSON body an image from an instance or a snapshot (`lxc
/// publish`); with an image as the body a unified tarball, or a split image as
/// multipart/form-data (`metadata` first, then `rootfs`).
async fn upload(State(e): State<AppState>, req: Request) -> Result<Response> {
    let headers = req.headers().clone();
    let ctype = header(&headers, "content-type").unwrap_or_default();
    if ctype.starts_with("application/json") {
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .map_err(|e| DaemonError::BadRequest(format!("Failed to read the request: {e}")))?;
        return Ok(image_operation(&e, e.publish_image(parse_json(&body)?)));
    }
    let public = header(&headers, "x-lxd-public")
        .is_some_and(|v| hutch_api::config::parse_bool(&v).unwrap_or(false));
    let (upload, filename) = if ctype.starts_with("multipart/") {
        let mut upload = e.begin_upload(true)?;
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
        receive(meta, &mut upload).await?;
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
        let filename = root.file_name().unwrap_or_default().to_string();
        upload.next_part()?;
        receive(root, &mut upload).await?;
        (upload, filename)
    } else {
        let mut upload = e.begin_upload(false)?;
        receive(req.into_body().into_data_stream(), &mut upload).await?;
        (
            upload,
            header(&headers, "x-lxd-filename").unwrap_or_default(),
        )
    };
    let work = e.import_upload(
        upload,
        header(&headers, "x-lxd-fingerprint"),
        filename,
        public,
    )?;
    Ok(image_operation(&e, work))
}

async fn list_aliases(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    Ok(sync(e.list_aliases(recursion(&q))?))
}

async fn create_alias(State(e): State<AppState>, body: Bytes) -> Result<Response> {
    let req: ImageAlias = parse_json(&body)?;
    let name = req.name.clone();
    e.create_alias(req)?;
    Ok(created(&format!("/1.0/images/aliases/{name}")))
}

async fn one_alias(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    Ok(versioned(e.alias(&name)?))
}

async fn put_alias(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    e.update_alias(&name, parse_json::<ImageAliasPut>(&body)?)?;
    Ok(empty())
}

async fn rename_alias(
    State(e): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: ImageAlias = parse_json(&body)?;
    e.rename_alias(&name, &req.name)?;
    Ok(created(&format!("/1.0/images/aliases/{}", req.name)))
}

async fn delete_alias(State(e): State<AppState>, Path(name): Path<String>) -> Result<Response> {
    e.delete_alias(&name)?;
    Ok(empty())
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};
    use serde_json::json;

    use crate::api::testing::TestApi;

    fn uploads_left(api: &TestApi) -> Vec<String> {
        std::fs::read_dir(api.dir.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload-"))
            .collect()
    }

    #[tokio::test]
    async fn bad_uploads_leave_no_image_and_no_files() {
        let api = TestApi::new().await;
        let (status, _, body) = api
            .call_raw(
                Method::POST,
                "/1.0/images",
                b"not a tarball".to_vec(),
                &[("X-LXD-Fingerprint", "abcd")],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("fingerprints don't match"));
        let (status, _, body) = api
            .call_raw(Method::POST, "/1.0/images", b"not a tarball".to_vec(), &[])
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(api.wait(&body).await["status"], "Failure");
        let (_, list) = api.call(Method::GET, "/1.0/images", None).await;
        assert_eq!(list["metadata"], json!([]));
        assert_eq!(uploads_left(&api), Vec::<String>::new());
        // Publishing without a source is refused when the operation runs.
        let (status, body) = api.call(Method::POST, "/1.0/images", Some(json!({}))).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(api.wait(&body).await["err"], "No source provided");
    }

    #[tokio::test]
    async fn images_and_aliases_answer_lxd_errors() {
        let api = TestApi::new().await;
        let fp = api.tiny_image().await;
        let (status, _) = api
            .call(Method::GET, &format!("/1.0/images/{}", &fp[..12]), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, resp) = api.call(Method::GET, "/1.0/images/ffff", None).await;
        assert_eq!(
            (status, resp["error"].clone()),
            (StatusCode::NOT_FOUND, json!("Image not found"))
        );
        let alias = json!({"name": "tiny", "target": fp});
        let (status, _) = api
            .call(Method::POST, "/1.0/images/aliases", Some(alias.clone()))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, resp) = api
            .call(Method::POST, "/1.0/images/aliases", Some(alias))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{resp}");
        let (status, _) = api
            .call(
                Method::POST,
                "/1.0/images/aliases",
                Some(json!({"name": "", "target": fp})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = api
            .call(
                Method::POST,
                "/1.0/images/aliases",
                Some(json!({"name": "x", "target": "ffff"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, resp) = api
            .call(Method::GET, "/1.0/images/aliases/none", None)
            .await;
        assert_eq!(
            (status, resp["error"].clone()),
            (StatusCode::NOT_FOUND, json!("Image alias not found"))
        );
        let (status, _) = api
            .call(
                Method::POST,
                "/1.0/images/aliases/tiny",
                Some(json!({"name": "small"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, one) = api
            .call(Method::GET, "/1.0/images/aliases/small", None)
            .await;
        assert_eq!(
            (status, one["metadata"]["target"].clone()),
            (StatusCode::OK, json!(fp))
        );
        let (status, _) = api
            .call(Method::DELETE, "/1.0/images/aliases/small", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        // A delete removes the row, the file and the volume.
        let (status, op) = api
            .call(Method::DELETE, &format!("/1.0/images/{fp}"), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(api.wait(&op).await["status"], "Success");
        assert!(!api.dir.path().join("images").join(&fp).exists());
        assert!(!api
            .dir
            .path()
            .join("storage-pools/default/images")
            .join(&fp)
            .exists());
        assert!(api.engine.list_images(0).unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_interrupted_image_delete_is_finished_at_start() {
        let api = TestApi::new().await;
        let fp = api.tiny_image().await;
        // A crash after the intent was recorded and the file removed.
        crate::engine::testing::record_image_delete(&api.engine, &fp);
        std::fs::remove_file(api.dir.path().join("images").join(&fp)).unwrap();
        crate::engine::testing::reconcile(&api.engine);
        assert!(api.engine.list_images(0).unwrap().is_empty());
        assert!(!api
            .dir
            .path()
            .join("storage-pools/default/images")
            .join(&fp)
            .exists());
    }
}
