//! This daemon as the target: `POST /1.0/instances` with a `migration` source. The row is
//! recorded before the answer; the work dials the source (pull) or waits for it (push),
//! negotiates, receives the snapshots and the main volume, and on any failure (the peer's
//! message, a dropped socket, a cancel) removes everything it made.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hutch_api::instance::InstancesPost;
use serde_json::json;

use super::error::MigrationError;
use super::idshift::DiskIdmap;
use super::progress::Progress;
use super::proto::{self, CriuType, MigrationControl, MigrationFsType, MigrationHeader};
use super::{expect_channels, report_failure, Channels};
use crate::daemon::{instance_vol, snapshot_vol};
use crate::db::instances::InstanceRow;
use crate::db::snapshots::SnapshotRow;
use crate::engine::revert::Revert;
use crate::engine::Engine;
use crate::error::{DaemonError, Result};
use crate::operations::{instance_resources, OpEntry};

/// A checked `migration` source of a create request.
#[derive(Debug)]
pub struct MigrationSource {
    push: bool,
    operation: String,
    certificate: String,
    secrets: std::collections::BTreeMap<String, String>,
    refresh: bool,
    instance_only: bool,
}

impl MigrationSource {
    /// Checks the source's shape: the mode (501 for others, as LXD), and in pull mode the
    /// URL, certificate and secrets to dial.
    pub fn check(s: &hutch_api::instance::InstanceSource) -> Result<MigrationSource> {
        let push = match s.mode.as_str() {
            "pull" | "" => false,
            "push" => true,
            other => return Err(MigrationError::ModeNotImplemented(other.to_string()).into()),
        };
        if !push {
            super::socket::websocket_url(&s.operation, "x")?;
            hutch_tls::cert_der_of_pem(&s.certificate).map_err(MigrationError::BadCertificate)?;
            for name in ["control", "fs"] {
                let v =
                    s.secrets
                        .get(name)
                        .ok_or(MigrationError::MissingSecret(if name == "fs" {
                            "fs"
                        } else {
                            "control"
                        }))?;
                super::socket::websocket_url(&s.operation, v)?;
            }
        }
        Ok(MigrationSource {
            push,
            operation: s.operation.clone(),
            certificate: s.certificate.clone(),
            secrets: s.secrets.clone(),
            refresh: s.refresh,
            instance_only: s.instance_only || s.container_only,
        })
    }

    pub fn refresh(&self) -> bool {
        self.refresh
    }
}

impl Engine {
    /// Records the new instance and starts receiving it; the operation is a task (pull)
    /// or a websocket operation whose metadata holds this side's secrets (push).
    pub async fn create_from_migration(&self, mut req: InstancesPost) -> Result<Arc<OpEntry>> {
        super::super::spec::drop_empty_values(&mut req.put.config, &mut req.put.devices);
        let source = match super::super::validate_create(self, &mut req)? {
            super::super::create::CreateSource::Migration(s) => *s,
            _ => unreachable!("a migration source"),
        };
        let existing = self.db.instance(&req.name)?;
        let refresh = source.refresh && existing.is_some();
        // In a cluster a new instance's name is claimed for this member first (a move has
        // placed it here already).
        let claim = match existing {
            Some(_) if refresh => None,
            _ => Some(self.claim_instance_name(&req.name).await?),
        };
        let row = match existing {
            Some(row) if refresh => row,
            _ => {
                let made = self
                    .migration_row(&req)
                    .and_then(|row| self.db.insert_instance(&row).map(|()| row));
                match made {
                    Ok(row) => row,
                    Err(err) => {
                        if let Some(claim) = claim {
                            claim.end(false).await;
                        }
                        return Err(err);
                    }
                }
            }
        };
        let resources = instance_resources(&row.name);
        let e = self.clone();
        let op = if source.push {
            let op = self
                .ops
                .create("websocket", "Creating instance", resources, json!({}));
            let (secrets, waiting) = expect_channels(&op);
            let mut m = serde_json::Map::new();
            for (k, v) in &secrets {
                m.insert(k.clone(), v.clone().into());
            }
            op.extend_metadata(m);
            let op2 = op.clone();
            self.ops.run(op.clone(), async move {
                let cancel = op2.cancelled();
                let connect = async {
                    tokio::select! {
                        c = waiting.connected() => c.map_err(DaemonError::from),
                        () = cancel => Err(MigrationError::Cancelled.into()),
                    }
                };
                let made = receive(e, row, source, refresh, Some(op2.clone()), connect).await;
                if let Some(claim) = claim {
                    claim.end(made.is_ok()).await;
                }
                made.map(|()| None)
            });
            op
        } else {
            let op = self.ops.create(
                "task",
                "Creating instance",
                resources,
                serde_json::Value::Null,
            );
            let op2 = op.clone();
            self.ops.run(op.clone(), async move {
                let (url, cert, secrets) = (
                    source.operation.clone(),
                    source.certificate.clone(),
                    source.secrets.clone(),
                );
                let connect = async move {
                    super::dial_channels(&url, &cert, &secrets)
                        .await
                        .map_err(DaemonError::from)
                };
                let made = receive(e, row, source, refresh, Some(op2), connect).await;
                if let Some(claim) = claim {
                    claim.end(made.is_ok()).await;
                }
                made.map(|()| None)
            });
            op
        };
        op.set_cancellable();
        Ok(op)
    }

