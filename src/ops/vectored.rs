//! `IORING_OP_READV` / `IORING_OP_WRITEV` at an offset, over owned buffers.

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

pub(crate) const READV: Opcode = (op::Readv::CODE, "READV");
pub(crate) const WRITEV: Opcode = (op::Writev::CODE, "WRITEV");

/// A vectored read filling each buffer (up to its total size) in turn.
#[derive(Debug)]
pub struct ReadvAt<B> {
    fd: FileFd,
    bufs: Vec<B>,
    /// Built in `sqe`, once the op sits at its final address; the kernel
    /// reads it during submission and the buffers' memory until completion.
    iovecs: Vec<libc::iovec>,
    offset: u64,
}

// SAFETY: the iovecs only point into `bufs`, which the op owns and which are
// `Send`; raw pointers are what keep the auto-impl away.
unsafe impl<B: Send> Send for ReadvAt<B> {}

impl<B: IoBufMut> ReadvAt<B> {
    pub(crate) fn new(fd: FileFd, bufs: Vec<B>, offset: u64) -> Self {
        ReadvAt {
            fd,
            bufs,
            iovecs: Vec::new(),
            offset,
        }
    }

    /// Spreads `data` over the buffers in order, as `readv` would.
    fn fill(&mut self, mut data: &[u8]) {
        for buf in &mut self.bufs {
            let n = data.len().min(buf.bytes_total());
            // SAFETY: `n <= bytes_total` of this buffer.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.stable_mut_ptr(), n) };
            data = &data[n..];
        }
    }
}

impl<B: IoBufMut> OpKind for ReadvAt<B> {
    type Output = (io::Result<usize>, Vec<B>);
}

impl<B: IoBufMut> Operation for ReadvAt<B> {
    type Resolved = (io::Result<usize>, Vec<B>);

    fn validate(&self) -> io::Result<()> {
        check_offset(self.offset)
    }

    fn complete(mut self, cqe: Cqe) -> Self::Resolved {
        let bufs = &self.bufs;
        let result = direct::explain(cqe, self.fd.as_raw_fd(), "read", self.offset, || {
            bufs.iter()
                .map(|b| (b.stable_ptr() as usize, b.bytes_total()))
                .collect()
        });
        let result = result.map(|n| {
            let mut left = n as usize;
            for buf in &mut self.bufs {
                let filled = left.min(buf.bytes_total());
                // SAFETY: the kernel filled the buffers in order; this one
                // got its first `filled` bytes.
                unsafe { buf.set_init(filled) };
                left -= filled;
            }
            n as usize
        });
        (result, self.bufs)
    }
}

impl<B: IoBufMut> UringOp for ReadvAt<B> {
    names_file_by!(fd);

    fn sqe(&mut self) -> Sqe {
        self.iovecs = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.stable_mut_ptr().cast(),
                iov_len: b.bytes_total(),
            })
            .collect();
        let (iov, count, fd) = (self.iovecs.as_ptr(), self.iovecs.len() as u32, self.fd);
        on_file!(fd, target => op::Readv::new(target, iov, count).offset(self.offset).build())
    }
}

impl<B: IoBufMut> BlockingOp for ReadvAt<B> {
    type Call = Positional;

    fn fallback(&mut self) -> Fallback<Positional> {
        let bufs = self
            .bufs
            .iter_mut()
            .map(|b| Bounce::shaped_like(b.stable_mut_ptr(), b.bytes_total()))
            .collect();
        Fallback::Call(Positional {
            fd: self.fd,
            bufs,
            offset: self.offset,
            write: false,
        })
    }

    fn land(&mut self, call: Positional, cqe: &mut Cqe) {
        if let Ok(n) = cqe.result {
            let data: Vec<u8> = call
                .bufs
                .iter()
                .flat_map(|b| b.as_slice())
                .copied()
                .collect();
            self.fill(&data[..n as usize]);
        }
    }
}

impl<B: IoBufMut> SimulatedOp for ReadvAt<B> {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let into: Vec<Segment> = self
            .bufs
            .iter_mut()
            .map(|b| Segment {
                addr: b.stable_mut_ptr() as usize,
                len: b.bytes_total(),
            })
            .collect();
        let result = fs
            .read(self.fd.as_raw_fd(), self.offset, &into)
            .map(|data| {
                self.fill(&data);
                data.len()
            });
        cqe_of(result)
    }
}

/// A vectored write of each buffer's initialised bytes in turn.
#[derive(Debug)]
pub struct WritevAt<B> {
    fd: FileFd,
    bufs: Vec<B>,
    iovecs: Vec<libc::iovec>,
    offset: u64,
}

// SAFETY: as for ReadvAt.
unsafe impl<B: Send> Send for WritevAt<B> {}

impl<B: IoBuf> WritevAt<B> {
    pub(crate) fn new(fd: FileFd, bufs: Vec<B>, offset: u64) -> Self {
        WritevAt {
            fd,
            bufs,
            iovecs: Vec::new(),
            offset,
        }
    }

    /// Each buffer's initialised bytes.
    fn data(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs.iter().map(|b| {
            // SAFETY: each buffer's first `bytes_init` bytes are initialised.
            unsafe { std::slice::from_raw_parts(b.stable_ptr(), b.bytes_init()) }
        })
    }
}

impl<B: IoBuf> OpKind for WritevAt<B> {
    type Output = (io::Result<usize>, Vec<B>);
}

impl<B: IoBuf> Operation for WritevAt<B> {
    type Resolved = (io::Result<usize>, Vec<B>);

    fn validate(&self) -> io::Result<()> {
        check_offset(self.offset)
    }

    fn complete(self, cqe: Cqe) -> Self::Resolved {
        let result = direct::explain(cqe, self.fd.as_raw_fd(), "write", self.offset, || {
            self.data()
                .map(|data| (data.as_ptr() as usize, data.len()))
                .collect()
        });
        (result.map(|n| n as usize), self.bufs)
    }
}

impl<B: IoBuf> UringOp for WritevAt<B> {
    names_file_by!(fd);

    fn sqe(&mut self) -> Sqe {
        self.iovecs = self
            .data()
            .map(|data| libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            })
            .collect();
        let (iov, count, fd) = (self.iovecs.as_ptr(), self.iovecs.len() as u32, self.fd);
        on_file!(fd, target => op::Writev::new(target, iov, count).offset(self.offset).build())
    }
}

impl<B: IoBuf> BlockingOp for WritevAt<B> {
    type Call = Positional;

    fn fallback(&mut self) -> Fallback<Positional> {
        let bufs = self
            .data()
            // SAFETY: `data` is live for the call.
            .map(|data| unsafe { Bounce::copy_of(data.as_ptr(), data.len()) })
            .collect();
        Fallback::Call(Positional {
            fd: self.fd,
            bufs,
            offset: self.offset,
            write: true,
        })
    }
}

impl<B: IoBuf> SimulatedOp for WritevAt<B> {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let from: Vec<&[u8]> = self.data().collect();
        cqe_of(fs.write(self.fd.as_raw_fd(), self.offset, &from))
    }
}
