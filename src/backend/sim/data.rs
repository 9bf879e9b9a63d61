//! A simulated file's bytes as reads see them (the page cache) and as they
//! are on disk, what of the difference is still to be written back (dirty
//! sectors, and the sizes the file had), and what a writeback does: an
//! fsync writes it all, a failed one drops it, a crash keeps what the seed
//! draws. Imports `contents` and `report`.

use std::collections::BTreeMap;
use std::ops::Range;

use super::contents::Contents;
use super::report::FileCrash;

/// The most pieces a crash draws for one dirty range; a longer range is cut
/// into this many pieces of whole sectors, each kept or lost as one.
const MAX_PIECES: u64 = 1024;

/// One file's data.
#[derive(Debug, Default)]
pub(super) struct FileData {
    /// What reads see: the page cache.
    pub(super) now: Contents,
    /// What is on the disk.
    disk: Contents,
    /// Byte ranges of `now`, in whole sectors, not yet written back: start
    /// to end, merged.
    dirty: BTreeMap<u64, u64>,
    /// Lengths the file had since its last writeback, in order; the disk's
    /// is `disk.len`.
    sizes: Vec<u64>,
    /// A failed writeback left bytes in `now` that are neither dirty nor on
    /// disk: a writeback then copies the dirty ranges, not all of `now`.
    diverged: bool,
    /// Dirty ranges a failed writeback dropped since the last crash, for
    /// the crash report.
    dropped: Vec<Range<u64>>,
    /// Writeback errors so far (the kernel's `errseq`), and the last one's
    /// errno.
    pub(super) errors: u64,
    pub(super) last_error: i32,
}

/// How a crash treats what a file has not written back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Keep {
    /// Unsynced data survives in seed-drawn pieces (else all is lost).
    pub(super) reorder: bool,
    /// A length that survives covers appended data that reached the disk
    /// (ext4's `data=ordered`), rather than reading zeros where it did not.
    pub(super) ordered: bool,
    /// The unit of what survives: dirty ranges are whole sectors.
    pub(super) sector: u64,
}

impl FileData {
    /// A file whose contents are `contents`, on disk already.
    pub(super) fn durable(contents: Contents) -> FileData {
        FileData {
            disk: contents.clone(),
            now: contents,
            ..FileData::default()
        }
    }

    /// Notes that `now` changed in `start..end` (and perhaps its length):
    /// the sectors of `sector` bytes covering the range are dirty.
    pub(super) fn touched(&mut self, start: u64, end: u64, sector: u64) {
        if start < end {
            let start = start / sector * sector;
            let end = end.div_ceil(sector).saturating_mul(sector);
            self.mark(start, end);
        }
        let len = self.now.len;
        if self.sizes.last().copied().unwrap_or(self.disk.len) != len {
            self.sizes.push(len);
        }
    }

    /// Adds `start..end` to the dirty ranges, merging neighbours.
    fn mark(&mut self, mut start: u64, mut end: u64) {
        let overlapping: Vec<(u64, u64)> = self
            .dirty
            .range(..=end)
            .filter(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.dirty.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.dirty.insert(start, end);
    }

    /// Whether anything is still to be written back.
    pub(super) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.sizes.is_empty()
    }

    /// A writeback that succeeded (an fsync): the disk holds what reads see,
    /// but for what a failed writeback dropped (its data, and its length
    /// unless the length changed since).
    pub(super) fn write_back(&mut self) {
        if !self.diverged {
            self.disk.clone_from(&self.now);
        } else {
            for (&start, &end) in &self.dirty {
                self.disk.copy_from(&self.now, start, end);
            }
            let len = if self.sizes.is_empty() {
                self.disk.len
            } else {
                self.now.len
            };
            self.disk.truncate(len);
        }
        self.dirty.clear();
        self.sizes.clear();
    }

    /// A writeback that failed with `errno`, as Linux handles it: the dirty
    /// data is dropped (marked clean, never to be written: reads still see
    /// it until a crash), with the length changes it carried, and the error
    /// recorded for the fds to report.
    pub(super) fn fail_write_back(&mut self, errno: i32) {
        self.dropped.extend(self.dirty.iter().map(|(&s, &e)| s..e));
        self.dirty.clear();
        self.sizes.clear();
        self.diverged = true;
        self.errors += 1;
        self.last_error = errno;
    }

