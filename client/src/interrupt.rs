//! Ctrl-C while the client waits for an operation: the first press is recorded (the wait
//! then cancels the operation and waits for its end), a second ends the client at once
//! with status 130, as a shell reports a SIGINT.

use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Presses of Ctrl-C since the watch began.
static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// The exit status of a client that a Ctrl-C stopped.
pub const EXIT_STATUS: i32 = 130;

extern "C" fn on_sigint(_: libc::c_int) {
    if PRESSES.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: write and _exit are async-signal-safe; the buffer is static.
        unsafe {
            libc::write(libc::STDERR_FILENO, b"\n".as_ptr().cast(), 1);
            libc::_exit(EXIT_STATUS);
        }
    }
}

/// Ctrl-C handled while this lives; the previous handling comes back on drop.
pub struct Watch {
    old: Option<SigAction>,
}

impl Watch {
    pub fn install() -> Self {
        PRESSES.store(0, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_sigint),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only touches an atomic and calls async-signal-safe functions.
        let old = unsafe { sigaction(Signal::SIGINT, &action) }.ok();
        Watch { old }
    }

    /// Whether Ctrl-C was pressed.
    pub fn pressed(&self) -> bool {
        PRESSES.load(Ordering::SeqCst) > 0
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            // SAFETY: puts back the handling that was in place before.
            let _ = unsafe { sigaction(Signal::SIGINT, old) };
        }
    }
}

/// The error of a command whose operation a Ctrl-C cancelled (the client exits 130).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Operation cancelled")
    }
}

impl std::error::Error for Interrupted {}
