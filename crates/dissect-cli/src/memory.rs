//! The allocator's handling of large blocks.
//!
//! Every vocabulary projection allocates a fresh block of up to 256 rows × 262,144 logits
//! (256 MiB on Gemma) and frees it soon after. glibc serves each block over 32 MiB with its
//! own `mmap` and unmaps it on `free`, so the kernel zero-fills and page-faults every block in
//! anew: 11.6 million page faults and 14.6 s of system time for 10 records of
//! `dissect experiment all` on Gemma (59.3 s wall). Served from the heap and kept there, the
//! same run takes 0.38 million faults, 1.7 s of system time and 46.0 s wall, and the same peak
//! memory (1.50 GB); measured with `/usr/bin/time` and `MALLOC_MMAP_MAX_=0
//! MALLOC_TRIM_THRESHOLD_=… MALLOC_TOP_PAD_=…`, which this sets from the program.

/// Large blocks come from the heap and freed memory stays in the process for the next one.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; it is called before any thread is
    // started, and a rejected value (return 0) leaves glibc's default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Other platforms keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
