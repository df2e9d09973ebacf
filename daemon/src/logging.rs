//! The daemon's log: to stderr, and as `logging` events on `/1.0/events` (as LXD sends
//! them to `lxc monitor`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::json;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::events::EventHub;

/// Installs the logger at `level` (unless `RUST_LOG` says otherwise).
pub fn init(level: &str, events: EventHub) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::registry()
        .with(filter)
        // A log that cannot be written (full disk, closed pipe) is skipped: the layer's own
        // report of that goes through `eprintln!`, which panics when stderr fails.
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .log_internal_errors(false),
        )
        .with(EventLayer { events })
        .init();
}

/// Forwards each log record as a `logging` event.
struct EventLayer {
    events: EventHub,
}

#[derive(Default)]
struct Fields {
    message: String,
    context: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.context
                .insert(field.name().to_string(), format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.context
                .insert(field.name().to_string(), value.to_string());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for EventLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            _ => "debug",
        };
        self.events.send(
            "logging",
            json!({"message": fields.message, "level": level, "context": fields.context}),
        );
    }
}
