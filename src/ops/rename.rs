//! `IORING_OP_RENAMEAT`: `renameat2(2)`, with `RENAME_NOREPLACE` and
//! `RENAME_EXCHANGE`. Where the kernel lacks the opcode (before 5.11), the
//! ring runs the op as its blocking call.

use std::io;
use std::path::Path;

use crate::error::Cqe;
use crate::ops::blocking::{BlockingCall, retry};
use crate::ops::path::{CPath, DirFd};
use crate::ops::simulated::{At, SimFs, cqe_of};
use crate::ops::{BlockingOp, Fallback, OnRing, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op, ty};

pub(crate) const OPCODE: Opcode = (op::RenameAt::CODE, "RENAMEAT");

/// How [`fs::rename_with`](crate::fs::rename_with) treats a name that already exists at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RenameMode {
    /// Replace it, atomically (`rename(2)`): what [`fs::rename`](crate::fs::rename) does.
    #[default]
    Replace,
    /// Fail with `EEXIST` instead (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swap the two names, atomically; both must exist (`RENAME_EXCHANGE`).
    Exchange,
}

impl RenameMode {
    /// `renameat2`'s flags.
    pub(crate) fn flags(self) -> u32 {
        match self {
            RenameMode::Replace => 0,
            RenameMode::NoReplace => libc::RENAME_NOREPLACE,
            RenameMode::Exchange => libc::RENAME_EXCHANGE,
        }
    }
}

/// `renameat2(2)`: gives a file or directory a new name, atomically.
#[derive(Debug, Clone)]
pub struct RenameAt {
    from_dir: DirFd,
    from: CPath,
    to_dir: DirFd,
    to: CPath,
    flags: u32,
}

impl RenameAt {
    /// Renames `from` (relative to `from_dir`) to `to` (relative to
    /// `to_dir`); `flags` is `renameat2`'s.
    pub(crate) fn new(from_dir: DirFd, from: &Path, to_dir: DirFd, to: &Path, flags: u32) -> Self {
        RenameAt {
            from_dir,
            from: CPath::new(from),
            to_dir,
            to: CPath::new(to),
            flags,
        }
    }
}

impl OpKind for RenameAt {
    type Output = io::Result<()>;
}

impl Operation for RenameAt {
    type Resolved = io::Result<()>;

    fn validate(&self) -> io::Result<()> {
        self.from.check()?;
        self.to.check()
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl UringOp for RenameAt {
    const ON_RING: OnRing = OnRing::IfProbed(OPCODE);

    fn sqe(&mut self) -> Sqe {
        op::RenameAt::new(
            ty::Fd(self.from_dir.raw()),
            self.from.as_ptr(),
            ty::Fd(self.to_dir.raw()),
            self.to.as_ptr(),
        )
        .flags(self.flags)
        .build()
    }
}

impl BlockingOp for RenameAt {
    /// The call is a copy of the op: its paths, and its directories held
    /// open for as long as the call lives.
    type Call = RenameAt;

    fn fallback(&mut self) -> Fallback<RenameAt> {
        Fallback::Call(self.clone())
    }
}

impl BlockingCall for RenameAt {
    fn run(&mut self) -> Cqe {
        retry(|| {
            // SAFETY: both paths are NUL-terminated strings this call owns,
            // and both directory fds are held open by it.
            unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    self.from_dir.raw(),
                    self.from.as_ptr(),
                    self.to_dir.raw(),
                    self.to.as_ptr(),
                    self.flags,
                )
            }
        })
    }
}

impl SimulatedOp for RenameAt {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let from = At {
            dir: self.from_dir.raw(),
            path: self.from.as_path(),
        };
        let to = At {
            dir: self.to_dir.raw(),
            path: self.to.as_path(),
        };
        cqe_of(fs.rename(from, to, self.flags).map(|()| 0))
    }
}
