//! Memory for op cells, kept per thread: a freed cell's block goes to a
//! small cache of the thread that frees it, and the next cell of a like size
//! made on that thread takes it back. A leaf: imports nothing from the crate.
//!
//! Every op allocates one cell and frees it when it completes. With many ops
//! in flight the allocator's own per-thread cache (glibc keeps 7 blocks per
//! size) overflows, and each op pays its slow paths (about 125 instructions
//! per NOP, measured with callgrind). Blocks are grouped in size classes of
//! 64 bytes up to 512; larger or more aligned cells go to the allocator
//! directly. Each class keeps at most [`CACHED`] blocks per thread, in a
//! list threaded through the free blocks; the rest are freed, and a thread's
//! blocks are freed when it exits.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::ptr::{self, NonNull};

/// Bytes per size class.
const CLASS: usize = 64;
/// Size classes: blocks up to `CLASSES * CLASS` bytes are cached.
const CLASSES: usize = 8;
/// Alignment of every cached block (the allocation's, whatever the cell's).
const ALIGN: usize = 16;
/// Most blocks one class keeps per thread.
const CACHED: usize = 256;

/// One free list per class, threaded through the free blocks themselves: a
/// cached block's first word points at the next (every block is at least
/// [`CLASS`] bytes, so the word fits).
struct Cache {
    heads: [Cell<*mut u8>; CLASSES],
    lens: [Cell<usize>; CLASSES],
}

impl Drop for Cache {
    fn drop(&mut self) {
        for class in 0..CLASSES {
            let mut block = self.heads[class].replace(ptr::null_mut());
            while !block.is_null() {
                // SAFETY: a cached block starts with the next block's address
                // (written by `release`), was allocated with its class's
                // layout, and is owned by the cache alone.
                unsafe {
                    let next = block.cast::<*mut u8>().read();
                    alloc::dealloc(block, class_layout(class));
                    block = next;
                }
            }
        }
    }
}

thread_local! {
    static CACHE: Cache = const {
        Cache {
            heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            lens: [const { Cell::new(0) }; CLASSES],
        }
    };
}

/// The class a layout belongs to, if it is cached. Layouts of cells are
/// constants, so with inlining this folds away.
#[inline(always)]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > ALIGN || layout.size() == 0 || layout.size() > CLASS * CLASSES {
        return None;
    }
    Some((layout.size() - 1) / CLASS)
}

fn class_layout(class: usize) -> Layout {
    Layout::from_size_align((class + 1) * CLASS, ALIGN).expect("a valid class layout")
}

/// A block for a value of `layout`: from this thread's cache, else the
/// allocator.
#[inline]
pub(crate) fn allocate(layout: Layout) -> NonNull<u8> {
    let Some(class) = class_of(layout) else {
        return allocate_uncached(layout);
    };
    let cached = CACHE
        .try_with(|cache| {
            let block = cache.heads[class].get();
            if !block.is_null() {
                // SAFETY: a cached block starts with the next one's address.
                cache.heads[class].set(unsafe { block.cast::<*mut u8>().read() });
                cache.lens[class].set(cache.lens[class].get() - 1);
            }
            block
        })
        .unwrap_or(ptr::null_mut());
    match NonNull::new(cached) {
        Some(block) => block,
        None => allocate_uncached(class_layout(class)),
    }
}

#[cold]
fn allocate_uncached(layout: Layout) -> NonNull<u8> {
    // SAFETY: cell layouts have a non-zero size (they hold a state word).
    let raw = unsafe { alloc::alloc(layout) };
    NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// Gives back a block from [`allocate`] with the same `layout`.
///
/// # Safety
///
/// `block` came from `allocate(layout)`, its value has been dropped, and
/// nothing uses it any more.
#[inline]
pub(crate) unsafe fn release(block: NonNull<u8>, layout: Layout) {
    let Some(class) = class_of(layout) else {
        // SAFETY: allocated with its own layout, uncached.
        return unsafe { alloc::dealloc(block.as_ptr(), layout) };
    };
    let kept = CACHE
        .try_with(|cache| {
            let len = cache.lens[class].get();
            if len == CACHED {
                return false;
            }
            // SAFETY: the block is ours and at least a word long: its first
            // word now links it into the list.
            unsafe {
                block
                    .as_ptr()
                    .cast::<*mut u8>()
                    .write(cache.heads[class].get())
            };
            cache.heads[class].set(block.as_ptr());
            cache.lens[class].set(len + 1);
            true
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: allocated with its class's layout.
        unsafe { alloc::dealloc(block.as_ptr(), class_layout(class)) };
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::Layout;

    use super::{allocate, release};

    #[test]
    fn a_released_block_is_reused_by_the_next_of_its_class() {
        let layout = Layout::from_size_align(100, 8).unwrap();
        let first = allocate(layout);
        // SAFETY: from `allocate` with this layout, unused.
        unsafe { release(first, layout) };
        let like = Layout::from_size_align(120, 8).unwrap();
        let second = allocate(like);
        assert_eq!(first, second, "same class, same thread: reused");
        // SAFETY: as above.
        unsafe { release(second, like) };
        // Too large or too aligned: straight to the allocator, and back.
        let big = Layout::from_size_align(4096, 8).unwrap();
        let block = allocate(big);
        // SAFETY: as above.
        unsafe { release(block, big) };
        let aligned = Layout::from_size_align(64, 64).unwrap();
        let block = allocate(aligned);
        assert_eq!(block.as_ptr() as usize % 64, 0);
        // SAFETY: as above.
        unsafe { release(block, aligned) };
    }
}
