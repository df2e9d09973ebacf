//! `/1.0/instances/<name>/files?path=`: read, write, list and delete files with LXD's
//! X-LXD-* headers (uid, gid, mode, type, write); the engine opens and streams them.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;

use super::{empty, sync};
use crate::daemon::AppState;
use crate::engine::files::{FileAttrs, FileContent};
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/:name/files",
            get(read).head(read).post(write).delete(delete),
        )
        .layer(DefaultBodyLimit::disable())
}

fn path_arg(q: &HashMap<String, String>) -> Result<String> {
    let p = q
        .get("path")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| DaemonError::BadRequest("Missing path argument".into()))?;
    Ok(if p.starts_with('/') {
        p.clone()
    } else {
        format!("/{p}")
    })
}

async fn read(
    State(e): State<AppState>,
    method: Method,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let path = path_arg(&q)?;
    let (info, content) = e.file(&name, &path, method == Method::HEAD).await?;
    let modified = time::OffsetDateTime::from_unix_timestamp(info.modified)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let headers = [
        ("X-LXD-uid", info.uid.to_string()),
        ("X-LXD-gid", info.gid.to_string()),
        // Permission bits only, as LXD sends them: `0755` for a setuid 04755 file, which
        // lxc reads with base detection (a bare `4755` would be decimal to it).
        ("X-LXD-mode", format!("{:04o}", info.mode & 0o777)),
        ("X-LXD-type", info.kind.as_str().to_string()),
        ("X-LXD-modified", modified),
    ];
    let mut resp = match content {
        FileContent::Headers => ().into_response(),
        FileContent::Listing(names) => sync(names),
        FileContent::Target(target) => target.into_response(),
        FileContent::File { stream, len } => {
            let base = std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut r = Body::from_stream(stream).into_response();
            let h = r.headers_mut();
            h.insert(
                "Content-Type",
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("inline;filename={base}")) {
                h.insert("Content-Disposition", v);
            }
            h.insert("Content-Length", HeaderValue::from(len));
            r
        }
    };
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    Ok(resp)
}

/// X-LXD-mode: a decimal-looking number read with base detection (0644 is octal); only
/// the permission bits count, so pylxd's 0100644 works.
fn parse_mode(v: &str) -> Result<u32> {
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
        return Err(DaemonError::BadRequest(format!("Invalid file mode {v:?}")));
    }
    let n = if v.len() > 1 && v.starts_with('0') {
        u32::from_str_radix(&v[1..], 8)
    } else {
        v.parse()
    };
    n.map(|m| m & 0o7777)
        .map_err(|_| DaemonError::BadRequest(format!("Invalid file mode {v:?}")))
}

async fn write(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let mut body = Some(body);
    let written = write_file(&e, &name, &q, &headers, &mut body).await;
    let refused = written.is_err();
    if let (true, Some(unread)) = (refused, body) {
        // Refused before the body was read (a bad path, a read-only device): it is read and
        // dropped, so that the client, still sending, gets the error, not a broken pipe.
        let mut stream = unread.into_data_stream();
        while let Some(Ok(_)) = stream.next().await {}
    }
    written
}

/// The work of `write`; takes the body out of `body` only once it is to be read.
async fn write_file(
    e: &AppState,
    name: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &mut Option<Body>,
) -> Result<Response> {
    let path = path_arg(q)?;
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let id = |k: &str| -> Result<u32> {
        let v = h(k);
        if v.is_empty() {
            Ok(0)
        } else {
            v.parse()
                .map_err(|_| DaemonError::BadRequest(format!("Invalid {k} {v:?}")))
        }
    };
    let attrs = FileAttrs {
        uid: id("X-LXD-uid")?,
        gid: id("X-LXD-gid")?,
        mode: match h("X-LXD-mode") {
            m if m.is_empty() => None,
            m => Some(parse_mode(&m)?),
        },
    };
    let append = match h("X-LXD-write").as_str() {
        "" | "overwrite" => false,
        "append" => true,
        _ => return Err(DaemonError::BadRequest("Bad file write mode".into())),
    };
    let mut take_body = || body.take().expect("the body is read once");
    match h("X-LXD-type").as_str() {
        "" | "file" => {
            let upload = e.create_file::<Bytes>(name, &path, attrs, append).await?;
            let mut stream = take_body().into_data_stream();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => upload.write(c).await,
                    Err(err) => {
                        upload.abort().await?;
                        return Err(DaemonError::BadRequest(format!("upload failed: {err}")));
                    }
                }
            }
            upload.finish().await?;
        }
        "directory" => e.create_directory(name, &path, attrs).await?,
        "symlink" => {
            let target = axum::body::to_bytes(take_body(), 4096)
                .await
                .map_err(|e| DaemonError::BadRequest(format!("symlink target: {e}")))?;
            let target = String::from_utf8_lossy(&target).into_owned();
            e.create_symlink(name, &path, target, attrs).await?
        }
        other => return Err(DaemonError::BadRequest(format!("Bad file type: {other}"))),
    }
    Ok(empty())
}

