//! User-namespace id maps: parsing /etc/subuid and /etc/subgid, rendering uid_map text.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// First host id of the default range when /etc/subuid has no entry for root.
pub const DEFAULT_HOST_BASE: u32 = 1_000_000;
/// Size of the default range.
pub const DEFAULT_RANGE: u32 = 1_000_000_000;

/// One line of a uid_map or gid_map: `count` ids from `inside` map to host ids from `outside`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapEntry {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The uid and gid maps of one container's user namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uid: Vec<IdMapEntry>,
    pub gid: Vec<IdMapEntry>,
}

impl IdMap {
    /// Ids 0..count inside map to host_base.. outside, for both uids and gids.
    pub fn single(host_base: u32, count: u32) -> Self {
        let entry = IdMapEntry {
            inside: 0,
            outside: host_base,
            count,
        };
        IdMap {
            uid: vec![entry],
            gid: vec![entry],
        }
    }

    /// The map for containers of a daemon run by root: root's first range in `<etc>/subuid`
    /// and `<etc>/subgid`, else `DEFAULT_HOST_BASE` with `DEFAULT_RANGE` ids.
    pub fn for_root(etc: &Path) -> Result<Self> {
        let uid = root_range(&etc.join("subuid"))?;
        let gid = root_range(&etc.join("subgid"))?;
        let default = IdMapEntry {
            inside: 0,
            outside: DEFAULT_HOST_BASE,
            count: DEFAULT_RANGE,
        };
        Ok(IdMap {
            uid: vec![uid.unwrap_or(default)],
            gid: vec![gid.unwrap_or(default)],
        })
    }

    /// Host uid of container uid `inside`, if mapped.
    pub fn host_uid(&self, inside: u32) -> Option<u32> {
        map_id(&self.uid, inside)
    }

    /// Host gid of container gid `inside`, if mapped.
    pub fn host_gid(&self, inside: u32) -> Option<u32> {
        map_id(&self.gid, inside)
    }

    /// Container uid of host uid `outside`, if mapped.
    pub fn inside_uid(&self, outside: u32) -> Option<u32> {
        unmap_id(&self.uid, outside)
    }

    /// Container gid of host gid `outside`, if mapped.
    pub fn inside_gid(&self, outside: u32) -> Option<u32> {
        unmap_id(&self.gid, outside)
    }

    /// Text for /proc/<pid>/uid_map.
    pub fn uid_map_text(&self) -> String {
        render(&self.uid)
    }

    /// Text for /proc/<pid>/gid_map.
    pub fn gid_map_text(&self) -> String {
        render(&self.gid)
    }

    /// Refuses empty maps, zero-sized or overflowing ranges, overlaps, and maps without root.
    pub fn validate(&self) -> Result<()> {
        for (which, entries) in [("idmap.uid", &self.uid), ("idmap.gid", &self.gid)] {
            let bad = |reason: &str| RuntimeError::InvalidSpec {
                field: which.into(),
                reason: reason.into(),
            };
            if entries.is_empty() || entries.len() > 340 {
                return Err(bad("needs between 1 and 340 ranges"));
            }
            for e in entries.iter() {
                if e.count == 0 {
                    return Err(bad("a range has no ids"));
                }
                if e.inside.checked_add(e.count).is_none()
                    || e.outside.checked_add(e.count).is_none()
                {
                    return Err(bad("a range overflows 32 bits"));
                }
            }
            for (i, a) in entries.iter().enumerate() {
                for b in &entries[i + 1..] {
                    let overlap = |x: u32, y: u32| x < y + b.count && y < x + a.count;
                    if overlap(a.inside, b.inside) || overlap(a.outside, b.outside) {
                        return Err(bad("ranges overlap"));
                    }
                }
            }
            if map_id(entries, 0).is_none() {
                return Err(bad("container root (0) is not mapped"));
            }
        }
        Ok(())
    }
}

fn map_id(entries: &[IdMapEntry], inside: u32) -> Option<u32> {
    entries
        .iter()
        .find(|e| inside >= e.inside && inside - e.inside < e.count)
        .map(|e| e.outside + (inside - e.inside))
}

fn unmap_id(entries: &[IdMapEntry], outside: u32) -> Option<u32> {
    entries
        .iter()
        .find(|e| outside >= e.outside && outside - e.outside < e.count)
        .map(|e| e.inside + (outside - e.outside))
}

