//! `/1.0/events`: a websocket of lifecycle, operation and logging events.

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::daemon::AppState;
use crate::error::{DaemonError, Result};

const TYPES: &[&str] = &["operation", "logging", "lifecycle"];

pub fn routes() -> Router<AppState> {
    Router::new().route("/1.0/events", get(events))
}

async fn events(
    State(d): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    member: Option<axum::Extension<super::forward::FromMember>>,
    ws: WebSocketUpgrade,
) -> Result<Response> {
    // A member relaying this one's events wants its own only: it hears the others itself.
    let own_only = member.is_some();
    let wanted: Vec<String> = match q.get("type").filter(|t| !t.is_empty()) {
        Some(t) => t.split(',').map(str::to_string).collect(),
        None => TYPES.iter().map(|t| t.to_string()).collect(),
    };
    if let Some(bad) = wanted.iter().find(|t| !TYPES.contains(&t.as_str())) {
        return Err(DaemonError::BadRequest(format!(
            "{bad:?} isn't a supported event type"
        )));
    }
    // Subscribe before the upgrade so nothing between the handshake and the loop is lost.
    let mut rx = d.events().subscribe();
    Ok(ws
        .on_upgrade(move |socket| async move {
            let (mut tx, mut incoming) = socket.split();
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Ok(ev) if wanted.iter().any(|w| w == ev.kind) && !(own_only && ev.relayed) => {
                            if tx.send(Message::Text(ev.json.as_str().to_string())).await.is_err() {
                                break;
                            }
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    },
                    msg = incoming.next() => match msg {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        _ => {}
                    },
                }
            }
        })
        .into_response())
}
