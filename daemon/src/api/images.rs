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
use crate::auth::Trust;
use crate::daemon::AppState;
use crate::engine::{ExportedFile, ImageExport, ImageUpload, ImageWork};
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
            "/1.0/images/aliases/*name",
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
        .route("/1.0/images/:fp/refresh", axum::routing::post(refresh))
        .route("/1.0/images/:fp/secret", axum::routing::post(secret))
}

fn image_resources(fp: &str) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([("images".to_string(), vec![format!("/1.0/images/{fp}")])])
}

/// What the caller's trust was found to be (the auth layer leaves it on every request).
type CallerTrust = Option<axum::Extension<Trust>>;

fn trusted(trust: &CallerTrust) -> bool {
    trust.as_ref().is_some_and(|t| t.0.is_trusted())
}

/// An untrusted caller sees public images only, and a private one whose secret it gives
/// (`consume`: the secret is spent, as an export spends it); for it other images are not
/// there.
fn public_only(
    e: &AppState,
    trust: &CallerTrust,
    fp: &str,
    q: &HashMap<String, String>,
    consume: bool,
) -> Result<()> {
    let secret = q.get("secret").map(String::as_str).unwrap_or_default();
    if trusted(trust) || e.image(fp)?.object.public || e.image_secret_valid(fp, secret, consume) {
        Ok(())
    } else {
        Err(DaemonError::NotFound("Image not found".into()))
    }
}

async fn list(
    State(e): State<AppState>,
    trust: CallerTrust,
    Query(q): Query<HashMap<String, String>>,
    member: Option<axum::Extension<super::forward::FromMember>>,
) -> Result<Response> {
    if trusted(&trust) {
        let local = e.list_images(recursion(&q))?;
        // In a cluster, every member's images (a member asking lists its own).
        if member.is_none() && e.membership().is_some() {
            let path = format!("/1.0/images?recursion={}", recursion(&q));
            return Ok(sync(
                e.merge_cluster_list(&path, "fingerprint", local).await,
            ));
        }
        return Ok(sync(local));
    }
    let public = e
        .list_images(1)?
        .into_iter()
        .filter(|i| i["public"] == json!(true));
    Ok(sync(if recursion(&q) > 0 {
        public.collect::<Vec<_>>()
    } else {
        public
            .map(|i| {
                json!(format!(
                    "/1.0/images/{}",
                    i["fingerprint"].as_str().unwrap_or_default()
                ))
            })
            .collect()
    }))
}

async fn one(
    State(e): State<AppState>,
    trust: CallerTrust,
    Path(fp): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    public_only(&e, &trust, &fp, &q, false)?;
    Ok(versioned(e.image(&fp)?))
}

/// `POST /1.0/images/<fp>/secret`: a token operation whose metadata holds the secret.
async fn secret(State(e): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    Ok(super::accepted(&e.image_secret(&fp)?))
}

async fn put(
    State(e): State<AppState>,
    Path(fp): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    e.update_image(
        &fp,
        parse_json::<ImagePut>(&body)?,
        super::if_match(&headers).as_deref(),
    )?;
    Ok(empty())
}

async fn delete(State(e): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    let (fp, work) = e.delete_image(&fp)?;
    Ok(operation(&e, "Deleting image", image_resources(&fp), work))
}

async fn refresh(State(e): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    let (fp, work) = e.refresh_image(&fp)?;
    Ok(operation(
        &e,
        "Refreshing image",
        image_resources(&fp),
        work,
    ))
}

