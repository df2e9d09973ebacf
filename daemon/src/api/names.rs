//! Names arrive in URL paths (`/1.0/instances/<name>`, `/1.0/storage-pools/<p>/volumes/
//! custom/<name>`), and axum percent-decodes them: `..%2F..%2Ftmp` would reach a handler
//! as `../../tmp`. No object name may be `.`, `..`, or hold a `/` or a NUL, so such a path
//! is refused here, before any handler joins it to a directory.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::DaemonError;

pub async fn refuse_bad_segments(req: Request, next: Next) -> Response {
    match bad_segment(req.uri().path()) {
        Some(seg) => {
            DaemonError::BadRequest(format!("Invalid name in the URL: {seg:?}")).into_response()
        }
        None => next.run(req).await,
    }
}

/// The first segment of `path` that decodes to a name no object may have.
fn bad_segment(path: &str) -> Option<String> {
    // Image aliases may hold slashes (`debian/12`), as LXD's do: `lxc` sends them escaped
    // (`debian%2F12`) as one segment. They name rows, never files.
    let (path, alias) = match path.strip_prefix("/1.0/images/aliases/") {
        Some(alias) => ("/1.0/images/aliases", Some(alias)),
        None => (path, None),
    };
    let alias_bad = alias.and_then(|a| {
        let a = percent_decode(a);
        (a.split('/').any(|s| s == "." || s == "..") || a.contains('\0')).then_some(a)
    });
    alias_bad.or_else(|| {
        path.split('/').find_map(|raw| {
            let seg = percent_decode(raw);
            let bad = seg == "." || seg == ".." || seg.contains('/') || seg.contains('\0');
            bad.then_some(seg)
        })
    })
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap() * 16 + hex(l).unwrap()) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_in_any_segment_is_caught() {
        assert_eq!(bad_segment("/1.0/instances/c1"), None);
        assert_eq!(
            bad_segment("/1.0/storage-pools/default/volumes/custom/v1"),
            None
        );
        assert_eq!(bad_segment("/1.0/instances/.."), Some("..".into()));
        assert_eq!(
            bad_segment("/1.0/storage-pools/default/volumes/custom/..%2F..%2Ftmp"),
            Some("../../tmp".into())
        );
        assert_eq!(bad_segment("/1.0/images/%2e%2e"), Some("..".into()));
        assert_eq!(bad_segment("/1.0/instances/a%00b"), Some("a\0b".into()));
        // Image aliases may hold slashes, never `..` or NUL.
        assert_eq!(bad_segment("/1.0/images/aliases/debian%2F12"), None);
        assert_eq!(bad_segment("/1.0/images/aliases/debian/12/amd64"), None);
        assert_eq!(
            bad_segment("/1.0/images/aliases/a%2F..%2Fb"),
            Some("a/../b".into())
        );
        assert_eq!(bad_segment("/1.0/images/aliases/a%00"), Some("a\0".into()));
    }
}
