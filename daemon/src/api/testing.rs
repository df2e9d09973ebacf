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
        Self::with_pool("dir", crate::daemon::Runners::system())
    }

    /// An engine whose `default` pool has `driver`, with `runners` behind it (fakes).
    pub fn with_pool(driver: &str, runners: crate::daemon::Runners) -> Self {
        let dir = tempfile::tempdir().expect("temporary state directory");
        crate::engine::testing::record_default_pool(dir.path(), driver);
        let hutchd = std::env::current_exe().expect("test binary");
        let daemon =
            Daemon::open_with(dir.path(), hutchd, EventHub::new(), runners).expect("open daemon");
        let engine = Engine::new(daemon);
        engine.ensure_default_profile().expect("default profile");
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
        let (status, _, value) = match body {
            Some(v) => {
                let mut all = vec![("content-type", "application/json")];
                all.extend_from_slice(headers);
                let bytes = serde_json::to_vec(&v).expect("json body");
                self.call_raw(method, uri, bytes, &all).await
            }
            None => self.call_raw(method, uri, Vec::new(), headers).await,
        };
        (status, value)
    }

    /// A request with a raw body: the status, the response headers and the decoded body.
    pub async fn call_raw(
        &self,
        method: Method,
        uri: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = Body::from(body);
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("router answers");
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, value)
    }

    /// Uploads a small unified busybox-less image (a few files, no init) and returns its
    /// fingerprint: enough for instances that are created but never started.
    pub async fn tiny_image(&self) -> String {
        let op = self.try_tiny_image().await;
        assert_eq!(op["status"], "Success", "{op}");
        op["metadata"]["fingerprint"]
            .as_str()
            .expect("fingerprint")
            .to_string()
    }

    /// Uploads the tiny image; returns the finished operation, whatever its outcome.
    pub async fn try_tiny_image(&self) -> Value {
        let src = tempfile::tempdir().expect("image source");
        let rootfs = src.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).expect("rootfs");
        std::fs::write(rootfs.join("etc/hostname"), "tiny\n").expect("hostname");
        let meta = hutch_images::ImageMetadata {
            architecture: "x86_64".into(),
            creation_date: 1,
            ..Default::default()
        };
        let tarball =
            hutch_images::pack_unified(&rootfs, &meta, hutch_images::Compression::None, Vec::new())
                .expect("pack");
        let (status, _, body) = self
            .call_raw(Method::POST, "/1.0/images", tarball, &[])
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        self.wait(&body).await
    }

    /// Creates a stopped instance `name` from the tiny image.
    pub async fn tiny_instance(&self, name: &str, fingerprint: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                "/1.0/instances",
                Some(serde_json::json!({
                    "name": name,
                    "source": {"type": "image", "fingerprint": fingerprint},
                })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let op = self.wait(&body).await;
        assert_eq!(op["status"], "Success", "{op}");
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