    /// A crash: the disk keeps one of the file's lengths and the pieces of
    /// its dirty ranges `keep` says, `draw(n)` drawing a number in `0..=n`;
    /// what reads see becomes what is on disk. Returns what happened, if the
    /// file had anything not written back.
    pub(super) fn crash(
        &mut self,
        keep: Keep,
        draw: &mut dyn FnMut(u64) -> u64,
    ) -> Option<FileCrash> {
        let dropped = std::mem::take(&mut self.dropped);
        if !self.is_dirty() {
            self.now.clone_from(&self.disk);
            self.diverged = false;
            return (!dropped.is_empty()).then(|| FileCrash::new(self.disk.len, dropped));
        }
        let old_len = self.disk.len;
        let mut sizes = vec![old_len];
        sizes.extend(self.sizes.iter().copied().filter(|&len| len != old_len));
        sizes.dedup();
        let size = if keep.reorder {
            sizes[draw(sizes.len() as u64 - 1) as usize]
        } else {
            old_len
        };
        let mut report = FileCrash::new(size, dropped);
        report.sizes = sizes;
        let mut disk = self.disk.clone();
        for (&start, &end) in &self.dirty {
            for piece in pieces(start, end, keep.sector) {
                let appended = piece.end > old_len && piece.start < size;
                let kept = if keep.ordered && appended {
                    keep.reorder
                } else {
                    keep.reorder && draw(1) == 1
                };
                if kept {
                    disk.copy_from(&self.now, piece.start, piece.end);
                    report.kept.push(piece);
                } else {
                    report.lost.push(piece);
                }
            }
        }
        disk.truncate(size);
        self.disk = disk;
        self.now.clone_from(&self.disk);
        self.dirty.clear();
        self.sizes.clear();
        self.diverged = false;
        Some(report)
    }

    /// Writes `bytes` at `offset` to the disk and the page cache alike: the
    /// part of a torn write that reached the platter before a crash.
    /// Returns the pages the page cache allocated.
    pub(super) fn persist(&mut self, offset: u64, bytes: &[u8]) -> u64 {
        self.disk.write(offset, bytes);
        self.now.write(offset, bytes)
    }
}

/// `start..end` (whole sectors of `sector` bytes) cut into the pieces a
/// crash keeps or loses as one: its sectors, or for a long range at most
/// `MAX_PIECES` runs of whole sectors.
fn pieces(start: u64, end: u64, sector: u64) -> impl Iterator<Item = Range<u64>> {
    let len = end - start;
    let step = len.div_ceil(MAX_PIECES).div_ceil(sector).max(1) * sector;
    (0..len.div_ceil(step)).map(move |i| start + i * step..(start + (i + 1) * step).min(end))
}

#[cfg(test)]
mod tests {
    use super::{FileData, Keep, pieces};
    use crate::backend::sim::contents::Contents;

    #[test]
    fn pieces_are_whole_sectors_and_few() {
        let small: Vec<_> = pieces(512, 2048, 512).collect();
        assert_eq!(small, vec![512..1024, 1024..1536, 1536..2048]);
        let huge: Vec<_> = pieces(0, 1 << 40, 512).collect();
        assert!(huge.len() <= 1024 && huge.iter().all(|p| p.start % 512 == 0));
        assert_eq!(huge.last().unwrap().end, 1 << 40);
    }

    #[test]
    fn a_failed_write_back_drops_the_dirty_data_for_good() {
        let mut data = FileData::durable(Contents::from_bytes(b"old!"));
        data.now.write(0, b"new");
        data.touched(0, 3, 512);
        data.fail_write_back(libc::EIO);
        assert!(!data.is_dirty(), "dropped, not dirty");
        assert_eq!(data.now.to_vec(), b"new!", "reads still see it");
        // A later write elsewhere, written back: the dropped bytes stay
        // dropped.
        data.now.write(8192, b"+");
        data.touched(8192, 8193, 512);
        data.write_back();
        let keep = Keep {
            reorder: true,
            ordered: false,
            sector: 512,
        };
        let report = data.crash(keep, &mut |_| 0).expect("the drop is reported");
        assert_eq!(report.dropped, vec![0..512]);
        assert_eq!(data.now.read(0, 4), b"old!");
        assert_eq!(data.now.read(8190, 4), b"\0\0+");
    }
}
