//! This daemon as the source: `POST /1.0/instances/<n>` (or `…/snapshots/<s>`) with
//! `migration:true`. Pull mode answers a websocket operation whose metadata holds the
//! secrets the target dials; push mode dials the target's websockets before answering.
//! Files go unshifted with an empty idmap. A running instance goes only stateless
//! (`live:false`): a first pass, then a final pass with the instance frozen where the
//! pool's snapshots are not atomic.

use std::path::PathBuf;
use std::sync::Arc;

use hutch_api::instance::MigrationTarget;
use hutch_api::operation::StatusCode;
use serde_json::json;

use super::error::MigrationError;
use super::progress::Progress;
use super::proto::{self, CriuType, MigrationControl, MigrationFsType, MigrationHeader};
use super::{dial_channels, expect_channels, report_failure, Channels};
use crate::daemon::{instance_vol, snapshot_vol};
use crate::db::snapshots::SnapshotRow;
use crate::engine::Engine;
use crate::error::{DaemonError, Result};
use crate::operations::{instance_resources, OpEntry};

/// A migration request on an instance or a snapshot.
#[derive(Debug, Default)]
pub struct MigrateRequest {
    /// `live`; LXD takes a missing key as true.
    pub live: Option<bool>,
    pub instance_only: bool,
    pub target: Option<MigrationTarget>,
}

/// What travels: the instance's volume, or one snapshot's as a volume of its own.
#[derive(Clone, Debug)]
struct Outgoing {
    instance: String,
    snapshot: Option<String>,
    running: bool,
    snapshots: Vec<SnapshotRow>,
}

impl Engine {
    /// Checks and starts a migration of `name` (or of its snapshot `snapshot`).
    pub async fn migrate_instance(
        &self,
        name: &str,
        snapshot: Option<&str>,
        req: MigrateRequest,
    ) -> Result<Arc<OpEntry>> {
        self.db.instance_or_404(name)?;
        if let Some(s) = snapshot {
            self.db.snapshot(name, s)?;
        }
        let code = super::super::runtime_status(self, name).0;
        let running = snapshot.is_none() && code != StatusCode::Stopped;
        if running && req.live.unwrap_or(true) {
            return Err(MigrationError::CriuMissing.into());
        }
        let snapshots = if snapshot.is_none() && !req.instance_only {
            self.db.snapshots(name)?
        } else {
            Vec::new()
        };
        let out = Outgoing {
            instance: name.to_string(),
            snapshot: snapshot.map(str::to_string),
            running,
            snapshots,
        };
        let description = if snapshot.is_some() {
            "Transferring snapshot"
        } else {
            "Migrating instance"
        };
        let resources = instance_resources(name);
        let e = self.clone();
        let op = match req.target {
            Some(target) => {
                // Push: the target's websockets are dialled before the answer, as LXD does.
                let channels =
                    dial_channels(&target.operation, &target.certificate, &target.secrets).await?;
                let op = self
                    .ops
                    .create("task", description, resources, serde_json::Value::Null);
                let op2 = op.clone();
                self.ops.run(op.clone(), async move {
                    send(e, out, channels, op2).await.map(|()| None)
                });
                op
            }
            None => {
                let op = self
                    .ops
                    .create("websocket", description, resources, json!({}));
                let (secrets, waiting) = expect_channels(&op);
                let mut m = serde_json::Map::new();
                for (k, v) in secrets {
                    m.insert(k, v.into());
                }
                op.extend_metadata(m);
                let op2 = op.clone();
                self.ops.run(op.clone(), async move {
                    let cancel = op2.cancelled();
                    let channels = tokio::select! {
                        c = waiting.connected() => c?,
                        () = cancel => return Err(MigrationError::Cancelled.into()),
                    };
                    send(e, out, channels, op2).await.map(|()| None)
                });
                op
            }
        };
        op.set_cancellable();
        Ok(op)
    }
}

/// The body of the source's operation.
async fn send(e: Engine, out: Outgoing, mut channels: Channels, op: Arc<OpEntry>) -> Result<()> {
    let cancel = op.cancelled();
    let result = tokio::select! {
        r = send_on(&e, &out, &mut channels, op.clone()) => r,
        () = cancel => Err(MigrationError::Cancelled.into()),
    };
    match result {
        Ok(()) => {
            channels.control.tx.close().await;
            channels.fs.tx.close().await;
            Ok(())
        }
        Err(err) => {
            if !matches!(&err, DaemonError::Migration(MigrationError::Peer(_))) {
                let m = match &err {
                    DaemonError::Migration(m) => MigrationError::Peer(m.to_string()),
                    other => MigrationError::Peer(other.chain()),
                };
                report_failure(&mut channels, &m).await;
            }
            Err(err)
        }
    }
}

