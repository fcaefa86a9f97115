//! Ctrl-C: the first press asks the training loop to save a checkpoint and stop after the
//! current batch; a second press quits at once.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Exit status after an interrupt (128 + SIGINT, as shells report it).
pub const EXIT_CODE: i32 = 130;

/// Installs the handler (once per process; later calls are ignored).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: quitting without saving");
            std::process::exit(EXIT_CODE);
        }
        eprintln!(
            "\ninterrupted: saving a checkpoint after this batch (press Ctrl-C again to quit without saving)"
        );
    });
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
