//! The simulator's in-memory file system: inodes by path, fds to inodes,
//! sparse contents in 4 KiB pages, the contents as of each file's last fsync,
//! and the fault injector every call passes through.
//!
//! Fds are real (each is a `/dev/null` descriptor the op's future owns, so
//! closing and dropping behave as on the ring), but the simulator only uses
//! their numbers as keys into its fd table.
//!
//! Every call answers as the kernel would on a real file: offsets and sizes
//! are checked before any arithmetic (`EINVAL` for a range past `i64::MAX`,
//! `EFBIG` for one past the largest file), memory grows with the bytes
//! written, never with an offset, and a write past the memory budget fails
//! with `ENOSPC`. Pages are shared between a file's contents and its
//! last-fsync snapshot until one of them is written (copy on write), so an
//! fsync costs a copy of the page table, not of the data.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ops::simulated::{Segment, SimFs};

use super::{Fault, FaultAction, SimOp};

/// Bytes per page of file contents.
const PAGE: u64 = 4096;
/// The largest file, like a filesystem's `s_maxbytes`.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// The logical block size `O_DIRECT` buffers, offsets and lengths must be
/// multiples of.
const DIRECT_ALIGN: u64 = 512;

type Page = [u8; PAGE as usize];

/// A file's bytes: a length, and the pages that are not holes.
#[derive(Debug, Clone, Default)]
struct Contents {
    len: u64,
    pages: BTreeMap<u64, Arc<Page>>,
}