fn snapshot_message(s: &SnapshotRow) -> proto::Snapshot {
    let secs = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .ok()
    };
    proto::Snapshot {
        name: s.name.clone(),
        local_config: s
            .config
            .iter()
            .map(|(k, v)| proto::Config {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        profiles: s.profiles.clone(),
        ephemeral: s.ephemeral,
        local_devices: s
            .devices
            .iter()
            .map(|(name, cfg)| proto::Device {
                name: name.clone(),
                config: cfg
                    .iter()
                    .map(|(k, v)| proto::Config {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            })
            .collect(),
        architecture: proto::arch_id(&s.architecture),
        stateful: false,
        creation_date: secs(&s.created_at),
        last_used_date: Some(0),
        expiry_date: Some(secs(&s.expires_at).unwrap_or(-62135596800)),
    }
}

async fn send_on(
    e: &Engine,
    out: &Outgoing,
    channels: &mut Channels,
    op: Arc<OpEntry>,
) -> Result<()> {
    let pool = e.instance_pool(&out.instance)?;
    let ours = super::transports_of(&*pool);
    let mut offer = MigrationHeader::of_types(&ours);
    if out.running {
        offer.criu = Some(CriuType::None as i32);
    }
    offer.predump = Some(false);
    if out.snapshot.is_none() {
        offer.snapshot_names = out.snapshots.iter().map(|s| s.name.clone()).collect();
        offer.snapshots = out.snapshots.iter().map(snapshot_message).collect();
    }
    channels.control.tx.send_message(&offer).await?;
    let resp: MigrationHeader = channels
        .control
        .rx
        .recv_message("migration response header")
        .await?;
    let types = proto::match_types(&resp, &ours)?;
    let transport = types[0].clone();
    // On refresh the target names the snapshots it lacks.
    let wanted: Vec<&SnapshotRow> = if resp.refresh == Some(true) {
        out.snapshots
            .iter()
            .filter(|s| resp.snapshot_names.contains(&s.name))
            .collect()
    } else {
        out.snapshots.iter().collect()
    };
    let progress = Progress::new(&out.instance, Some(op));
    let hutchd = e.hutchd.clone();
    let main = match &out.snapshot {
        Some(s) => snapshot_vol(&out.instance, s),
        None => instance_vol(&out.instance),
    };
    let fs = &mut channels.fs;
    match transport.fs {
        MigrationFsType::Btrfs => {
            let snaps: Vec<(String, PathBuf)> = wanted
                .iter()
                .map(|s| (s.name.clone(), snapshot_vol(&out.instance, &s.name)))
                .collect();
            // The main volume goes as a read-only snapshot of itself, taken now.
            let frozen =
                PathBuf::from("containers").join(format!(".{}.migration-send", out.instance));
            let _ = pool.delete_volume(&frozen);
            let (p, from, to) = (pool.clone(), main.clone(), frozen.clone());
            super::super::blocking(move || Ok(p.clone_volume(&from, &to, true)?)).await?;
            let sent = super::send_receive::send(
                &*pool,
                &snaps,
                &frozen,
                fs,
                transport.has(proto::BTRFS_MIGRATION_HEADER),
                &progress,
            )
            .await;
            let _ = pool.delete_volume(&frozen);
            sent?;
        }
        _ => {
            let features = resp.rsync_features();
            for s in &wanted {
                let path = pool.path(&snapshot_vol(&out.instance, &s.name));
                super::rsync::send(&s.name, &path, fs, &features, &hutchd, &progress).await?;
            }
            let path = pool.path(&main);
            super::rsync::send(&out.instance, &path, fs, &features, &hutchd, &progress).await?;
            if out.running {
                // The final pass, with the instance frozen so the copy is consistent.
                let rd = e.runtime_dir(&out.instance);
                let frozen = hutch_runtime::container::freeze(&rd).is_ok();
                let sent =
                    super::rsync::send(&out.instance, &path, fs, &features, &hutchd, &progress)
                        .await;
                if frozen {
                    let _ = hutch_runtime::container::thaw(&rd);
                }
                sent?;
            }
        }
    }
    let msg: MigrationControl = channels
        .control
        .rx
        .recv_message("migration control")
        .await?;
    if !msg.success {
        return Err(MigrationError::Peer(msg.message.unwrap_or_default()).into());
    }
    Ok(())
}
