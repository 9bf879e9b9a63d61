//! `IORING_OP_OPENAT` and `IORING_OP_CLOSE`: ops that create and release fds.
//!
//! An open whose future is dropped still produces an fd when it completes;
//! the op closes it then, so an abandoned open never leaks.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
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

    type Blocking = OpenCall;

    fn blocking(&mut self) -> OpenCall {
        OpenCall {
            path: self.path.clone(),
            flags: self.flags,
            mode: self.mode,
            opened: None,
        }
    }

    fn land(&mut self, mut call: OpenCall, _cqe: &mut Cqe) {
        // The fd's ownership passes to the completion, which `complete` or
        // `abandon` reclaims.
        if let Some(fd) = call.opened.take() {
            let _ = fd.into_raw_fd();
        }
    }

    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(self.path.as_bytes()));
        match files.open(path, self.flags) {
            Ok(fd) => Cqe::from_raw(fd.into_raw_fd(), 0),
            Err(e) => Cqe::error(e),
        }
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

/// The fallback's `openat(2)`. Owns the fd it opens until the op lands it,
/// so an open whose future was resolved by shutdown closes its fd here.
#[doc(hidden)]
#[derive(Debug)]
pub struct OpenCall {
    path: CString,
    flags: i32,
    mode: u32,
    opened: Option<OwnedFd>,
}

impl crate::op::BlockingCall for OpenCall {
    fn run(&mut self) -> Cqe {
        // SAFETY: `path` is a NUL-terminated string owned by this call.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, self.path.as_ptr(), self.flags, self.mode) };
        if fd >= 0 {
            // SAFETY: a fresh fd from openat(2) that nothing else owns.
            self.opened = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        crate::op::cqe_of_syscall(i64::from(fd))
    }
}

/// The fallback's `close(2)`.
#[doc(hidden)]
#[derive(Debug)]
pub struct CloseCall(Option<OwnedFd>);

impl crate::op::BlockingCall for CloseCall {
    fn run(&mut self) -> Cqe {
        let Some(fd) = self.0.take() else {
            return Cqe::error(io::Error::from_raw_os_error(libc::EBADF));
        };
        // SAFETY: the call owns the fd and gives it up here, once.
        let ret = unsafe { libc::close(fd.into_raw_fd()) };
        crate::op::cqe_of_syscall(i64::from(ret))
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

    type Blocking = CloseCall;

    fn blocking(&mut self) -> CloseCall {
        CloseCall(self.fd.take())
    }

    fn simulate(&mut self, files: &mut crate::sim::Files) -> Cqe {
        let Some(fd) = self.fd.take() else {
            return Cqe::error(io::Error::from_raw_os_error(libc::EBADF));
        };
        let result = files.close(fd.as_raw_fd());
        drop(fd);
        crate::ops::blocking::sim_cqe(result.map(|()| 0))
    }

    fn complete(self, cqe: Cqe) -> io::Result<()> {
        if cqe.is_shutdown() && self.raw >= 0 {
            // Never reached the kernel: close it here.
            // SAFETY: `raw` came from `into_raw_fd` and was never closed.
            drop(unsafe { OwnedFd::from_raw_fd(self.raw) });
        }
        cqe.result.map(drop)
    }
}
