//! What a simulated op may do to the simulator's in-memory files: the calls
//! each [`SimulatedOp`](super::SimulatedOp) makes, written down here and
//! implemented by the sim backend, so the ops never name the backend.
//!
//! Each call returns what the kernel would for the same call on a real file:
//! the same errnos, the same short counts.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use crate::error::Cqe;

/// One piece of a read's destination: where it is and how long. The address
/// lets the simulator refuse what `O_DIRECT` would (a misaligned buffer).
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub(crate) addr: usize,
    pub(crate) len: usize,
}

/// The simulator's file system, as the ops see it.
pub trait SimFs {
    /// `openat(2)`: a new fd for `path`.
    fn open(&mut self, path: &Path, flags: i32) -> io::Result<OwnedFd>;

    /// `close(2)`: forgets `fd`; the caller closes the descriptor itself.
    fn close(&mut self, fd: RawFd) -> io::Result<()>;

    /// `preadv(2)`: up to the segments' total length at `offset`.
    fn read(&mut self, fd: RawFd, offset: u64, into: &[Segment]) -> io::Result<Vec<u8>>;

    /// `pwritev(2)`: the slices in turn at `offset`; returns bytes written.
    fn write(&mut self, fd: RawFd, offset: u64, from: &[&[u8]]) -> io::Result<usize>;

    /// `fsync(2)` / `fdatasync(2)`.
    fn fsync(&mut self, fd: RawFd, data_only: bool) -> io::Result<()>;

    /// `fallocate(2)`.
    fn fallocate(&mut self, fd: RawFd, offset: u64, len: u64, mode: i32) -> io::Result<()>;

    /// `ftruncate(2)`.
    fn ftruncate(&mut self, fd: RawFd, len: u64) -> io::Result<()>;

    /// The size of the file behind `fd` (what `statx` reports).
    fn size(&mut self, fd: RawFd) -> io::Result<u64>;

    /// An order for `n` things that happen at once (a batch's members),
    /// drawn from the seed: a permutation of `0..n`.
    fn order(&mut self, n: usize) -> Vec<usize>;
}

/// The completion the ring would post for a call that returned `result`.
pub(crate) fn cqe_of(result: io::Result<usize>) -> Cqe {
    match result {
        Ok(n) => Cqe::from_raw(n.min(i32::MAX as usize) as i32, 0),
        Err(e) => Cqe::error(e),
    }
}
