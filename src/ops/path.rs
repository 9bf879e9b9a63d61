//! What the namespace ops name: a path as the kernel takes it, and the
//! directory a relative path starts from. Not an op: the pieces the path ops
//! (`rename`, `unlink`, `mkdir`, `link`, `symlink`, `statx`, `read_dir`,
//! `openat`) share. Imports the leaves only.
//!
//! A path with a NUL byte inside cannot reach the kernel, which reads a path
//! up to its first NUL: the op holding one is refused with `InvalidInput`
//! before any backend sees it, as `std::fs` refuses it, so every backend
//! answers the same. Everything else about a path (a missing parent, a name
//! longer than `NAME_MAX`) is the kernel's to judge, and the simulator's.

use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// A path, NUL-terminated for the kernel, or the note that it cannot be.
#[derive(Clone)]
pub(crate) struct CPath(Option<CString>);

impl CPath {
    pub(crate) fn new(path: &Path) -> CPath {
        CPath(CString::new(path.as_os_str().as_bytes()).ok())
    }

    /// Refuses a path with a NUL byte inside: the op's `validate`.
    pub(crate) fn check(&self) -> io::Result<()> {
        match self.0 {
            Some(_) => Ok(()),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path contains a NUL byte",
            )),
        }
    }

    /// The string the kernel reads. An op refused by [`check`](CPath::check)
    /// never gets this far; if one did, it would name the empty path, which
    /// the kernel answers with `ENOENT`.
    pub(crate) fn as_c_str(&self) -> &CStr {
        self.0.as_deref().unwrap_or(c"")
    }

    pub(crate) fn as_ptr(&self) -> *const libc::c_char {
        self.as_c_str().as_ptr()
    }

    /// The path, for the simulator.
    pub(crate) fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(self.as_c_str().to_bytes()))
    }
}

impl fmt::Debug for CPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(path) => fmt::Debug::fmt(path, f),
            None => f.write_str("<a path with a NUL byte>"),
        }
    }
}

/// The directory a relative path starts from: the process's current
/// directory (`AT_FDCWD`), or an open directory, which this keeps open (its
/// holder) for as long as the op or its blocking call lives.
#[derive(Clone)]
pub(crate) struct DirFd {
    raw: RawFd,
    _open: Option<Arc<dyn Send + Sync>>,
}

impl DirFd {
    /// The current directory.
    pub(crate) fn cwd() -> DirFd {
        DirFd {
            raw: libc::AT_FDCWD,
            _open: None,
        }
    }

    /// A directory whose fd means nothing to the context the op runs on (a
    /// simulator's directory used on another context): a relative path
    /// then fails with `EBADF`, as for a closed fd; an absolute one ignores
    /// it, as the kernel does.
    pub(crate) fn foreign() -> DirFd {
        DirFd {
            raw: -1,
            _open: None,
        }
    }

    /// An open directory's fd; `holder` owns the fd and keeps it open.
    pub(crate) fn open(raw: RawFd, holder: Arc<dyn Send + Sync>) -> DirFd {
        DirFd {
            raw,
            _open: Some(holder),
        }
    }

    /// The fd the kernel (or the simulator) resolves a relative path from.
    pub(crate) fn raw(&self) -> RawFd {
        self.raw
    }
}

impl fmt::Debug for DirFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.raw == libc::AT_FDCWD {
            f.write_str("AT_FDCWD")
        } else {
            write!(f, "DirFd({})", self.raw)
        }
    }
}
