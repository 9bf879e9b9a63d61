//! The `direct` mode's DMA buffers: heap buffers that start on a page boundary, as O_DIRECT
//! wants, carved out of a `Vec` with room to spare so they need no allocator tricks. The floor
//! uses no part of aioctx, so it does not use `aioctx::buf::AlignedBuf` either.

/// O_DIRECT wants buffers aligned to the logical block size; a page covers every device.
const ALIGN: usize = 4096;

/// `len` bytes starting on an [`ALIGN`] boundary.
#[derive(Debug)]
pub struct DmaBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl DmaBuffer {
    pub fn new(len: usize) -> Self {
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        Self {
            storage,
            start,
            len,
        }
    }

    /// Where the kernel writes: the buffer's first byte, valid for [`len`](Self::len) bytes.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.storage[self.start..self.start + self.len].as_mut_ptr()
    }

    /// The first `read` bytes, once a read has filled them.
    pub fn filled(&self, read: usize) -> &[u8] {
        &self.storage[self.start..self.start + read]
    }
}
