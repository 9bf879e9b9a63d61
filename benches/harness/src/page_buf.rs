//! [`PageBuf`]: a fixed-length, page-aligned, zero-initialised heap buffer, the buffer the
//! baselines read into. O_DIRECT needs the alignment; tokio-uring has no aligned buffer type, so
//! its `IoBuf`/`IoBufMut` traits are implemented here to let it read O_DIRECT too.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment of every [`PageBuf`]: the page size, which satisfies any block device's O_DIRECT
/// alignment.
pub const PAGE_ALIGN: usize = 4096;

/// A zeroed heap buffer of fixed length, aligned to [`PAGE_ALIGN`].
#[derive(Debug)]
pub struct PageBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `PageBuf` owns its allocation exclusively, like `Box<[u8]>`; nothing else points at it.
unsafe impl Send for PageBuf {}

impl PageBuf {
    /// A zeroed buffer of `len` bytes.
    ///
    /// # Panics
    ///
    /// Panics if `len` is zero or the allocation fails.
    pub fn zeroed(len: usize) -> PageBuf {
        let layout = Self::layout(len);
        // SAFETY: `layout` has a non-zero size (checked in `layout`).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        PageBuf { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        assert!(len > 0, "PageBuf must not be empty");
        Layout::from_size_align(len, PAGE_ALIGN).expect("PageBuf layout")
    }

    /// Start of the buffer, for the kernel to write into.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is valid for `len` initialised bytes (allocated zeroed) for as long as
        // `self` lives, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this same layout and is freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

// SAFETY: the allocation does not move when the `PageBuf` moves, so `stable_ptr` stays valid
// while tokio-uring owns the buffer; all `len` bytes are initialised from the start.
unsafe impl tokio_uring::buf::IoBuf for PageBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len
    }

    fn bytes_total(&self) -> usize {
        self.len
    }
}

// SAFETY: as for `IoBuf`: the pointer is stable across moves and the whole buffer is always
// initialised, so `set_init` has nothing to record.
unsafe impl tokio_uring::buf::IoBufMut for PageBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    unsafe fn set_init(&mut self, _pos: usize) {}
}
