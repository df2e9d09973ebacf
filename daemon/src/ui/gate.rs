//! What stands between a browser and the API: on the loopback UI listener, the Host must
//! be a loopback name (no DNS rebinding), a login token turns into a session cookie, every
//! API request needs a live session, and a request that changes something (or opens a
//! websocket) must come from the UI's own origin. On the HTTPS listener, a browser's
//! client certificate is as ambient as a cookie, so a state-changing request that names
//! another origin is refused there too.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::assets::{page, secure};
use super::sessions::{UiSessions, SESSION_LIFETIME};
use crate::auth::Caller;
use crate::error::DaemonError;

/// The session cookie's name.
const COOKIE: &str = "hutch_ui_session";

/// The header, or on websockets (whose browser API sets no headers) the query parameter,
/// that carries the session's key.
const KEY_HEADER: &str = "x-hutch-ui-key";
const KEY_QUERY: &str = "ui_key";

/// The gate of the UI listener (see the module doc).
pub async fn ui_gate(
    State(sessions): State<Arc<UiSessions>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(host) = loopback_host(req.headers()) else {
        return page(
            StatusCode::MISDIRECTED_REQUEST,
            "unexpected Host for the hutch web UI",
        );
    };
    let path = req.uri().path();
    if path == "/" {
        return secure(axum::response::Redirect::to("/ui/").into_response());
    }
    if path == "/ui" || path.starts_with("/ui/") {
        if let Some(token) = query_value(req.uri().query().unwrap_or(""), "token") {
            return log_in(&sessions, &token);
        }
        return next.run(req).await;
    }
    if !same_origin(req.method(), req.headers(), &format!("http://{host}"), true) {
        return DaemonError::Forbidden("cross-origin request refused".into()).into_response();
    }
    let key = req
        .headers()
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_value(req.uri().query().unwrap_or(""), KEY_QUERY));
    let session = match (cookie(req.headers(), COOKIE), key) {
        (Some(c), Some(k)) => sessions.session(c, &k),
        _ => None,
    };
    let Some(session) = session else {
        return DaemonError::Forbidden("not authorized".into()).into_response();
    };
    let address = match req.extensions().get::<Caller>() {
        Some(Caller::Ui { address, .. }) => *address,
        _ => return DaemonError::Forbidden("not authorized".into()).into_response(),
    };
    req.extensions_mut().insert(Caller::Ui {
        address,
        session: Some(session),
    });
    next.run(req).await
}

/// The HTTPS listener's check: a browser names its page's origin; a request from another
/// origin may read what CORS lets it (nothing) but not change anything.
pub async fn refuse_cross_origin(req: Request, next: Next) -> Response {
    // HTTP/2 names the host in the URI instead; with neither, no Origin matches.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if !same_origin(
        req.method(),
        req.headers(),
        &format!("https://{host}"),
        false,
    ) {
        return DaemonError::Forbidden("cross-origin request refused".into()).into_response();
    }
    next.run(req).await
}

/// Exchanges a login token for a session cookie, and sends the browser on to `/ui/` so
/// that the token leaves the address bar (and the history), with the session's key in
/// the fragment (never sent to a server), where the page takes it into its storage.
fn log_in(sessions: &UiSessions, token: &str) -> Response {
    let Some(session) = sessions.redeem(token) else {
        return page(
            StatusCode::FORBIDDEN,
            "This login link was used already or has expired: run `hutch ui` again.",
        );
    };
    let mut resp = (StatusCode::SEE_OTHER, [(header::CACHE_CONTROL, "no-store")]).into_response();
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        session.cookie,
        SESSION_LIFETIME.as_secs()
    );
    let location = format!("/ui/#key={}", session.key);
    for (name, value) in [(header::SET_COOKIE, cookie), (header::LOCATION, location)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    secure(resp)
}

/// The Host header when it names this machine's loopback (`127.x.y.z`, `[::1]`,
/// `localhost`, with a port or not).
fn loopback_host(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let name = match hutch_api::server_config::split_host_port(host) {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        Some(_) => return None,
        None => host,
    };
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback.then_some(host)
}

/// Whether a request may go on, given the origin its page must have. `strict` (the UI
/// listener, browsers only): an Origin given must be `origin`, and a write or a websocket
/// must give one (browsers always do). Otherwise (HTTPS, whose other clients send no
/// Origin): a write that names an Origin must name `origin`.
fn same_origin(method: &Method, headers: &HeaderMap, origin: &str, strict: bool) -> bool {
    let given = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let writes = !matches!(*method, Method::GET | Method::HEAD);
    let matches = given.map(|g| g.eq_ignore_ascii_case(origin));
    if !strict {
        return !writes || matches.unwrap_or(true);
    }
    let upgrade = headers.contains_key(header::UPGRADE);
    matches.unwrap_or(!(writes || upgrade))
}

/// A cookie's value from the Cookie headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A query parameter's value (tokens are hex: no decoding needed, anything else fails).
fn query_value(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_loopback_hosts_pass() {
        for ok in [
            "127.0.0.1:8444",
            "localhost:8444",
            "[::1]:8444",
            "127.0.0.1",
        ] {
            assert!(loopback_host(&headers(&[("host", ok)])).is_some(), "{ok}");
        }
        for bad in [
            "evil.example:8444",
            "10.0.0.1:8444",
            "127.0.0.1:x",
            "attacker",
        ] {
            assert!(loopback_host(&headers(&[("host", bad)])).is_none(), "{bad}");
        }
        assert!(loopback_host(&HeaderMap::new()).is_none());
    }

    #[test]
    fn writes_and_websockets_need_the_uis_origin() {
        let me = "http://127.0.0.1:8444";
        let post = Method::POST;
        let get = Method::GET;
        assert!(same_origin(
            &post,
            &headers(&[("origin", "http://127.0.0.1:8444")]),
            me,
            true
        ));
        assert!(!same_origin(
            &post,
            &headers(&[("origin", "http://127.0.0.1:9999")]),
            me,
            true
        ));
        assert!(!same_origin(&post, &HeaderMap::new(), me, true));
        assert!(same_origin(&get, &HeaderMap::new(), me, true));
        let ws = headers(&[("upgrade", "websocket"), ("origin", "http://evil.example")]);
        assert!(!same_origin(&get, &ws, me, true));
        // HTTPS: clients without Origin (lxc, pylxd) pass; a foreign page's write does not.
        let https = "https://h:8443";
        assert!(same_origin(&post, &HeaderMap::new(), https, false));
        assert!(!same_origin(
            &post,
            &headers(&[("origin", "http://evil.example")]),
            https,
            false
        ));
        assert!(same_origin(
            &get,
            &headers(&[("origin", "http://evil.example")]),
            https,
            false
        ));
    }

    #[test]
    fn cookies_and_tokens_are_found_by_name() {
        let h = headers(&[("cookie", "a=1; hutch_ui_session=abc"), ("cookie", "b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(query_value("x=1&token=ff", "token").as_deref(), Some("ff"));
        assert_eq!(query_value("tokenx=1", "token"), None);
    }

    #[test]
    fn a_token_becomes_a_strict_http_only_cookie() {
        let s = UiSessions::default();
        let token = s.issue_token(super::super::sessions::TOKEN_LIFETIME);
        let resp = log_in(&s, &token);
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let c = resp.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        assert_eq!(log_in(&s, &token).status(), StatusCode::FORBIDDEN);
    }
}
