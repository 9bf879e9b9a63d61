//! Owned buffers for ops: the traits an op needs of a buffer, their
//! implementations for `Vec<u8>`, `Box<[u8]>` and `BytesMut`, the aligned
//! buffer that `O_DIRECT` needs, and zero-copy slices of any of them.
//!
//! An op takes its buffer by value and hands it back with the result, so the
//! kernel never writes memory the caller could free or move meanwhile.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Bound, Deref, DerefMut, RangeBounds};
use std::ptr::NonNull;

/// A buffer an op can read from (a write's source).
///
/// # Safety
///
/// `stable_ptr` must point to `bytes_total` bytes of memory that stays valid
/// and does not move while the buffer is owned by an op, even if the buffer
/// value itself is moved; the first `bytes_init` of them are initialised.
pub unsafe trait IoBuf: Send + 'static {
    /// Start of the buffer's memory.
    fn stable_ptr(&self) -> *const u8;

    /// Initialised bytes: what a write sends.
    fn bytes_init(&self) -> usize;

    /// Total bytes: what a read may fill.
    fn bytes_total(&self) -> usize;

    /// A view of `range` of this buffer, without copying. The range is
    /// relative to the buffer's total size.
    ///
    /// # Panics
    ///
    /// If the range reaches past [`bytes_total`](IoBuf::bytes_total).
    fn slice(self, range: impl RangeBounds<usize>) -> Slice<Self>
    where
        Self: Sized,
    {
        let begin = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n + 1,
            Bound::Excluded(&n) => n,
            Bound::Unbounded => self.bytes_total(),
        };
        assert!(
            begin <= end && end <= self.bytes_total(),
            "slice {begin}..{end} out of a buffer of {} bytes",
            self.bytes_total()
        );
        Slice {
            buf: self,
            begin,
            end,
        }
    }
}

/// A buffer an op can write into (a read's destination).
///
/// # Safety
///
/// As [`IoBuf`]; `stable_mut_ptr` must be valid for writes of `bytes_total`
/// bytes, and `set_init` must only make bytes visible that are initialised.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the buffer's memory, for writing.
    fn stable_mut_ptr(&mut self) -> *mut u8;

    /// Marks the first `pos` bytes initialised (never shrinks).
    ///
    /// # Safety
    ///
    /// The first `pos` bytes must have been written.
    unsafe fn set_init(&mut self, pos: usize);
}

// SAFETY: a Vec's heap block does not move when the Vec does; len bytes are
// initialised, capacity bytes are allocated.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as for IoBuf; set_len is called only for bytes the kernel wrote.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: the caller guarantees the first `pos` bytes are written,
            // and `pos <= capacity` because reads are bounded by bytes_total.
            unsafe { self.set_len(pos) };
        }
    }
}

// SAFETY: a boxed slice's heap block does not move; all of it is initialised.
unsafe impl IoBuf for Box<[u8]> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.len()
    }
}

// SAFETY: as for IoBuf; it is always fully initialised.
unsafe impl IoBufMut for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
}

// SAFETY: BytesMut owns a heap block that does not move with the handle;
// len bytes are initialised, capacity bytes allocated.
unsafe impl IoBuf for bytes::BytesMut {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as for IoBuf; set_len only covers bytes the kernel wrote.
unsafe impl IoBufMut for bytes::BytesMut {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len() {
            // SAFETY: the caller guarantees the first `pos` bytes are written.
            unsafe { self.set_len(pos) };
        }
    }
}

/// A zero-copy view of part of a buffer, from [`IoBuf::slice`].
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B> Slice<B> {
    /// The whole buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }

    /// Offset of the view's start in the buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }

    /// Offset of the view's end in the buffer.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The underlying buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }
}

// SAFETY: a sub-range of a stable buffer is stable.
unsafe impl<B: IoBuf> IoBuf for Slice<B> {
    fn stable_ptr(&self) -> *const u8 {
        // SAFETY: begin <= bytes_total of the buffer, checked at creation.
        unsafe { self.buf.stable_ptr().add(self.begin) }
    }
    fn bytes_init(&self) -> usize {
        self.buf.bytes_init().clamp(self.begin, self.end) - self.begin
    }
    fn bytes_total(&self) -> usize {
        self.end - self.begin
    }
}

