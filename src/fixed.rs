//! Registered buffers: [`FixedBufPool`], a set of equal buffers registered
//! with one context's ring, and the [`FixedBuf`]s it hands out, for
//! [`File::read_fixed_at`](crate::fs::File::read_fixed_at) and
//! [`write_fixed_at`](crate::fs::File::write_fixed_at).
//!
//! A read or write into a registered buffer skips the kernel's pinning and
//! unpinning of the buffer's pages on every op. The design makes them safe
//! to use from any thread: only the home thread updates the ring's buffer
//! table, a fixed op always goes to the ring its buffer is registered with,
//! and a buffer goes back to its pool only when its op is over (the backend
//! owns it until the kernel's CQE, as for every op).
//!
//! On the fallback and the simulator, and where the ring refuses the
//! registration, the same calls work on the same buffers unregistered.

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backend::Release;
use crate::buf::{IoBuf, IoBufMut};
use crate::context::state::ContextState;

/// The alignment of every registered buffer: enough for `O_DIRECT`.
const ALIGN: usize = 4096;

/// A set of `count` buffers of `size` bytes, registered with a context's
/// ring. From [`Context::register_buffers`](crate::Context::register_buffers). Cheap to clone.
///
/// # Errors and fallbacks
///
/// A pool that the ring could not register (the kernel refused it, for
/// instance `ENOMEM` past `RLIMIT_MEMLOCK` without `CAP_IPC_LOCK`, or the
/// ring's buffer table is full) still works, unregistered: its buffers are
/// used as plain buffers. The reason is logged once per context, at `warn`,
/// and [`is_registered`](FixedBufPool::is_registered) says which.
#[derive(Clone)]
pub struct FixedBufPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// The pool's memory; `None` only once handed to the task that clears
    /// the registration.
    memory: Option<Region>,
    /// Where the memory starts.
    base: NonNull<u8>,
    size: usize,
    count: usize,
    /// The first slot of the ring's buffer table: buffer `i` is slot
    /// `first + i`. `None` when unregistered.
    first: Option<u16>,
    /// The context whose ring the buffers are registered with.
    context: Arc<ContextState>,
    free: Mutex<Vec<u16>>,
    /// One permit per free buffer.
    available: Arc<Semaphore>,
}

/// The pool's memory: one aligned allocation.
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the region is plain memory owned by the pool; which part each
// thread may touch is decided by the buffers handed out, one owner each.
unsafe impl Send for Region {}
// SAFETY: as above; shared access only computes addresses.
unsafe impl Sync for Region {}

