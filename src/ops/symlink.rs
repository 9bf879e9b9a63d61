//! `IORING_OP_SYMLINKAT`: `symlinkat(2)`. Where the kernel lacks the opcode
//! (before 5.15), the ring runs the op as its blocking call.

use std::io;
use std::path::Path;

use crate::error::Cqe;
use crate::ops::blocking::{BlockingCall, retry};
use crate::ops::path::{CPath, DirFd};
use crate::ops::simulated::{At, SimFs, cqe_of};
use crate::ops::{BlockingOp, Fallback, OnRing, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op, ty};

pub(crate) const OPCODE: Opcode = (op::SymlinkAt::CODE, "SYMLINKAT");

/// `symlinkat(2)`: a symbolic link whose target is a path, taken as it is.
#[derive(Debug, Clone)]
pub struct SymlinkAt {
    target: CPath,
    dir: DirFd,
    link: CPath,
}

impl SymlinkAt {
    /// Creates `link` (relative to `dir`), pointing at `target`.
    pub(crate) fn new(target: &Path, dir: DirFd, link: &Path) -> Self {
        SymlinkAt {
            target: CPath::new(target),
            dir,
            link: CPath::new(link),
        }
    }
}

impl OpKind for SymlinkAt {
    type Output = io::Result<()>;
}

impl Operation for SymlinkAt {
    type Resolved = io::Result<()>;

    fn validate(&self) -> io::Result<()> {
        self.target.check()?;
        self.link.check()
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl UringOp for SymlinkAt {
    const ON_RING: OnRing = OnRing::IfProbed(OPCODE);

    fn sqe(&mut self) -> Sqe {
        op::SymlinkAt::new(
            ty::Fd(self.dir.raw()),
            self.target.as_ptr(),
            self.link.as_ptr(),
        )
        .build()
    }
}

impl BlockingOp for SymlinkAt {
    /// A copy of the op, holding its directory open.
    type Call = SymlinkAt;

    fn fallback(&mut self) -> Fallback<SymlinkAt> {
        Fallback::Call(self.clone())
    }
}

impl BlockingCall for SymlinkAt {
    fn run(&mut self) -> Cqe {
        retry(|| {
            // SAFETY: NUL-terminated strings this call owns, and a directory
            // fd it holds open.
            i64::from(unsafe {
                libc::symlinkat(self.target.as_ptr(), self.dir.raw(), self.link.as_ptr())
            })
        })
    }
}

impl SimulatedOp for SymlinkAt {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let at = At {
            dir: self.dir.raw(),
            path: self.link.as_path(),
        };
        cqe_of(fs.symlink(self.target.as_path(), at).map(|()| 0))
    }
}
