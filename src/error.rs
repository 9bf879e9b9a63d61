//! What an op's outcome looks like on its way back to the future ([`Cqe`]),
//! and the crate's own errors: the context has shut down, the backend
//! cannot run the op, an `O_DIRECT` op's misaligned part ([`Misaligned`]).
//! A leaf: imports nothing from the crate.
//!
//! Errors from the kernel keep their errno (`io::Error::from_raw_os_error`),
//! on every backend, so a caller matches on `raw_os_error()` the same way
//! whether the ring, a blocking syscall or the simulator ran the op. The one
//! exception is an `O_DIRECT` read or write refused for a misaligned
//! buffer, length or offset: its error names the part (see [`Misaligned`]).

use std::fmt;
use std::io;

/// The outcome of an op as the kernel (or a backend standing in for it)
/// reports it.
#[derive(Debug)]
pub struct Cqe {
    /// `res` of the CQE: a non-negative count, or the kernel's errno.
    pub(crate) result: io::Result<u32>,
    /// `flags` of the CQE.
    pub(crate) flags: u32,
    /// The op never reached the kernel (or the blocking call, or the
    /// simulator): the backend gave it up first, so any resource the op
    /// handed over is still the op's to release.
    pub(crate) never_ran: bool,
}

impl Cqe {
    /// A completion posted by the kernel: `res` as the CQE carries it.
    pub(crate) fn from_raw(res: i32, flags: u32) -> Cqe {
        Cqe::from_raw_or_else(res, flags, |_| {})
    }

    /// As [`from_raw`](Cqe::from_raw), handing the error to `on_error` first
    /// when `res` is one: inside the sign test the CQE needs anyway, so a
    /// success pays nothing for it.
    #[inline]
    pub(crate) fn from_raw_or_else(res: i32, flags: u32, on_error: impl FnOnce(&io::Error)) -> Cqe {
        let result = if res < 0 {
            let error = io::Error::from_raw_os_error(-res);
            on_error(&error);
            Err(error)
        } else {
            Ok(res as u32)
        };
        Cqe {
            result,
            flags,
            never_ran: false,
        }
    }

    /// A failure reported by whatever ran the op.
    pub(crate) fn error(error: io::Error) -> Cqe {
        Cqe {
            result: Err(error),
            flags: 0,
            never_ran: false,
        }
    }

    /// The op was given up before it ran: refused as invalid, dropped before
    /// its backend started it, or caught by shutdown.
    pub(crate) fn not_run(error: io::Error) -> Cqe {
        Cqe {
            never_ran: true,
            ..Cqe::error(error)
        }
    }

    /// The `Cqe` of a blocking syscall that returned `ret` (`-1` with `errno`
    /// set on failure), as the ring would have reported it.
    pub(crate) fn of_syscall(ret: i64) -> Cqe {
        if ret < 0 {
            Cqe::error(io::Error::last_os_error())
        } else {
            Cqe::from_raw(ret.min(i64::from(i32::MAX)) as i32, 0)
        }
    }
}

/// The error of an op submitted to a context that has shut down. Of kind
/// `Other`, as Tokio's for its own runtime shutting down: not `BrokenPipe`,
/// which a service mixing sockets and disk would read as a peer hanging up.
pub(crate) fn shutdown_error() -> io::Error {
    io::Error::other(ShutDown)
}

/// The error of an op whose future was dropped before its backend started
/// it: nobody sees it, but its resources are released by it.
pub(crate) fn cancelled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}

/// The error of an op that the context's backend cannot run.
pub(crate) fn unsupported(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, what.to_owned())
}

/// `EINVAL`, for input refused before it reaches the kernel: the errno the
/// kernel itself gives such input, so callers see the same on every backend.
pub(crate) fn invalid() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// Whether `error` says the op's context has shut down (rather than the
/// kernel failing the op). Such an error is of kind
/// [`Other`](io::ErrorKind::Other) and has no errno; this is the way to tell
/// it apart. [`Context::is_shutdown`](crate::Context::is_shutdown) asks the
/// same of a context.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let ctx = aioctx::Context::new()?;
/// ctx.block_on(ctx.shutdown());
/// let error = ctx.block_on(ctx.nop()).unwrap_err();
/// assert!(aioctx::is_shutdown(&error) && ctx.is_shutdown());
/// assert_eq!(error.kind(), std::io::ErrorKind::Other);
/// # Ok(())
/// # }
/// ```
pub fn is_shutdown(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<ShutDown>())
}

#[derive(Debug)]
struct ShutDown;

impl fmt::Display for ShutDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the aioctx context has shut down")
    }
}

impl std::error::Error for ShutDown {}

