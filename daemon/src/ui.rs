//! The web UI: static assets embedded in the binary, served at `/ui/` on the HTTPS
//! listener (the browser's client certificate decides trust, as for any client) and on a
//! plain-HTTP listener bound to loopback only (`core.ui_address`), where a browser logs in
//! with a one-time token an admin got on the unix socket (`hutch ui`) and holds a session
//! cookie from then on.

mod assets;
mod gate;
mod listener;
mod sessions;
mod tokens;

pub use assets::routes as asset_routes;
pub use gate::refuse_cross_origin;
pub use listener::UiListener;
pub use tokens::routes as api_routes;
