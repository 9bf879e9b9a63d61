//! Request buffers: a [`Buffer`] is either one of the pool member's
//! registered buffers or a plain aligned allocation, and a [`BufPool`]
//! (one per connection, so no locks) hands them out and takes them back.
//!
//! Registered buffers ([`FixedClasses`], one set per pool member) come in
//! power-of-two size classes from 4 KiB to 128 KiB. A request whose buffer
//! is exactly a class's size gets one while the class has one free; its
//! disk op is then `READ_FIXED` / `WRITE_FIXED` on the member's ring, which
//! skips pinning and unpinning the buffer's pages on every op. A fixed read
//! fills its whole buffer, which is why only exact sizes qualify. Every
//! other request, and every request once a class is used up, gets a plain
//! [`AlignedBuf`] from per-connection free lists by size class, with a cap
//! on what they keep so a burst of large requests does not pin memory for
//! the connection's lifetime.
//!
//! A buffer taken for a request goes to the kernel with the op, comes back
//! with its result, and returns here once its reply is on the socket; a
//! registered one goes back to its member's set when dropped.

use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use aioctx::Context;
use aioctx::buf::{AlignedBuf, IoBuf, IoBufMut};
use aioctx::{FixedBuf, FixedBufPool};

/// The smallest class: 4 KiB.
const MIN_SHIFT: u32 = 12;
/// Classes up to 64 MiB (a 32 MiB request plus its edge blocks).
const CLASSES: usize = 15;
/// Bytes of idle plain buffers a connection keeps.
const RETAIN_BYTES: usize = 16 << 20;
/// Registered buffers per member, by class (4 KiB, 8 KiB, ... 128 KiB):
/// 9 MiB in all, 560 of the ring's 1024 buffer slots.
const FIXED_COUNTS: [usize; 6] = [256, 128, 64, 64, 32, 16];
/// The alignment of every registered buffer.
const FIXED_ALIGNMENT: usize = 4096;

/// A request's buffer.
#[derive(Debug)]
pub enum Buffer {
    /// A plain aligned allocation.
    Plain(AlignedBuf),
    /// One of the member's registered buffers; its capacity is a whole class.
    Fixed(FixedBuf),
}

impl Buffer {
    pub fn capacity(&self) -> usize {
        match self {
            Buffer::Plain(buf) => buf.capacity(),
            Buffer::Fixed(buf) => buf.capacity(),
        }
    }

    /// Sets the data length (every byte of either kind is initialised).
    pub fn set_len(&mut self, len: usize) {
        match self {
            Buffer::Plain(buf) => buf.set_len(len),
            Buffer::Fixed(buf) => buf.set_len(len),
        }
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Buffer::Plain(buf) => buf,
            Buffer::Fixed(buf) => buf,
        }
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Buffer::Plain(buf) => buf,
            Buffer::Fixed(buf) => buf,
        }
    }
}

// SAFETY: forwards to the variant's own implementation, whose memory does
// not move when the enum does (an `AlignedBuf`'s heap allocation, a
// `FixedBuf`'s part of its pool's region).
unsafe impl IoBuf for Buffer {
    fn stable_ptr(&self) -> *const u8 {
        match self {
            Buffer::Plain(buf) => buf.stable_ptr(),
            Buffer::Fixed(buf) => buf.stable_ptr(),
        }
    }
    fn bytes_init(&self) -> usize {
        match self {
            Buffer::Plain(buf) => buf.bytes_init(),
            Buffer::Fixed(buf) => buf.bytes_init(),
        }
    }
    fn bytes_total(&self) -> usize {
        match self {
            Buffer::Plain(buf) => buf.bytes_total(),
            Buffer::Fixed(buf) => buf.bytes_total(),
        }
    }
}

// SAFETY: as for `IoBuf`, forwarding to the variant.
unsafe impl IoBufMut for Buffer {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        match self {
            Buffer::Plain(buf) => buf.stable_mut_ptr(),
            Buffer::Fixed(buf) => buf.stable_mut_ptr(),
        }
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: the caller's promise (the first `pos` bytes are
        // initialised) is passed on unchanged.
        unsafe {
            match self {
                Buffer::Plain(buf) => buf.set_init(pos),
                Buffer::Fixed(buf) => buf.set_init(pos),
            }
        }
    }
}

