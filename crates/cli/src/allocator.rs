//! The process's allocator: mimalloc, for Rust and C alike.
//!
//! With its `override` feature mimalloc is also the `malloc` and `free` of the C code linked into
//! the binary (librdkafka allocates a message per record on its broker thread and frees it on the
//! reading one). Against glibc's allocator, loading 1 M records of 1 KiB took 20–30% less time and
//! CPU (docs/performance.md): glibc grew a thread's arena one page at a time, one `mprotect` per
//! 4 KiB (275 k calls for that load). Transparent huge pages are off (`no_thp`): zeroing fresh
//! 2 MiB pages made the same load two to three times slower on a virtual machine. mimalloc 2, not
//! 3: version 3 commits its arenas 64 MiB to 1 GiB at a time, more than the translator compiler's
//! memory budget (`RLIMIT_DATA`, `translators.compile_memory_bytes`, 64 MiB at least) allows the
//! compiler child (this binary) before it compiles anything.

use std::ffi::c_int;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    fn mi_collect(force: bool);
}

/// glibc's `malloc_trim`, which mimalloc does not override: ingest calls it when a replica gives
/// partitions away, to hand their memory back to the operating system (docs/sharding.md). With
/// mimalloc that is a forced collection: freed pages are returned now, not after its purge delay.
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    // SAFETY: mi_collect only walks mimalloc's own heaps and arenas.
    unsafe { mi_collect(true) };
    1
}
