//! `POST /1.0/ui/tokens`: a one-time login token for the web UI, for the unix socket's
//! admin only (what `hutch ui` asks for).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;

use super::sessions::{TOKEN_LIFETIME, TOKEN_LIFETIME_MAX};
use super::UiListener;
use crate::api::{parse_json, sync};
use crate::auth::Caller;
use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

pub fn routes() -> Router<AppState> {
    Router::new().route("/1.0/ui/tokens", post(issue))
}

/// The request body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensPost {
    /// Seconds the token stays valid (1 to 3600; 300 when not given).
    #[serde(default)]
    lifetime: Option<u64>,
}

async fn issue(
    caller: Option<Extension<Caller>>,
    ui: Option<Extension<Arc<UiListener>>>,
    body: Bytes,
) -> Result<axum::response::Response> {
    if !matches!(caller.as_deref(), Some(Caller::Unix)) {
        return Err(DaemonError::Forbidden(
            "web UI login tokens are only given on the unix socket".into(),
        ));
    }
    let Some(Extension(ui)) = ui else {
        return Err(DaemonError::BadRequest("this server has no web UI".into()));
    };
    let req: TokensPost = if body.iter().all(u8::is_ascii_whitespace) {
        TokensPost::default()
    } else {
        parse_json(&body)?
    };
    let lifetime = match req.lifetime {
        None => TOKEN_LIFETIME,
        Some(s) if (1..=TOKEN_LIFETIME_MAX.as_secs()).contains(&s) => Duration::from_secs(s),
        Some(_) => {
            return Err(DaemonError::BadRequest(format!(
                "lifetime must be 1 to {} seconds",
                TOKEN_LIFETIME_MAX.as_secs()
            )))
        }
    };
    let token = ui.sessions().issue_token(lifetime);
    let expires_at = time::OffsetDateTime::now_utc() + lifetime;
    Ok(sync(json!({
        "token": token,
        "path": format!("/ui/?token={token}"),
        "address": ui.bound().map(|a| a.to_string()).unwrap_or_default(),
        "expires_at": expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    })))
}
