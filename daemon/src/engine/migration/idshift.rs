//! Files that arrive shifted by the source's disk idmap (an LXD without idmapped mounts
//! stores a container's files as the host ids of its map, base 1000000) are shifted back
//! to the container's own ids: hutch stores root filesystems unshifted and presents them
//! through idmapped mounts.

use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::Path;

use super::error::MigrationError;
use super::proto::IdMapType;

/// The source's map, as ranges host → container.
#[derive(Clone, Debug, Default)]
pub struct DiskIdmap(Vec<IdMapType>);

impl DiskIdmap {
    pub fn new(entries: &[IdMapType]) -> DiskIdmap {
        DiskIdmap(
            entries
                .iter()
                .filter(|e| e.maprange > 0 && e.hostid >= 0 && e.nsid >= 0)
                .cloned()
                .collect(),
        )
    }

    /// The map LXD writes in `volatile.last_state.idmap` (a JSON list of
    /// `{Isuid, Isgid, Hostid, Nsid, Maprange}`); empty when it does not parse.
    pub fn from_lxd_json(text: &str) -> DiskIdmap {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            #[serde(default)]
            isuid: bool,
            #[serde(default)]
            isgid: bool,
            #[serde(default)]
            hostid: i64,
            #[serde(default)]
            nsid: i64,
            #[serde(default)]
            maprange: i64,
        }
        let entries: Vec<Entry> = serde_json::from_str(text).unwrap_or_default();
        let fit = |v: i64| i32::try_from(v).ok();
        DiskIdmap::new(
            &entries
                .iter()
                .filter_map(|e| {
                    Some(IdMapType {
                        isuid: e.isuid,
                        isgid: e.isgid,
                        hostid: fit(e.hostid)?,
                        nsid: fit(e.nsid)?,
                        maprange: fit(e.maprange)?,
                    })
                })
                .collect::<Vec<_>>(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn unshift(&self, id: u32, uid: bool) -> u32 {
        for e in &self.0 {
            if (uid && !e.isuid) || (!uid && !e.isgid) {
                continue;
            }
            let (host, ns, range) = (e.hostid as u64, e.nsid as u64, e.maprange as u64);
            if (id as u64) >= host && (id as u64) < host + range {
                return (id as u64 - host + ns) as u32;
            }
        }
        id
    }

    /// Shifts every owner under `root` back (not following symlinks nor crossing into
    /// another filesystem), keeping modes that chown clears.
    pub fn unshift_tree(&self, root: &Path) -> Result<(), MigrationError> {
        if self.is_empty() || !root.exists() {
            return Ok(());
        }
        let io = |action| MigrationError::io(action);
        let dev = std::fs::symlink_metadata(root)
            .map_err(io("stat the received tree"))?
            .dev();
        let mut stack = vec![root.to_path_buf()];
        while let Some(path) = stack.pop() {
            let meta = std::fs::symlink_metadata(&path).map_err(io("stat a received file"))?;
            if meta.dev() != dev {
                continue;
            }
            let (uid, gid) = (
                self.unshift(meta.uid(), true),
                self.unshift(meta.gid(), false),
            );
            if (uid, gid) != (meta.uid(), meta.gid()) {
                lchown(&path, Some(uid), Some(gid)).map_err(io("chown a received file"))?;
                if !meta.file_type().is_symlink() {
                    std::fs::set_permissions(
                        &path,
                        std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                    )
                    .map_err(io("chmod a received file"))?;
                }
            }
            if meta.is_dir() {
                for entry in std::fs::read_dir(&path).map_err(io("read a received directory"))? {
                    stack.push(entry.map_err(io("read a received directory"))?.path());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_the_map_come_back_others_stay() {
        let map = DiskIdmap::new(&[
            IdMapType {
                isuid: true,
                isgid: false,
                hostid: 1_000_000,
                nsid: 0,
                maprange: 1_000_000_000,
            },
            IdMapType {
                isuid: false,
                isgid: true,
                hostid: 2_000_000,
                nsid: 0,
                maprange: 65536,
            },
        ]);
        assert_eq!(map.unshift(1_000_000, true), 0);
        assert_eq!(map.unshift(1_000_033, true), 33);
        assert_eq!(map.unshift(1_000_033, false), 1_000_033);
        assert_eq!(map.unshift(2_000_005, false), 5);
        assert_eq!(map.unshift(7, true), 7);
    }
}
