//! `IORING_OP_FSYNC` (full or data-only), `IORING_OP_FALLOCATE` and
//! `IORING_OP_FTRUNCATE`: the ops that change a file's durability or size.

use std::io;
use std::os::fd::AsRawFd;

use crate::error::Cqe;
use crate::ops::blocking::{FdCall, OnFd};
use crate::ops::simulated::{SimFs, cqe_of};
use crate::ops::{
    BlockingOp, Fallback, FileFd, OnRing, OpKind, Opcode, Operation, SimulatedOp, UringOp,
    check_offset,
};
use crate::ring::{Sqe, op, ty};

pub(crate) const FSYNC: Opcode = (op::Fsync::CODE, "FSYNC");
pub(crate) const FALLOCATE: Opcode = (op::Fallocate::CODE, "FALLOCATE");
pub(crate) const FTRUNCATE: Opcode = (op::Ftruncate::CODE, "FTRUNCATE");

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

impl OpKind for Fsync {
    type Output = io::Result<()>;
}

impl Operation for Fsync {
    type Resolved = io::Result<()>;

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl UringOp for Fsync {
    names_file_by!(fd);

    fn sqe(&mut self) -> Sqe {
        let flags = if self.data_only {
            ty::FsyncFlags::DATASYNC
        } else {
            ty::FsyncFlags::empty()
        };
        on_file!(self.fd, target => op::Fsync::new(target).flags(flags).build())
    }
}

impl BlockingOp for Fsync {
    type Call = OnFd;

    fn fallback(&mut self) -> Fallback<OnFd> {
        Fallback::Call(OnFd {
            fd: self.fd,
            call: FdCall::Fsync {
                data_only: self.data_only,
            },
        })
    }
}

impl SimulatedOp for Fsync {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        cqe_of(fs.fsync(self.fd.as_raw_fd(), self.data_only).map(|()| 0))
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

impl OpKind for Fallocate {
    type Output = io::Result<()>;
}

impl Operation for Fallocate {
    type Resolved = io::Result<()>;

    fn validate(&self) -> io::Result<()> {
        check_offset(self.offset)?;
        check_offset(self.len)
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl UringOp for Fallocate {
    names_file_by!(fd);

    fn sqe(&mut self) -> Sqe {
        let (len, offset, mode) = (self.len, self.offset, self.mode);
        on_file!(self.fd, target => op::Fallocate::new(target, len).offset(offset).mode(mode).build())
    }
}

impl BlockingOp for Fallocate {
    type Call = OnFd;

    fn fallback(&mut self) -> Fallback<OnFd> {
        Fallback::Call(OnFd {
            fd: self.fd,
            call: FdCall::Fallocate {
                offset: self.offset,
                len: self.len,
                mode: self.mode,
            },
        })
    }
}

impl SimulatedOp for Fallocate {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let fd = self.fd.as_raw_fd();
        cqe_of(
            fs.fallocate(fd, self.offset, self.len, self.mode)
                .map(|()| 0),
        )
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

impl OpKind for Ftruncate {
    type Output = io::Result<()>;
}

impl Operation for Ftruncate {
    type Resolved = io::Result<()>;

    fn validate(&self) -> io::Result<()> {
        check_offset(self.len)
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl UringOp for Ftruncate {
    const ON_RING: OnRing = OnRing::IfProbed(FTRUNCATE);

    names_file_by!(fd);

    fn sqe(&mut self) -> Sqe {
        on_file!(self.fd, target => op::Ftruncate::new(target, self.len).build())
    }
}

impl BlockingOp for Ftruncate {
    type Call = OnFd;

    fn fallback(&mut self) -> Fallback<OnFd> {
        Fallback::Call(OnFd {
            fd: self.fd,
            call: FdCall::Ftruncate { len: self.len },
        })
    }
}

impl SimulatedOp for Ftruncate {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        cqe_of(fs.ftruncate(self.fd.as_raw_fd(), self.len).map(|()| 0))
    }
}
