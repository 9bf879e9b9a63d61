//! Request buffers, reused: one pool per connection (so no locks), free
//! lists by power-of-two size class, and a cap on what it keeps, so a burst
//! of large requests does not pin memory for the connection's lifetime.
//!
//! Every buffer is an [`AlignedBuf`], whatever the mode: O_DIRECT needs the
//! alignment, and the page cache does not mind it. A buffer taken for a
//! request goes to the kernel with the op, comes back with its result, and
//! returns here once its reply is on the socket.

use aioctx::buf::AlignedBuf;

/// The smallest class: 4 KiB.
const MIN_SHIFT: u32 = 12;
/// Classes up to 64 MiB (a 32 MiB request plus its edge blocks).
const CLASSES: usize = 15;
/// Bytes of idle buffers a connection keeps.
const RETAIN_BYTES: usize = 16 << 20;

#[derive(Debug)]
pub struct BufPool {
    alignment: usize,
    free: [Vec<AlignedBuf>; CLASSES],
    retained: usize,
}

impl BufPool {
    /// A pool of buffers aligned to `alignment`.
    pub fn new(alignment: usize) -> BufPool {
        BufPool {
            alignment,
            free: Default::default(),
            retained: 0,
        }
    }

    /// A buffer of at least `capacity` bytes, its length 0.
    pub fn take(&mut self, capacity: usize) -> AlignedBuf {
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

    /// Returns a buffer for reuse, or frees it when the pool is full.
    pub fn give(&mut self, buf: AlignedBuf) {
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
