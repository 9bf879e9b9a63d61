//! `IORING_OP_READV` / `IORING_OP_WRITEV` at an offset, over owned buffers.

use std::io;
use std::os::fd::AsRawFd;

use crate::buf::{IoBuf, IoBufMut};
use crate::op::sealed::Sealed;
use crate::op::{Cqe, OpKind};
use crate::ops::FileFd;
use crate::ops::blocking::{Bounce, Positional, sim_cqe};
use crate::ring::{Sqe, op, ty};

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
}

impl<B: IoBufMut> ReadvAt<B> {
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

impl<B> Sealed for ReadvAt<B> {}

impl<B: IoBufMut> OpKind for ReadvAt<B> {
    type Output = (io::Result<usize>, Vec<B>);

    fn sqe(&mut self) -> Sqe {
        self.iovecs = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.stable_mut_ptr().cast(),
                iov_len: b.bytes_total(),
            })
            .collect();
        op::Readv::new(
            ty::Fd(self.fd.as_raw_fd()),
            self.iovecs.as_ptr(),
            self.iovecs.len() as u32,
        )
        .offset(self.offset)
        .build()
    }

    type Blocking = Positional;

    fn blocking(&mut self) -> Positional {
        let bufs = self
            .bufs
            .iter_mut()
            .map(|b| Bounce::shaped_like(b.stable_mut_ptr(), b.bytes_total()))
            .collect();
        Positional {
            fd: self.fd,
            bufs,
            offset: self.offset,
            write: false,
        }
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

    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe {
        let len = self.bufs.iter().map(|b| b.bytes_total()).sum();
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
}

impl<B> Sealed for WritevAt<B> {}

impl<B: IoBuf> OpKind for WritevAt<B> {
    type Output = (io::Result<usize>, Vec<B>);

    fn sqe(&mut self) -> Sqe {
        self.iovecs = self
            .bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.stable_ptr() as *mut libc::c_void,
                iov_len: b.bytes_init(),
            })
            .collect();
        op::Writev::new(
            ty::Fd(self.fd.as_raw_fd()),
            self.iovecs.as_ptr(),
            self.iovecs.len() as u32,
        )
        .offset(self.offset)
        .build()
    }

    type Blocking = Positional;

    fn blocking(&mut self) -> Positional {
        let bufs = self
            .bufs
            .iter()
            // SAFETY: each buffer's first `bytes_init` bytes are initialised.
            .map(|b| unsafe { Bounce::copy_of(b.stable_ptr(), b.bytes_init()) })
            .collect();
        Positional {
            fd: self.fd,
            bufs,
            offset: self.offset,
            write: true,
        }
    }

    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe {
        let mut data = Vec::new();
        for b in &self.bufs {
            // SAFETY: each buffer's first `bytes_init` bytes are initialised.
            data.extend_from_slice(unsafe {
                std::slice::from_raw_parts(b.stable_ptr(), b.bytes_init())
            });
        }
        sim_cqe(files.write(self.fd.as_raw_fd(), self.offset, &data))
    }

    fn complete(self, cqe: Cqe) -> Self::Output {
        (cqe.result.map(|n| n as usize), self.bufs)
    }
}
