//! Crash points for the tests of crash safety: in a debug build, with `HUTCH_FAULT=<name>`
//! in its environment, the daemon kills itself (SIGKILL, as a power loss would end it) when
//! it reaches point `<name>`. Release builds compile every point to nothing.

/// A place where a crash must leave nothing that a restart cannot finish.
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("HUTCH_FAULT").is_some_and(|v| v == name) {
        tracing::warn!(point = name, "HUTCH_FAULT: killing the daemon here");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
