//! The whole router over an engine on a temporary state directory, called in process
//! (`tower::ServiceExt::oneshot`): what router tests of every resource use.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::daemon::Daemon;
use crate::engine::Engine;
use crate::events::EventHub;

#[allow(dead_code)] // each resource's tests use what they need
pub struct TestApi {
    router: Router,
    pub engine: Engine,
    /// The state directory: a `dir` default pool, no network.
    pub dir: tempfile::TempDir,
}

#[allow(dead_code)]
impl TestApi {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary state directory");
        let hutchd = std::env::current_exe().expect("test binary");
        let daemon = Daemon::open(dir.path(), hutchd, EventHub::new()).expect("open daemon");
        let engine = Engine::new(daemon);
        crate::serve::ensure_default_profile(&engine).expect("default profile");
        TestApi {
            router: super::router(engine.clone()),
            engine,
            dir,
        }
    }

    /// `method uri` with an optional JSON body: the status and the decoded envelope.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, uri, body, &[]).await
    }

    /// As [`call`](Self::call), with extra headers (`If-Match`...).
    pub async fn call_with(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).expect("json body"))
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("router answers");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    /// Waits for the operation an async answer named, and returns it.
    pub async fn wait(&self, envelope: &Value) -> Value {
        let url = envelope["operation"].as_str().expect("an operation");
        let (status, op) = self
            .call(Method::GET, &format!("{url}/wait?timeout=30"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{op}");
        op["metadata"].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_are_lxd_envelopes_with_their_status() {
        let api = TestApi::new().await;
        let (status, body) = api.call(Method::GET, "/1.0/nothing-here", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["type"], "error");
        assert_eq!(body["error_code"], 404);
        let (status, body) = api.call(Method::GET, "/1.0/instances/missing", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "Instance not found");
    }
}