    /// The row of a new migrated instance: the request's config, with what the source's
    /// id map meant replaced by hutch's (files arrive unshifted, see `idshift`).
    fn migration_row(&self, req: &InstancesPost) -> Result<InstanceRow> {
        let mut config = req.put.config.clone();
        config.retain(|k, _| {
            !(k.starts_with("volatile.idmap.")
                || k.starts_with("volatile.last_state.")
                || k == "volatile.apply_template")
        });
        if !req.source.base_image.is_empty() {
            config.insert("volatile.base_image".into(), req.source.base_image.clone());
        }
        config.insert("volatile.last_state.idmap".into(), "[]".into());
        config.insert(super::super::templates::APPLY_KEY.into(), "copy".into());
        let architecture = if req.put.architecture.is_empty() {
            std::env::consts::ARCH.to_string()
        } else {
            req.put.architecture.clone()
        };
        let mut row = InstanceRow {
            name: req.name.clone(),
            kind: "container".into(),
            architecture,
            ephemeral: req.put.ephemeral,
            stateful: false,
            description: req.put.description.clone(),
            created_at: crate::now(),
            last_used_at: "1970-01-01T00:00:00Z".into(),
            config,
            devices: req.put.devices.clone(),
            profiles: req.put.profiles.clone().unwrap_or_default(),
            state: "creating".into(),
            pool: String::new(),
        };
        row.pool = super::super::spec::root_pool(&super::super::expand(self, &row)?.devices);
        self.pool(&row.pool)?;
        Ok(row)
    }
}

