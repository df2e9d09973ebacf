//! lxcfs on the host: found at each container start, so that one started (or stopped) after
//! the daemon counts from the next container start on.

use std::path::PathBuf;

use hutch_api::instance::{RESOURCE_VIEW_HOST, RESOURCE_VIEW_LXCFS};
use hutch_runtime::rootfs::lxcfs;
use hutch_runtime::MonitorState;

/// Names another lxcfs mount point than Debian's, for tests that run their own lxcfs.
pub const DIR_ENV: &str = "HUTCH_LXCFS_DIR";

/// Where a live lxcfs serves, when one does at `$HUTCH_LXCFS_DIR` (default
/// `/var/lib/lxcfs`); `None`: containers started now see the host's /proc and /sys.
pub fn serving_dir() -> Option<PathBuf> {
    let dir = std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(lxcfs::DEFAULT_DIR), PathBuf::from);
    lxcfs::available(&dir).then_some(dir)
}

/// What a running container sees of /proc and /sys, as its monitor recorded at start.
pub fn resource_view(state: &MonitorState) -> &'static str {
    if state.lxcfs {
        RESOURCE_VIEW_LXCFS
    } else {
        RESOURCE_VIEW_HOST
    }
}
