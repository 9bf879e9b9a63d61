//! Why an `O_DIRECT` read or write failed with `EINVAL`: the reads and
//! writes (`rw`, `vectored`) hand their failed completions here, and an
//! `EINVAL` on a file opened with `O_DIRECT` whose buffer address, length or
//! offset is not aligned to what the file requires comes back as a
//! [`Misaligned`](crate::error::Misaligned) error naming that part.
//!
//! Only on the failure path, after the kernel (or the fallback's syscall)
//! has answered: an op the kernel accepts never pays for the check, and is
//! never refused by a guess of the crate's. The simulator, whose fds are not
//! real, explains its own refusals (`backend/sim/files.rs`).
//!
//! [`required_by`] answers the same question ahead of any op, for code that
//! must shape its ops to an `O_DIRECT` file (a `FileStream`'s buffers).

use std::io;
use std::os::fd::RawFd;

use crate::error::{Cqe, DirectAlignment};

/// The smallest logical block size, and so the least any `O_DIRECT` file
/// requires; what the check assumes when the kernel does not say.
const SMALLEST_BLOCK: u64 = 512;

/// The largest common logical block size: what ops shaped ahead of time
/// assume when the kernel does not say, since its multiples suit a device
/// of either size.
const LARGEST_COMMON_BLOCK: u64 = 4096;

/// `STATX_DIO_READ_ALIGN` (Linux 6.14): `stx_dio_read_offset_align` is set.
const STATX_DIO_READ_ALIGN: u32 = 0x0002_0000;

/// `cqe`'s result, with an `EINVAL` that a misaligned part of the op
/// explains replaced by the error naming it. `fd` is the op's file, `op`
/// `"read"` or `"write"`, `buffers` gives each buffer's address and the
/// bytes the op moves through it (called only on that failure).
#[inline]
pub(crate) fn explain(
    cqe: Cqe,
    fd: RawFd,
    op: &'static str,
    offset: u64,
    buffers: impl FnOnce() -> Vec<(usize, usize)>,
) -> io::Result<u32> {
    match cqe.result {
        Ok(n) => Ok(n),
        Err(e) => Err(explain_error(e, cqe.never_ran, fd, op, offset, buffers)),
    }
}

/// [`explain`]'s error path, kept out of the success path's code.
#[cold]
fn explain_error(
    e: io::Error,
    never_ran: bool,
    fd: RawFd,
    op: &'static str,
    offset: u64,
    buffers: impl FnOnce() -> Vec<(usize, usize)>,
) -> io::Error {
    // An op refused before it ran (an offset past `i64::MAX`) was refused for
    // that, whatever its alignment.
    if e.raw_os_error() != Some(libc::EINVAL) || never_ran {
        return e;
    }
    alignment_of(fd, op == "read", SMALLEST_BLOCK)
        .and_then(|alignment| alignment.check(op, offset, &buffers()))
        .unwrap_or(e)
}

/// What `fd` requires of every direct read and write, if it was opened with
/// `O_DIRECT` (`None` otherwise): as [`explain`] finds it, except that where
/// the kernel does not say, 4096 bytes (whose multiples every common device
/// takes) rather than 512 (the least any device asks).
pub(crate) fn required_by(fd: RawFd) -> Option<DirectAlignment> {
    alignment_of(fd, false, LARGEST_COMMON_BLOCK)
}

/// What `fd` requires of direct I/O, if it was opened with `O_DIRECT`:
/// `statx`'s direct-I/O alignment where the kernel reports it, else a block
/// device's logical block size, else `guess`.
fn alignment_of(fd: RawFd, read: bool, guess: u64) -> Option<DirectAlignment> {
    // SAFETY: fcntl(2) F_GETFL reads the fd's flags; the op's anchor keeps
    // the fd open while the op completes.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || flags & libc::O_DIRECT == 0 {
        return None;
    }
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx(2) of the fd itself (empty path, AT_EMPTY_PATH) into a
    // buffer of the right type.
    let ret = unsafe {
        libc::statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_TYPE | libc::STATX_DIOALIGN | STATX_DIO_READ_ALIGN,
            &mut stx,
        )
    };
    if ret == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_mem_align > 0 {
        let mut offset = u64::from(stx.stx_dio_offset_align);
        let mut basis = "the file's direct-I/O alignment (statx)";
        if read && stx.stx_mask & STATX_DIO_READ_ALIGN != 0 && stx.stx_dio_read_offset_align > 0 {
            offset = u64::from(stx.stx_dio_read_offset_align);
            basis = "the file's direct-I/O alignment for reads (statx)";
        }
        return Some(DirectAlignment {
            memory: u64::from(stx.stx_dio_mem_align),
            offset,
            basis,
        });
    }
    if ret == 0 && u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFBLK {
        let mut size: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes the logical block size into an int.
        if unsafe { libc::ioctl(fd, libc::BLKSSZGET, &mut size) } == 0 && size > 0 {
            return Some(DirectAlignment {
                memory: size as u64,
                offset: size as u64,
                basis: "the device's logical block size",
            });
        }
    }
    let basis = match guess {
        SMALLEST_BLOCK => {
            "the smallest logical block size (this kernel does not report the file's)"
        }
        _ => "the largest common logical block size (this kernel does not report the file's)",
    };
    Some(DirectAlignment {
        memory: guess,
        offset: guess,
        basis,
    })
}
