//! How much a pool holds and how much a volume uses.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::StorageError;

/// Space and inodes of a pool, in bytes and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    pub space_used: u64,
    pub space_total: u64,
    pub inodes_used: u64,
    pub inodes_total: u64,
}

/// Usage of the filesystem holding `path`, as statvfs(2) reports it.
pub fn filesystem_usage(path: &Path) -> Result<PoolUsage, StorageError> {
    let st = nix::sys::statvfs::statvfs(path).map_err(|source| StorageError::Sys {
        action: format!("statvfs {}", path.display()),
        source,
    })?;
    let block = st.fragment_size();
    let total = st.blocks() * block;
    Ok(PoolUsage {
        space_used: total.saturating_sub(st.blocks_free() * block),
        space_total: total,
        inodes_used: st.files().saturating_sub(st.files_free()),
        inodes_total: st.files(),
    })
}

/// Bytes used by the files below `path` (allocated blocks; hard links counted once); what
/// cannot be read counts nothing.
pub fn tree_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 64 << 10]).unwrap();
        let one = tree_usage(dir.path());
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(tree_usage(dir.path()), one, "a hard link adds nothing");
        assert!(one >= 64 << 10);
    }

    #[test]
    fn a_filesystem_reports_its_space() {
        let dir = tempfile::tempdir().unwrap();
        let u = filesystem_usage(dir.path()).unwrap();
        assert!(u.space_total > 0 && u.space_used <= u.space_total, "{u:?}");
        assert!(filesystem_usage(&dir.path().join("none")).is_err());
    }
}
