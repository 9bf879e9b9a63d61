//! `IORING_OP_FSYNC` (full or data-only), `IORING_OP_FALLOCATE` and
//! `IORING_OP_FTRUNCATE`: the ops that change a file's durability or size.

use std::io;
use std::os::fd::AsRawFd;

use crate::op::sealed::Sealed;
use crate::op::{Cqe, OpKind};
use crate::ops::FileFd;
use crate::ops::blocking::{OnFd, sim_cqe};
use crate::ring::{Sqe, op, ty};
use crate::sim::SimOp;

/// `fsync(2)` or `fdatasync(2)` of a file.
#[derive(Debug)]
pub struct Fsync {
    fd: FileFd,
    data_only: bool,
}

impl Fsync {
    pub(crate) fn new(fd: FileFd, data_only: bool) -> Self {
        Fsync { fd, data_only }
    }
}

impl Sealed for Fsync {}

impl OpKind for Fsync {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> Sqe {
        let mut fsync = op::Fsync::new(ty::Fd(self.fd.as_raw_fd()));
        if self.data_only {
            fsync = fsync.flags(ty::FsyncFlags::DATASYNC);
        }
        fsync.build()
    }

    type Blocking = OnFd;

    fn blocking(&mut self) -> OnFd {
        OnFd {
            fd: self.fd,
            // SAFETY (both arms): plain syscalls on an fd the call keeps open.
            call: |fd, [data_only, ..]| {
                if data_only != 0 {
                    // SAFETY: see above.
                    i64::from(unsafe { libc::fdatasync(fd) })
                } else {
                    // SAFETY: see above.
                    i64::from(unsafe { libc::fsync(fd) })
                }
            },
            args: [u64::from(self.data_only), 0, 0],
        }
    }

    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe {
        sim_cqe(files.fsync(self.fd.as_raw_fd()).map(|()| 0))
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

/// `fallocate(2)` of a range.
#[derive(Debug)]
pub struct Fallocate {
    fd: FileFd,
    offset: u64,
    len: u64,
    mode: i32,
}

impl Fallocate {
    pub(crate) fn new(fd: FileFd, offset: u64, len: u64, mode: i32) -> Self {
        Fallocate {
            fd,
            offset,
            len,
            mode,
        }
    }
}

impl Sealed for Fallocate {}

impl OpKind for Fallocate {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> Sqe {
        op::Fallocate::new(ty::Fd(self.fd.as_raw_fd()), self.len)
            .offset(self.offset)
            .mode(self.mode)
            .build()
    }

    type Blocking = OnFd;

    fn blocking(&mut self) -> OnFd {
        OnFd {
            fd: self.fd,
            call: |fd, [offset, len, mode]| {
                // SAFETY: a plain syscall on an fd the call keeps open.
                i64::from(unsafe {
                    libc::fallocate(fd, mode as i32, offset as libc::off_t, len as libc::off_t)
                })
            },
            args: [self.offset, self.len, self.mode as u32 as u64],
        }
    }

    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe {
        let fd = self.fd.as_raw_fd();
        let result = files.resize(fd, SimOp::Fallocate, self.offset, self.len, self.mode);
        sim_cqe(result.map(|()| 0))
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

/// `ftruncate(2)` to a length.
#[derive(Debug)]
pub struct Ftruncate {
    fd: FileFd,
    len: u64,
}

impl Ftruncate {
    pub(crate) fn new(fd: FileFd, len: u64) -> Self {
        Ftruncate { fd, len }
    }
}

impl Sealed for Ftruncate {}

impl OpKind for Ftruncate {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> Sqe {
        op::Ftruncate::new(ty::Fd(self.fd.as_raw_fd()), self.len).build()
    }

    type Blocking = OnFd;

    fn blocking(&mut self) -> OnFd {
        OnFd {
            fd: self.fd,
            call: |fd, [len, ..]| {
                // SAFETY: a plain syscall on an fd the call keeps open.
                i64::from(unsafe { libc::ftruncate(fd, len as libc::off_t) })
            },
            args: [self.len, 0, 0],
        }
    }

    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe {
        let fd = self.fd.as_raw_fd();
        sim_cqe(
            files
                .resize(fd, SimOp::Ftruncate, 0, self.len, 0)
                .map(|()| 0),
        )
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}
