//! The memory allocator of sagad's binaries: jemalloc, with larger
//! per-thread caches than its defaults.
//!
//! Why jemalloc: the coordinator allocates on one thread and frees on another
//! all the time (a tokio worker builds an event, the journal writer drops it;
//! tasks move between workers), and glibc's malloc then takes the owning
//! arena's lock, with futex calls when threads meet. Measured in 5 A/B pairs
//! of W1 c64: coordinator CPU 5.97 -> 5.21 s per 20,000 sagas.
//!
//! Why bigger caches ([`TUNING`]): with the defaults, every freed block went
//! through a thread cache that was flushed to its arena, refilled from it and
//! trimmed by a garbage collection every 64 KB allocated, and allocation
//! cost 12% of the coordinator's instructions. Four times the slots per size
//! class (at most 1,000 instead of 200) and a collection every 4 MB instead
//! of 64 KB cost 2.9% fewer instructions in all
//! (`BENCHMARKS.md`, session 9). `_RJEM_MALLOC_CONF` in the environment still
//! overrides any of them.
//!
//! A binary uses both with one line: `sagad::use_jemalloc!();`.
//!
//! What the heap holds ([`heap_stats`]) is read from jemalloc's statistics,
//! and only once the binary said jemalloc is its allocator ([`mark_global`]):
//! in a test binary, which keeps the system allocator, jemalloc's figures
//! would describe a heap nobody uses.

use std::{
    ffi::c_char,
    sync::atomic::{AtomicBool, Ordering},
};

pub use tikv_jemallocator::Jemalloc;

/// A jemalloc configuration string, as the C `malloc_conf` symbol holds it.
#[repr(transparent)]
pub struct MallocConf(*const c_char);

// SAFETY: it points at a string literal, which never changes and lives forever.
unsafe impl Sync for MallocConf {}

/// The options sagad runs jemalloc with; see the module docs.
pub const TUNING: MallocConf = MallocConf(
    c"lg_tcache_nslots_mul:3,tcache_nslots_small_max:1000,tcache_gc_incr_bytes:4194304".as_ptr(),
);

/// Makes jemalloc the global allocator of the binary it is used in, with
/// [`TUNING`]. The symbol jemalloc reads its options from must be defined in
/// the binary itself: jemalloc has a weak default that a definition left in
/// the library would not be linked over.
#[macro_export]
macro_rules! use_jemalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::allocator::Jemalloc = $crate::allocator::Jemalloc;

        /// Read by jemalloc when it starts (`malloc_conf`, with the crate's prefix).
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static MALLOC_CONF: $crate::allocator::MallocConf = $crate::allocator::TUNING;
    };
}

/// Set by [`mark_global`].
static JEMALLOC_IS_GLOBAL: AtomicBool = AtomicBool::new(false);

/// Says that jemalloc is this binary's global allocator ([`use_jemalloc!`]),
/// so [`heap_stats`] may read it. Called first thing by `sagad`'s `main`.
pub fn mark_global() {
    JEMALLOC_IS_GLOBAL.store(true, Ordering::Relaxed);
}

/// The heap, as jemalloc counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes of physical memory jemalloc holds (allocations, free space it
    /// keeps, its own metadata): the heap's share of RSS.
    pub resident: u64,
}

/// The heap now; `None` when jemalloc is not the global allocator (see the
/// module docs) or its statistics cannot be read.
pub fn heap_stats() -> Option<HeapStats> {
    if !JEMALLOC_IS_GLOBAL.load(Ordering::Relaxed) {
        return None;
    }
    // jemalloc's statistics are a snapshot refreshed by advancing its epoch.
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    Some(HeapStats {
        allocated: tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64,
        resident: tikv_jemalloc_ctl::stats::resident::read().ok()? as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_that_did_not_say_jemalloc_is_its_allocator_reads_no_heap() {
        // The test binary keeps the system allocator and never marks it.
        assert_eq!(heap_stats(), None);
    }
}
