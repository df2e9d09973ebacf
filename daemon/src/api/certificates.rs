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
    )
    .await?;
    Ok(empty())
}

async fn merge(
    State(e): State<AppState>,
    Path(fp): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    e.update_certificate(&fp, parse_json(&body)?, true, if_match(&headers).as_deref())
        .await?;
    Ok(empty())
}

async fn delete(State(e): State<AppState>, Path(fp): Path<String>) -> Result<Response> {
    e.delete_certificate(&fp).await?;
    Ok(empty())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use crate::api::testing::TestApi;
    use crate::auth::Caller;

    /// One request through the network router as the TLS peer holding `cert`.
    async fn as_tls(
        api: &TestApi,
        cert: &[u8],
        method: Method,
        uri: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("Content-Type", "application/json")
            .extension(Caller::Tls {
                address: "127.0.0.1:40000".parse().unwrap(),
                certificate: Some(Arc::new(cert.to_vec())),
            })
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = crate::api::network_router(api.engine.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    #[tokio::test]
    async fn trusted_tls_callers_act_and_are_named_in_events() {
        let api = TestApi::new().await;
        let id = hutch_tls::Identity::generate(hutch_tls::Kind::Client).unwrap();
        let (status, body) = as_tls(
            &api,
            &id.cert_der,
            Method::POST,
            "/1.0/profiles",
            json!({"name": "p1"}),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let cert = hutch_tls::base64_encode(&id.cert_der);
        let (status, body) = api
            .call(
                Method::POST,
                "/1.0/certificates",
                Some(json!({"certificate": cert, "name": "t"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let mut events = api.engine.events().subscribe();
        let (status, body) = as_tls(
            &api,
            &id.cert_der,
            Method::POST,
            "/1.0/profiles",
            json!({"name": "p1"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let event: Value = loop {
            let e = events.recv().await.unwrap();
            let v: Value = serde_json::from_str(&e.json).unwrap();
            if v["type"] == "lifecycle" || v["metadata"]["action"].is_string() {
                break v;
            }
        };
        let requestor = &event["metadata"]["requestor"];
        assert_eq!(requestor["protocol"], "tls", "{event}");
        assert_eq!(requestor["username"], id.fingerprint(), "{event}");
        assert_eq!(requestor["address"], "127.0.0.1:40000", "{event}");
    }
}
