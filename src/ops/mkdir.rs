//! `IORING_OP_MKDIRAT`: `mkdirat(2)`. Where the kernel lacks the opcode
//! (before 5.15), the ring runs the op as its blocking call.

use std::io;
use std::path::Path;

use crate::error::Cqe;
use crate::ops::blocking::{BlockingCall, retry};
use crate::ops::path::{CPath, DirFd};
use crate::ops::simulated::{At, SimFs, cqe_of};
use crate::ops::{BlockingOp, Fallback, OnRing, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op, ty};

pub(crate) const OPCODE: Opcode = (op::MkDirAt::CODE, "MKDIRAT");

/// `mkdirat(2)`: creates a directory.
#[derive(Debug, Clone)]
pub struct MkdirAt {
    dir: DirFd,
    path: CPath,
    mode: u32,
}

impl MkdirAt {
    /// Creates `path` (relative to `dir`) with permission bits `mode`
    /// (before the umask).
    pub(crate) fn new(dir: DirFd, path: &Path, mode: u32) -> Self {
        MkdirAt {
            dir,
            path: CPath::new(path),
            mode,
        }
    }
}

impl OpKind for MkdirAt {
    type Output = io::Result<()>;
}

impl Operation for MkdirAt {
    type Resolved = io::Result<()>;

    fn validate(&self) -> io::Result<()> {
        self.path.check()
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl UringOp for MkdirAt {
    const ON_RING: OnRing = OnRing::IfProbed(OPCODE);

    fn sqe(&mut self) -> Sqe {
        op::MkDirAt::new(ty::Fd(self.dir.raw()), self.path.as_ptr())
            .mode(self.mode)
            .build()
    }
}

impl BlockingOp for MkdirAt {
    /// A copy of the op, holding its directory open.
    type Call = MkdirAt;

    fn fallback(&mut self) -> Fallback<MkdirAt> {
        Fallback::Call(self.clone())
    }
}

impl BlockingCall for MkdirAt {
    fn run(&mut self) -> Cqe {
        retry(|| {
            // SAFETY: a NUL-terminated path this call owns, and a directory
            // fd it holds open.
            i64::from(unsafe { libc::mkdirat(self.dir.raw(), self.path.as_ptr(), self.mode) })
        })
    }
}

impl SimulatedOp for MkdirAt {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let at = At {
            dir: self.dir.raw(),
            path: self.path.as_path(),
        };
        cqe_of(fs.mkdir(at, self.mode).map(|()| 0))
    }
}