/// `GET /1.0/images/<fp>/export`: a unified image as one file; a split image as
/// multipart/form-data with parts `metadata` and `rootfs`, as LXD sends them (`lxc image
/// export` writes the two files under the names the parts carry).
async fn export(
    State(e): State<AppState>,
    trust: CallerTrust,
    Path(fp): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    public_only(&e, &trust, &fp, &q, true)?;
    let (metadata, rootfs) = match e.export_image(&fp)? {
        ImageExport::Unified(file) => {
            return Ok((
                [
                    ("Content-Type", "application/octet-stream".to_string()),
                    (
                        "Content-Disposition",
                        format!("attachment;filename={}", file.name),
                    ),
                ],
                Body::from_stream(file.stream),
            )
                .into_response())
        }
        ImageExport::Split { metadata, rootfs } => (metadata, rootfs),
    };
    let boundary = uuid::Uuid::new_v4().simple().to_string();
    let body = multipart_body(&boundary, [("metadata", metadata), ("rootfs", rootfs)]);
    Ok((
        [(
            "Content-Type",
            format!("multipart/form-data; boundary={boundary}"),
        )],
        Body::from_stream(body),
    )
        .into_response())
}

/// The parts of a multipart/form-data body as Go's `multipart.Writer` writes them: each
/// file a form file named by its part, the bytes streamed as they are read.
fn multipart_body<const N: usize>(
    boundary: &str,
    parts: [(&str, ExportedFile); N],
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send {
    let mut streams = Vec::new();
    for (i, (part, file)) in parts.into_iter().enumerate() {
        let head = format!(
            "{}--{boundary}\r\nContent-Disposition: form-data; name=\"{part}\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            if i == 0 { "" } else { "\r\n" },
            file.name
        );
        streams.push(
            futures_util::stream::once(async move { Ok(head.into_bytes()) })
                .chain(file.stream)
                .boxed(),
        );
    }
    let end = format!("\r\n--{boundary}--\r\n").into_bytes();
    futures_util::stream::iter(streams)
        .flatten()
        .chain(futures_util::stream::once(async move { Ok(end) }))
}

/// Runs work that makes an image as an operation whose metadata names the image; a
/// cancel stops the download, unpack or packing and leaves no image.
fn image_operation(e: &AppState, work: ImageWork) -> Response {
    let op = e
        .operations()
        .create("task", "Downloading image", BTreeMap::new(), Value::Null);
    op.set_cancellable();
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
    let mut properties = BTreeMap::new();
    for value in headers.get_all("x-lxd-properties") {
        let value = value
            .to_str()
            .map_err(|_| DaemonError::BadRequest("Invalid X-LXD-properties".into()))?;
        properties.extend(parse_query(value)?);
    }
    let work = e.import_upload(
        upload,
        header(&headers, "x-lxd-fingerprint"),
        filename,
        public,
        properties,
        header(&headers, "x-hutch-image-format").as_deref() == Some("oci"),
    )?;
    Ok(image_operation(&e, work))
}

/// A URL query string (`os=Ubuntu&release=jammy`), as Go's `url.ParseQuery` reads it:
/// `+` is a space, `%XX` a byte; the first value of a repeated key wins.
fn parse_query(q: &str) -> Result<BTreeMap<String, String>> {
    let bad = || DaemonError::BadRequest(format!("Invalid X-LXD-properties {q:?}"));
    let decode = |s: &str| -> Result<String> {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
                    out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| bad())
    };
    let mut map = BTreeMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(decode(k)?).or_insert(decode(v)?);
    }
    Ok(map)
}

async fn list_aliases(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    member: Option<axum::Extension<super::forward::FromMember>>,
) -> Result<Response> {
    let local = e.list_aliases(recursion(&q))?;
    if member.is_none() && e.membership().is_some() {
        let path = format!("/1.0/images/aliases?recursion={}", recursion(&q));
        return Ok(sync(e.merge_cluster_list(&path, "name", local).await));
    }
    Ok(sync(local))
}

async fn create_alias(State(e): State<AppState>, body: Bytes) -> Result<Response> {
    let req: ImageAlias = parse_json(&body)?;
    let name = req.name.clone();
    e.create_alias(req)?;
    Ok(created(&format!("/1.0/images/aliases/{name}")))
}