/// The body of the target's operation.
async fn receive(
    e: Engine,
    row: InstanceRow,
    source: MigrationSource,
    refresh: bool,
    op: Option<Arc<OpEntry>>,
    connect: impl std::future::Future<Output = Result<Channels>>,
) -> Result<()> {
    let name = row.name.clone();
    let mut revert = Revert::new();
    if !refresh {
        let (d, n) = (e.clone(), name.clone());
        revert.add(move || super::super::create::remove_leftovers(&d, &n));
    }
    let lock = e.instance_lock(&name);
    let _guard = lock.lock().await;
    let mut channels = connect.await?;
    let cancel = op.as_ref().map(|o| o.cancelled());
    let work = receive_on(
        &e,
        &row,
        &source,
        refresh,
        &mut channels,
        &mut revert,
        op.clone(),
    );
    let outcome = match cancel {
        Some(cancel) => tokio::select! {
            r = work => r,
            () = cancel => Err(MigrationError::Cancelled.into()),
        },
        None => work.await,
    };
    match outcome {
        Ok(()) => {
            let done = MigrationControl {
                success: true,
                message: Some(String::new()),
            };
            channels.control.tx.send_message(&done).await?;
            channels.control.tx.close().await;
            e.db.set_instance_state(&name, "ready")?;
            revert.success();
            e.events.lifecycle(
                "instance-created",
                &format!("/1.0/instances/{name}"),
                json!({"type": "container", "storage-pool": row.pool}),
            );
            Ok(())
        }
        Err(err) => {
            let m = match &err {
                DaemonError::Migration(m) => MigrationError::Peer(m.to_string()),
                other => MigrationError::Peer(other.chain()),
            };
            if !matches!(&err, DaemonError::Migration(MigrationError::Peer(_))) {
                report_failure(&mut channels, &m).await;
            }
            // The revert runs here, before the operation reports the failure.
            drop(revert);
            Err(err)
        }
    }
}

/// Negotiates and receives, watching the control channel for the source's failure.
async fn receive_on(
    e: &Engine,
    row: &InstanceRow,
    source: &MigrationSource,
    refresh: bool,
    channels: &mut Channels,
    revert: &mut Revert,
    op: Option<Arc<OpEntry>>,
) -> Result<()> {
    let Channels { control, fs } = channels;
    let mut offer: MigrationHeader = control.rx.recv_message("migration offer header").await?;
    if offer.criu == Some(CriuType::CriuRsync as i32) {
        return Err(MigrationError::LiveRestore.into());
    }
    let pool = e.pool(&row.pool)?;
    let ours = super::transports_of(&*pool);
    offer.refresh = Some(refresh);
    let types = proto::match_types(&offer, &ours)?;
    let mut resp = MigrationHeader::of_types(&types);
    resp.index_header_version = Some(0);
    resp.refresh = Some(refresh);
    resp.predump = Some(false);
    let final_sync = offer.criu == Some(CriuType::None as i32);
    if final_sync {
        resp.criu = Some(CriuType::None as i32);
    }
    let mut snapshots: Vec<proto::Snapshot> = if source.instance_only {
        Vec::new()
    } else if offer.snapshots.len() == offer.snapshot_names.len() {
        offer.snapshots.clone()
    } else {
        // Legacy sources send names only.
        offer
            .snapshot_names
            .iter()
            .map(|n| proto::Snapshot {
                name: n.clone(),
                architecture: proto::arch_id(&row.architecture),
                ..Default::default()
            })
            .collect()
    };
    for s in &snapshots {
        super::super::validate_snapshot_name(&s.name)?;
    }
    if refresh {
        snapshots = refresh_snapshots(e, &row.name, snapshots)?;
    }
    if !source.instance_only {
        resp.snapshot_names = snapshots.iter().map(|s| s.name.clone()).collect();
        resp.snapshots = snapshots.clone();
    }
    control.tx.send_message(&resp).await?;

    let idmap = DiskIdmap::new(&offer.idmap);
    let transport = types[0].clone();
    let progress = Progress::new(&row.name, op);
    let transfer = async {
        if !refresh {
            let (d, n) = (e.clone(), row.name.clone());
            let dir = e
                .pool(&row.pool)?
                .path(Path::new("containers-snapshots").join(&n).as_path());
            let pool = e.pool(&row.pool)?;
            revert.add(move || {
                super::super::create::remove_snapshot_leftovers(&d, &n);
                // Received volumes without a row yet: the directory is this instance's.
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let vol = Path::new("containers-snapshots")
                        .join(&n)
                        .join(entry.file_name());
                    let _ = pool.delete_volume(&vol);
                }
                let _ = std::fs::remove_dir(dir);
            });
        }
        match transport.fs {
            MigrationFsType::Btrfs => {
                receive_btrfs(e, row, &snapshots, fs, &transport, &idmap, &progress).await
            }
            _ => {
                let features = offer_features(&resp);
                receive_rsync(
                    e, row, &snapshots, fs, &features, final_sync, &idmap, &progress,
                )
                .await
            }
        }
    };
    // The source may give up at any time; its message is the error.
    let watch = async {
        let msg: MigrationControl = control.rx.recv_message("migration control").await?;
        Err::<(), DaemonError>(if msg.success {
            MigrationError::BadMessage {
                what: "migration control",
                reason: "success before the transfer ended".into(),
            }
            .into()
        } else {
            MigrationError::Peer(msg.message.unwrap_or_default()).into()
        })
    };
    tokio::select! {
        r = transfer => r,
        r = watch => r,
    }
}

