//! A simulated file's bytes: a length and sparse 4 KiB pages, shared
//! copy-on-write between a file's current contents and what is on its disk,
//! and copied from one to the other a range at a time (the part of a
//! writeback that reached the disk). Imports nothing from the crate.
//!
//! Bytes of a page past the length are always zero, so a range copied or a
//! length grown reads zeros where nothing was written.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes per page of file contents.
pub(super) const PAGE: u64 = 4096;

type Page = [u8; PAGE as usize];

/// A file's bytes: a length, and the pages that are not holes.
#[derive(Debug, Clone, Default)]
pub(super) struct Contents {
    pub(super) len: u64,
    pages: BTreeMap<u64, Arc<Page>>,
}

impl Contents {
    pub(super) fn from_bytes(data: &[u8]) -> Contents {
        let mut contents = Contents {
            len: data.len() as u64,
            pages: BTreeMap::new(),
        };
        for (index, chunk) in data.chunks(PAGE as usize).enumerate() {
            let mut page = [0u8; PAGE as usize];
            page[..chunk.len()].copy_from_slice(chunk);
            contents.pages.insert(index as u64, Arc::new(page));
        }
        contents
    }

    /// Pages held (not holes).
    pub(super) fn pages(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Up to `len` bytes at `offset`, holes read as zeros.
    pub(super) fn read(&self, offset: u64, len: u64) -> Vec<u8> {
        let end = offset.saturating_add(len).min(self.len);
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        for (&index, page) in self.pages.range(offset / PAGE..end.div_ceil(PAGE)) {
            let page_start = index * PAGE;
            let from = offset.max(page_start);
            let to = end.min(page_start + PAGE);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&page[(from - page_start) as usize..(to - page_start) as usize]);
        }
        out
    }

    /// Pages in `offset..end` that are holes now.
    pub(super) fn holes_in(&self, offset: u64, end: u64) -> u64 {
        if offset >= end {
            return 0;
        }
        let (first, last) = (offset / PAGE, (end - 1) / PAGE);
        let present = self.pages.range(first..=last).count() as u64;
        last - first + 1 - present
    }

