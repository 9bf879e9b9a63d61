//! What an op's outcome looks like on its way back to the future ([`Cqe`]),
//! and the crate's own errors: the context has shut down, or the backend
//! cannot run the op. A leaf: imports nothing from the crate.
//!
//! Errors from the kernel keep their errno (`io::Error::from_raw_os_error`),
//! on every backend, so a caller matches on `raw_os_error()` the same way
//! whether the ring, a blocking syscall or the simulator ran the op.

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
        let result = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
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