fn offer_features(resp: &MigrationHeader) -> Vec<&'static str> {
    resp.rsync_features()
}

/// LXD's snapshot comparison on refresh: the target's snapshots the source lacks, or
/// that have another creation date, are deleted; the source's that the target lacks (or
/// just deleted) are the ones to send.
fn refresh_snapshots(
    e: &Engine,
    name: &str,
    offered: Vec<proto::Snapshot>,
) -> Result<Vec<proto::Snapshot>> {
    let ours = e.db.snapshots(name)?;
    let pool = e.instance_pool(name)?;
    let same = |s: &proto::Snapshot, r: &SnapshotRow| {
        s.name == r.name && Some(unix_seconds(&r.created_at)) == s.creation_date
    };
    for r in &ours {
        if !offered.iter().any(|s| same(s, r)) {
            pool.delete_volume(&snapshot_vol(name, &r.name))?;
            e.db.delete_snapshot(name, &r.name)?;
        }
    }
    Ok(offered
        .into_iter()
        .filter(|s| !ours.iter().any(|r| same(s, r)))
        .collect())
}

fn unix_seconds(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

fn rfc3339_of(secs: Option<i64>) -> Option<String> {
    let secs = secs.filter(|s| *s != 0 && *s != -62135596800)?;
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// The record of a received snapshot.
fn snapshot_row(row: &InstanceRow, s: &proto::Snapshot) -> SnapshotRow {
    let mut config: std::collections::BTreeMap<String, String> = s
        .local_config
        .iter()
        .map(|c| (c.key.clone(), c.value.clone()))
        .collect();
    config
        .retain(|k, _| !k.starts_with("volatile.idmap.") && !k.starts_with("volatile.last_state."));
    let devices = s
        .local_devices
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                d.config
                    .iter()
                    .map(|c| (c.key.clone(), c.value.clone()))
                    .collect(),
            )
        })
        .collect();
    SnapshotRow {
        instance: row.name.clone(),
        name: s.name.clone(),
        created_at: rfc3339_of(s.creation_date).unwrap_or_else(crate::now),
        expires_at: rfc3339_of(s.expiry_date).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        architecture: proto::arch_name(s.architecture)
            .map(str::to_string)
            .unwrap_or_else(|| row.architecture.clone()),
        config,
        devices,
        profiles: s.profiles.clone(),
        ephemeral: s.ephemeral,
    }
}

