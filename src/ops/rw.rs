//! `IORING_OP_READ` / `IORING_OP_WRITE` at an offset, with owned buffers.

use std::io;
use std::os::fd::AsRawFd;

use crate::buf::{IoBuf, IoBufMut};
use crate::op::sealed::Sealed;
use crate::op::{Cqe, OpKind};
use crate::ops::SharedFd;
use crate::ring::{Sqe, op, ty};

/// A read of up to `bytes_total - start` bytes into `buf[start..]` at `offset`.
#[derive(Debug)]
pub struct ReadAt<B> {
    fd: SharedFd,
    buf: B,
    start: usize,
    offset: u64,
}

impl<B: IoBufMut> ReadAt<B> {
    pub(crate) fn new(fd: SharedFd, buf: B, start: usize, offset: u64) -> Self {
        assert!(start <= buf.bytes_total(), "read start past the buffer");
        ReadAt {
            fd,
            buf,
            start,
            offset,
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
    fd: SharedFd,
    buf: B,
    start: usize,
    offset: u64,
}

impl<B: IoBuf> WriteAt<B> {
    pub(crate) fn new(fd: SharedFd, buf: B, start: usize, offset: u64) -> Self {
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

    fn complete(self, cqe: Cqe) -> Self::Output {
        (cqe.result.map(|n| n as usize), self.buf)
    }
}
