//! [`StopSignal`]: asks a running [`crate::Trainer::fit`] to save a checkpoint and stop after the
//! current batch. Ctrl-C is one opt-in source of it ([`StopSignal::ctrl_c`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::Result;

/// Exit status of a process stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT_CODE: i32 = 130;

/// A shared flag: any clone can request the stop; the trainer checks it after every batch.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal nobody has requested yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the loop to stop (with a checkpoint) after the current batch.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// The process's Ctrl-C signal, installing the handler on first use: the first press
    /// requests the stop; a second press quits at once with [`INTERRUPTED_EXIT_CODE`] (for a
    /// user who does not want to wait for the checkpoint).
    pub fn ctrl_c() -> Result<Self> {
        static CTRL_C: Mutex<Option<StopSignal>> = Mutex::new(None);
        // The lock makes the check-and-install atomic: the handler can be set once per process.
        let mut installed = CTRL_C.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = installed.as_ref() {
            return Ok(s.clone());
        }
        let signal = StopSignal::new();
        let handler_signal = signal.clone();
        ctrlc::set_handler(move || {
            if handler_signal.0.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: quitting without saving");
                std::process::exit(INTERRUPTED_EXIT_CODE);
            }
            eprintln!(
                "\ninterrupted: saving a checkpoint after this batch (press Ctrl-C again to quit without saving)"
            );
        })?;
        *installed = Some(signal.clone());
        Ok(signal)
    }
}