impl Region {
    fn new(bytes: usize) -> io::Result<Region> {
        let layout = Layout::from_size_align(bytes.max(1), ALIGN)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        Ok(Region { ptr, layout })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `Region::new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

// SAFETY: `base` points into `memory`, which the pool owns; each buffer's
// part of it is touched only through the one `FixedBuf` that owns it (or the
// op that owns that), as for `Region`.
unsafe impl Send for PoolInner {}
// SAFETY: as above; shared access only computes addresses.
unsafe impl Sync for PoolInner {}

impl FixedBufPool {
    /// Allocates `count` buffers of `size` bytes and registers them with
    /// `state`'s ring; see [`Context::register_buffers`](crate::Context::register_buffers).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the pool is made whole on the home thread, so a dropped
    /// call drops a complete pool there, whose drop clears its slots and then
    /// frees its memory.
    pub(crate) async fn register(
        state: &Arc<ContextState>,
        count: usize,
        size: usize,
    ) -> io::Result<FixedBufPool> {
        if count == 0 || count > 1 << 16 || size == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let bytes = size
            .next_multiple_of(ALIGN)
            .checked_mul(count)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let memory = Region::new(bytes)?;
        if state.home().is_current() {
            return Ok(FixedBufPool::made_on_home(
                state.clone(),
                memory,
                count,
                size,
            ));
        }
        let state = state.clone();
        state
            .runtime()
            .clone()
            .spawn(async move { FixedBufPool::made_on_home(state, memory, count, size) })
            .await
            .map_err(|_| crate::error::shutdown_error())
    }

    /// The pool over `memory`, registered if the ring takes it; on the home
    /// thread.
    fn made_on_home(
        state: Arc<ContextState>,
        memory: Region,
        count: usize,
        size: usize,
    ) -> FixedBufPool {
        let stride = size.next_multiple_of(ALIGN);
        let base = memory.ptr;
        let iovecs: Vec<libc::iovec> = (0..count)
            .map(|i| libc::iovec {
                // SAFETY: `i * stride` is inside the region of `count * stride` bytes.
                iov_base: unsafe { base.as_ptr().add(i * stride) }.cast(),
                iov_len: size,
            })
            .collect();
        // SAFETY: the memory goes into the pool below, whose drop has the
        // backend clear these slots before it frees the memory.
        let first = match unsafe { state.backend.register_buffers(&iovecs) } {
            Ok(first) => first,
            Err(e) => {
                state.warn_once(&format!(
                    "registering {count} buffers of {size} bytes failed ({e}); \
                     the pool's buffers are used unregistered"
                ));
                None
            }
        };
        FixedBufPool {
            inner: Arc::new(PoolInner {
                memory: Some(memory),
                base,
                size,
                count,
                first,
                context: state,
                free: Mutex::new((0..count as u32).rev().map(|i| i as u16).collect()),
                available: Arc::new(Semaphore::new(count)),
            }),
        }
    }
}

impl FixedBufPool {
    /// A free buffer, or `None` if all are in use.
    pub fn try_get(&self) -> Option<FixedBuf> {
        let permit = self.inner.available.clone().try_acquire_owned().ok()?;
        Some(self.take(permit))
    }

    /// A free buffer, waiting for one to come back if all are in use (a
    /// buffer comes back when its `FixedBuf` is dropped, which for a buffer
    /// in an op is when the op is over).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped wait takes no buffer.
    pub async fn get(&self) -> FixedBuf {
        let permit = self
            .inner
            .available
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        self.take(permit)
    }

    fn take(&self, permit: OwnedSemaphorePermit) -> FixedBuf {
        let index = self
            .inner
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .expect("a permit stands for a free buffer");
        FixedBuf {
            pool: self.inner.clone(),
            index,
            len: 0,
            _permit: permit,
        }
    }

    /// Buffers in the pool.
    pub fn count(&self) -> usize {
        self.inner.count
    }

    /// Bytes per buffer.
    pub fn buf_size(&self) -> usize {
        self.inner.size
    }

    /// Buffers free now.
    pub fn available(&self) -> usize {
        self.inner.available.available_permits()
    }

    /// Whether the buffers are registered with the ring (see the type's
    /// docs for when they are not).
    pub fn is_registered(&self) -> bool {
        self.inner.first.is_some()
    }
}

impl fmt::Debug for FixedBufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBufPool")
            .field("count", &self.inner.count)
            .field("buf_size", &self.inner.size)
            .field("available", &self.available())
            .field("registered", &self.is_registered())
            .finish()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // Every buffer is back (each holds the pool), so no op uses a slot:
        // the backend clears them, then frees the memory.
        let Some(first) = self.first else { return };
        let memory = self.memory.take().expect("the pool's memory until dropped");
        self.context.backend.release(Release::Buffers {
            first,
            count: self.count,
            _memory: Box::new(memory),
        });
    }
}

/// One buffer of a [`FixedBufPool`]: 4096-aligned, `buf_size` bytes, all of
/// them initialised (zeroed when the pool was made, or left from earlier
/// use); `len` of them hold data (what a write sends, what derefs). Goes
/// back to its pool when dropped.
pub struct FixedBuf {
    pool: Arc<PoolInner>,
    index: u16,
    len: usize,
    _permit: OwnedSemaphorePermit,
}

impl FixedBuf {
    fn ptr(&self) -> *mut u8 {
        let stride = self.pool.size.next_multiple_of(ALIGN);
        // SAFETY: `index < count`, so the buffer lies inside the region.
        unsafe {
            self.pool
                .base
                .as_ptr()
                .add(usize::from(self.index) * stride)
        }
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.pool.size
    }

    /// Sets the data length (bytes past the old length are initialised).
    ///
    /// # Panics
    ///
    /// If `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "FixedBuf::set_len past capacity");
        self.len = len;
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `data`.
    ///
    /// # Panics
    ///
    /// If it does not fit in the capacity.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        assert!(
            end <= self.capacity(),
            "FixedBuf::extend_from_slice past capacity"
        );
        // SAFETY: `len..end` lies inside this buffer, which this value owns.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr().add(self.len), data.len())
        };
        self.len = end;
    }

    /// The slot of the ring's buffer table this buffer is, if registered.
    pub(crate) fn slot(&self) -> Option<u16> {
        self.pool.first.map(|first| first + self.index)
    }

    /// The context the buffer is registered with.
    pub(crate) fn context(&self) -> &Arc<ContextState> {
        &self.pool.context
    }
}

impl Drop for FixedBuf {
    fn drop(&mut self) {
        // Back to the free list, then the permit (a field) wakes a waiter.
        self.pool
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.index);
    }
}

impl Deref for FixedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer's first `len` bytes are initialised, and this
        // value is their only owner.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len) }
    }
}

impl DerefMut for FixedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len) }
    }
}

impl fmt::Debug for FixedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedBuf")
            .field("index", &self.index)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

// SAFETY: the buffer's memory is part of the pool's region, which lives as
// long as any buffer (each holds the pool) and never moves; all of it is
// initialised (zeroed at allocation).
unsafe impl IoBuf for FixedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
}

// SAFETY: as for `IoBuf`; every byte is initialised, so any length is sound.
unsafe impl IoBufMut for FixedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        self.len = self.len.max(pos.min(self.capacity()));
    }
}