async fn delete(
    State(e): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let path = path_arg(&q)?;
    e.delete_file(&name, &path).await?;
    Ok(empty())
}

#[cfg(test)]
pub(super) mod tests {
    use axum::http::{HeaderMap, Method, Request, StatusCode};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::api::testing::TestApi;

    /// `method uri` with raw `body` and `headers`: status, headers and body bytes (files
    /// and logs are not JSON).
    pub async fn raw(
        api: &TestApi,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = crate::api::router(api.engine.clone())
            .oneshot(req.body(Body::from(body.to_vec())).unwrap())
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        (status, headers, bytes.to_vec())
    }

    /// The envelope of a JSON answer.
    fn envelope(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap_or(Value::Null)
    }

    fn owner() -> (String, String) {
        (
            nix::unistd::getuid().as_raw().to_string(),
            nix::unistd::getgid().as_raw().to_string(),
        )
    }

    #[test]
    fn modes_parse_like_lxd() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("0100644").unwrap(), 0o644);
        assert_eq!(parse_mode("420").unwrap(), 0o644);
        assert!(parse_mode("rw").is_err());
        assert!(parse_mode("0999").is_err());
    }

    #[tokio::test]
    async fn files_are_pushed_pulled_listed_and_deleted() {
        let api = TestApi::new().await;
        let root = api.engine.add_stopped_instance("c1");
        let (uid, gid) = owner();
        let ids = [("X-LXD-uid", uid.as_str()), ("X-LXD-gid", gid.as_str())];
        let uri = "/1.0/instances/c1/files?path=/motd";
        let push = |extra: Vec<(&'static str, &'static str)>, body: &'static [u8]| {
            let mut headers = ids.to_vec();
            headers.extend(extra);
            let api = &api;
            async move { raw(api, Method::POST, uri, &headers, body).await }
        };
        let (status, _, body) = push(vec![("X-LXD-mode", "0640")], b"hello").await;
        assert_eq!(status, StatusCode::OK, "{}", envelope(&body));
        let (status, _, _) = push(vec![("X-LXD-write", "append")], b" again").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(std::fs::read(root.join("motd")).unwrap(), b"hello again");

        let (status, headers, body) = raw(&api, Method::GET, uri, &[], b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"hello again");
        assert_eq!(headers["X-LXD-type"], "file");
        assert_eq!(headers["X-LXD-mode"], "0640");
        assert_eq!(headers["X-LXD-uid"], uid.as_str());
        assert_eq!(headers["Content-Length"], "11");
        assert_eq!(headers["Content-Disposition"], "inline;filename=motd");
        let (status, headers, body) = raw(&api, Method::HEAD, uri, &[], b"").await;
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        assert_eq!(headers["X-LXD-type"], "file");

        let dir = [&ids[..], &[("X-LXD-type", "directory")]].concat();
        let (status, _, _) = raw(
            &api,
            Method::POST,
            "/1.0/instances/c1/files?path=srv",
            &dir,
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let link = [&ids[..], &[("X-LXD-type", "symlink")]].concat();
        let (status, _, _) = raw(
            &api,
            Method::POST,
            "/1.0/containers/c1/files?path=/srv/l",
            &link,
            b"../motd",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, headers, body) = raw(
            &api,
            Method::GET,
            "/1.0/instances/c1/files?path=/srv/l",
            &[],
            b"",
        )
        .await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"/motd"[..]));
        assert_eq!(headers["X-LXD-type"], "symlink");
        let (status, body) = api
            .call(Method::GET, "/1.0/instances/c1/files?path=/", None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["metadata"], json!(["motd", "srv"]));
        let (status, headers, _) = raw(
            &api,
            Method::HEAD,
            "/1.0/instances/c1/files?path=/srv",
            &[],
            b"",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["X-LXD-type"], "directory");

        for path in ["/srv/l", "/srv", "/motd"] {
            let (status, _) = api
                .call(
                    Method::DELETE,
                    &format!("/1.0/instances/c1/files?path={path}"),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn file_requests_are_refused_with_lxd_messages() {
        let api = TestApi::new().await;
        let root = api.engine.add_stopped_instance("c1");
        let (uid, gid) = owner();
        let ids = [("X-LXD-uid", uid.as_str()), ("X-LXD-gid", gid.as_str())];
        let refused = |status: StatusCode, body: &[u8], code: StatusCode, message: &str| {
            let body = envelope(body);
            assert_eq!(status, code, "{body}");
            assert_eq!(body["error_code"], code.as_u16(), "{body}");
            assert_eq!(body["error"], message, "{body}");
        };
        for method in [Method::GET, Method::POST, Method::DELETE] {
            let (status, _, body) = raw(
                &api,
                method.clone(),
                "/1.0/instances/nope/files?path=/etc",
                &ids,
                b"x",
            )
            .await;
            refused(status, &body, StatusCode::NOT_FOUND, "Instance not found");
            let (status, _, body) =
                raw(&api, method.clone(), "/1.0/instances/c1/files", &ids, b"x").await;
            refused(
                status,
                &body,
                StatusCode::BAD_REQUEST,
                "Missing path argument",
            );
        }
        let push = |headers: Vec<(&'static str, &'static str)>| {
            let mut all = ids.to_vec();
            all.extend(headers);
            let api = &api;
            async move {
                raw(
                    api,
                    Method::POST,
                    "/1.0/instances/c1/files?path=/f",
                    &all,
                    b"x",
                )
                .await
            }
        };
        let (status, _, body) = push(vec![("X-LXD-mode", "rw")]).await;
        refused(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "Invalid file mode \"rw\"",
        );
        let (status, _, body) = push(vec![("X-LXD-write", "sideways")]).await;
        refused(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "Bad file write mode",
        );
        let (status, _, body) = push(vec![("X-LXD-type", "fifo")]).await;
        refused(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "Bad file type: fifo",
        );
        let (status, _, body) = raw(
            &api,
            Method::POST,
            "/1.0/instances/c1/files?path=/f",
            &[("X-LXD-uid", "root")],
            b"x",
        )
        .await;
        refused(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "Invalid X-LXD-uid \"root\"",
        );
        assert!(!root.join("f").exists(), "nothing refused was written");

        let (status, _, body) = raw(
            &api,
            Method::GET,
            "/1.0/instances/c1/files?path=/missing",
            &[],
            b"",
        )
        .await;
        refused(status, &body, StatusCode::NOT_FOUND, "/missing: not found");
        let (status, _, body) = push_into(&api, &ids, "/missing/f").await;
        refused(status, &body, StatusCode::NOT_FOUND, "/missing: not found");

        // What the container made that is not a file, directory or symlink is refused.
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let (status, _, body) = raw(
            &api,
            Method::GET,
            "/1.0/instances/c1/files?path=/fifo",
            &[],
            b"",
        )
        .await;
        refused(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "/fifo: is a FIFO, not a file, directory or symlink",
        );
        let (status, _, body) = push_into(&api, &ids, "/fifo").await;
        refused(
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "/fifo: is a FIFO, not a regular file",
        );

        // `..` stays inside the instance; a non-empty directory is not deleted.
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/x"), b"x").unwrap();
        let (status, _, body) = raw(
            &api,
            Method::GET,
            "/1.0/instances/c1/files?path=/../../d/x",
            &[],
            b"",
        )
        .await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"x"[..]));
        let (status, body) = api
            .call(Method::DELETE, "/1.0/instances/c1/files?path=/d", None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "/d: directory not empty");
        let (status, body) = api
            .call(Method::GET, "/1.0/instances/..%2Fc1/files?path=/d", None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }

    async fn push_into(
        api: &TestApi,
        ids: &[(&str, &str)],
        path: &str,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let uri = format!("/1.0/instances/c1/files?path={path}");
        raw(api, Method::POST, &uri, ids, b"x").await
    }
}
