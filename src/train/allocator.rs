//! The process's allocator policy during training (glibc only; elsewhere these do nothing).
//!
//! Training allocates and frees chunk temporaries of a few MiB on several threads. glibc raises
//! its mmap threshold each time a large block is freed, after which such blocks come from
//! per-thread arenas that rarely shrink, and the resident size grows far beyond what the run
//! uses. Two remedies, with different reach:
//!
//! - [`limit_heap_growth`] fixes the mmap threshold for the whole process. That is a policy for
//!   the program, not for a library, so the trainer never calls it: the `kdcompress` binary does,
//!   and so may any program that trains large tables.
//! - [`release_free_memory`] hands pages that are already free back to the system; it changes
//!   no policy, and the trainer calls it after each parallel pass and between stages.

/// Fixes glibc's mmap threshold at 16 MiB for the rest of the process: the chunk temporaries
/// (at most 8 MiB, see [`super::quantize::chunk_rows`]) are then served from reused arena
/// memory, and anything larger is mapped on its own and returned when freed. A lower threshold
/// also bounds memory but spends much of the run zeroing fresh pages in the kernel.
///
/// Fixing the mmap threshold also stops glibc from raising its trim threshold, which stays at
/// 128 KiB: every time the temporaries at the top of an arena were freed, their pages went back
/// to the system and the next chunk faulted them in again. The trim threshold is set to 64 MiB,
/// so an arena keeps that much free memory for the next chunk; [`release_free_memory`] still
/// returns it between passes. GloVe's 20k head, `--threads 2`, the same decode (byte-identical
/// export): K=256 D=8, two runs each alternating, 89.7 / 94.4 s -> 79.6 / 81.9 s wall, system
/// time 27-30 s -> 7-8 s, 12-13 -> 2.6-3.0 million minor page faults, peak resident 372 ->
/// 406-414 MiB; K=256 D=20 (one run each, the trim threshold set through glibc's environment
/// variable, then built in) 155.1 s -> 144.8 s and 159.3 s wall (user time varies by 10% between
/// runs of the same work on this machine), system 37.2 s -> 18.1 s, 17.5 -> 8.0 million faults,
/// peak 405 -> 511-527 MiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_heap_growth() {
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    // SAFETY: mallopt takes no pointers and only changes glibc's allocation policy, which it
    // guards with its own lock; any value is valid for either parameter.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 16 << 20);
        mallopt(M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Does nothing where the allocator is not glibc's.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_heap_growth() {}

/// Hands the free memory of every allocator arena back to the system, so that the next stage's
/// working memory (other sizes, which the kept pages do not fit) does not come on top.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn release_free_memory() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers; it only returns free pages, under glibc's locks.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_memory() {}