/// An untrusted caller sees the aliases of public images only.
async fn one_alias(
    State(e): State<AppState>,
    trust: CallerTrust,
    Path(name): Path<String>,
) -> Result<Response> {
    let alias = e.alias(&name)?;
    if public_only(&e, &trust, &alias.object.target, &HashMap::new(), false).is_err() {
        return Err(DaemonError::NotFound("Image alias not found".into()));
    }
    Ok(versioned(alias))
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
    use tower::ServiceExt;

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

    /// A metadata tarball and an uncompressed rootfs tarball of a tiny split image.
    fn split_parts() -> (Vec<u8>, Vec<u8>) {
        let tarball = |name: &str, data: &[u8]| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
            b.into_inner().unwrap()
        };
        let yaml = b"architecture: x86_64\ncreation_date: 1\nproperties:\n  os: split\n";
        (
            tarball("metadata.yaml", yaml),
            tarball("etc/hostname", b"tiny\n"),
        )
    }

    /// A multipart/form-data body as LXD's client sends it.
    fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, filename, data) in parts {
            body.extend_from_slice(format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        body
    }

    const MULTIPART: (&str, &str) = ("content-type", "multipart/form-data; boundary=XyZ");

    #[tokio::test]
    async fn split_images_upload_and_export_as_two_parts() {
        use sha2::Digest;
        let api = TestApi::new().await;
        let (meta, root) = split_parts();
        let body = multipart(&[
            ("metadata", "meta.tar", &meta),
            ("rootfs", "root.tar", &root),
        ]);
        let (status, _, op) = api
            .call_raw(
                Method::POST,
                "/1.0/images",
                body,
                &[MULTIPART, ("X-LXD-properties", "os=mine&release=edge")],
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{op}");
        let op = api.wait(&op).await;
        assert_eq!(op["status"], "Success", "{op}");
        // LXD's fingerprint of a split image: sha256 of the metadata, then the rootfs.
        let fp = hex::encode(
            sha2::Sha256::new()
                .chain_update(&meta)
                .chain_update(&root)
                .finalize(),
        );
        assert_eq!(op["metadata"]["fingerprint"], json!(fp));
        assert!(api
            .dir
            .path()
            .join("images")
            .join(format!("{fp}.rootfs"))
            .exists());

        let resp = crate::api::router(api.engine.clone())
            .oneshot(
                axum::http::Request::get(format!("/1.0/images/{}/export", &fp[..10]))
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
        let boundary = ctype
            .strip_prefix("multipart/form-data; boundary=")
            .expect("multipart")
            .to_string();
        let stream = resp.into_body().into_data_stream();
        let mut parts = multer::Multipart::new(stream, boundary);
        let mut got = Vec::new();
        while let Some(field) = parts.next_field().await.unwrap() {
            let (name, file) = (
                field.name().unwrap().to_string(),
                field.file_name().unwrap().to_string(),
            );
            got.push((name, file, field.bytes().await.unwrap().to_vec()));
        }
        assert_eq!(
            got,
            vec![
                ("metadata".into(), format!("meta-{fp}.tar"), meta),
                ("rootfs".into(), format!("{fp}.tar"), root),
            ]
        );
    }

    #[tokio::test]
    async fn image_updates_check_etags_and_profiles() {
        let api = TestApi::new().await;
        let fp = api.tiny_image().await;
        let url = format!("/1.0/images/{fp}");
        let (_, headers, _) = api.call_raw(Method::GET, &url, Vec::new(), &[]).await;
        let etag = headers["etag"].to_str().unwrap().to_string();
        let put = json!({"properties": {"os": "x"}, "public": true, "profiles": ["default"]});
        let (status, _) = api
            .call_with(
                Method::PUT,
                &url,
                Some(put.clone()),
                &[("If-Match", "\"nope\"")],
            )
            .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        let (status, body) = api
            .call(
                Method::PUT,
                &url,
                Some(json!({"profiles": ["default", "missing"]})),
            )
            .await;
        assert_eq!(
            (status, body["error"].clone()),
            (
                StatusCode::BAD_REQUEST,
                json!("Profile 'missing' doesn't exist")
            )
        );
        let (status, body) = api
            .call_with(Method::PUT, &url, Some(put), &[("If-Match", etag.as_str())])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, image) = api.call(Method::GET, &url, None).await;
        assert_eq!(image["metadata"]["properties"], json!({"os": "x"}));
        assert_eq!(image["metadata"]["public"], json!(true));
        assert_eq!(
            image["metadata"]["expires_at"],
            json!("0001-01-01T00:00:00Z")
        );
    }

    #[test]
    fn properties_headers_read_as_go_reads_them() {
        let m =
            super::parse_query("os=Ubuntu+Linux&release=22.04&desc=a%26b%3Dc&os=other&e=").unwrap();
        assert_eq!(m["os"], "Ubuntu Linux");
        assert_eq!(m["desc"], "a&b=c");
        assert_eq!(m["e"], "");
        assert_eq!(m.len(), 4);
        assert!(super::parse_query("a=%zz").is_err());
        assert!(super::parse_query("a=%ff").is_err());
    }

    #[tokio::test]
    async fn bad_multipart_uploads_are_400_and_leave_nothing() {
        let api = TestApi::new().await;
        let (meta, root) = split_parts();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                multipart(&[("metadata", "m", &meta)]),
                "Invalid multipart image",
            ),
            (
                multipart(&[("rootfs", "r", &root), ("metadata", "m", &meta)]),
                "Invalid multipart image",
            ),
            (
                multipart(&[("metadata", "m", &meta), ("other", "r", &root)]),
                "Invalid multipart image",
            ),
            (
                multipart(&[("metadata", "m", &meta), ("rootfs.img", "r", &root)]),
                "Virtual-machine images are not supported",
            ),
            // Cut short in the middle of the rootfs part.
            (
                multipart(&[("metadata", "m", &meta), ("rootfs", "r", &root)])[..meta.len() + 300]
                    .to_vec(),
                "",
            ),
            (b"no boundary here".to_vec(), "Invalid multipart image"),
        ];
        for (body, error) in cases {
            let (status, _, resp) = api
                .call_raw(Method::POST, "/1.0/images", body, &[MULTIPART])
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
            assert!(resp["error"].as_str().unwrap().contains(error), "{resp}");
        }
        // A fingerprint the client expects and the parts do not give.
        let body = multipart(&[("metadata", "m", &meta), ("rootfs", "r", &root)]);
        let (status, _, resp) = api
            .call_raw(
                Method::POST,
                "/1.0/images",
                body,
                &[MULTIPART, ("X-LXD-fingerprint", "abcd")],
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
        // Parts that are not an image fail the operation.
        let body = multipart(&[("metadata", "m", b"junk"), ("rootfs", "r", &root)]);
        let (status, _, op) = api
            .call_raw(Method::POST, "/1.0/images", body, &[MULTIPART])
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(api.wait(&op).await["status"], "Failure");
        let (_, list) = api.call(Method::GET, "/1.0/images", None).await;
        assert_eq!(list["metadata"], json!([]));
        let left: Vec<_> = std::fs::read_dir(api.dir.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let vols: Vec<_> = std::fs::read_dir(api.dir.path().join("storage-pools/default/images"))
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(vols.is_empty(), "{vols:?}");
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
        // Aliases with slashes, as simplestreams servers name images: escaped as lxc
        // sends them, or not.
        let slashed = json!({"name": "debian/12", "target": fp});
        let (status, _) = api
            .call(Method::POST, "/1.0/images/aliases", Some(slashed))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        for path in ["debian%2F12", "debian/12"] {
            let (status, resp) = api
                .call(Method::GET, &format!("/1.0/images/aliases/{path}"), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{path}: {resp}");
            assert_eq!(resp["metadata"]["name"], "debian/12", "{resp}");
        }
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
