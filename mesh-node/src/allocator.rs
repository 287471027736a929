//! The daemon's allocator: mimalloc, plus handing memory that bursts left behind back
//! to the OS, which mimalloc on its own does not do for an idle process.
//!
//! mimalloc keeps freed pages for reuse and purges them only while the heap stays busy
//! (checked every 10,000 allocations, after a 1 s delay). A one-off peak followed by
//! idleness therefore stays resident for good: loading the eBPF object parses the
//! kernel's BTF (~21 MiB of heap, freed right after) and an idle daemon kept it, 38 MiB
//! RSS instead of 14; a bulk transfer's h2 windows and 256 KiB buffers stayed too
//! (docs/perf-notes.md has the measurements).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// mimalloc moved 22% more bytes through the tunnel than glibc malloc (docs/tunnel-tuning.md step 12).
#[global_allocator]
static GLOBAL: Counting = Counting(mimalloc::MiMalloc);

/// Allocations so far: the trimmer's sign of activity (one relaxed add per allocation).
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct Counting(mimalloc::MiMalloc);

// SAFETY: every call is forwarded unchanged to mimalloc.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { self.0.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { self.0.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// Returns every freed page to the OS now (a few ms). For after a one-off peak.
pub fn release_freed_memory() {
    collect(true);
}

/// How often the trimmer looks; also how long a daemon must be quiet to count as idle.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);
/// Fewer allocations than this in [`TRIM_EVERY`] is idle (admin scrapes, config polls,
/// a few keep-alive connections), so freed memory goes back at once; busier, only
/// pages unused past mimalloc's purge delay go, so transfers keep their buffers.
const IDLE_ALLOCATIONS: u64 = 2_000;

/// Runs on the runtime thread, whose heap holds the data path's buffers.
pub async fn trim_while_running() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = ALLOCATIONS.load(Ordering::Relaxed);
    loop {
        tick.tick().await;
        let now = ALLOCATIONS.load(Ordering::Relaxed);
        collect(now.wrapping_sub(last) < IDLE_ALLOCATIONS);
        last = ALLOCATIONS.load(Ordering::Relaxed);
    }
}

fn collect(force: bool) {
    // SAFETY: mi_collect only walks mimalloc's own structures (this thread's heap and
    // the shared arenas); `force: false` honours the purge delay.
    unsafe { libmimalloc_sys::mi_collect(force) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_counted_and_collect_is_safe_to_call() {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let v: Vec<Vec<u8>> = (0..100).map(|i| vec![0u8; 1 + i]).collect();
        assert!(ALLOCATIONS.load(Ordering::Relaxed) >= before + 100);
        drop(v);
        release_freed_memory();
        collect(false);
    }
}
