//! Freed memory returned to the operating system (the crate's other unsafe code, beside `batch`).

/// Returns the memory of the shards just dropped to the operating system. glibc's allocator keeps
/// freed memory for reuse, so a replica that loaded every partition and then gave two thirds of
/// them to new replicas kept its full RSS (measured: 489 MiB for a third of 2 M records, where a
/// replica that only ever held that third takes 200). Shards still read by a snapshot or a stream
/// are freed later, when their last reader lets go, and not trimmed then; the next release does.
/// The gateway's binary replaces glibc's allocator with jemalloc and answers this call by purging
/// every jemalloc arena (crates/cli/src/allocator.rs).
pub(crate) fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
