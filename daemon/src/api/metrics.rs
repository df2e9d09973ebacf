//! `GET /1.0/metrics` (Prometheus text, not LXD's envelope) and the two layers that time
//! every API request by method and route template for its histogram.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::daemon::AppState;
use crate::engine::metrics::{text::CONTENT_TYPE, OTHER_ROUTE};
use crate::error::DaemonError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/1.0/metrics", get(metrics))
}

async fn metrics(
    State(e): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, DaemonError> {
    let body = e.metrics(q.get("project").map(String::as_str)).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}

/// The route template a request matched, carried on its response to [`time_requests`].
#[derive(Clone)]
struct Route(MatchedPath);

/// Inner layer (a route layer, so routing has happened): tags the response with the
/// matched route's template.
pub async fn tag_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(Route(r));
    }
    resp
}

/// Outer layer: times the whole answer (authentication and the durability wait
/// included) and counts it under its method and route template; requests no route
/// matched (refused before routing, or unknown) count as route `other`.
pub async fn time_requests(State(e): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let route = resp.extensions().get::<Route>();
    let route = route.map_or(OTHER_ROUTE, |r| r.0.as_str());
    e.observe_request(method.as_str(), route, start.elapsed());
    resp
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};

    use crate::api::testing::TestApi;

    #[tokio::test]
    async fn metrics_are_text_and_requests_count_by_route() {
        let api = TestApi::new().await;
        let fp = api.tiny_image().await;
        api.tiny_instance("c1", &fp).await;
        for _ in 0..2 {
            let (status, _) = api.call(Method::GET, "/1.0/instances/c1", None).await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, _) = api.call(Method::GET, "/1.0/nope/x", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, headers, _) = api
            .call_raw(Method::GET, "/1.0/metrics?project=default", Vec::new(), &[])
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/plain; version=0.0.4");
        let (status, body) = api.call(Method::GET, "/1.0/metrics?project=p2", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

        let text = api.engine.metrics(None).await.unwrap();
        // A stopped instance has no samples; the daemon counts it.
        assert!(!text.contains("lxd_"), "{text}");
        for line in [
            "hutch_instances{status=\"Running\"} 0",
            "hutch_instances{status=\"Stopped\"} 1",
            "hutch_api_request_duration_seconds_count{method=\"GET\",route=\"/1.0/instances/:name\"} 2",
            "hutch_api_request_duration_seconds_count{method=\"GET\",route=\"other\"} 1",
            "hutch_api_request_duration_seconds_count{method=\"GET\",route=\"/1.0/metrics\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        assert!(!text.contains("/1.0/instances/c1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
