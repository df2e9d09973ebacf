//! The btrfs transport (both pools btrfs): each volume travels as a `btrfs send` stream,
//! snapshots oldest first, each incremental on the one before, then the main volume; with
//! the `migration_header` feature a JSON header listing the subvolumes comes first. The
//! commands come from the storage driver; this module only moves their bytes.

use std::path::{Path, PathBuf};

use hutch_storage::StorageDriver;
use serde::{Deserialize, Serialize};

use super::error::MigrationError;
use super::progress::Progress;
use super::rsync::{finish, spawn};
use super::socket::Conn;

/// LXD's `BTRFSMetaDataHeader`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Header {
    #[serde(default)]
    pub subvolumes: Vec<SubVolume>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SubVolume {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub snapshot: String,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub uuid: String,
}

/// Sends `snapshots` (name, read-only volume) then `main` (a read-only snapshot of the
/// instance's volume).
pub async fn send(
    pool: &dyn StorageDriver,
    snapshots: &[(String, PathBuf)],
    main: &Path,
    conn: &mut Conn,
    with_header: bool,
    progress: &Progress,
) -> Result<(), MigrationError> {
    if with_header {
        let mut header = Header::default();
        for (name, _) in snapshots {
            header.subvolumes.push(SubVolume {
                path: "/".into(),
                snapshot: name.clone(),
                readonly: true,
                uuid: String::new(),
            });
        }
        header.subvolumes.push(SubVolume {
            path: "/".into(),
            snapshot: String::new(),
            readonly: false,
            uuid: String::new(),
        });
        let json = serde_json::to_vec(&header).unwrap_or_default();
        conn.tx.send(super::socket::Frame::Binary(json)).await?;
        conn.tx.end_stream().await?;
    }
    let mut parent: Option<&Path> = None;
    let all = snapshots
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_path()))
        .chain(std::iter::once(("", main)));
    for (name, vol) in all {
        let argv = pool
            .send_argv(vol, parent)
            .ok_or(MigrationError::BadMessage {
                what: "transport",
                reason: "the pool cannot send btrfs streams".into(),
            })?;
        let mut child = spawn(&argv, false, true)?;
        let stdout = child.stdout.take().expect("piped stdout");
        let label = if name.is_empty() { "main volume" } else { name };
        let (pumped, done) = tokio::join!(
            conn.tx.pump_from(stdout, Some(progress)),
            finish("btrfs", child, label)
        );
        done?;
        pumped?;
        parent = Some(vol);
    }
    Ok(())
}

/// Where one received subvolume lands: `dir` (relative to the pool), and the name it must
/// have there (a snapshot keeps its name; `None`: whatever the stream calls it).
pub struct Landing {
    pub dir: PathBuf,
    pub name: Option<String>,
}

/// Receives the volumes [`send`] sends, one per landing, in order; returns where each
/// landed (relative to the pool). Snapshots land straight in place: a received subvolume
/// is read-only and cannot move to another directory.
pub async fn receive(
    pool: &dyn StorageDriver,
    landings: &[Landing],
    conn: &mut Conn,
    with_header: bool,
    progress: &Progress,
) -> Result<Vec<PathBuf>, MigrationError> {
    if with_header {
        let raw = conn.fs_header().await?;
        let header: Header =
            serde_json::from_slice(&raw).map_err(|e| MigrationError::BadMessage {
                what: "btrfs migration header",
                reason: e.to_string(),
            })?;
        // Nested subvolumes inside a volume are not kept apart on hutch's side.
        if let Some(s) = header.subvolumes.iter().find(|s| s.path != "/") {
            return Err(MigrationError::BadMessage {
                what: "btrfs migration header",
                reason: format!("nested subvolume {:?} is not supported", s.path),
            });
        }
    }
    let mut received = Vec::new();
    for landing in landings {
        let into_path = pool.path(&landing.dir);
        std::fs::create_dir_all(&into_path)
            .map_err(MigrationError::io("make a receive directory"))?;
        let list = || -> std::collections::BTreeSet<std::ffi::OsString> {
            std::fs::read_dir(&into_path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name())
                .collect()
        };
        let before = list();
        let argv = pool
            .receive_argv(&landing.dir)
            .ok_or(MigrationError::BadMessage {
                what: "transport",
                reason: "the pool cannot receive btrfs streams".into(),
            })?;
        let mut child = spawn(&argv, true, false)?;
        let stdin = child.stdin.take().expect("piped stdin");
        let label = landing.name.as_deref().unwrap_or("main volume");
        let (pumped, done) = tokio::join!(
            conn.rx.pump_into(stdin, Some(progress)),
            finish("btrfs", child, label)
        );
        let new: Vec<_> = list().difference(&before).cloned().collect();
        // Whatever landed is recorded first, so a failure below still removes it.
        received.extend(new.iter().map(|n| landing.dir.join(n)));
        pumped?;
        done?;
        let expected = landing.name.as_ref().map(std::ffi::OsString::from);
        if new.len() != 1 || (expected.is_some() && expected.as_ref() != new.first()) {
            return Err(MigrationError::BadMessage {
                what: "btrfs stream",
                reason: format!("{label} did not make the one subvolume expected"),
            });
        }
    }
    Ok(received)
}

impl Conn {
    /// The header frame before the btrfs streams (at most 1 MiB).
    async fn fs_header(&mut self) -> Result<Vec<u8>, MigrationError> {
        self.rx.read_stream("btrfs migration header", 1 << 20).await
    }
}
