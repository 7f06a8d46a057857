//! The process's allocator: jemalloc, for Rust and C alike.
//!
//! Built unprefixed, jemalloc is also the `malloc` and `free` of the C code linked into the binary
//! (librdkafka allocates a message per record on its broker thread and frees it on the reading
//! one). Against glibc's allocator, loading 1 M records of 1 KiB took about a quarter less time
//! and CPU (docs/performance.md): glibc grew a thread's arena one page at a time, one `mprotect`
//! per 4 KiB (275 k calls for that load).
//!
//! Tried and left: mimalloc 3 commits arenas of 64 MiB to 1 GiB at once, more than the translator
//! compiler's memory budget (`RLIMIT_DATA`, 64 MiB at least) lets the compiler child (this
//! binary) have; mimalloc 2 keeps pages freed by other threads until their owner allocates
//! again, so a replica that gave two thirds of its partitions away kept its RSS.

use std::ffi::{c_char, c_int, c_void};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

extern "C" {
    fn mallctl(name: *const c_char, old: *mut c_void, old_len: *mut usize, new: *mut c_void, new_len: usize) -> c_int;
}

/// glibc's `malloc_trim`, which jemalloc does not provide: ingest calls it when a replica gives
/// partitions away, to hand their memory back to the operating system (docs/sharding.md). Here it
/// purges the unused dirty pages of every arena (`MALLCTL_ARENAS_ALL` is 4096), whichever thread
/// freed them.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    // SAFETY: a NUL-terminated name and no values in or out, as mallctl documents for
    // `arena.<i>.purge`.
    let status = unsafe {
        mallctl(c"arena.4096.purge".as_ptr(), std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut(), 0)
    };
    c_int::from(status == 0)
}
