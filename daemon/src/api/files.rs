//! `/1.0/instances/<name>/files?path=`: read, write, list and delete files with LXD's
//! X-LXD-* headers (uid, gid, mode, type, write).

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
use crate::engine::files::{FileKind, InstanceRoot};
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

/// Runs `f` on the tree holding `path` of instance `name` and the path within it, on a
/// blocking thread: every open, stat and listing is a syscall on a tree the container
/// controls, and none of it may hold an async worker.
async fn in_root<T: Send + 'static>(
    d: &AppState,
    name: &str,
    path: &str,
    f: impl FnOnce(InstanceRoot, String) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (name, path) = (name.to_string(), path.to_string());
    super::blocking(d, move |d| {
        let (root, path) = InstanceRoot::open(d, &name, &path)?;
        f(root, path)
    })
    .await
}

/// What a GET sends after the headers.
enum Content {
    Headers,
    Listing(Vec<String>),
    Target(String),
    File(std::fs::File, u64),
}

async fn read(
    State(d): State<AppState>,
    method: Method,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let path = path_arg(&q)?;
    let head = method == Method::HEAD;
    let (info, content) = in_root(&d, &name, &path, move |root, path| {
        let info = root.stat(&path)?;
        let content = match (info.kind, head) {
            (_, true) => Content::Headers,
            (FileKind::Directory, false) => Content::Listing(root.list(&path)?),
            (FileKind::Symlink, false) => Content::Target(root.read_link(&path)?),
            (FileKind::File, false) => {
                let file = root.read(&path)?;
                let len = file
                    .metadata()
                    .map_err(|e| DaemonError::io("stat", &path, e))?
                    .len();
                Content::File(file, len)
            }
        };
        Ok((info, content))
    })
    .await?;
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
        Content::Headers => ().into_response(),
        Content::Listing(names) => sync(names),
        Content::Target(target) => target.into_response(),
        Content::File(file, len) => {
            let base = std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut r = Body::from_stream(super::file_stream(file)).into_response();
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
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let mut body = Some(body);
    let written = write_file(&d, &name, &q, &headers, &mut body).await;
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
    d: &AppState,
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
    let (uid, gid) = (id("X-LXD-uid")?, id("X-LXD-gid")?);
    let mode = match h("X-LXD-mode") {
        m if m.is_empty() => None,
        m => Some(parse_mode(&m)?),
    };
    let append = match h("X-LXD-write").as_str() {
        "" | "overwrite" => false,
        "append" => true,
        _ => return Err(DaemonError::BadRequest("Bad file write mode".into())),
    };
    let mut take_body = || body.take().expect("the body is read once");
    match h("X-LXD-type").as_str() {
        "" | "file" => {
            let (root, inner, file, created) = in_root(d, name, &path, move |root, path| {
                let (file, created) =
                    root.open_write(&path, uid, gid, mode.unwrap_or(0o644), append)?;
                Ok((root, path, file, created))
            })
            .await?;
            // One blocking writer per upload, fed through a small channel: a thread hop per
            // chunk (what tokio::fs does) costs more than the write itself.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
            let target = inner.clone();
            let writer = tokio::task::spawn_blocking(move || -> Result<()> {
                let mut file = file;
                while let Some(chunk) = rx.blocking_recv() {
                    std::io::Write::write_all(&mut file, &chunk)
                        .map_err(|e| DaemonError::io("write", &target, e))?;
                }
                Ok(())
            });
            let mut stream = take_body().into_data_stream();
            let mut failed = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        // A closed channel means the writer failed (a full pool): the rest of
                        // the body is read and dropped, so the client, still sending, gets the
                        // error below rather than a broken pipe.
                        if !tx.is_closed() {
                            let _ = tx.send(c).await;
                        }
                    }
                    Err(e) => {
                        failed = Some(DaemonError::BadRequest(format!("upload failed: {e}")));
                        break;
                    }
                }
            }
            drop(tx);
            let written = writer.await?;
            if let Some(e) = written.err().or(failed) {
                // A new file that could not be written whole (a full pool, a broken upload)
                // is removed rather than left half-written, taking the space it held.
                if created {
                    let _ = crate::engine::blocking(move || root.remove(&inner)).await;
                }
                return Err(e);
            }
        }
        "directory" => {
            in_root(d, name, &path, move |root, path| {
                root.mkdir(&path, uid, gid, mode.unwrap_or(0o750))
            })
            .await?
        }
        "symlink" => {
            let target = axum::body::to_bytes(take_body(), 4096)
                .await
                .map_err(|e| DaemonError::BadRequest(format!("symlink target: {e}")))?;
            let target = String::from_utf8_lossy(&target).into_owned();
            in_root(d, name, &path, move |root, path| {
                root.symlink(&path, &target, uid, gid)
            })
            .await?
        }
        other => return Err(DaemonError::BadRequest(format!("Bad file type: {other}"))),
    }
    d.events.lifecycle(
        "instance-file-pushed",
        &format!("/1.0/instances/{name}"),
        serde_json::json!({"file-path": path}),
    );
    Ok(empty())
}

async fn delete(
    State(d): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let path = path_arg(&q)?;
    in_root(&d, &name, &path, |root, path| root.remove(&path)).await?;
    Ok(empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_like_lxd() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("0100644").unwrap(), 0o644);
        assert_eq!(parse_mode("420").unwrap(), 0o644);
        assert!(parse_mode("rw").is_err());
        assert!(parse_mode("0999").is_err());
    }
}
