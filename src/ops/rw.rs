//! `IORING_OP_READ` / `IORING_OP_WRITE` at an offset, with owned buffers.

use std::io;
use std::os::fd::AsRawFd;

use crate::buf::{IoBuf, IoBufMut};
use crate::error::Cqe;
use crate::ops::blocking::{Bounce, Positional};
use crate::ops::simulated::{Segment, SimFs, cqe_of};
use crate::ops::{
    BlockingOp, Fallback, FileFd, OpKind, Opcode, Operation, SimulatedOp, UringOp, check_offset,
    direct,
};
use crate::ring::{Sqe, op};

pub(crate) const READ: Opcode = (op::Read::CODE, "READ");
pub(crate) const WRITE: Opcode = (op::Write::CODE, "WRITE");
pub(crate) const READ_FIXED: Opcode = (op::ReadFixed::CODE, "READ_FIXED");
pub(crate) const WRITE_FIXED: Opcode = (op::WriteFixed::CODE, "WRITE_FIXED");

/// Where a read or write's buffer stands with the ring it goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Registration {
    /// A plain buffer.
    None,
    /// The buffer is this slot of the ring's buffer table: `READ_FIXED` /
    /// `WRITE_FIXED`, with no page pinning per op.
    Slot(u16),
    /// The buffer belongs to a context whose fds mean something else than
    /// the file's (a simulator's and a real one): refused with `EINVAL`.
    Mismatched,
}

impl Registration {
    fn validate(self) -> io::Result<()> {
        match self {
            Registration::Mismatched => Err(crate::error::invalid()),
            Registration::None | Registration::Slot(_) => Ok(()),
        }
    }
}

/// A read of up to `bytes_total - start` bytes into `buf[start..]` at `offset`.
#[derive(Debug)]
pub struct ReadAt<B> {
    fd: FileFd,
    buf: B,
    start: usize,
    offset: u64,
    registration: Registration,
}

impl<B: IoBufMut> ReadAt<B> {
    pub(crate) fn new(fd: FileFd, buf: B, start: usize, offset: u64) -> Self {
        assert!(start <= buf.bytes_total(), "read start past the buffer");
        ReadAt {
            fd,
            buf,
            start,
            offset,
            registration: Registration::None,
        }
    }

    /// A read into a registered buffer: `READ_FIXED` where `registration`
    /// names its slot.
    pub(crate) fn fixed(fd: FileFd, buf: B, offset: u64, registration: Registration) -> Self {
        ReadAt {
            registration,
            ..ReadAt::new(fd, buf, 0, offset)
        }
    }

    /// The part of the buffer the read fills: its address and length.
    fn target(&mut self) -> (*mut u8, usize) {
        // SAFETY: `start <= bytes_total`, checked in `new`.
        let ptr = unsafe { self.buf.stable_mut_ptr().add(self.start) };
        (ptr, self.buf.bytes_total() - self.start)
    }

    /// Copies data read elsewhere (a bounce, the simulator) into the buffer
    /// at `start`; `complete` then marks it initialised.
    fn fill(&mut self, data: &[u8]) {
        let (dst, len) = self.target();
        assert!(data.len() <= len, "more data than the read asked for");
        // SAFETY: `dst` is valid for `len >= data.len()` bytes of writes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }
}

impl<B: IoBufMut> OpKind for ReadAt<B> {
    type Output = (io::Result<usize>, B);
}

impl<B: IoBufMut> Operation for ReadAt<B> {
    type Resolved = (io::Result<usize>, B);

    fn validate(&self) -> io::Result<()> {
        self.registration.validate()?;
        check_offset(self.offset)
    }

    fn complete(mut self, cqe: Cqe) -> Self::Resolved {
        let (ptr, len) = self.target();
        let result = direct::explain(cqe, self.fd.as_raw_fd(), "read", self.offset, || {
            vec![(ptr as usize, len)]
        });
        let result = result.map(|n| {
            // SAFETY: the kernel wrote `n` bytes at `start`; bytes before
            // `start` were initialised by the caller's earlier reads.
            unsafe { self.buf.set_init(self.start + n as usize) };
            n as usize
        });
        (result, self.buf)
    }
}

impl<B: IoBufMut> UringOp for ReadAt<B> {
    names_file_by!(fd);

    fn sqe(&mut self) -> Sqe {
        let (ptr, len) = self.target();
        transfer_sqe(
            Direction::Read,
            self.fd,
            self.registration,
            ptr,
            len,
            self.offset,
        )
    }
}

impl<B: IoBufMut> BlockingOp for ReadAt<B> {
    type Call = Positional;

