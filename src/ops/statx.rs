//! `IORING_OP_STATX` on an open file.

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime};

use crate::error::Cqe;
use crate::ops::blocking::BlockingCall;
use crate::ops::simulated::{SimFs, cqe_of};
use crate::ops::{BlockingOp, Fallback, FileFd, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op, ty};

pub(crate) const OPCODE: Opcode = (op::Statx::CODE, "STATX");

/// `statx(2)` with `AT_EMPTY_PATH` on a file's fd.
pub struct Statx {
    fd: FileFd,
    /// Boxed so the kernel's write target does not move with the op.
    buf: Box<libc::statx>,
}

impl std::fmt::Debug for Statx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statx")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl Statx {
    pub(crate) fn new(fd: FileFd) -> Self {
        // SAFETY: statx is plain old data; all-zero is a valid value.
        let buf = Box::new(unsafe { std::mem::zeroed::<libc::statx>() });
        Statx { fd, buf }
    }
}

const EMPTY_PATH: &std::ffi::CStr = c"";

impl OpKind for Statx {
    type Output = io::Result<Metadata>;
}

impl Operation for Statx {
    type Resolved = io::Result<Metadata>;

    fn complete(self, cqe: Cqe) -> io::Result<Metadata> {
        cqe.result.map(|_| Metadata { statx: *self.buf })
    }
}

impl UringOp for Statx {
    fn sqe(&mut self) -> Sqe {
        let target: *mut libc::statx = &mut *self.buf;
        op::Statx::new(
            ty::Fd(self.fd.as_raw_fd()),
            EMPTY_PATH.as_ptr(),
            target.cast(),
        )
        .flags(libc::AT_EMPTY_PATH)
        .mask(libc::STATX_BASIC_STATS | libc::STATX_BTIME)
        .build()
    }
}

impl BlockingOp for Statx {
    type Call = StatxCall;

    fn fallback(&mut self) -> Fallback<StatxCall> {
        Fallback::Call(StatxCall {
            fd: self.fd,
            // SAFETY: statx is plain old data; all-zero is a valid value.
            buf: Box::new(unsafe { std::mem::zeroed::<libc::statx>() }),
        })
    }

    fn land(&mut self, call: StatxCall, _cqe: &mut Cqe) {
        *self.buf = *call.buf;
    }
}

impl SimulatedOp for Statx {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let result = fs.size(self.fd.as_raw_fd()).map(|len| {
            self.buf.stx_size = len;
            self.buf.stx_mode = (libc::S_IFREG | 0o644) as u16;
            self.buf.stx_blksize = 4096;
            self.buf.stx_blocks = len.div_ceil(512);
            self.buf.stx_mask = libc::STATX_BASIC_STATS;
            0
        });
        cqe_of(result)
    }
}

/// The fallback's `statx(2)`, into a buffer of its own.
pub struct StatxCall {
    fd: FileFd,
    buf: Box<libc::statx>,
}

impl std::fmt::Debug for StatxCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatxCall")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl BlockingCall for StatxCall {
    fn run(&mut self) -> Cqe {
        let target: *mut libc::statx = &mut *self.buf;
        // SAFETY: `target` is this call's own statx, live for the syscall;
        // the path is a static empty C string.
        let ret = unsafe {
            libc::statx(
                self.fd.as_raw_fd(),
                EMPTY_PATH.as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_BASIC_STATS | libc::STATX_BTIME,
                target,
            )
        };
        Cqe::of_syscall(i64::from(ret))
    }
}

/// A file's metadata, from `statx(2)`.
#[derive(Clone, Copy)]
pub struct Metadata {
    statx: libc::statx,
}

impl Metadata {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.statx.stx_size
    }

    /// Whether the size is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        u32::from(self.statx.stx_mode) & libc::S_IFMT == libc::S_IFREG
    }

    /// Whether this is a block device.
    pub fn is_block_device(&self) -> bool {
        u32::from(self.statx.stx_mode) & libc::S_IFMT == libc::S_IFBLK
    }

    /// Permission and type bits (`st_mode`).
    pub fn mode(&self) -> u32 {
        u32::from(self.statx.stx_mode)
    }

    /// The preferred I/O block size.
    pub fn block_size(&self) -> u32 {
        self.statx.stx_blksize
    }

    /// 512-byte blocks allocated.
    pub fn blocks(&self) -> u64 {
        self.statx.stx_blocks
    }

    /// Last modification time.
    pub fn modified(&self) -> SystemTime {
        let t = self.statx.stx_mtime;
        SystemTime::UNIX_EPOCH + Duration::new(t.tv_sec as u64, t.tv_nsec)
    }
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata")
            .field("len", &self.len())
            .field("mode", &format_args!("{:o}", self.mode()))
            .field("blocks", &self.blocks())
            .finish()
    }
}
