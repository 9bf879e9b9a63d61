//! Owned buffers for ops: the traits an op needs of a buffer, their
//! implementations for `Vec<u8>`, `Box<[u8]>` and `BytesMut`, the aligned
//! buffer that `O_DIRECT` needs, [`ExternalBuf`] over memory the caller owns
//! (guest RAM, an mmap, shared memory), and zero-copy slices of any of them.
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

/// `IoBuf` and `IoBufMut` for buffers that keep an initialised prefix
/// (`len`) inside an allocated `capacity`, in a heap block that does not move
/// when the handle does: `Vec<u8>` and `BytesMut`.
macro_rules! prefix_initialised_buf {
    ($($ty:ty),*) => {$(
        // SAFETY: the heap block does not move when the handle does; `len`
        // bytes are initialised, `capacity` bytes are allocated.
        unsafe impl IoBuf for $ty {
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

        // SAFETY: as for `IoBuf`; `set_len` covers only bytes the kernel
        // wrote.
        unsafe impl IoBufMut for $ty {
            fn stable_mut_ptr(&mut self) -> *mut u8 {
                self.as_mut_ptr()
            }
            unsafe fn set_init(&mut self, pos: usize) {
                if pos > self.len() {
                    // SAFETY: the caller guarantees the first `pos` bytes are
                    // written, and `pos <= capacity` because reads are
                    // bounded by `bytes_total`.
                    unsafe { self.set_len(pos) };
                }
            }
        }
    )*};
}

prefix_initialised_buf!(Vec<u8>, bytes::BytesMut);

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

/// A buffer over memory the caller owns and keeps alive: guest RAM, an
/// `mmap`ed file, a shared-memory region. The op reads into (or writes from)
/// that memory directly, with no copy on the ring.
///
/// All of the region is initialised and counts as data: a write sends all
/// `len` bytes, a read may fill all of them.
///
/// # Cancellation and release
///
/// Dropping an op's future does not give the buffer back: the backend keeps
/// the `ExternalBuf` until the op is over and drops it then. Until that
/// moment the region may still be written:
///
/// - on io_uring the kernel may write until the op's CQE, even after the
///   cancel the driver sends (the read may have been under way);
/// - the thread-pool fallback skips a call no pool thread has started (the
///   buffer is released at once), but cannot cancel one that runs: it runs
///   to its end and its result is copied into the region;
/// - the simulator completes the op at its deadline, filling the region.
///
/// Once the value is dropped, nothing in this crate touches the region
/// again. To learn when that is, attach a callback with
/// [`on_release`](ExternalBuf::on_release): it runs when the value is
/// dropped, on whichever thread drops it (the home thread, a pool thread, or
/// the caller once it has the buffer back), so keep it short and
/// non-blocking — send on a channel, decrement a counter.
///
/// If a context shuts down while the kernel never answers an op, the op's
/// memory is leaked rather than freed, and the release never runs: keep the
/// region mapped (leak it too) when the release has not come.
///
/// ```
/// use aioctx::buf::ExternalBuf;
/// use std::sync::mpsc;
///
/// # fn main() -> std::io::Result<()> {
/// let mut region = vec![0u8; 4096].into_boxed_slice(); // stands in for an mmap
/// let (released, on_release) = mpsc::channel();
/// // SAFETY: `region` outlives the buffer (we wait for the release below
/// // before touching or freeing it), is initialised, and nothing else
/// // accesses it meanwhile.
/// let buf = unsafe { ExternalBuf::new(region.as_mut_ptr(), region.len()) }
///     .on_release(move || released.send(()).unwrap());
///
/// let ctx = aioctx::Context::new()?;
/// let file = ctx.block_on(aioctx::fs::File::open(&ctx, "/proc/self/stat"))?;
/// let (n, buf) = ctx.block_on(file.read_at(buf, 0));
/// drop(buf);
/// on_release.recv().unwrap();
/// assert!(region[..n?].starts_with(std::process::id().to_string().as_bytes()));
/// # Ok(())
/// # }
/// ```
pub struct ExternalBuf {
    ptr: NonNull<u8>,
    len: usize,
    on_release: Option<Box<dyn FnOnce() + Send>>,
}

// SAFETY: the caller of `ExternalBuf::new` promised the region may be
// accessed from any thread; the release callback is `Send`.
unsafe impl Send for ExternalBuf {}

impl ExternalBuf {
    /// A buffer over the `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// The caller promises that:
    ///
    /// 1. `ptr` is valid for reads and writes of `len` bytes, and every one
    ///    of them is initialised (a zero-filled anonymous mapping, a mapped
    ///    file, memory written before). `ptr` may be null only if `len` is 0.
    /// 2. The region stays valid, and writable, until this value is dropped:
    ///    not unmapped, freed, remapped read-only or reused for something
    ///    whose contents matter. That is *after* the op's future is dropped,
    ///    if it is dropped in flight: wait for the release (see the type's
    ///    docs), or leak the region.
    /// 3. While an op owns the value (from the call that takes it until the
    ///    buffer is handed back, or the release runs), nothing accesses the
    ///    region through Rust references or other plain Rust code, including
    ///    another op's buffer that overlaps it and is written. Agents outside
    ///    Rust's memory model (a guest running on a vCPU, another process,
    ///    a device) may touch it meanwhile; they then see, or leave,
    ///    unspecified bytes.
    /// 4. The region may be accessed from any thread of the process.
    ///
    /// # Panics
    ///
    /// If `ptr` is null and `len` is not 0.
    pub unsafe fn new(ptr: *mut u8, len: usize) -> ExternalBuf {
        let ptr = match NonNull::new(ptr) {
            Some(ptr) => ptr,
            None if len == 0 => NonNull::dangling(),
            None => panic!("ExternalBuf::new: null pointer for {len} bytes"),
        };
        ExternalBuf {
            ptr,
            len,
            on_release: None,
        }
    }

    /// Runs `release` when this value is dropped: the moment nothing in this
    /// crate can touch the region any more. A callback attached earlier runs
    /// first.
    pub fn on_release(mut self, release: impl FnOnce() + Send + 'static) -> ExternalBuf {
        self.on_release = Some(match self.on_release.take() {
            Some(earlier) => Box::new(move || {
                earlier();
                release();
            }),
            None => Box::new(release),
        });
        self
    }

    /// The region's first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The region's first byte, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The region's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for ExternalBuf {
    fn drop(&mut self) {
        if let Some(release) = self.on_release.take() {
            release();
        }
    }
}

impl fmt::Debug for ExternalBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalBuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("on_release", &self.on_release.is_some())
            .finish()
    }
}

