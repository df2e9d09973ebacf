//! Moving instances between hosts with LXD's migration API: this daemon as the source
//! (`POST /1.0/instances/<n>` with `migration:true`) or as the target (`POST
//! /1.0/instances` with a `migration` source), in pull or push mode, with LXD's control
//! protocol (protobuf on a websocket) and its data transports (rsync, btrfs send).
//! Live (CRIU) migration is never offered nor accepted.

mod error;
mod idshift;
mod netcat;
mod progress;
mod proto;
mod rsync;
mod send_receive;
mod socket;
mod source;
mod target;

pub use error::MigrationError;
pub(crate) use idshift::DiskIdmap;
pub use netcat::netcat_main;
pub use source::MigrateRequest;
pub use target::MigrationSource;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::operations::OpEntry;
use socket::Conn;

/// How long a side waits for its peer's websockets (LXD's 10 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The websockets of one migration, `control` and `fs`.
pub(crate) struct Channels {
    control: Conn,
    fs: Conn,
}

/// Secrets for `control` and `fs`, and where their websockets will arrive on `op`.
fn expect_channels(op: &OpEntry) -> (BTreeMap<String, String>, Waiting) {
    let control = socket::new_secret();
    let fs = socket::new_secret();
    let waiting = Waiting {
        control: op.expect_socket(&control),
        fs: op.expect_socket(&fs),
    };
    let secrets = BTreeMap::from([("control".to_string(), control), ("fs".to_string(), fs)]);
    (secrets, waiting)
}

/// The operation's websockets, still to be dialled by the peer.
struct Waiting {
    control: oneshot::Receiver<axum::extract::ws::WebSocket>,
    fs: oneshot::Receiver<axum::extract::ws::WebSocket>,
}

impl Waiting {
    /// Both websockets, or LXD's timeout error after 10 s.
    async fn connected(self) -> Result<Channels, MigrationError> {
        let both = async {
            let control = self.control.await.ok()?;
            let fs = self.fs.await.ok()?;
            Some((control, fs))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, both).await {
            Ok(Some((control, fs))) => Ok(Channels {
                control: Conn::accepted("control", control),
                fs: Conn::accepted("fs", fs),
            }),
            _ => Err(MigrationError::ConnectTimeout),
        }
    }
}

/// Dials the peer's `control` and `fs` websockets of `operation`; any other secret name
/// is refused, as LXD does (a `criu` one is dialled and left unused: nothing is live).
async fn dial_channels(
    operation: &str,
    certificate: &str,
    secrets: &BTreeMap<String, String>,
) -> Result<Channels, MigrationError> {
    for name in secrets.keys() {
        if !matches!(name.as_str(), "control" | "fs" | "criu") {
            return Err(MigrationError::UnknownSecret(name.clone()));
        }
    }
    let der = hutch_tls::cert_der_of_pem(certificate).map_err(MigrationError::BadCertificate)?;
    let secret = |name: &'static str| secrets.get(name).ok_or(MigrationError::MissingSecret(name));
    let control = socket::dial("control", operation, secret("control")?, &der).await?;
    let fs = socket::dial("fs", operation, secret("fs")?, &der).await?;
    Ok(Channels { control, fs })
}

/// The transports of `pool`: btrfs streams first where the driver makes them, then rsync.
fn transports_of(pool: &dyn hutch_storage::StorageDriver) -> Vec<proto::Transport> {
    proto::pool_transports(pool.send_argv(std::path::Path::new(""), None).is_some())
}

/// Ends a migration that failed on this side: the peer is told why (LXD's
/// `MigrationControl{success:false}`), then the sockets close.
async fn report_failure(channels: &mut Channels, err: &MigrationError) {
    let msg = proto::MigrationControl {
        success: false,
        message: Some(crate::error::chain(err)),
    };
    let _ = channels.control.tx.send_message(&msg).await;
    channels.control.tx.close().await;
    channels.fs.tx.close().await;
}
