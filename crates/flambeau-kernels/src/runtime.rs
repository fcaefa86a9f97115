//! Process-wide CPU settings for training and eval: [`configure_for_training`].
//!
//! ## Keeping freed tensor buffers for reuse
//!
//! A training or eval step allocates its activations and gradients afresh and frees them at the
//! end. glibc returns every block above its mmap threshold (a few MiB once it adapts) to the
//! kernel, so each step faults the same memory in again, page by page: about a fifth of a
//! ResNet-18 eval step at 224×224 on this project's reference machine. [`reuse_freed_buffers`]
//! raises the thresholds so that freed buffers stay in the heap and the next step reuses them,
//! and keeps every thread on the main heap: the per-thread heaps glibc gives worker threads
//! release their memory when emptied, whatever the thresholds (five times the page faults of a
//! ResNet-18 training step at 32×32).
//!
//! ## candle's element-wise thread pool
//!
//! flambeau's own kernels run on rayon's pool. candle keeps a second pool for its element-wise
//! ops (in a ResNet step, mainly autograd's gradient sums), whose idle workers spin for a while
//! after each op: on a machine with few cores they take CPU time from the rayon workers (about
//! 8% of a ResNet-18 training step on 2 cores). [`candle_elementwise_on_caller`] makes candle run
//! those ops on the calling thread.
//!
//! Both change process-wide settings, so flambeau never applies them on its own: the `flambeau`
//! binary and the benchmarks do, and so can your training program.

/// Runs `f` on a worker thread of rayon's global pool and waits for it.
///
/// Called from a thread outside the pool (like `main`), every parallel kernel hands its work
/// to the pool and puts the caller to sleep until it is done: two thread wake-ups per kernel,
/// thousands per training step. From inside the pool the kernels fork and join directly, so a
/// training or eval loop should run here.
///
/// With a single thread in the pool `f` runs on the caller: a loop that waits for a data
/// loader feeding from the pool would otherwise occupy the only worker the loader needs.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() > 1 {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

/// Applies [`reuse_freed_buffers`] and [`candle_elementwise_on_caller`]. Call it first thing in
/// `main`, before any tensor exists.
pub fn configure_for_training() {
    reuse_freed_buffers();
    candle_elementwise_on_caller();
}

/// Runs candle's element-wise ops on the calling thread (`CANDLE_NUM_THREADS=1`) unless the
/// variable is already set. Only effective before candle's first parallel element-wise op, and
/// to be called while the program is still single-threaded.
pub fn candle_elementwise_on_caller() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Blocks up to this size are served from the heap (glibc's maximum for this setting).
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory the heap keeps instead of returning it to the kernel.
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Makes the allocator keep and reuse freed tensor buffers (glibc on Linux; elsewhere it does
/// nothing). Returns whether the settings were applied. Call it once, early in `main`.
pub fn reuse_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; these values are in range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_settings_are_accepted() {
        let applied = super::reuse_freed_buffers();
        assert_eq!(applied, cfg!(all(target_os = "linux", target_env = "gnu")));
    }
}