fn render(entries: &[IdMapEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{} {} {}\n", e.inside, e.outside, e.count))
        .collect()
}

/// Root's first range in a subuid/subgid file; `None` when the file or entry is missing.
fn root_range(path: &Path) -> Result<Option<IdMapEntry>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RuntimeError::io("read", path, e)),
    };
    parse_sub_ids(path, &text, "root", 0)
}

/// Finds the first range of `user` (by name or numeric id) in subuid/subgid text.
pub fn parse_sub_ids(path: &Path, text: &str, user: &str, id: u32) -> Result<Option<IdMapEntry>> {
    let id = id.to_string();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| RuntimeError::IdMapParse {
            path: path.into(),
            line: n + 1,
            reason: reason.into(),
        };
        let fields: Vec<&str> = line.split(':').collect();
        let [owner, start, count] = fields[..] else {
            return Err(err("expected owner:start:count"));
        };
        if owner != user && owner != id {
            continue;
        }
        let start: u32 = start.parse().map_err(|_| err("start is not a number"))?;
        let count: u32 = count.parse().map_err(|_| err("count is not a number"))?;
        if count == 0 || start.checked_add(count).is_none() {
            return Err(err("range is empty or overflows"));
        }
        return Ok(Some(IdMapEntry {
            inside: 0,
            outside: start,
            count,
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subuid_entry_for_root_is_used() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("subuid"),
            "alice:100000:65536\nroot:200000:65536\n",
        )
        .unwrap();
        fs::write(dir.path().join("subgid"), "0:300000:1000\n").unwrap();
        let map = IdMap::for_root(dir.path()).unwrap();
        assert_eq!(
            map.uid,
            vec![IdMapEntry {
                inside: 0,
                outside: 200000,
                count: 65536
            }]
        );
        assert_eq!(
            map.gid,
            vec![IdMapEntry {
                inside: 0,
                outside: 300000,
                count: 1000
            }]
        );
        assert_eq!(map.uid_map_text(), "0 200000 65536\n");
    }

    #[test]
    fn missing_files_give_the_default_range() {
        let dir = tempfile::tempdir().unwrap();
        let map = IdMap::for_root(dir.path()).unwrap();
        assert_eq!(map, IdMap::single(DEFAULT_HOST_BASE, DEFAULT_RANGE));
        map.validate().unwrap();
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let err =
            parse_sub_ids(Path::new("/etc/subuid"), "# c\nroot:x:5\n", "root", 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to parse /etc/subuid line 2: start is not a number"
        );
        assert!(parse_sub_ids(Path::new("f"), "root:1\n", "root", 0).is_err());
        assert!(parse_sub_ids(Path::new("f"), "root:4294967295:2\n", "root", 0).is_err());
    }

    #[test]
    fn ids_map_through_ranges() {
        let map = IdMap {
            uid: vec![
                IdMapEntry {
                    inside: 0,
                    outside: 1000,
                    count: 10,
                },
                IdMapEntry {
                    inside: 10,
                    outside: 5000,
                    count: 5,
                },
            ],
            gid: vec![IdMapEntry {
                inside: 0,
                outside: 1000,
                count: 10,
            }],
        };
        map.validate().unwrap();
        assert_eq!(map.host_uid(0), Some(1000));
        assert_eq!(map.host_uid(12), Some(5002));
        assert_eq!(map.host_uid(15), None);
        assert_eq!(map.host_gid(9), Some(1009));
        assert_eq!(map.inside_uid(5002), Some(12));
        assert_eq!(map.inside_uid(1000), Some(0));
        assert_eq!(map.inside_uid(999), None);
        assert_eq!(map.inside_gid(1010), None);
    }

    #[test]
    fn bad_maps_are_refused() {
        let overlapping = IdMap {
            uid: vec![
                IdMapEntry {
                    inside: 0,
                    outside: 1000,
                    count: 10,
                },
                IdMapEntry {
                    inside: 5,
                    outside: 2000,
                    count: 10,
                },
            ],
            gid: vec![IdMapEntry {
                inside: 0,
                outside: 1000,
                count: 10,
            }],
        };
        assert!(overlapping.validate().is_err());
        let no_root = IdMap {
            uid: vec![IdMapEntry {
                inside: 1,
                outside: 1000,
                count: 10,
            }],
            gid: vec![IdMapEntry {
                inside: 0,
                outside: 1000,
                count: 10,
            }],
        };
        assert!(no_root.validate().is_err());
        assert!(IdMap::single(u32::MAX - 1, 10).validate().is_err());
        assert!(IdMap {
            uid: vec![],
            gid: vec![]
        }
        .validate()
        .is_err());
    }
}
