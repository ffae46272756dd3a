//! Allocator settings for training processes.
//!
//! A training step allocates and frees hundreds of tensors, the same sizes every step
//! (activations, their gradients, and the zero tensors candle accumulates gradients
//! into). With glibc's default settings, buffers of 128 KiB and more (the threshold then
//! adapts upwards) come from fresh `mmap` calls, and the top of the heap is returned to
//! the system when more than 128 KiB of it is free. So every step the kernel maps the same
//! memory again, and each page costs a fault on its first write. On this project's two-core
//! benchmark machine that was 2,000 to 6,000 page faults per step of the quickstart model,
//! and about a quarter of the step's time went to the kernel
//! (`/usr/bin/time` on `examples/bench_train.rs`).
//!
//! [`keep_freed_memory`] tells glibc to serve buffers up to 32 MiB (its largest
//! setting) from the heap and to keep up to 1 GiB of freed heap instead of returning it, so
//! a step reuses the previous step's memory. The process's resident memory then stays at
//! its high-water mark rather than shrinking between steps. The binaries that train or
//! embed call it first thing (train, quickstart, evaluate, bench_train); a program that
//! uses the library crates can call it, or set the same values through glibc's
//! environment variables (`MALLOC_MMAP_THRESHOLD_=33554432`,
//! `MALLOC_TRIM_THRESHOLD_=1073741824`). Other C libraries and platforms are left as they
//! are.

/// Largest buffer served from the heap rather than its own mapping (glibc's maximum).
pub const MMAP_THRESHOLD: usize = 32 << 20;

/// Freed memory at the top of the heap kept for reuse rather than returned to the system.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Apply [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`] to the process's allocator. Returns
/// whether both were applied: `true` with glibc on Linux, `false` elsewhere (nothing is
/// changed there).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters; both values are in range
        // (M_MMAP_THRESHOLD accepts at most HEAP_MAX_SIZE / 2 = 32 MiB on 64-bit glibc).
        unsafe {
            let mmap = libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
            let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
            mmap == 1 && trim == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    fn thread_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `usage` is a valid, writable rusage.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(rc, 0, "getrusage failed");
        // SAFETY: getrusage returned 0, so it filled `usage`.
        unsafe { usage.assume_init() }.ru_minflt
    }

    /// Allocate `bytes`, write every page, free; returns the page faults this took.
    fn faults_of_a_fresh_buffer(bytes: usize) -> i64 {
        let before = thread_faults();
        let v = std::hint::black_box(vec![1u8; bytes]);
        let sum: u64 = v.iter().step_by(4096).map(|&b| b as u64).sum();
        assert_eq!(sum, bytes.div_ceil(4096) as u64);
        drop(v);
        thread_faults() - before
    }

    #[test]
    fn a_freed_buffer_is_reused_without_page_faults() {
        // 8 MiB: 2,048 pages, each a fault when the buffer is a fresh mapping.
        let bytes = 8 << 20;
        assert!(keep_freed_memory(), "glibc accepted both settings");
        // The first buffer grows the heap (faults); its memory then stays in the heap.
        faults_of_a_fresh_buffer(bytes);
        let again = faults_of_a_fresh_buffer(bytes);
        assert!(
            again < 100,
            "{again} page faults for a buffer the allocator should have reused"
        );
    }
}