// SAFETY: `new`'s caller promised `len` initialised bytes at `ptr` that stay
// valid, wherever this value moves, until it is dropped.
unsafe impl IoBuf for ExternalBuf {
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

// SAFETY: as for IoBuf; the region is writable and always fully
// initialised, so there is nothing for `set_init` to record.
unsafe impl IoBufMut for ExternalBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    unsafe fn set_init(&mut self, _pos: usize) {}
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

    #[test]
    fn external_buf_runs_its_release_callbacks_in_order_when_dropped() {
        let mut region = [7u8; 16];
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (first, second) = (order.clone(), order.clone());
        // SAFETY: `region` outlives the buffer and nothing else touches it.
        let buf = unsafe { ExternalBuf::new(region.as_mut_ptr(), region.len()) }
            .on_release(move || first.lock().unwrap().push(1))
            .on_release(move || second.lock().unwrap().push(2));
        assert_eq!(buf.bytes_total(), 16);
        assert_eq!(buf.bytes_init(), 16);
        assert_eq!(buf.stable_ptr(), region.as_ptr());
        let slice = buf.slice(4..8);
        assert_eq!(slice.stable_ptr(), region.as_ptr().wrapping_add(4));
        assert!(order.lock().unwrap().is_empty());
        drop(slice);
        assert_eq!(*order.lock().unwrap(), vec![1, 2]);
    }

    #[test]
    fn external_buf_may_be_empty_and_null() {
        // SAFETY: an empty region at null is allowed.
        let buf = unsafe { ExternalBuf::new(std::ptr::null_mut(), 0) };
        assert!(buf.is_empty());
        assert!(!buf.as_ptr().is_null());
    }
}
