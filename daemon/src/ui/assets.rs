//! The UI's files, compiled into the binary from the top-level `ui/` directory, served
//! with their content type, an ETag (a browser revalidates and gets 304), and headers
//! that keep the pages to their own scripts: a Content-Security-Policy without inline
//! script, no framing, no sniffing, no referrer (a login token must not leak).

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// One embedded file, by its path under `/ui/`.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../../../ui/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", CSS),
    asset!("icon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/instances.js", JS),
    asset!("js/instance.js", JS),
    asset!("js/terminal.js", JS),
    asset!("js/files.js", JS),
    asset!("js/graph.js", JS),
    asset!("js/resources.js", JS),
    asset!("vendor/xterm.mjs", JS),
    asset!("vendor/addon-fit.mjs", JS),
    asset!("vendor/xterm.css", CSS),
    asset!("vendor/LICENSE.xterm", TEXT),
    asset!("vendor/LICENSE.addon-fit", TEXT),
];

/// Scripts and styles from this origin only; xterm.js sets styles of its own elements,
/// hence inline styles (never inline script). Websockets go to this origin ('self').
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `/ui` and everything under it. No state: the files are public, what they show comes
/// from the API, which checks the caller.
pub fn routes() -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route(
            "/ui/*path",
            get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }),
        )
}

/// The ETag of each asset, in [`ASSETS`]' order, computed on first use.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..12])))
            .collect()
    })
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return page(StatusCode::NOT_FOUND, "not found");
    };
    let asset = &ASSETS[i];
    let tag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    // Names carry no hash: revalidate each time (a 304 is a few bytes).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(resp)
}

/// The headers every UI response carries.
pub fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// A short plain-text answer with the UI's headers.
pub fn page(status: StatusCode, text: &'static str) -> Response {
    secure(
        (
            status,
            [
                (header::CONTENT_TYPE, TEXT),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_type_and_a_body() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.path);
        }
        let index = serve("", &HeaderMap::new());
        assert_eq!(index.status(), StatusCode::OK);
        let h = index.headers();
        assert!(h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn a_matching_etag_gets_304_and_unknown_paths_404() {
        let first = serve("js/main.js", &HeaderMap::new());
        let tag = first.headers()[header::ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(
            serve("js/main.js", &headers).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_page_loads_no_inline_script() {
        let html = std::str::from_utf8(ASSETS[0].body).unwrap();
        for tag in html.split("<script").skip(1) {
            assert!(tag.contains("src="), "inline script in index.html");
        }
        for word in html.split_whitespace() {
            let handler = word.starts_with("on") && word.contains('=');
            assert!(!handler, "inline event handler in index.html: {word}");
        }
    }
}
