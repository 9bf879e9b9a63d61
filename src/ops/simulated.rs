//! What a simulated op may do to the simulator's in-memory files: the calls
//! each [`SimulatedOp`](super::SimulatedOp) makes, written down here and
//! implemented by the sim backend, so the ops never name the backend.
//!
//! Each call returns what the kernel would for the same call on a real file:
//! the same errnos, the same short counts. A path is resolved from the
//! directory its [`At`] names: `AT_FDCWD` is the simulator's root.

use std::ffi::OsString;
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

/// A path and the directory it is relative to (an fd of the simulator's,
/// or `AT_FDCWD`), as a path call names it.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub(crate) dir: RawFd,
    pub(crate) path: &'a Path,
}

/// What `statx` names: an open file, or a path (its last symlink followed
/// or not).
#[derive(Debug, Clone, Copy)]
pub enum StatTarget<'a> {
    Fd(RawFd),
    Path { at: At<'a>, follow: bool },
}

/// What `statx` reports of a simulated inode.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimStat {
    /// File type and permission bits, as `st_mode`.
    pub(crate) mode: u32,
    pub(crate) len: u64,
    pub(crate) nlink: u32,
    pub(crate) ino: u64,
}

/// One entry of a simulated directory.
#[derive(Debug, Clone)]
pub struct SimDirEntry {
    pub(crate) name: OsString,
    /// The file type bits of `st_mode` (`S_IFREG`, `S_IFDIR`, `S_IFLNK`).
    pub(crate) kind: u32,
    pub(crate) ino: u64,
}

/// The simulator's file system, as the ops see it.
pub trait SimFs {
    /// `openat(2)`: a new fd for `at`, created with permission bits `mode`
    /// where `flags` say so.
    fn open(&mut self, at: At<'_>, flags: i32, mode: u32) -> io::Result<OwnedFd>;

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

    /// An order for `n` things that happen at once (a batch's members),
    /// drawn from the seed: a permutation of `0..n`.
    fn order(&mut self, n: usize) -> Vec<usize>;

    /// `statx(2)`.
    fn stat(&mut self, target: StatTarget<'_>) -> io::Result<SimStat>;

    /// `renameat2(2)` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
    fn rename(&mut self, from: At<'_>, to: At<'_>, flags: u32) -> io::Result<()>;

    /// `unlinkat(2)`: a file, or with `dir` an empty directory (`AT_REMOVEDIR`).
    fn unlink(&mut self, at: At<'_>, dir: bool) -> io::Result<()>;

    /// `mkdirat(2)`.
    fn mkdir(&mut self, at: At<'_>, mode: u32) -> io::Result<()>;

    /// `linkat(2)`: a new name `to` for the file `from` names (a symlink
    /// itself, unless `follow`).
    fn link(&mut self, from: At<'_>, to: At<'_>, follow: bool) -> io::Result<()>;

    /// `symlinkat(2)`: a symlink at `at` whose target is `target`.
    fn symlink(&mut self, target: &Path, at: At<'_>) -> io::Result<()>;

    /// The entries of the directory at `at`, without `.` and `..`.
    fn read_dir(&mut self, at: At<'_>) -> io::Result<Vec<SimDirEntry>>;
}

/// The completion the ring would post for a call that returned `result`.
pub(crate) fn cqe_of(result: io::Result<usize>) -> Cqe {
    match result {
        Ok(n) => Cqe::from_raw(n.min(i32::MAX as usize) as i32, 0),
        Err(e) => Cqe::error(e),
    }
}
