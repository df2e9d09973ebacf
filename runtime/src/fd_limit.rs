//! The daemon's open-file limit. It holds a connection to every running container's
//! monitor (see its engine/watch.rs), so a thousand containers need more than the usual soft
//! limit of 1024: the daemon raises its soft limit to the hard one, as Go does for LXD,
//! and, as Go does too, its helpers (monitors, exec, proxies) put the original back before
//! anything of a container inherits it.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Where the daemon leaves its original soft limit for the helpers it spawns.
const ORIGINAL_SOFT: &str = "HUTCH_NOFILE_SOFT";

/// Raises this process's soft limit to the hard one and records the original for helpers.
/// Call before any thread starts (it sets an environment variable).
pub fn raise() {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= hard {
        return;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        // Called from main before any thread exists: nothing reads the environment meanwhile.
        std::env::set_var(ORIGINAL_SOFT, soft.to_string());
    }
}

/// In a helper: puts back the soft limit the daemon started with, if it raised it.
pub fn restore() {
    let Some(soft) = std::env::var(ORIGINAL_SOFT)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    std::env::remove_var(ORIGINAL_SOFT);
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard);
    }
}
