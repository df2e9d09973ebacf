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