/// Why an `O_DIRECT` read or write failed with `EINVAL`: which of its
/// buffer address, buffer length and file offset is not a multiple of what
/// the file requires, and of what.
///
/// The op's `io::Error` carries this as its payload. Its
/// [`kind`](io::Error::kind) is `InvalidInput`, the kind of a bare
/// `EINVAL`, and its message names the part, its value and the alignment.
/// Its `raw_os_error()` is `None`, because an `io::Error` holds an errno or a
/// payload, never both; the errno is kept here
/// ([`raw_os_error`](Misaligned::raw_os_error)) and as the error's
/// `source()`. Code that matched `raw_os_error() == Some(EINVAL)` matches
/// `kind() == InvalidInput` or this type instead.
///
/// The crate adds this only to an `EINVAL` the kernel (or the simulator, or
/// the fallback's syscall) returned for a file opened with `O_DIRECT`, after
/// checking the op against the file's direct-I/O alignment: what `statx`
/// reports (`STATX_DIOALIGN`, Linux 6.1; for block devices 6.11), else a
/// block device's logical block size, else 512, the smallest there is. An
/// `EINVAL` it cannot explain that way stays a bare errno. It never refuses
/// an op itself, so an op the kernel accepts is never turned away.
///
/// ```no_run
/// # async fn f(file: aioctx::fs::File) {
/// use aioctx::fs::{Misaligned, MisalignedPart};
///
/// let (result, _buf) = file.read_at(vec![0; 4096], 3).await;
/// if let Err(e) = result {
///     // "O_DIRECT read refused (EINVAL): the offset 3 is not a multiple of 512, ..."
///     eprintln!("{e}");
///     if let Some(m) = e.get_ref().and_then(|e| e.downcast_ref::<Misaligned>()) {
///         assert_eq!((m.part, m.value), (MisalignedPart::Offset, 3));
///         assert_eq!(m.raw_os_error(), libc::EINVAL);
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Misaligned {
    /// `"read"` or `"write"`.
    pub op: &'static str,
    /// Which part is misaligned.
    pub part: MisalignedPart,
    /// Its value: an address, a byte count or a file offset.
    pub value: u64,
    /// What it must be a multiple of, for this file.
    pub alignment: u64,
    /// Where `alignment` comes from, for the message.
    basis: &'static str,
    /// Whether the op had several buffers, for the message.
    vectored: bool,
    /// The kernel's `EINVAL`, the error's source.
    errno: io::Error,
}

/// Which part of an `O_DIRECT` read or write is misaligned; see
/// [`Misaligned`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MisalignedPart {
    /// The file offset.
    Offset,
    /// A buffer's memory address: buffer `index` of a vectored op, 0
    /// otherwise.
    BufferAddress {
        /// Which buffer.
        index: usize,
    },
    /// A buffer's length (the bytes the op reads into or writes from it):
    /// buffer `index` of a vectored op, 0 otherwise.
    BufferLength {
        /// Which buffer.
        index: usize,
    },
}

impl Misaligned {
    /// The errno the kernel returned: always `EINVAL`.
    pub fn raw_os_error(&self) -> i32 {
        libc::EINVAL
    }
}

impl fmt::Display for Misaligned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "O_DIRECT {} refused (EINVAL): ", self.op)?;
        match self.part {
            MisalignedPart::Offset => write!(f, "the offset {}", self.value)?,
            MisalignedPart::BufferAddress { index } => {
                write!(f, "{} address {:#x}", self.buffer(index), self.value)?;
            }
            MisalignedPart::BufferLength { index } => {
                write!(f, "{} length {}", self.buffer(index), self.value)?;
            }
        }
        write!(
            f,
            " is not a multiple of {}, {}",
            self.alignment, self.basis
        )
    }
}

impl Misaligned {
    /// How the message names buffer `index`.
    fn buffer(&self, index: usize) -> String {
        if self.vectored {
            format!("buffer {index}'s")
        } else {
            "the buffer's".to_owned()
        }
    }
}

impl std::error::Error for Misaligned {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.errno)
    }
}

/// What an `O_DIRECT` read or write needs aligned, and why: what
/// [`Misaligned`] reports when one of its parts is not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirectAlignment {
    /// What buffer addresses must be multiples of.
    pub(crate) memory: u64,
    /// What offsets and buffer lengths must be multiples of.
    pub(crate) offset: u64,
    /// Where these come from, for the message.
    pub(crate) basis: &'static str,
}

impl DirectAlignment {
    /// The error for the first misaligned part of an op at `offset` over
    /// `buffers` (address, length), if one is: the offset, then each
    /// buffer's address and length in turn.
    pub(crate) fn check(
        self,
        op: &'static str,
        offset: u64,
        buffers: &[(usize, usize)],
    ) -> Option<io::Error> {
        let off = |value: u64, alignment: u64| !value.is_multiple_of(alignment.max(1));
        let (part, value, alignment) = if off(offset, self.offset) {
            (MisalignedPart::Offset, offset, self.offset)
        } else {
            buffers
                .iter()
                .enumerate()
                .find_map(|(index, &(addr, len))| {
                    if off(addr as u64, self.memory) {
                        Some((
                            MisalignedPart::BufferAddress { index },
                            addr as u64,
                            self.memory,
                        ))
                    } else if off(len as u64, self.offset) {
                        Some((
                            MisalignedPart::BufferLength { index },
                            len as u64,
                            self.offset,
                        ))
                    } else {
                        None
                    }
                })?
        };
        Some(io::Error::new(
            io::ErrorKind::InvalidInput,
            Misaligned {
                op,
                part,
                value,
                alignment,
                basis: self.basis,
                vectored: buffers.len() > 1,
                errno: io::Error::from_raw_os_error(libc::EINVAL),
            },
        ))
    }
}
