//! Keeping freed tensor buffers for reuse.
//!
//! A training or eval step allocates its activations and gradients afresh and frees them at the
//! end. glibc returns every block above its mmap threshold (a few MiB once it adapts) to the
//! kernel, so each step faults the same memory in again, page by page: about a fifth of a
//! ResNet-18 eval step at 224×224 on this project's reference machine. [`reuse_freed_buffers`]
//! raises the thresholds so that freed buffers stay in the heap and the next step reuses them.
//! It changes process-wide allocator settings, so flambeau never calls it on its own: the
//! `flambeau` binary and the benchmarks do, and so can your training program.

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