/// One pool member's registered buffers, by size class. Used only by the
/// connections that member serves, so every fixed op is local to its ring.
#[derive(Debug)]
pub struct FixedClasses {
    pools: Vec<FixedBufPool>,
}

impl FixedClasses {
    /// Allocates and registers the classes with `ctx`'s ring. A ring that
    /// refuses the registration leaves them usable unregistered (the crate
    /// logs why once).
    ///
    /// # Errors
    ///
    /// An allocation failure.
    pub async fn register(ctx: &Context) -> io::Result<FixedClasses> {
        let mut pools = Vec::with_capacity(FIXED_COUNTS.len());
        for (class, &count) in FIXED_COUNTS.iter().enumerate() {
            let size = 1 << (class as u32 + MIN_SHIFT);
            pools.push(ctx.register_buffers(count, size).await?);
        }
        Ok(FixedClasses { pools })
    }

    /// Whether the ring took the buffers (they work either way).
    pub fn is_registered(&self) -> bool {
        self.pools.iter().all(FixedBufPool::is_registered)
    }

    /// A free registered buffer of exactly `capacity` bytes, if that is a
    /// class and it has one free.
    fn try_get(&self, capacity: usize, alignment: usize) -> Option<FixedBuf> {
        if !capacity.is_power_of_two() || alignment > FIXED_ALIGNMENT || capacity < 1 << MIN_SHIFT {
            return None;
        }
        let class = (capacity.trailing_zeros() - MIN_SHIFT) as usize;
        self.pools.get(class)?.try_get()
    }
}

/// One connection's buffers.
#[derive(Debug)]
pub struct BufPool {
    alignment: usize,
    fixed: Option<Arc<FixedClasses>>,
    free: [Vec<AlignedBuf>; CLASSES],
    retained: usize,
}

impl BufPool {
    /// A pool of buffers aligned to `alignment`, trying `fixed` first.
    pub fn new(alignment: usize, fixed: Option<Arc<FixedClasses>>) -> BufPool {
        BufPool {
            alignment,
            fixed,
            free: Default::default(),
            retained: 0,
        }
    }

    /// A buffer of at least `capacity` bytes, its length 0: registered when
    /// `capacity` is exactly a class the member has one free of.
    pub fn take(&mut self, capacity: usize) -> Buffer {
        if let Some(mut buf) = self
            .fixed
            .as_ref()
            .and_then(|fixed| fixed.try_get(capacity, self.alignment))
        {
            buf.clear();
            return Buffer::Fixed(buf);
        }
        Buffer::Plain(self.take_plain(capacity))
    }

    /// A plain buffer of at least `capacity` bytes, its length 0.
    pub fn take_plain(&mut self, capacity: usize) -> AlignedBuf {
        let class = class_of(capacity);
        if let Some(mut buf) = self.free.get_mut(class).and_then(Vec::pop) {
            self.retained -= buf.capacity();
            buf.clear();
            return buf;
        }
        let size = if class < CLASSES {
            1 << (class as u32 + MIN_SHIFT)
        } else {
            capacity
        };
        AlignedBuf::with_alignment(size, self.alignment)
    }

    /// Returns a buffer: a registered one to its member's set, a plain one
    /// for reuse here (or freed when the pool is full).
    pub fn give(&mut self, buf: Buffer) {
        let buf = match buf {
            Buffer::Fixed(buf) => return drop(buf),
            Buffer::Plain(buf) => buf,
        };
        let capacity = buf.capacity();
        let class = class_of(capacity);
        if class >= CLASSES
            || capacity != 1 << (class as u32 + MIN_SHIFT)
            || buf.alignment() != self.alignment
            || self.retained + capacity > RETAIN_BYTES
        {
            return;
        }
        self.retained += capacity;
        self.free[class].push(buf);
    }
}

fn class_of(capacity: usize) -> usize {
    let rounded = capacity.max(1 << MIN_SHIFT).next_power_of_two();
    (rounded.trailing_zeros() - MIN_SHIFT) as usize
}
