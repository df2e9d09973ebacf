//! Which host ids an instance runs as. By default every unprivileged container shares the
//! daemon's range; with `security.idmap.isolated=true` one gets a block of 65536 ids of its
//! own (so per-uid limits and signals never cross to another container), taken from the
//! top of the range, where shared containers' ids never reach in practice, and recorded in
//! `volatile.idmap.base` so it is the same at every start. Root filesystems are presented
//! through idmapped mounts, so a new block costs nothing on disk.

use std::collections::BTreeSet;
use std::sync::Mutex;

use hutch_runtime::IdMap;

use super::spec::{flag, Expanded};
use crate::daemon::Daemon;
use crate::db::instances::InstanceRow;
use crate::error::{DaemonError, Result};

/// Ids in an isolated block, as LXD's default `security.idmap.size`.
pub const ISOLATED_SIZE: u32 = 65536;
pub const BASE_KEY: &str = "volatile.idmap.base";

/// Allocations take turns: two isolated instances starting at once get different blocks.
static ALLOCATING: Mutex<()> = Mutex::new(());

/// The id map of `row` as configured (`None`: privileged), allocating and recording an
/// isolated block the first time one is needed.
pub fn instance_idmap(d: &Daemon, row: &InstanceRow, expanded: &Expanded) -> Result<Option<IdMap>> {
    if flag(&expanded.config, "security.privileged") {
        return Ok(None);
    }
    if !flag(&expanded.config, "security.idmap.isolated") {
        return Ok(Some(d.idmap.clone()));
    }
    let _turn = ALLOCATING.lock().unwrap_or_else(|e| e.into_inner());
    let range = (d.idmap.uid[0].outside, d.idmap.uid[0].count);
    let gid_range = (d.idmap.gid[0].outside, d.idmap.gid[0].count);
    let taken: BTreeSet<u32> =
        d.db.instances()?
            .iter()
            .filter(|r| r.name != row.name)
            .filter_map(|r| r.config.get(BASE_KEY)?.parse().ok())
            .collect();
    // Read afresh: the caller's row may predate the block recorded at create.
    let recorded =
        d.db.instance(&row.name)?
            .and_then(|r| r.config.get(BASE_KEY)?.parse::<u32>().ok());
    let base = match recorded {
        Some(b) if block_fits(b, range) && !taken.contains(&b) => b,
        _ => {
            let b = free_block(range, &taken).ok_or_else(|| {
                DaemonError::BadRequest(
                    "No free isolated id range is left for security.idmap.isolated".into(),
                )
            })?;
            d.db.set_instance_config_key(&row.name, BASE_KEY, Some(&b.to_string()))?;
            b
        }
    };
    // gids take the same offset in their own range.
    let gid_base = gid_range.0 + (base - range.0);
    let mut map = IdMap::single(base, ISOLATED_SIZE);
    map.gid[0].outside = gid_base;
    if !block_fits(gid_base, gid_range) {
        return Err(DaemonError::BadRequest(
            "The subgid range is too small for security.idmap.isolated".into(),
        ));
    }
    Ok(Some(map))
}

fn block_fits(base: u32, (start, count): (u32, u32)) -> bool {
    let end = start as u64 + count as u64;
    base >= start && base as u64 + ISOLATED_SIZE as u64 <= end
}

/// The highest block of the range that nobody holds. Blocks never include the range's
/// first 65536 ids, which every shared container uses.
fn free_block((start, count): (u32, u32), taken: &BTreeSet<u32>) -> Option<u32> {
    let blocks = count / ISOLATED_SIZE;
    (1..blocks)
        .map(|k| start + count - k * ISOLATED_SIZE)
        .find(|b| !taken.contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_from_the_top_and_never_repeat() {
        let range = (1_000_000, 1_000_000_000);
        let mut taken = BTreeSet::new();
        let a = free_block(range, &taken).unwrap();
        assert_eq!(a, 1_000_000 + 1_000_000_000 - 65536);
        taken.insert(a);
        let b = free_block(range, &taken).unwrap();
        assert_eq!(b, a - 65536);
        assert!(block_fits(a, range) && block_fits(b, range));
        assert!(!block_fits(range.0 + range.1, range));
        // A range of two blocks has one to give (the first is the shared one).
        let small = (100_000, 2 * 65536);
        assert_eq!(free_block(small, &BTreeSet::new()), Some(100_000 + 65536));
        assert_eq!(free_block(small, &[100_000 + 65536].into()), None);
    }
}
