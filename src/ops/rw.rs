//! `IORING_OP_READ` / `IORING_OP_WRITE` at an offset, with owned buffers.

use std::io;
use std::os::fd::AsRawFd;

use crate::buf::{IoBuf, IoBufMut};
use crate::op::sealed::Sealed;
use crate::op::{Cqe, OpKind};
use crate::ops::FileFd;
use crate::ops::blocking::{Bounce, Positional, sim_cqe};
use crate::ring::{Sqe, op, ty};

/// A read of up to `bytes_total - start` bytes into `buf[start..]` at `offset`.
#[derive(Debug)]
pub struct ReadAt<B> {
    fd: FileFd,
    buf: B,
    start: usize,
    offset: u64,
}

impl<B: IoBufMut> ReadAt<B> {
    pub(crate) fn new(fd: FileFd, buf: B, start: usize, offset: u64) -> Self {
        assert!(start <= buf.bytes_total(), "read start past the buffer");
        ReadAt {
            fd,
            buf,
            start,
            offset,
        }
    }
}

impl<B: IoBufMut> ReadAt<B> {
    /// Copies data read elsewhere (a bounce, the simulator) into the buffer
    /// at `start`; `complete` then marks it initialised.
    fn fill(&mut self, data: &[u8]) {
        debug_assert!(data.len() <= self.buf.bytes_total() - self.start);
        // SAFETY: `start + data.len() <= bytes_total`: the call read at most
        // the buffer's remaining length.
        unsafe {
            let dst = self.buf.stable_mut_ptr().add(self.start);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
        }
    }
}

impl<B> Sealed for ReadAt<B> {}

impl<B: IoBufMut> OpKind for ReadAt<B> {
    type Output = (io::Result<usize>, B);

    fn sqe(&mut self) -> Sqe {
        let len = (self.buf.bytes_total() - self.start).min(u32::MAX as usize) as u32;
        // SAFETY: `start <= bytes_total`, checked in `new`.
        let ptr = unsafe { self.buf.stable_mut_ptr().add(self.start) };
        op::Read::new(ty::Fd(self.fd.as_raw_fd()), ptr, len)
            .offset(self.offset)
            .build()
    }

    type Blocking = Positional;

    fn blocking(&mut self) -> Positional {
        let len = self.buf.bytes_total() - self.start;
        // SAFETY: `start <= bytes_total`, checked in `new`.
        let ptr = unsafe { self.buf.stable_mut_ptr().add(self.start) };
        Positional {
            fd: self.fd,
            bufs: vec![Bounce::shaped_like(ptr, len)],
            offset: self.offset,
            write: false,
        }
    }

    fn land(&mut self, call: Positional, cqe: &mut Cqe) {
        if let Ok(n) = cqe.result {
            self.fill(&call.bufs[0].as_slice()[..n as usize]);
        }
    }

    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe {
        let len = self.buf.bytes_total() - self.start;
        let result = files
            .read(self.fd.as_raw_fd(), self.offset, len)
            .map(|data| {
                self.fill(&data);
                data.len()
            });
        sim_cqe(result)
    }

    fn complete(mut self, cqe: Cqe) -> Self::Output {
        let result = cqe.result.map(|n| {
            // SAFETY: the kernel wrote `n` bytes at `start`; bytes before
            // `start` were initialised by the caller's earlier reads.
            unsafe { self.buf.set_init(self.start + n as usize) };
            n as usize
        });
        (result, self.buf)
    }
}

/// A write of `buf[start..bytes_init]` at `offset`.
#[derive(Debug)]
pub struct WriteAt<B> {
    fd: FileFd,
    buf: B,
    start: usize,
    offset: u64,
}

impl<B: IoBuf> WriteAt<B> {
    pub(crate) fn new(fd: FileFd, buf: B, start: usize, offset: u64) -> Self {
        assert!(
            start <= buf.bytes_init(),
            "write start past the buffer's data"
        );
        WriteAt {
            fd,
            buf,
            start,
            offset,
        }
    }
}

impl<B: IoBuf> WriteAt<B> {
    /// The bytes to write: `buf[start..bytes_init]`.
    fn data(&self) -> &[u8] {
        let len = self.buf.bytes_init() - self.start;
        // SAFETY: `start <= bytes_init` (checked in `new`), and the first
        // `bytes_init` bytes are initialised.
        unsafe { std::slice::from_raw_parts(self.buf.stable_ptr().add(self.start), len) }
    }
}

impl<B> Sealed for WriteAt<B> {}

impl<B: IoBuf> OpKind for WriteAt<B> {
    type Output = (io::Result<usize>, B);

    fn sqe(&mut self) -> Sqe {
        let len = (self.buf.bytes_init() - self.start).min(u32::MAX as usize) as u32;
        // SAFETY: `start <= bytes_init`, checked in `new`.
        let ptr = unsafe { self.buf.stable_ptr().add(self.start) };
        op::Write::new(ty::Fd(self.fd.as_raw_fd()), ptr, len)
            .offset(self.offset)
            .build()
    }

    type Blocking = Positional;

    fn blocking(&mut self) -> Positional {
        let data = self.data();
        // SAFETY: `data` is the buffer's initialised bytes, live for the call.
        let bounce = unsafe { Bounce::copy_of(data.as_ptr(), data.len()) };
        Positional {
            fd: self.fd,
            bufs: vec![bounce],
            offset: self.offset,
            write: true,
        }
    }

    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe {
        let (fd, offset) = (self.fd.as_raw_fd(), self.offset);
        sim_cqe(files.write(fd, offset, self.data()))
    }

    fn complete(self, cqe: Cqe) -> Self::Output {
        (cqe.result.map(|n| n as usize), self.buf)
    }
}
