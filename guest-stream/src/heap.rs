//! The streamer's heap: what it takes to give an encoder's memory back.
//!
//! A VP8 encoder takes ~30 MiB at 1280x720 in blocks of a MiB or more. glibc serves those from
//! the heap rather than from mmap once earlier frees have raised its mmap threshold (it grows
//! to 32 MiB), and the encoder lives on the pipeline thread, so the blocks sit in that thread's
//! own arena. When the encoder goes they merge into that arena's top chunk, and `malloc_trim`
//! returns free pages in the middle of every arena but trims only the *main* arena's top: a
//! thread arena's top stays resident. Measured: after a 20 s VP8 viewer, RSS 14.1 → 45.9 MiB
//! for good (one encoder's worth), though every encoder had been dropped and trimmed.
//!
//! With one arena every block comes from the main heap, whose top `malloc_trim` does return.
//! The streamer has a handful of threads (the runtime's, the pipeline, the cursor and the
//! clipboard) and allocates little per frame, so sharing one arena costs no measurable CPU
//! (README, `bench stream`).

/// Makes every thread allocate from glibc's main arena. Call before any thread starts.
pub fn use_one_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives the heap's free pages back to the kernel (after an encoder was dropped).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}