    /// Writes `data` at `offset`; the caller checked the range and the budget.
    /// Returns the pages it allocated.
    pub(super) fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
        let mut allocated = 0;
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (index, within) = (at / PAGE, (at % PAGE) as usize);
            let n = rest.len().min(PAGE as usize - within);
            let page = self.pages.entry(index).or_insert_with(|| {
                allocated += 1;
                Arc::new([0u8; PAGE as usize])
            });
            Arc::make_mut(page)[within..within + n].copy_from_slice(&rest[..n]);
            at += n as u64;
            rest = &rest[n..];
        }
        self.len = self.len.max(at);
        allocated
    }

    /// Zeros `offset..end`, dropping whole pages. Returns the pages freed.
    pub(super) fn zero(&mut self, offset: u64, end: u64) -> u64 {
        if offset >= end {
            return 0;
        }
        // Pages wholly inside the range; none when it lies within one page.
        let whole = offset.div_ceil(PAGE)..(end / PAGE).max(offset.div_ceil(PAGE));
        let freed: Vec<u64> = self.pages.range(whole).map(|(&index, _)| index).collect();
        for index in &freed {
            self.pages.remove(index);
        }
        for edge in [offset / PAGE, (end - 1) / PAGE] {
            if let Some(page) = self.pages.get_mut(&edge) {
                let page_start = edge * PAGE;
                let from = (offset.max(page_start) - page_start) as usize;
                let to = (end.min(page_start + PAGE) - page_start) as usize;
                Arc::make_mut(page)[from..to].fill(0);
            }
        }
        freed.len() as u64
    }

    /// Sets the length, dropping pages past it. Returns the pages freed.
    pub(super) fn truncate(&mut self, len: u64) -> u64 {
        if len < self.len {
            let old = self.len;
            let freed = self.zero(len, old.max(len.div_ceil(PAGE) * PAGE));
            let tail: Vec<u64> = self
                .pages
                .range(len.div_ceil(PAGE)..)
                .map(|(&index, _)| index)
                .collect();
            for index in &tail {
                self.pages.remove(index);
            }
            self.len = len;
            return freed + tail.len() as u64;
        }
        self.len = len;
        0
    }

    /// Copies `from`'s bytes in `start..end` (zeros in its holes and past
    /// its end) over this file's, growing its length to `end` at least.
    /// Whole pages are shared, not copied.
    pub(super) fn copy_from(&mut self, from: &Contents, start: u64, end: u64) {
        let mut at = start;
        while at < end {
            let index = at / PAGE;
            let page_start = index * PAGE;
            let upto = end.min(page_start + PAGE);
            match from.pages.get(&index) {
                Some(page) if at == page_start && upto == page_start + PAGE => {
                    self.pages.insert(index, page.clone());
                }
                Some(page) => {
                    let bytes = &page[(at - page_start) as usize..(upto - page_start) as usize];
                    self.write(at, bytes);
                }
                None => {
                    self.zero(at, upto);
                }
            }
            at = upto;
        }
        self.len = self.len.max(end);
    }

    /// The whole file, for [`SimHandle::contents`](super::SimHandle::contents).
    pub(super) fn to_vec(&self) -> Vec<u8> {
        assert!(
            self.len <= isize::MAX as u64 / 2,
            "a {}-byte sparse file is too large to copy out whole",
            self.len
        );
        self.read(0, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::{Contents, PAGE};

    #[test]
    fn sparse_writes_hold_only_the_pages_written() {
        let mut contents = Contents::default();
        let far = 1u64 << 62;
        assert_eq!(contents.write(far, b"far away"), 1);
        assert_eq!(contents.len, far + 8);
        assert_eq!(contents.pages(), 1);
        assert_eq!(contents.read(far - 4, 12), b"\0\0\0\0far away");
        // A write across a page boundary allocates both pages, once.
        assert_eq!(contents.write(PAGE - 2, b"abcd"), 2);
        assert_eq!(contents.write(PAGE - 2, b"ABCD"), 0);
        assert_eq!(contents.read(PAGE - 3, 6), b"\0ABCD\0");
    }

    #[test]
    fn zero_and_truncate_free_whole_pages() {
        let mut contents = Contents::from_bytes(&vec![7u8; 3 * PAGE as usize]);
        assert_eq!(
            contents.zero(10, 2 * PAGE + 10),
            1,
            "only the middle page is whole"
        );
        assert_eq!(contents.read(8, 4), [7, 7, 0, 0]);
        assert_eq!(contents.read(2 * PAGE + 8, 4), [0, 0, 7, 7]);
        assert_eq!(contents.truncate(PAGE + 1), 1);
        assert_eq!(contents.len, PAGE + 1);
        contents.truncate(3 * PAGE);
        assert_eq!(contents.read(PAGE, 2 * PAGE), vec![0u8; 2 * PAGE as usize]);
    }

    #[test]
    fn zeroing_inside_one_page_frees_nothing() {
        // Before the fix, a range within one page (2..8) made the range of
        // whole pages 1..0, and BTreeMap::range panicked the simulator.
        let mut contents = Contents::from_bytes(b"abcdefgh");
        assert_eq!(contents.zero(2, 8), 0);
        assert_eq!(contents.to_vec(), b"ab\0\0\0\0\0\0");
        let mut contents = Contents::from_bytes(&vec![1u8; 2 * PAGE as usize]);
        assert_eq!(contents.zero(PAGE + 1, PAGE + 2), 0);
        assert_eq!(contents.read(PAGE, 3), [1, 0, 1]);
    }

    #[test]
    fn snapshots_share_pages_until_written() {
        let mut data = Contents::from_bytes(b"durable");
        let durable = data.clone();
        data.write(0, b"DUR");
        assert_eq!(durable.read(0, 7), b"durable");
        assert_eq!(data.read(0, 7), b"DURable");
    }

    #[test]
    fn copying_a_range_shares_whole_pages_and_zeros_holes() {
        let mut disk = Contents::from_bytes(&vec![1u8; 3 * PAGE as usize]);
        let mut now = disk.clone();
        now.write(10, b"new");
        now.write(PAGE, &vec![2u8; PAGE as usize]);
        now.zero(2 * PAGE, 2 * PAGE + 8);
        // The first sector only of the first page, the whole second page,
        // and the hole punched in the third.
        disk.copy_from(&now, 0, 512);
        disk.copy_from(&now, PAGE, 2 * PAGE);
        disk.copy_from(&now, 2 * PAGE, 2 * PAGE + 8);
        assert_eq!(disk.read(8, 6), [1, 1, b'n', b'e', b'w', 1]);
        assert_eq!(disk.read(PAGE - 1, 2), [1, 2]);
        assert_eq!(disk.read(2 * PAGE, 9), [0, 0, 0, 0, 0, 0, 0, 0, 1]);
        // Past the end: the length grows, zeros read back.
        let mut short = Contents::from_bytes(b"ab");
        short.copy_from(&Contents::from_bytes(b"xy"), 0, 4);
        assert_eq!(short.to_vec(), b"xy\0\0");
    }
}
