//! What a crash leaves on the simulated disk, as the crash model in the
//! [`SimConfig`](super::config::SimConfig) asks: which changes of names not
//! yet durable survive (any subset, or a prefix on the ext4 model), what of
//! each file's unsynced data (nothing by default, seed-drawn sectors and a
//! length with reordering on), and where writes in flight tear. Decides
//! with the crash stream of the seed, names first (in the order they were
//! made), then files (in creation order); the mechanics are `namespace`'s
//! and `data`'s. Returns what it drew, as a [`CrashReport`].
//!
//! The model, and what it leaves out, is written for users in the `sim`
//! module's docs (section "Crashes"); this file is its implementation.

use std::io;
use std::ops::Range;
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use crate::ops::simulated::{At, Segment, SimDirEntry, SimFs, SimStat, StatTarget};

use super::config::{CrashModel, FsModel};
use super::data::Keep;
use super::files::{Files, errno};
use super::namespace::{Ino, Node};
use super::report::{CrashReport, FileCrash};
use super::rng::Rng;

/// Drops what the model says a crash loses of everything not yet durable,
/// and returns what it drew.
pub(super) fn lose_unsynced(
    files: &mut Files,
    model: &CrashModel,
    rng: &mut Rng,
    at: Duration,
) -> CrashReport {
    // Named as they were before the crash.
    let paths = files.ns.paths();
    let ordered = model.fs == FsModel::Ext4Ordered;
    // On the ordered model a prefix survives: drawn once, its length.
    let mut prefix = None;
    let directories = files.ns.crash(|i, count| {
        if ordered {
            i < *prefix.get_or_insert_with(|| rng.up_to(count as u64) as usize)
        } else {
            rng.one_in(2)
        }
    });
    let keep = Keep {
        reorder: model.reorder_unsynced,
        ordered,
        sector: model.sector(),
    };
    let mut reports = Vec::new();
    for (ino, inode) in files.ns.inodes.iter_mut().enumerate() {
        if let Node::File(data) = &mut inode.node
            && let Some(mut report) = data.crash(keep, &mut |max| rng.up_to(max))
        {
            report.path = name_of(&paths, ino);
            reports.push(report);
        }
    }
    files.recount_pages();
    CrashReport {
        at,
        directories,
        files: reports,
    }
}

/// The path an inode had, or a placeholder for one that had none.
fn name_of(
    paths: &std::collections::BTreeMap<Ino, std::path::PathBuf>,
    ino: Ino,
) -> std::path::PathBuf {
    paths
        .get(&ino)
        .cloned()
        .unwrap_or_else(|| format!("(inode {ino}, no name)").into())
}

/// Adds the writes torn at a crash to its report.
pub(super) fn report_torn(report: &mut CrashReport, files: &Files, torn: Vec<(Ino, Range<u64>)>) {
    if torn.is_empty() {
        return;
    }
    let paths = files.ns.paths();
    for (ino, range) in torn {
        let path = name_of(&paths, ino);
        let index = match report.files.iter().position(|file| file.path == path) {
            Some(index) => index,
            None => {
                let size = files.ns.file(ino).map_or(0, |data| data.now.len);
                let mut file = FileCrash::new(size, Vec::new());
                file.path = path;
                report.files.push(file);
                report.files.len() - 1
            }
        };
        report.files[index].torn.push(range);
    }
}

/// The file system an op in flight at a crash runs against when writes
/// tear: a write persists a prefix of whole sectors drawn by the seed and
/// fails with `EIO`; every other call (a rename, a mkdir...) fails with
/// `EIO` and changes nothing (a close still forgets its fd, which the op
/// closes either way).
pub(super) struct Tear<'a> {
    files: &'a mut Files,
    rng: &'a mut Rng,
    sector: u64,
    /// What reached the disk: each torn write's file and bytes.
    pub(super) torn: Vec<(Ino, Range<u64>)>,
}

impl<'a> Tear<'a> {
    pub(super) fn new(files: &'a mut Files, rng: &'a mut Rng, sector: u64) -> Tear<'a> {
        Tear {
            files,
            rng,
            sector,
            torn: Vec::new(),
        }
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
    fn open(&mut self, _at: At<'_>, _flags: i32, _mode: u32) -> io::Result<OwnedFd> {
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
            if let Ok(ino) = self.files.persist(fd, offset, from, kept) {
                self.torn.push((ino, offset..offset + kept as u64));
            }
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

    fn stat(&mut self, _target: StatTarget<'_>) -> io::Result<SimStat> {
        Err(errno(libc::EIO))
    }

    fn rename(&mut self, _from: At<'_>, _to: At<'_>, _flags: u32) -> io::Result<()> {
        Err(errno(libc::EIO))
    }

    fn unlink(&mut self, _at: At<'_>, _dir: bool) -> io::Result<()> {
        Err(errno(libc::EIO))
    }

    fn mkdir(&mut self, _at: At<'_>, _mode: u32) -> io::Result<()> {
        Err(errno(libc::EIO))
    }

    fn link(&mut self, _from: At<'_>, _to: At<'_>, _follow: bool) -> io::Result<()> {
        Err(errno(libc::EIO))
    }

    fn symlink(&mut self, _target: &Path, _at: At<'_>) -> io::Result<()> {
        Err(errno(libc::EIO))
    }

    fn read_dir(&mut self, _at: At<'_>) -> io::Result<Vec<SimDirEntry>> {
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
