//! Giving freed heap memory back to the operating system.
//!
//! glibc's malloc keeps memory freed in its arenas for reuse instead of returning it, and it raises
//! its mmap threshold to the size of the largest block freed (up to 32 MiB), so after the first few
//! large buffers later ones come from the arenas too. A transport that allocates and frees buffers
//! as large as a whole backlog on whichever blocking-pool thread runs it would keep a few times the
//! backlog's size resident for good, spread over the threads' arenas (tests/file_box_memory.rs:
//! the file box did, when each cycle read and rewrote the whole box in memory). The file box cycle
//! now streams the box; it still trims after a line of 1 MiB or more (one huge message) went
//! through its buffer.

/// Buffers at least this large are worth a trim after they were freed.
pub const TRIM_AFTER_BYTES: usize = 1 << 20;

/// Returns the free memory of every malloc arena to the operating system (glibc's `malloc_trim`);
/// a no-op elsewhere. Costs a walk over the arenas: call it after freeing large buffers, not per
/// message.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects and releases malloc's own free lists; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The resident set size of this process in bytes (Linux), for tests and diagnostics.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