impl Contents {
    fn from_bytes(data: &[u8]) -> Contents {
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

    /// Up to `len` bytes at `offset`, holes read as zeros.
    fn read(&self, offset: u64, len: u64) -> Vec<u8> {
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
    fn holes_in(&self, offset: u64, end: u64) -> u64 {
        if offset >= end {
            return 0;
        }
        let (first, last) = (offset / PAGE, (end - 1) / PAGE);
        let present = self.pages.range(first..=last).count() as u64;
        last - first + 1 - present
    }

    /// Writes `data` at `offset`; the caller checked the range and the budget.
    /// Returns the pages it allocated.
    fn write(&mut self, offset: u64, data: &[u8]) -> u64 {
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
    fn zero(&mut self, offset: u64, end: u64) -> u64 {
        if offset >= end {
            return 0;
        }
        let whole = offset.div_ceil(PAGE)..end / PAGE;
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
    fn truncate(&mut self, len: u64) -> u64 {
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

    /// The whole file, for [`SimHandle::contents`](super::SimHandle::contents).
    fn to_vec(&self) -> Vec<u8> {
        assert!(
            self.len <= isize::MAX as u64 / 2,
            "a {}-byte sparse file is too large to copy out whole",
            self.len
        );
        self.read(0, self.len)
    }
}

/// One in-memory file.
#[derive(Debug, Default)]
struct Inode {
    path: PathBuf,
    /// What reads see now.
    data: Contents,
    /// What survives [`Files::crash`]: `data` as of the last fsync.
    durable: Contents,
}

/// An open file description.
#[derive(Debug, Clone, Copy)]
struct Open {
    inode: usize,
    readable: bool,
    writable: bool,
    direct: bool,
}

/// The simulator's files.
#[derive(Debug)]
pub(crate) struct Files {
    inodes: Vec<Inode>,
    by_path: HashMap<PathBuf, usize>,
    fds: HashMap<RawFd, Open>,
    faults: Vec<(Fault, u64)>,
    /// Pages the files' current contents hold, and the most they may.
    pages_used: u64,
    pages_budget: u64,
}

/// What the fault injector decided for one call.
enum Verdict {
    Run,
    Fail(io::Error),
    Short(usize),
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// The end of `offset..offset + len`, as the kernel checks a read or write
/// range: `EINVAL` past `i64::MAX`.
fn rw_end(offset: u64, len: u64) -> io::Result<u64> {
    offset
        .checked_add(len)
        .filter(|&end| end <= MAX_FILE_SIZE)
        .ok_or_else(|| errno(libc::EINVAL))
}

impl Files {
    pub(crate) fn new(faults: Vec<Fault>, memory_budget: u64) -> Files {
        Files {
            inodes: Vec::new(),
            by_path: HashMap::new(),
            fds: HashMap::new(),
            faults: faults.into_iter().map(|f| (f, 0)).collect(),
            pages_used: 0,
            pages_budget: memory_budget / PAGE,
        }
    }

    /// Counts a call against every fault's filter; the fault whose count
    /// reaches its `nth` fires.
    fn check(&mut self, op: SimOp, inode: Option<usize>, offset: u64, len: u64) -> Verdict {
        let path = inode.map(|i| self.inodes[i].path.as_path());
        let mut verdict = Verdict::Run;
        for (fault, seen) in &mut self.faults {
            if !fault.filter.matches(op, path, offset, len) {
                continue;
            }
            *seen += 1;
            if *seen == fault.nth && matches!(verdict, Verdict::Run) {
                tracing::debug!(?op, ?path, offset, "sim: injecting {:?}", fault.action);
                verdict = match fault.action {
                    FaultAction::Errno(code) => Verdict::Fail(errno(code)),
                    FaultAction::Short(n) => Verdict::Short(n),
                };
            }
        }
        verdict
    }

    fn open_of(&self, fd: RawFd) -> io::Result<Open> {
        self.fds.get(&fd).copied().ok_or_else(|| errno(libc::EBADF))
    }

    fn inode_at(&mut self, path: &Path) -> usize {
        if let Some(&inode) = self.by_path.get(path) {
            return inode;
        }
        self.inodes.push(Inode {
            path: path.to_owned(),
            ..Inode::default()
        });
        self.by_path.insert(path.to_owned(), self.inodes.len() - 1);
        self.inodes.len() - 1
    }

    /// Takes `pages` from the budget, or refuses with `ENOSPC`.
    fn reserve(&self, pages: u64) -> io::Result<()> {
        if self.pages_used.saturating_add(pages) > self.pages_budget {
            return Err(errno(libc::ENOSPC));
        }
        Ok(())
    }

    /// Drops everything written since each file's last fsync.
    pub(crate) fn crash(&mut self) {
        for inode in &mut self.inodes {
            inode.data.clone_from(&inode.durable);
        }
        self.pages_used = self.inodes.iter().map(|i| i.data.pages.len() as u64).sum();
    }

    /// The current contents of the file at `path`.
    pub(crate) fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.by_path
            .get(path)
            .map(|&inode| self.inodes[inode].data.to_vec())
    }

    /// Creates or replaces the file at `path`, durably, with `data`.
    pub(crate) fn insert(&mut self, path: &Path, data: &[u8]) {
        let inode = self.inode_at(path);
        let contents = Contents::from_bytes(data);
        let inode = &mut self.inodes[inode];
        self.pages_used -= inode.data.pages.len() as u64;
        self.pages_used += contents.pages.len() as u64;
        inode.durable = contents.clone();
        inode.data = contents;
    }
}

/// `O_DIRECT`'s rule: offset, every buffer's address and length aligned.
fn check_direct(open: &Open, offset: u64, pieces: impl Iterator<Item = (usize, usize)>) -> io::Result<()> {
    if !open.direct {
        return Ok(());
    }
    let misaligned = |n: u64| n % DIRECT_ALIGN != 0;
    if misaligned(offset) {
        return Err(errno(libc::EINVAL));
    }
    for (addr, len) in pieces {
        if misaligned(addr as u64) || misaligned(len as u64) {
            return Err(errno(libc::EINVAL));
        }
    }
    Ok(())
}

impl SimFs for Files {
    fn open(&mut self, path: &Path, flags: i32) -> io::Result<OwnedFd> {
        let existing = self.by_path.get(path).copied();
        if let Verdict::Fail(e) = self.check(SimOp::Open, existing, 0, 0) {
            return Err(e);
        }
        let inode = match existing {
            Some(_) if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 => {
                return Err(errno(libc::EEXIST));
            }
            Some(inode) => inode,
            None if flags & libc::O_CREAT != 0 => self.inode_at(path),
            None => return Err(errno(libc::ENOENT)),
        };
        let access = flags & libc::O_ACCMODE;
        let open = Open {
            inode,
            readable: access == libc::O_RDONLY || access == libc::O_RDWR,
            writable: access == libc::O_WRONLY || access == libc::O_RDWR,
            direct: flags & libc::O_DIRECT != 0,
        };
        if flags & libc::O_TRUNC != 0 && open.writable {
            let freed = self.inodes[inode].data.truncate(0);
            self.pages_used -= freed;
        }
        // SAFETY: open(2) of a constant path with valid flags.
        let raw = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        self.fds.insert(raw, open);
        // SAFETY: `raw` is a fresh fd from open(2) that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    fn close(&mut self, fd: RawFd) -> io::Result<()> {
        let open = self.open_of(fd)?;
        if let Verdict::Fail(e) = self.check(SimOp::Close, Some(open.inode), 0, 0) {
            return Err(e);
        }
        self.fds.remove(&fd);
        Ok(())
    }

    fn read(&mut self, fd: RawFd, offset: u64, into: &[Segment]) -> io::Result<Vec<u8>> {
        let open = self.open_of(fd)?;
        if !open.readable {
            return Err(errno(libc::EBADF));
        }
        let len: u64 = into.iter().map(|s| s.len as u64).sum();
        rw_end(offset, len)?;
        check_direct(&open, offset, into.iter().map(|s| (s.addr, s.len)))?;
        let len = match self.check(SimOp::Read, Some(open.inode), offset, len) {
            Verdict::Fail(e) => return Err(e),
            Verdict::Short(n) => len.min(n as u64),
            Verdict::Run => len,
        };
        Ok(self.inodes[open.inode].data.read(offset, len))
    }

    fn write(&mut self, fd: RawFd, offset: u64, from: &[&[u8]]) -> io::Result<usize> {
        let open = self.open_of(fd)?;
        if !open.writable {
            return Err(errno(libc::EBADF));
        }
        let total: u64 = from.iter().map(|piece| piece.len() as u64).sum();
        rw_end(offset, total)?;
        check_direct(&open, offset, from.iter().map(|p| (p.as_ptr() as usize, p.len())))?;
        let len = match self.check(SimOp::Write, Some(open.inode), offset, total) {
            Verdict::Fail(e) => return Err(e),
            Verdict::Short(n) => total.min(n as u64),
            Verdict::Run => total,
        };
        let end = offset + len;
        let data = &mut self.inodes[open.inode].data;
        let needed = data.holes_in(offset, end);
        if self.pages_used.saturating_add(needed) > self.pages_budget {
            return Err(errno(libc::ENOSPC));
        }
        let mut at = offset;
        let mut allocated = 0;
        for piece in from {
            let n = (piece.len() as u64).min(end - at) as usize;
            allocated += data.write(at, &piece[..n]);
            at += n as u64;
        }
        self.pages_used += allocated;
        Ok(len as usize)
    }

    fn fsync(&mut self, fd: RawFd, _data_only: bool) -> io::Result<()> {
        let open = self.open_of(fd)?;
        if let Verdict::Fail(e) = self.check(SimOp::Fsync, Some(open.inode), 0, 0) {
            return Err(e);
        }
        let inode = &mut self.inodes[open.inode];
        inode.durable.clone_from(&inode.data);
        Ok(())
    }

    fn fallocate(&mut self, fd: RawFd, offset: u64, len: u64, mode: i32) -> io::Result<()> {
        let open = self.open_of(fd)?;
        if !open.writable {
            return Err(errno(libc::EBADF));
        }
        if len == 0 {
            return Err(errno(libc::EINVAL));
        }
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= MAX_FILE_SIZE)
            .ok_or_else(|| errno(libc::EFBIG))?;
        if let Verdict::Fail(e) = self.check(SimOp::Fallocate, Some(open.inode), offset, len) {
            return Err(e);
        }
        const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let holes = self.inodes[open.inode].data.holes_in(offset, end);
        let budget = self.reserve(holes);
        let data = &mut self.inodes[open.inode].data;
        match mode {
            // Allocation: the range's holes count against the budget (they
            // stay holes in memory: reading them gives zeros either way).
            0 | KEEP_SIZE => {
                budget?;
                if mode == 0 {
                    data.len = data.len.max(end);
                }
            }
            PUNCH => {
                let freed = data.zero(offset, end.min(data.len));
                self.pages_used -= freed;
            }
            _ if mode == ZERO || mode == ZERO | KEEP_SIZE => {
                let freed = data.zero(offset, end.min(data.len));
                self.pages_used -= freed;
                if mode & KEEP_SIZE == 0 {
                    data.len = data.len.max(end);
                }
            }
            _ => return Err(errno(libc::EOPNOTSUPP)),
        }
        Ok(())
    }

    fn ftruncate(&mut self, fd: RawFd, len: u64) -> io::Result<()> {
        let open = self.open_of(fd)?;
        if !open.writable {
            return Err(errno(libc::EINVAL));
        }
        if len > MAX_FILE_SIZE {
            return Err(errno(libc::EFBIG));
        }
        if let Verdict::Fail(e) = self.check(SimOp::Ftruncate, Some(open.inode), 0, len) {
            return Err(e);
        }
        let freed = self.inodes[open.inode].data.truncate(len);
        self.pages_used -= freed;
        Ok(())
    }

    fn size(&mut self, fd: RawFd) -> io::Result<u64> {
        let open = self.open_of(fd)?;
        if let Verdict::Fail(e) = self.check(SimOp::Statx, Some(open.inode), 0, 0) {
            return Err(e);
        }
        Ok(self.inodes[open.inode].data.len)
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
        assert_eq!(contents.pages.len(), 1);
        assert_eq!(contents.read(far - 4, 12), b"\0\0\0\0far away");
        // A write across a page boundary allocates both pages, once.
        assert_eq!(contents.write(PAGE - 2, b"abcd"), 2);
        assert_eq!(contents.write(PAGE - 2, b"ABCD"), 0);
        assert_eq!(contents.read(PAGE - 3, 6), b"\0ABCD\0");
    }

    #[test]
    fn zero_and_truncate_free_whole_pages() {
        let mut contents = Contents::from_bytes(&vec![7u8; 3 * PAGE as usize]);
        assert_eq!(contents.zero(10, 2 * PAGE + 10), 1, "only the middle page is whole");
        assert_eq!(contents.read(8, 4), [7, 7, 0, 0]);
        assert_eq!(contents.read(2 * PAGE + 8, 4), [0, 0, 7, 7]);
        assert_eq!(contents.truncate(PAGE + 1), 1);
        assert_eq!(contents.len, PAGE + 1);
        contents.truncate(3 * PAGE);
        assert_eq!(contents.read(PAGE, 2 * PAGE), vec![0u8; 2 * PAGE as usize]);
    }

    #[test]
    fn snapshots_share_pages_until_written() {
        let mut data = Contents::from_bytes(b"durable");
        let durable = data.clone();
        data.write(0, b"DUR");
        assert_eq!(durable.read(0, 7), b"durable");
        assert_eq!(data.read(0, 7), b"DURable");
    }
}
