//! What a crash leaves on the simulated disk, as the crash model in the
//! [`SimConfig`](super::config::SimConfig) asks: unsynced changes lost (the
//! default) or kept per file up to a seed-drawn point, and writes in flight
//! torn at a whole sector. Decides with the crash stream of the seed; the
//! mechanics (snapshots, journal replay) are `files`'s.
//!
//! The model, and what it leaves out, is written for users in the `sim`
//! module's docs (section "Crashes"); this file is its implementation.

use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use crate::ops::simulated::{Segment, SimFs};

use super::config::CrashModel;
use super::files::{Files, errno};
use super::rng::Rng;

/// Drops what the model says a crash loses of each file's unsynced changes:
/// all of them, or (reordering on) all but a prefix drawn per file.
pub(super) fn lose_unsynced(files: &mut Files, model: &CrashModel, rng: &mut Rng) {
    if model.reorder_unsynced {
        files.crash(|unsynced| rng.up_to(unsynced as u64) as usize);
    } else {
        files.crash(|_| 0);
    }
}

/// The file system an op in flight at a crash runs against when writes
/// tear: a write persists a prefix of whole sectors drawn by the seed and
/// fails with `EIO`; every other call fails with `EIO` and changes nothing
/// (a close still forgets its fd, which the op closes either way).
pub(super) struct Tear<'a> {
    files: &'a mut Files,
    rng: &'a mut Rng,
    sector: u64,
}

impl<'a> Tear<'a> {
    pub(super) fn new(files: &'a mut Files, rng: &'a mut Rng, sector: u64) -> Tear<'a> {
        Tear { files, rng, sector }
    }
}

/// Where a write of `len` bytes at `offset` may stop when torn at sectors of
/// `sector` bytes: its start, every sector boundary inside it, its end.
/// Returns how many bytes of the write persist for the `choice`th place.
fn torn_len(offset: u64, len: u64, sector: u64, choice: u64) -> u64 {
    if choice == 0 || len == 0 {
        return 0;
    }
    let first = (offset / sector + 1) * sector; // the first boundary past `offset`
    let boundary = first.saturating_add((choice - 1).saturating_mul(sector));
    (boundary - offset).min(len)
}

/// How many places a write of `len` bytes at `offset` may stop at.
fn places(offset: u64, len: u64, sector: u64) -> u64 {
    if len == 0 {
        return 1;
    }
    let end = offset + len;
    // Boundaries strictly inside (offset, end), plus the start and the end.
    let inside = (end - 1) / sector - offset / sector;
    inside + 2
}

impl SimFs for Tear<'_> {
    fn open(&mut self, _path: &Path, _flags: i32) -> io::Result<OwnedFd> {
        Err(errno(libc::EIO))
    }

    fn close(&mut self, fd: RawFd) -> io::Result<()> {
        // The fd is gone either way, as a real close torn by a crash leaves
        // it; the crash's EIO is what the op reports, not a bad fd's EBADF.
        let _ = self.files.close(fd);
        Err(errno(libc::EIO))
    }

    fn read(&mut self, _fd: RawFd, _offset: u64, _into: &[Segment]) -> io::Result<Vec<u8>> {
        Err(errno(libc::EIO))
    }

    fn write(&mut self, fd: RawFd, offset: u64, from: &[&[u8]]) -> io::Result<usize> {
        let len: u64 = from.iter().map(|piece| piece.len() as u64).sum();
        if offset.checked_add(len).is_none() {
            return Err(errno(libc::EINVAL));
        }
        let choice = self.rng.up_to(places(offset, len, self.sector) - 1);
        let kept = torn_len(offset, len, self.sector, choice) as usize;
        if kept > 0 {
            // A write the kernel would refuse (a bad fd, a misaligned
            // `O_DIRECT` buffer) tears to nothing.
            let _ = self.files.persist(fd, offset, from, kept);
        }
        tracing::debug!(fd, offset, len, kept, "sim: write torn by a crash");
        Err(errno(libc::EIO))
    }

    fn fsync(&mut self, _fd: RawFd, _data_only: bool) -> io::Result<()> {
        Err(errno(libc::EIO))
    }

    fn fallocate(&mut self, _fd: RawFd, _offset: u64, _len: u64, _mode: i32) -> io::Result<()> {
        Err(errno(libc::EIO))
    }

    fn ftruncate(&mut self, _fd: RawFd, _len: u64) -> io::Result<()> {
        Err(errno(libc::EIO))
    }

    fn size(&mut self, _fd: RawFd) -> io::Result<u64> {
        Err(errno(libc::EIO))
    }

    fn order(&mut self, n: usize) -> Vec<usize> {
        self.files.order(n)
    }
}

#[cfg(test)]
mod tests {
    use super::{places, torn_len};

    #[test]
    fn a_torn_write_stops_only_at_sector_boundaries() {
        // 16 KiB at 0 in 512-byte sectors: 0, 512, ..., 16384.
        assert_eq!(places(0, 16384, 512), 33);
        let stops: Vec<u64> = (0..33).map(|c| torn_len(0, 16384, 512, c)).collect();
        assert!(stops.iter().all(|n| n % 512 == 0));
        assert_eq!((stops[0], stops[1], stops[32]), (0, 512, 16384));
        // Unaligned: 1000 bytes at 100 end at 1100, crossing the boundaries
        // 512 and 1024.
        assert_eq!(places(100, 1000, 512), 4);
        let stops: Vec<u64> = (0..4).map(|c| torn_len(100, 1000, 512, c)).collect();
        assert_eq!(stops, vec![0, 412, 924, 1000]);
        // Inside one sector: all or nothing.
        assert_eq!(places(10, 20, 512), 2);
        assert_eq!(torn_len(10, 20, 512, 1), 20);
    }
}
