//! `IORING_OP_UNLINKAT`: `unlinkat(2)`, which removes a file's name or
//! (with `AT_REMOVEDIR`) an empty directory. Where the kernel lacks the
//! opcode (before 5.11), the ring runs the op as its blocking call.

use std::io;
use std::path::Path;

use crate::error::Cqe;
use crate::ops::blocking::{BlockingCall, retry};
use crate::ops::path::{CPath, DirFd};
use crate::ops::simulated::{At, SimFs, cqe_of};
use crate::ops::{BlockingOp, Fallback, OnRing, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op, ty};

pub(crate) const OPCODE: Opcode = (op::UnlinkAt::CODE, "UNLINKAT");

/// `unlinkat(2)`: removes a name (`remove_file`) or an empty directory
/// (`remove_dir`).
#[derive(Debug, Clone)]
pub struct UnlinkAt {
    dir: DirFd,
    path: CPath,
    /// `AT_REMOVEDIR` or 0.
    flags: i32,
}

impl UnlinkAt {
    /// Removes `path` (relative to `dir`): a directory if `remove_dir`.
    pub(crate) fn new(dir: DirFd, path: &Path, remove_dir: bool) -> Self {
        UnlinkAt {
            dir,
            path: CPath::new(path),
            flags: if remove_dir { libc::AT_REMOVEDIR } else { 0 },
        }
    }
}

impl OpKind for UnlinkAt {
    type Output = io::Result<()>;
}

impl Operation for UnlinkAt {
    type Resolved = io::Result<()>;

    fn validate(&self) -> io::Result<()> {
        self.path.check()
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        cqe.result.map(drop)
    }
}

impl UringOp for UnlinkAt {
    const ON_RING: OnRing = OnRing::IfProbed(OPCODE);

    fn sqe(&mut self) -> Sqe {
        op::UnlinkAt::new(ty::Fd(self.dir.raw()), self.path.as_ptr())
            .flags(self.flags)
            .build()
    }
}

impl BlockingOp for UnlinkAt {
    /// A copy of the op, holding its directory open.
    type Call = UnlinkAt;

    fn fallback(&mut self) -> Fallback<UnlinkAt> {
        Fallback::Call(self.clone())
    }
}

impl BlockingCall for UnlinkAt {
    fn run(&mut self) -> Cqe {
        retry(|| {
            // SAFETY: a NUL-terminated path this call owns, and a directory
            // fd it holds open.
            i64::from(unsafe { libc::unlinkat(self.dir.raw(), self.path.as_ptr(), self.flags) })
        })
    }
}

impl SimulatedOp for UnlinkAt {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let at = At {
            dir: self.dir.raw(),
            path: self.path.as_path(),
        };
        cqe_of(
            fs.unlink(at, self.flags & libc::AT_REMOVEDIR != 0)
                .map(|()| 0),
        )
    }
}
