//! The blocking syscalls the fallback backend runs for the ops, and the
//! bounce buffers that keep the caller's buffers out of the pool threads.
//!
//! A bounce buffer has the caller's buffer's length and the same address
//! modulo 4096, so `O_DIRECT` accepts or refuses it exactly as it would the
//! caller's buffer (and the ring): alignment errors match across backends.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::error::Cqe;
use crate::ops::FileFd;

const PAGE: usize = 4096;

/// A blocking syscall prepared by an op for the fallback backend.
pub trait BlockingCall: Send + 'static {
    /// Runs the syscall on the calling (pool) thread.
    fn run(&mut self) -> Cqe;
}

/// A call that does nothing: a NOP's round trip through the pool.
impl BlockingCall for () {
    fn run(&mut self) -> Cqe {
        Cqe::from_raw(0, 0)
    }
}

/// Memory shaped like a caller's buffer; see the module docs.
#[derive(Debug)]
pub(crate) struct Bounce {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Bounce {
    /// A zeroed buffer of `len` bytes whose address is `like` modulo 4096.
    pub(crate) fn shaped_like(like: *const u8, len: usize) -> Bounce {
        let storage = vec![0u8; len + PAGE];
        let have = storage.as_ptr() as usize % PAGE;
        let want = like as usize % PAGE;
        let start = (want + PAGE - have) % PAGE;
        Bounce {
            storage,
            start,
            len,
        }
    }

    /// A bounce holding a copy of `len` bytes at `data`.
    ///
    /// # Safety
    ///
    /// `data` must be valid for reads of `len` bytes.
    pub(crate) unsafe fn copy_of(data: *const u8, len: usize) -> Bounce {
        let mut bounce = Bounce::shaped_like(data, len);
        // SAFETY: the caller vouches for `data`; the bounce has `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(data, bounce.as_mut_ptr(), len) };
        bounce
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.storage[self.start..].as_mut_ptr()
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn iovec(&mut self) -> libc::iovec {
        libc::iovec {
            iov_base: self.as_mut_ptr().cast(),
            iov_len: self.len,
        }
    }
}

/// Retries a syscall interrupted by a signal, as the ring never reports EINTR
/// for these ops.
pub(crate) fn retry(mut f: impl FnMut() -> i64) -> Cqe {
    loop {
        let ret = f();
        if ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Cqe::of_syscall(ret);
    }
}

/// `pread`/`pwrite` (`preadv`/`pwritev` for several buffers) on bounces.
#[derive(Debug)]
pub struct Positional {
    pub(crate) fd: FileFd,
    pub(crate) bufs: Vec<Bounce>,
    pub(crate) offset: u64,
    pub(crate) write: bool,
}

impl BlockingCall for Positional {
    fn run(&mut self) -> Cqe {
        let fd = self.fd.as_raw_fd();
        // The op refused offsets above i64::MAX before it got here.
        let offset = self.offset as libc::off_t;
        let iovecs: Vec<libc::iovec> = self.bufs.iter_mut().map(Bounce::iovec).collect();
        let (iov, count) = (iovecs.as_ptr(), iovecs.len() as i32);
        let cqe = retry(|| {
            // SAFETY: each iovec points into a bounce this call owns, valid
            // for its length for the whole syscall.
            let ret = unsafe {
                if self.write {
                    libc::pwritev(fd, iov, count, offset)
                } else {
                    libc::preadv(fd, iov, count, offset)
                }
            };
            ret as i64
        });
        if !matches!(&cqe.result, Err(e) if e.raw_os_error() == Some(libc::ESPIPE)) {
            return cqe;
        }
        // A pipe or socket: the ring ignores the offset of a non-seekable
        // file, and so does the fallback.
        retry(|| {
            // SAFETY: as above.
            let ret = unsafe {
                if self.write {
                    libc::writev(fd, iov, count)
                } else {
                    libc::readv(fd, iov, count)
                }
            };
            ret as i64
        })
    }
}

/// A syscall on an fd with no memory arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FdCall {
    Fsync { data_only: bool },
    Fallocate { offset: u64, len: u64, mode: i32 },
    Ftruncate { len: u64 },
}

/// An [`FdCall`] on a file's fd, which the op's anchor keeps open.
#[derive(Debug)]
pub struct OnFd {
    pub(crate) fd: FileFd,
    pub(crate) call: FdCall,
}

impl BlockingCall for OnFd {
    fn run(&mut self) -> Cqe {
        let fd: RawFd = self.fd.as_raw_fd();
        retry(|| {
            // SAFETY: plain syscalls on an fd the call keeps open, with no
            // memory arguments. The ops refused offsets and lengths above
            // i64::MAX, so the casts to off_t keep their values.
            let ret = unsafe {
                match self.call {
                    FdCall::Fsync { data_only: true } => libc::fdatasync(fd),
                    FdCall::Fsync { data_only: false } => libc::fsync(fd),
                    FdCall::Fallocate { offset, len, mode } => {
                        libc::fallocate(fd, mode, offset as libc::off_t, len as libc::off_t)
                    }
                    FdCall::Ftruncate { len } => libc::ftruncate(fd, len as libc::off_t),
                }
            };
            i64::from(ret)
        })
    }
}