// SAFETY: as for IoBuf; set_init marks the buffer up to begin + pos, which
// the caller guarantees is written (bytes before `begin` were already
// initialised when the slice was taken from an initialised region, or are
// made visible only if the buffer's own init already covered them).
unsafe impl<B: IoBufMut> IoBufMut for Slice<B> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: begin <= bytes_total of the buffer, checked at creation.
        unsafe { self.buf.stable_mut_ptr().add(self.begin) }
    }
    unsafe fn set_init(&mut self, pos: usize) {
        if self.buf.bytes_init() >= self.begin {
            // SAFETY: bytes before begin are initialised (checked above) and
            // the caller guarantees begin..begin + pos are written.
            unsafe { self.buf.set_init(self.begin + pos) };
        }
    }
}

/// A heap buffer with a caller-chosen alignment, for `O_DIRECT` I/O (whose
/// buffers, offsets and lengths must be aligned to the device's logical block
/// size, typically 512 or 4096 bytes).
///
/// Its memory is zeroed at allocation, so all of its capacity is initialised;
/// `len` is how much of it holds data (what a write sends, what derefs).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Usable bytes: the capacity asked for. The allocation (`layout`) is at
    /// least one byte, since the allocator takes no zero-sized requests.
    capacity: usize,
    layout: Layout,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads, like Vec<u8>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// The default alignment: 4096 bytes, enough for any block device.
    pub const DEFAULT_ALIGNMENT: usize = 4096;

    /// An empty buffer of `capacity` bytes aligned to 4096.
    pub fn with_capacity(capacity: usize) -> AlignedBuf {
        AlignedBuf::with_alignment(capacity, Self::DEFAULT_ALIGNMENT)
    }

    /// An empty buffer of `capacity` bytes aligned to `alignment`.
    ///
    /// # Panics
    ///
    /// If `alignment` is not a power of two, or the size overflows.
    pub fn with_alignment(capacity: usize, alignment: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(capacity.max(1), alignment)
            .expect("AlignedBuf: alignment must be a power of two and the size must fit");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf {
            ptr,
            len: 0,
            capacity,
            layout,
        }
    }

    /// A buffer of `len` zero bytes aligned to 4096.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let mut buf = AlignedBuf::with_capacity(len);
        buf.len = len;
        buf
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The alignment of the buffer's start.
    pub fn alignment(&self) -> usize {
        self.layout.align()
    }

    /// Sets the data length. Bytes past the old length are zero or left from
    /// earlier use: always initialised.
    ///
    /// # Panics
    ///
    /// If `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "AlignedBuf::set_len past capacity");
        self.len = len;
    }

    /// Appends `data`.
    ///
    /// # Panics
    ///
    /// If it does not fit in the capacity (an aligned buffer never grows).
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        assert!(
            end <= self.capacity(),
            "AlignedBuf::extend_from_slice past capacity"
        );
        // SAFETY: `len..end` lies inside the allocation, checked above, and
        // cannot overlap `data`, which the caller borrows separately.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                data.len(),
            )
        };
        self.len = end;
    }

    /// Empties the buffer (keeps the allocation).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_alignment` with this exact layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are allocated and initialised (the
        // whole allocation is zeroed at creation).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("alignment", &self.alignment())
            .finish()
    }
}

// SAFETY: the allocation never moves and is fully initialised (zeroed).
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as for IoBuf; every byte is initialised, so any len is sound.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.len = self.len.max(pos.min(self.capacity()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buf_is_aligned_and_zeroed() {
        for align in [512, 4096, 65536] {
            let buf = AlignedBuf::with_alignment(8192, align);
            assert_eq!(buf.stable_ptr() as usize % align, 0);
            assert_eq!(buf.bytes_total(), 8192);
            assert_eq!(buf.len(), 0);
        }
        assert!(AlignedBuf::zeroed(100).iter().all(|&b| b == 0));
    }

    #[test]
    fn slices_view_without_copying() {
        let v = vec![1u8, 2, 3, 4, 5];
        let ptr = v.as_ptr();
        let s = v.slice(1..4);
        assert_eq!(s.stable_ptr(), ptr.wrapping_add(1));
        assert_eq!(s.bytes_init(), 3);
        assert_eq!(s.into_inner(), vec![1, 2, 3, 4, 5]);
    }
}