/// rsync: each snapshot is synced into the main volume and snapshotted there, then the
/// main volume (twice when the source runs: the second pass is the final sync).
#[allow(clippy::too_many_arguments)]
async fn receive_rsync(
    e: &Engine,
    row: &InstanceRow,
    snapshots: &[proto::Snapshot],
    fs: &mut super::socket::Conn,
    features: &[&'static str],
    final_sync: bool,
    idmap: &DiskIdmap,
    progress: &Progress,
) -> Result<()> {
    let pool = e.pool(&row.pool)?;
    let main = instance_vol(&row.name);
    if !pool.path(&main).exists() {
        pool.create_volume(&main)?;
    }
    let main_path = pool.path(&main);
    for s in snapshots {
        super::rsync::recv(&s.name, &main_path, fs, features, progress).await?;
        unshift(idmap, &main_path).await?;
        let (p, from, to) = (pool.clone(), main.clone(), snapshot_vol(&row.name, &s.name));
        super::super::blocking(move || Ok(p.clone_volume(&from, &to, true)?)).await?;
        e.db.insert_snapshot(&snapshot_row(row, s))?;
    }
    super::rsync::recv(&row.name, &main_path, fs, features, progress).await?;
    if final_sync {
        super::rsync::recv(&row.name, &main_path, fs, features, progress).await?;
    }
    unshift(idmap, &main_path).await?;
    finish_volume(e, row)
}

async fn unshift(idmap: &DiskIdmap, volume: &Path) -> Result<()> {
    if idmap.is_empty() {
        return Ok(());
    }
    let (map, root) = (idmap.clone(), volume.join("rootfs"));
    super::super::blocking(move || Ok(map.unshift_tree(&root)?)).await
}

/// What a received main volume needs before it is an instance's: LXD's leftovers gone,
/// the directory closed as hutch's are.
fn finish_volume(e: &Engine, row: &InstanceRow) -> Result<()> {
    let path = e.pool(&row.pool)?.path(&instance_vol(&row.name));
    // The source's file describes the source's host; ours is written from the new rows
    // when the instance-created event is sent (engine/backup_yaml.rs).
    let _ = std::fs::remove_file(path.join("backup.yaml"));
    let expanded = super::super::expand(e, row)?;
    super::super::create::secure_instance_volume(e, row, &expanded)
}

/// btrfs: snapshots land in place; the main volume lands in a staging directory and is
/// made writable and moved into place.
async fn receive_btrfs(
    e: &Engine,
    row: &InstanceRow,
    snapshots: &[proto::Snapshot],
    fs: &mut super::socket::Conn,
    transport: &proto::Transport,
    idmap: &DiskIdmap,
    progress: &Progress,
) -> Result<()> {
    use super::send_receive::Landing;
    let pool = e.pool(&row.pool)?;
    let staging = PathBuf::from("containers").join(format!(".{}.migrating", row.name));
    let staging_path = pool.path(&staging);
    let _ = std::fs::remove_dir_all(&staging_path);
    let snapshots_dir = PathBuf::from("containers-snapshots").join(&row.name);
    let mut landings: Vec<Landing> = snapshots
        .iter()
        .map(|s| Landing {
            dir: snapshots_dir.clone(),
            name: Some(s.name.clone()),
        })
        .collect();
    landings.push(Landing {
        dir: staging.clone(),
        name: None,
    });
    let received = super::send_receive::receive(
        &*pool,
        &landings,
        fs,
        transport.has(proto::BTRFS_MIGRATION_HEADER),
        progress,
    )
    .await;
    let result = (|| -> Result<()> {
        let received = received?;
        let main_received = received.last().expect("main volume");
        for s in snapshots {
            e.db.insert_snapshot(&snapshot_row(row, s))?;
            if !idmap.is_empty() {
                let to = snapshot_vol(&row.name, &s.name);
                pool.set_readonly(&to, false)?;
                idmap.unshift_tree(&pool.path(&to).join("rootfs"))?;
                pool.set_readonly(&to, true)?;
            }
        }
        let main = instance_vol(&row.name);
        pool.delete_volume(&main)?;
        // The received volume itself becomes the instance's, made writable and moved into
        // place, as LXD does: a snapshot of it would first write all its data out (0.7 s
        // for 500 MB on a loop file).
        pool.set_readonly(main_received, false)?;
        pool.rename_volume(main_received, &main)?;
        idmap.unshift_tree(&pool.path(&main).join("rootfs"))?;
        Ok(())
    })();
    // The staged main volume goes whatever happened; received snapshots are removed by
    // the revert on failure (they are where the instance's snapshots live).
    for entry in std::fs::read_dir(&staging_path)
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = pool.delete_volume(&staging.join(entry.file_name()));
    }
    let _ = std::fs::remove_dir_all(&staging_path);
    result?;
    finish_volume(e, row)
}
