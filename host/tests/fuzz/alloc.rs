//! The test binary's allocator counts, per thread, the largest single allocation and the peak of
//! bytes held, so a target can assert that what a request makes the host allocate is bounded by the
//! request's size, whatever it declares (a shape of 2^40 elements must be refused, not reserved).
//! A request driven with `block_on` runs its handler on the calling thread, which is what is counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn grew(by: isize, size: usize) {
    // `const` thread-locals without destructors are usable at any time, even at thread exit.
    let _ = HELD.try_with(|h| {
        let now = h.get() + by;
        h.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize, layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize, layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        grew(-(layout.size() as isize), 0);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize, new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What one piece of work allocated on this thread.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// The largest single allocation, in bytes.
    pub largest: usize,
    /// The most bytes held at once beyond what was held before.
    pub peak: usize,
}

/// Runs `f` and says what it allocated on this thread.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    let base = HELD.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LARGEST.with(|l| l.set(0));
    let out = f();
    let usage = Usage {
        largest: LARGEST.with(Cell::get),
        peak: (PEAK.with(Cell::get) - base).max(0) as usize,
    };
    (out, usage)
}
