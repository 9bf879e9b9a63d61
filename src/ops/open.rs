//! `IORING_OP_OPENAT` and `IORING_OP_CLOSE`: ops that create and release fds.
//!
//! Neither leaks an fd, whatever happens to its future: an open whose future
//! is dropped still produces an fd when it completes, and the op closes it
//! then; a close that never reaches the kernel (dropped before its backend
//! started it, or caught by shutdown) closes its fd itself.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::error::Cqe;
use crate::ops::blocking::BlockingCall;
use crate::ops::path::{CPath, DirFd};
use crate::ops::simulated::{At, SimFs, cqe_of};
use crate::ops::{BlockingOp, Fallback, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op, ty};

pub(crate) const OPENAT: Opcode = (op::OpenAt::CODE, "OPENAT");
pub(crate) const CLOSE: Opcode = (op::Close::CODE, "CLOSE");

/// `openat(2)`, relative to the current directory or an open directory.
#[derive(Debug)]
pub struct OpenAt {
    dir: DirFd,
    path: CPath,
    flags: i32,
    mode: u32,
}

impl OpenAt {
    /// Opens `path` (relative to `dir`) with `flags` (`O_CLOEXEC` added)
    /// and, for a file it creates, permission bits `mode`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a path with a NUL byte inside.
    pub(crate) fn new(dir: DirFd, path: &Path, flags: i32, mode: u32) -> io::Result<Self> {
        let path = CPath::new(path);
        path.check()?;
        Ok(OpenAt {
            dir,
            path,
            flags: flags | libc::O_CLOEXEC,
            mode,
        })
    }
}

impl OpKind for OpenAt {
    type Output = io::Result<OwnedFd>;
}

impl Operation for OpenAt {
    type Resolved = io::Result<OwnedFd>;

    fn complete(self, cqe: Cqe) -> io::Result<OwnedFd> {
        // SAFETY: a successful openat returns a new fd that nothing else owns.
        cqe.result
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    fn abandon(self, cqe: Cqe) {
        // Dropping the OwnedFd closes the fd nobody will collect.
        drop(self.complete(cqe));
    }
}

impl UringOp for OpenAt {
    fn sqe(&mut self) -> Sqe {
        op::OpenAt::new(ty::Fd(self.dir.raw()), self.path.as_ptr())
            .flags(self.flags)
            .mode(self.mode)
            .build()
    }
}

impl BlockingOp for OpenAt {
    type Call = OpenCall;

    fn fallback(&mut self) -> Fallback<OpenCall> {
        Fallback::Call(OpenCall {
            dir: self.dir.clone(),
            path: self.path.clone(),
            flags: self.flags,
            mode: self.mode,
            opened: None,
        })
    }

    fn land(&mut self, mut call: OpenCall, _cqe: &mut Cqe) {
        // The fd's ownership passes to the completion, which `complete` or
        // `abandon` reclaims.
        if let Some(fd) = call.opened.take() {
            let _ = fd.into_raw_fd();
        }
    }
}

impl SimulatedOp for OpenAt {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let at = At {
            dir: self.dir.raw(),
            path: self.path.as_path(),
        };
        match fs.open(at, self.flags, self.mode) {
            Ok(fd) => Cqe::from_raw(fd.into_raw_fd(), 0),
            Err(e) => Cqe::error(e),
        }
    }
}

/// The fallback's `openat(2)`. Owns the fd it opens until the op lands it,
/// so an open whose future was resolved by shutdown closes its fd here.
#[derive(Debug)]
pub struct OpenCall {
    dir: DirFd,
    path: CPath,
    flags: i32,
    mode: u32,
    opened: Option<OwnedFd>,
}

impl BlockingCall for OpenCall {
    fn run(&mut self) -> Cqe {
        // SAFETY: `path` is a NUL-terminated string owned by this call, and
        // the directory fd is held open by it.
        let fd = unsafe { libc::openat(self.dir.raw(), self.path.as_ptr(), self.flags, self.mode) };
        if fd >= 0 {
            // SAFETY: a fresh fd from openat(2) that nothing else owns.
            self.opened = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        Cqe::of_syscall(i64::from(fd))
    }
}

/// `close(2)` of an fd the op owns.
#[derive(Debug)]
pub struct Close {
    /// The fd, owned by the op until the kernel (or a pool thread, or the
    /// simulator) has closed it; `None` once handed to one of those.
    fd: Option<OwnedFd>,
}

impl Close {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Close { fd: Some(fd) }
    }

    /// Settles who closes the fd once the op is over: the kernel did if the
    /// op reached it (closing even when it reports an error), otherwise the
    /// op does, here.
    fn settle(&mut self, cqe: &Cqe) {
        if let Some(fd) = self.fd.take()
            && !cqe.never_ran
        {
            // The kernel closed it: forget the number without closing again.
            let _ = fd.into_raw_fd();
        }
        // Otherwise `fd` drops here, closing it.
    }
}

impl OpKind for Close {
    type Output = io::Result<()>;
}

impl Operation for Close {
    type Resolved = io::Result<()>;

    fn complete(mut self, cqe: Cqe) -> io::Result<()> {
        self.settle(&cqe);
        cqe.result.map(drop)
    }

    fn abandon(mut self, cqe: Cqe) {
        self.settle(&cqe);
    }
}

impl UringOp for Close {
    fn sqe(&mut self) -> Sqe {
        let raw = self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        op::Close::new(ty::Fd(raw)).build()
    }
}

impl BlockingOp for Close {
    type Call = CloseCall;

    fn fallback(&mut self) -> Fallback<CloseCall> {
        // The call owns the fd from here: it closes it when it runs, or when
        // it is dropped unrun.
        Fallback::Call(CloseCall(self.fd.take()))
    }
}

impl SimulatedOp for Close {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let Some(fd) = self.fd.take() else {
            return Cqe::error(io::Error::from_raw_os_error(libc::EBADF));
        };
        let result = fs.close(fd.as_raw_fd());
        drop(fd);
        cqe_of(result.map(|()| 0))
    }
}

/// The fallback's `close(2)`.
#[derive(Debug)]
pub struct CloseCall(Option<OwnedFd>);

impl BlockingCall for CloseCall {
    fn run(&mut self) -> Cqe {
        let Some(fd) = self.0.take() else {
            return Cqe::error(io::Error::from_raw_os_error(libc::EBADF));
        };
        // SAFETY: the call owns the fd and gives it up here, once.
        let ret = unsafe { libc::close(fd.into_raw_fd()) };
        Cqe::of_syscall(i64::from(ret))
    }
}
