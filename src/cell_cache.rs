//! Memory for op cells, kept per thread: a freed cell's block goes to a
//! small cache of the thread that frees it, and the next cell of a like size
//! made on that thread takes it back. A leaf: imports nothing from the crate.
//!
//! Every op allocates one cell and frees it when it completes. With many ops
//! in flight the allocator's own per-thread cache (glibc keeps 7 blocks per
//! size) overflows, and each op pays its slow paths (about 125 instructions
//! per NOP, measured with callgrind). Blocks are grouped in size classes of
//! 64 bytes up to 512; larger or more aligned cells go to the allocator
//! directly. Each class keeps at most [`CACHED`] blocks per thread; the rest
//! are freed, and a thread's blocks are freed when it exits.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;

/// Bytes per size class.
const CLASS: usize = 64;
/// Size classes: blocks up to `CLASSES * CLASS` bytes are cached.
const CLASSES: usize = 8;
/// Alignment of every cached block (the allocation's, whatever the cell's).
const ALIGN: usize = 16;
/// Most blocks one class keeps per thread.
const CACHED: usize = 256;

struct Cache {
    classes: [Vec<NonNull<u8>>; CLASSES],
}

impl Drop for Cache {
    fn drop(&mut self) {
        for (class, blocks) in self.classes.iter_mut().enumerate() {
            let layout = class_layout(class);
            for block in blocks.drain(..) {
                // SAFETY: every cached block was allocated with its class's
                // layout, and is owned by the cache alone.
                unsafe { alloc::dealloc(block.as_ptr(), layout) };
            }
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache {
            classes: [const { Vec::new() }; CLASSES],
        })
    };
}

/// The class a layout belongs to, if it is cached.
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
pub(crate) fn allocate(layout: Layout) -> NonNull<u8> {
    let (layout, class) = match class_of(layout) {
        Some(class) => (class_layout(class), Some(class)),
        None => (layout, None),
    };
    if let Some(class) = class
        && let Some(block) = CACHE
            .try_with(|cache| cache.try_borrow_mut().ok()?.classes[class].pop())
            .ok()
            .flatten()
    {
        return block;
    }
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
pub(crate) unsafe fn release(block: NonNull<u8>, layout: Layout) {
    let (layout, class) = match class_of(layout) {
        Some(class) => (class_layout(class), Some(class)),
        None => (layout, None),
    };
    if let Some(class) = class {
        let kept = CACHE
            .try_with(|cache| {
                let Ok(mut cache) = cache.try_borrow_mut() else {
                    return false;
                };
                let blocks = &mut cache.classes[class];
                if blocks.len() == CACHED {
                    return false;
                }
                blocks.push(block);
                true
            })
            .unwrap_or(false);
        if kept {
            return;
        }
    }
    // SAFETY: allocated with this layout (its class's, or its own).
    unsafe { alloc::dealloc(block.as_ptr(), layout) };
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
