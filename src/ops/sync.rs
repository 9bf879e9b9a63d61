//! `IORING_OP_FSYNC` (full or data-only), `IORING_OP_FALLOCATE` and
//! `IORING_OP_FTRUNCATE`: the ops that change a file's durability or size.

use std::io;
use std::os::fd::AsRawFd;

use crate::op::sealed::Sealed;
use crate::op::{Cqe, OpKind};
use crate::ops::SharedFd;
use crate::ring::{Sqe, op, ty};

/// `fsync(2)` or `fdatasync(2)` of a file.
#[derive(Debug)]
pub struct Fsync {
    fd: SharedFd,
    data_only: bool,
}

impl Fsync {
    pub(crate) fn new(fd: SharedFd, data_only: bool) -> Self {
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

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

/// `fallocate(2)` of a range.
#[derive(Debug)]
pub struct Fallocate {
    fd: SharedFd,
    offset: u64,
    len: u64,
    mode: i32,
}

impl Fallocate {
    pub(crate) fn new(fd: SharedFd, offset: u64, len: u64, mode: i32) -> Self {
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

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

/// `ftruncate(2)` to a length.
#[derive(Debug)]
pub struct Ftruncate {
    fd: SharedFd,
    len: u64,
}

impl Ftruncate {
    pub(crate) fn new(fd: SharedFd, len: u64) -> Self {
        Ftruncate { fd, len }
    }
}

impl Sealed for Ftruncate {}

impl OpKind for Ftruncate {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> Sqe {
        op::Ftruncate::new(ty::Fd(self.fd.as_raw_fd()), self.len).build()
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}