    fn fallback(&mut self) -> Fallback<Positional> {
        let (ptr, len) = self.target();
        Fallback::Call(Positional {
            fd: self.fd,
            bufs: vec![Bounce::shaped_like(ptr, len)],
            offset: self.offset,
            write: false,
        })
    }

    fn land(&mut self, call: Positional, cqe: &mut Cqe) {
        if let Ok(n) = cqe.result {
            self.fill(&call.bufs[0].as_slice()[..n as usize]);
        }
    }
}

impl<B: IoBufMut> SimulatedOp for ReadAt<B> {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let (ptr, len) = self.target();
        let into = [Segment {
            addr: ptr as usize,
            len,
        }];
        let result = fs
            .read(self.fd.as_raw_fd(), self.offset, &into)
            .map(|data| {
                self.fill(&data);
                data.len()
            });
        cqe_of(result)
    }
}

/// A write of `buf[start..bytes_init]` at `offset`.
#[derive(Debug)]
pub struct WriteAt<B> {
    fd: FileFd,
    buf: B,
    start: usize,
    offset: u64,
    registration: Registration,
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
            registration: Registration::None,
        }
    }

    /// A write from a registered buffer: `WRITE_FIXED` where `registration`
    /// names its slot.
    pub(crate) fn fixed(fd: FileFd, buf: B, offset: u64, registration: Registration) -> Self {
        WriteAt {
            registration,
            ..WriteAt::new(fd, buf, 0, offset)
        }
    }

    /// The bytes to write: `buf[start..bytes_init]`.
    fn data(&self) -> &[u8] {
        let len = self.buf.bytes_init() - self.start;
        // SAFETY: `start <= bytes_init` (checked in `new`), and the first
        // `bytes_init` bytes are initialised.
        unsafe { std::slice::from_raw_parts(self.buf.stable_ptr().add(self.start), len) }
    }
}

impl<B: IoBuf> OpKind for WriteAt<B> {
    type Output = (io::Result<usize>, B);
}

impl<B: IoBuf> Operation for WriteAt<B> {
    type Resolved = (io::Result<usize>, B);

    fn validate(&self) -> io::Result<()> {
        self.registration.validate()?;
        check_offset(self.offset)
    }

    fn complete(self, cqe: Cqe) -> Self::Resolved {
        let data = self.data();
        let (ptr, len) = (data.as_ptr() as usize, data.len());
        let result = direct::explain(cqe, self.fd.as_raw_fd(), "write", self.offset, || {
            vec![(ptr, len)]
        });
        (result.map(|n| n as usize), self.buf)
    }
}

impl<B: IoBuf> UringOp for WriteAt<B> {
    names_file_by!(fd);

    fn sqe(&mut self) -> Sqe {
        let data = self.data();
        let (ptr, len) = (data.as_ptr().cast_mut(), data.len());
        transfer_sqe(
            Direction::Write,
            self.fd,
            self.registration,
            ptr,
            len,
            self.offset,
        )
    }
}

impl<B: IoBuf> BlockingOp for WriteAt<B> {
    type Call = Positional;

    fn fallback(&mut self) -> Fallback<Positional> {
        let data = self.data();
        // SAFETY: `data` is the buffer's initialised bytes, live for the call.
        let bounce = unsafe { Bounce::copy_of(data.as_ptr(), data.len()) };
        Fallback::Call(Positional {
            fd: self.fd,
            bufs: vec![bounce],
            offset: self.offset,
            write: true,
        })
    }
}

impl<B: IoBuf> SimulatedOp for WriteAt<B> {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let fd = self.fd.as_raw_fd();
        cqe_of(fs.write(fd, self.offset, &[self.data()]))
    }
}

/// Which way a transfer goes.
#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// The SQE of a read into, or a write from, `len` bytes at `ptr`, on `fd`
/// at `offset`: through the registered buffer `registration` names, if any
/// (the kernel reads from `ptr` for a write; it never writes there).
fn transfer_sqe(
    direction: Direction,
    fd: FileFd,
    registration: Registration,
    ptr: *mut u8,
    len: usize,
    offset: u64,
) -> Sqe {
    let len = len.min(u32::MAX as usize) as u32;
    match (direction, registration) {
        (Direction::Read, Registration::Slot(index)) => on_file!(fd, target =>
            op::ReadFixed::new(target, ptr, len, index).offset(offset).build()),
        (Direction::Write, Registration::Slot(index)) => on_file!(fd, target =>
            op::WriteFixed::new(target, ptr, len, index).offset(offset).build()),
        (Direction::Read, Registration::None | Registration::Mismatched) => on_file!(fd, target =>
            op::Read::new(target, ptr, len).offset(offset).build()),
        (Direction::Write, Registration::None | Registration::Mismatched) => on_file!(fd, target =>
            op::Write::new(target, ptr, len).offset(offset).build()),
    }
}
