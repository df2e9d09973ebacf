//! `/1.0/certificates`: the trust store of the HTTPS listener, and add tokens.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use hutch_api::certificate::CertificatesPost;

use super::{accepted, created, empty, if_match, parse_json, recursion, sync, versioned};
use crate::auth::{Caller, Trust};
use crate::daemon::AppState;
use crate::engine::certificates::CertificateAdded;
use crate::error::Result;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/1.0/certificates", get(list).post(add))
        .route(
            "/1.0/certificates/:fingerprint",
            get(one).put(replace).patch(merge).delete(delete),
        )
}

async fn list(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let all = e.certificates()?;
    Ok(if recursion(&q) > 0 {
        sync(all)
    } else {
        sync(
            all.iter()
                .map(|c| format!("/1.0/certificates/{}", c.fingerprint))
                .collect::<Vec<_>>(),
        )
    })
}

/// Reached untrusted too: a client trusting itself with the password or a token.
async fn add(
    State(e): State<AppState>,
    caller: Extension<Caller>,
    trust: Extension<Trust>,
    body: Bytes,
) -> Result<Response> {
    let req: CertificatesPost = parse_json(&body)?;
    Ok(match e.add_certificate(req, &caller, *trust).await? {
        CertificateAdded::Certificate(fp) => created(&format!("/1.0/certificates/{fp}")),
        CertificateAdded::Token(op) => accepted(&op),
    })
}

async fn one(State(e): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    Ok(versioned(e.certificate(&fp)?))
}

async fn replace(
    State(e): State<AppState>,
    Path(fp): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    e.update_certificate(
        &fp,
        parse_json(&body)?,
        false,
        if_match(&headers).as_deref(),
    )?;
    Ok(empty())
}

async fn merge(
    State(e): State<AppState>,
    Path(fp): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    e.update_certificate(&fp, parse_json(&body)?, true, if_match(&headers).as_deref())?;
    Ok(empty())
}

async fn delete(State(e): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    e.delete_certificate(&fp)?;
    Ok(empty())
}
