//! `IORING_OP_LINKAT`: `linkat(2)`, a second name for a file. Where the
//! kernel lacks the opcode (before 5.15), the ring runs the op as its
//! blocking call.

use std::io;
use std::path::Path;

use crate::error::Cqe;
use crate::ops::blocking::{BlockingCall, retry};
use crate::ops::path::{CPath, DirFd};
use crate::ops::simulated::{At, SimFs, cqe_of};
use crate::ops::{BlockingOp, Fallback, OnRing, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op, ty};

pub(crate) const OPCODE: Opcode = (op::LinkAt::CODE, "LINKAT");

/// `linkat(2)`: a hard link, a new name for an existing file.
#[derive(Debug, Clone)]
pub struct LinkAt {
    from_dir: DirFd,
    from: CPath,
    to_dir: DirFd,
    to: CPath,
    /// `AT_SYMLINK_FOLLOW` or 0.
    flags: i32,
}

impl LinkAt {
    /// Links `to` (relative to `to_dir`) to the file `from` (relative to
    /// `from_dir`) names: a symlink itself, unless `follow`.
    pub(crate) fn new(
        from_dir: DirFd,
        from: &Path,
        to_dir: DirFd,
        to: &Path,
        follow: bool,
    ) -> Self {
        LinkAt {
            from_dir,
            from: CPath::new(from),
            to_dir,
            to: CPath::new(to),
            flags: if follow { libc::AT_SYMLINK_FOLLOW } else { 0 },
        }
    }
}

impl OpKind for LinkAt {
    type Output = io::Result<()>;
}

impl Operation for LinkAt {
    type Resolved = io::Result<()>;

    fn validate(&self) -> io::Result<()> {
        self.from.check()?;
        self.to.check()
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl UringOp for LinkAt {
    const ON_RING: OnRing = OnRing::IfProbed(OPCODE);

    fn sqe(&mut self) -> Sqe {
        op::LinkAt::new(
            ty::Fd(self.from_dir.raw()),
            self.from.as_ptr(),
            ty::Fd(self.to_dir.raw()),
            self.to.as_ptr(),
        )
        .flags(self.flags)
        .build()
    }
}

impl BlockingOp for LinkAt {
    /// A copy of the op, holding its directories open.
    type Call = LinkAt;

    fn fallback(&mut self) -> Fallback<LinkAt> {
        Fallback::Call(self.clone())
    }
}

impl BlockingCall for LinkAt {
    fn run(&mut self) -> Cqe {
        retry(|| {
            // SAFETY: NUL-terminated paths this call owns, and directory fds
            // it holds open.
            i64::from(unsafe {
                libc::linkat(
                    self.from_dir.raw(),
                    self.from.as_ptr(),
                    self.to_dir.raw(),
                    self.to.as_ptr(),
                    self.flags,
                )
            })
        })
    }
}

impl SimulatedOp for LinkAt {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let from = At {
            dir: self.from_dir.raw(),
            path: self.from.as_path(),
        };
        let to = At {
            dir: self.to_dir.raw(),
            path: self.to.as_path(),
        };
        let follow = self.flags & libc::AT_SYMLINK_FOLLOW != 0;
        cqe_of(fs.link(from, to, follow).map(|()| 0))
    }
}
