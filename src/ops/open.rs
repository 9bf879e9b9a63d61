//! `IORING_OP_OPENAT` and `IORING_OP_CLOSE`: ops that create and release fds.
//!
//! An open whose future is dropped still produces an fd when it completes;
//! the op closes it then, so an abandoned open never leaks.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::op::sealed::Sealed;
use crate::op::{Cqe, OpKind};
use crate::ring::{Sqe, op, ty};

/// `openat(2)` relative to the current directory.
#[derive(Debug)]
pub struct OpenAt {
    path: CString,
    flags: i32,
    mode: u32,
}

impl OpenAt {
    pub(crate) fn new(path: &Path, flags: i32, mode: u32) -> io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
        Ok(OpenAt {
            path,
            flags: flags | libc::O_CLOEXEC,
            mode,
        })
    }
}

impl Sealed for OpenAt {}

impl OpKind for OpenAt {
    type Output = io::Result<OwnedFd>;

    fn sqe(&mut self) -> Sqe {
        op::OpenAt::new(ty::Fd(libc::AT_FDCWD), self.path.as_ptr())
            .flags(self.flags)
            .mode(self.mode)
            .build()
    }

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

/// `close(2)` of an fd the op owns.
#[derive(Debug)]
pub struct Close {
    /// `Some` until the SQE is built; then the kernel owns the fd.
    fd: Option<OwnedFd>,
    raw: RawFd,
}

impl Close {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Close {
            fd: Some(fd),
            raw: -1,
        }
    }
}

impl Sealed for Close {}

impl OpKind for Close {
    type Output = io::Result<()>;

    fn sqe(&mut self) -> Sqe {
        if let Some(fd) = self.fd.take() {
            self.raw = fd.into_raw_fd();
        }
        op::Close::new(ty::Fd(self.raw)).build()
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        if cqe.is_shutdown() {
            // Never reached the kernel: close it here.
            // SAFETY: `raw` came from `into_raw_fd` and was never closed.
            drop(unsafe { OwnedFd::from_raw_fd(self.raw) });
        }
        cqe.result.map(drop)
    }
}
