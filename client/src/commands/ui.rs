//! `hutch ui [--no-open] [--port PORT]`: a one-time login link to hutchd's web UI. Asks
//! the local daemon (the unix socket: an admin) for a short-lived token, starts the UI's
//! loopback listener first when `core.ui_address` is unset, prints the URL and opens it
//! in the desktop's browser when there is a display.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use crate::http::Client;

/// The port `hutch ui` enables when `core.ui_address` is unset.
const DEFAULT_ADDRESS: &str = "127.0.0.1:8444";

#[derive(Args)]
pub struct UiArgs {
    /// Print the link only; do not start a browser.
    #[arg(long)]
    pub no_open: bool,
    /// Loopback address to serve the UI on when `core.ui_address` is unset.
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    pub address: String,
}

pub fn ui(args: &UiArgs) -> Result<()> {
    // Tokens are only given on the socket: a remote's web UI is reached over its HTTPS
    // address with a trusted client certificate instead.
    let client = Client::new();
    let server = client.get("/1.0")?;
    let configured = server["config"]["core.ui_address"].as_str().unwrap_or("");
    if configured.is_empty() {
        client
            .request(
                "PATCH",
                "/1.0",
                Some(&json!({"config": {"core.ui_address": args.address}})),
            )
            .with_context(|| {
                format!(
                    "start the web UI on {} (choose another with `hutch config set core.ui_address 127.0.0.1:PORT`)",
                    args.address
                )
            })?;
        eprintln!(
            "Web UI enabled on {} (core.ui_address; `hutch config unset core.ui_address` turns it off)",
            args.address
        );
    }
    let token = client.request("POST", "/1.0/ui/tokens", None)?.metadata;
    let address = token["address"].as_str().unwrap_or("");
    let path = token["path"].as_str().unwrap_or("");
    if address.is_empty() || path.is_empty() {
        bail!("the web UI listener is not running (see hutchd's log for why)");
    }
    let url = format!("http://{address}{path}");
    println!("{url}");
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if display && !args.no_open {
        // Best effort: the link is printed either way.
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    eprintln!("The link works once, for 5 minutes.");
    Ok(())
}
