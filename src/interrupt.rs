//! The process-wide stop request: `strata run` installs a handler for SIGINT, SIGTERM and
//! SIGHUP that asks the training and serving loops to stop after the step under way
//! (they check [`requested`] between steps, then the table is flushed and the partial
//! results written); a second signal ends the process at once, flushing nothing.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Exit status of a run stopped by a signal (128 + SIGINT, as shells report Ctrl-C).
pub const EXIT_STATUS: u8 = 130;

/// Whether a stop has been requested.
pub fn requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Asks the loops to stop after their current step (what the signal handler does).
pub fn request() {
    STOP.store(true, Ordering::Relaxed);
}

/// Withdraws a stop request (for embedders that carry on after handling one, and tests).
pub fn clear() {
    STOP.store(false, Ordering::Relaxed);
}

/// Installs the handler: the first signal requests a stop and says so on stderr, the
/// second exits at once with [`EXIT_STATUS`] (no flush, no reports).
pub fn install() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::Relaxed) {
            eprintln!("strata: interrupted again; exiting at once (the table is not flushed)");
            // SAFETY: `_exit` ends the process without running destructors or atexit
            // handlers, which is the point: nothing else may block the exit.
            unsafe { libc::_exit(i32::from(EXIT_STATUS)) }
        }
        eprintln!("strata: stopping after the current step (interrupt again to exit at once)");
    })
}
