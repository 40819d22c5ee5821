//! The component's allocator: free lists of power-of-two size classes in front of the standard
//! one (dlmalloc on wasm32). A call through the component allocates a dozen small blocks (the
//! host lowers its reply into guest memory, wit-bindgen lowers argument lists) and frees them
//! again; dlmalloc spent ~450 instructions on each pair, a free list spends a few dozen. Blocks of
//! a class are never given back to the backing allocator, so the guest keeps its peak use of each
//! class: small and steady for this workload. Bigger or over-aligned requests go straight through.
// A global allocator is unsafe code by nature; it is small and tested natively below.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// Smallest class: 16 bytes, which also holds the free list's link.
const MIN_SHIFT: u32 = 4;
/// Largest class: 4 KiB.
const MAX_SHIFT: u32 = 12;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Blocks of every class are aligned this much; requests wanting more go to the backing allocator.
const ALIGN: usize = 16;

/// Size-class free lists over `A`. Not thread-safe: the component runs on one thread.
#[derive(Debug)]
pub struct SizeClasses<A> {
    backing: A,
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

impl<A> SizeClasses<A> {
    pub const fn new(backing: A) -> Self {
        SizeClasses { backing, free: UnsafeCell::new([ptr::null_mut(); CLASSES]) }
    }

    /// The class serving `layout`, if a class does.
    fn class(layout: Layout) -> Option<usize> {
        if layout.align() > ALIGN || layout.size() > 1 << MAX_SHIFT {
            return None;
        }
        let shift = (usize::BITS - layout.size().saturating_sub(1).leading_zeros()).max(MIN_SHIFT);
        Some((shift - MIN_SHIFT) as usize)
    }

    fn block_layout(class: usize) -> Layout {
        // The sizes are powers of two from 16 to 4096 and ALIGN is 16: always a valid layout.
        Layout::from_size_align(1 << (class as u32 + MIN_SHIFT), ALIGN).expect("valid class layout")
    }
}

// SAFETY: `alloc` returns either a block of the backing allocator or one of its blocks of at least
// `layout.size()` bytes aligned to 16 >= `layout.align()` that is on no free list; `dealloc`
// maps the layout to the same class `alloc` used, so a block only ever returns to the list it
// came from. The free lists are reached through `&self` with no synchronisation, which is sound
// only where a single thread uses the allocator: the component (wasm32 without threads), and the
// single-threaded tests below.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = Self::class(layout) else {
            // SAFETY: forwarded as is.
            return unsafe { self.backing.alloc(layout) };
        };
        // SAFETY: single-threaded (see above), and no reference to the lists outlives this call.
        let head = unsafe { &mut (*self.free.get())[class] };
        if head.is_null() {
            // SAFETY: a non-zero size.
            return unsafe { self.backing.alloc(Self::block_layout(class)) };
        }
        let block = *head;
        // SAFETY: a block on a free list is at least 16 bytes, aligned, and holds the next link.
        *head = unsafe { block.cast::<*mut u8>().read() };
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = Self::class(layout) else {
            // SAFETY: it came from the backing allocator with this layout.
            return unsafe { self.backing.dealloc(block, layout) };
        };
        // SAFETY: single-threaded; the block is ours, of this class, and no longer in use.
        unsafe {
            let head = &mut (*self.free.get())[class];
            block.cast::<*mut u8>().write(*head);
            *head = block;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if let (Some(old), Some(new)) = (Self::class(layout), Self::class(new_layout))
            && old == new
        {
            return block;
        }
        // SAFETY: as `GlobalAlloc::realloc`'s default: a new block, the old contents, then free.
        unsafe {
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
            moved
        }
    }
}

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
mod global {
    use super::SizeClasses;

    // SAFETY: wasm32 without the atomics feature has no threads: one thread uses the allocator.
    unsafe impl Sync for SizeClasses<std::alloc::System> {}

    #[global_allocator]
    static ALLOCATOR: SizeClasses<std::alloc::System> = SizeClasses::new(std::alloc::System);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::collections::HashSet;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_cover_sizes_up_to_4_kib_and_leave_the_rest_to_the_backing_allocator() {
        type C = SizeClasses<System>;
        assert_eq!(C::class(layout(0, 1)), Some(0));
        assert_eq!(C::class(layout(16, 8)), Some(0));
        assert_eq!(C::class(layout(17, 1)), Some(1));
        assert_eq!(C::class(layout(4096, 16)), Some(CLASSES - 1));
        assert_eq!(C::class(layout(4097, 1)), None);
        assert_eq!(C::class(layout(64, 32)), None, "over-aligned");
    }

    /// Blocks in use never overlap, keep what was written into them, are aligned, and come back
    /// from the free lists once freed (the lists are reused, not grown).
    #[test]
    fn blocks_are_disjoint_aligned_and_reused() {
        let heap = SizeClasses::new(System);
        let sizes = [1, 8, 15, 16, 17, 24, 100, 255, 256, 1000, 4096, 5000];
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        // The blocks of the size classes handed out in the first round: every later round, which
        // asks for the same sizes after all were freed, must be served from these alone.
        let mut first_round = HashSet::new();
        for round in 0..3u8 {
            let mut seen = HashSet::new();
            for (i, &size) in sizes.iter().cycle().take(60).enumerate() {
                let l = layout(size, if i % 3 == 0 { 16 } else { 8 });
                let p = unsafe { heap.alloc(l) };
                assert!(!p.is_null());
                assert_eq!(p as usize % l.align(), 0);
                let fill = round.wrapping_mul(61).wrapping_add(i as u8);
                unsafe { p.write_bytes(fill, size) };
                assert!(seen.insert(p as usize), "a block handed out twice");
                if SizeClasses::<System>::class(l).is_some() {
                    if round == 0 {
                        first_round.insert(p as usize);
                    } else {
                        assert!(first_round.contains(&(p as usize)), "a freed block was not reused");
                    }
                }
                live.push((p, l, fill));
            }
            for &(p, l, fill) in &live {
                let bytes = unsafe { std::slice::from_raw_parts(p, l.size()) };
                assert!(bytes.iter().all(|&b| b == fill), "a block was overwritten while in use");
            }
            for (p, l, _) in live.drain(..) {
                unsafe { heap.dealloc(p, l) };
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_within_and_across_classes() {
        let heap = SizeClasses::new(System);
        unsafe {
            let l = layout(10, 1);
            let p = heap.alloc(l);
            p.copy_from_nonoverlapping(b"0123456789".as_ptr(), 10);
            let same = heap.realloc(p, l, 16);
            assert_eq!(same, p, "still the 16-byte class");
            let grown = heap.realloc(same, layout(16, 1), 6000);
            assert_eq!(std::slice::from_raw_parts(grown, 10), b"0123456789");
            let shrunk = heap.realloc(grown, layout(6000, 1), 5);
            assert_eq!(std::slice::from_raw_parts(shrunk, 5), b"01234");
            heap.dealloc(shrunk, layout(5, 1));
        }
    }
}
