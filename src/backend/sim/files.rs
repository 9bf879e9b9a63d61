//! The simulator's in-memory file system: inodes by path, fds to inodes,
//! each file's contents now and as of its last fsync, the journal of what
//! changed since (when the crash model keeps some of it), the mechanics of a
//! crash, and the fault injector every call passes through.
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

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::error::DirectAlignment;
use crate::ops::simulated::{Segment, SimFs};

use super::config::{Fault, FaultAction, RandomFault, SimOp};
use super::contents::{Change, Contents, PAGE};
use super::rng::Rng;

/// The largest file, like a filesystem's `s_maxbytes`.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// The logical block size `O_DIRECT` buffers, offsets and lengths must be
/// multiples of.
const DIRECT_ALIGN: u64 = 512;

/// One in-memory file.
#[derive(Debug, Default)]
struct Inode {
    path: PathBuf,
    /// What reads see now.
    data: Contents,
    /// What survives a crash for sure: `data` as of the last fsync.
    durable: Contents,
    /// The changes from `durable` to `data`, in order, when journaling.
    unsynced: Vec<Change>,
}

/// An open file description.
#[derive(Debug, Clone, Copy)]
struct Open {
    inode: usize,
    readable: bool,
    writable: bool,
    direct: bool,
}

/// Which faults a simulator injects, and the generator behind the random
/// ones.
#[derive(Debug)]
pub(super) struct Injector {
    /// Each planned fault with the matching calls seen so far.
    pub(super) planned: Vec<(Fault, u64)>,
    pub(super) random: Vec<RandomFault>,
    pub(super) rng: Rng,
    /// The order of a batch's members.
    pub(super) order: Rng,
}

/// The simulator's files.
#[derive(Debug)]
pub(super) struct Files {
    inodes: Vec<Inode>,
    by_path: HashMap<PathBuf, usize>,
    fds: HashMap<RawFd, Open>,
    faults: Injector,
    /// Whether each file journals its unsynced changes.
    journal: bool,
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

pub(super) fn errno(code: i32) -> io::Error {
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
    /// Empty files; with `journal`, each file keeps its unsynced changes for
    /// [`crash`](Files::crash) to choose from.
    pub(super) fn new(faults: Injector, memory_budget: u64, journal: bool) -> Files {
        Files {
            inodes: Vec::new(),
            by_path: HashMap::new(),
            fds: HashMap::new(),
            faults,
            journal,
            pages_used: 0,
            pages_budget: memory_budget / PAGE,
        }
    }

    /// Counts a call against every planned fault's filter (the fault whose
    /// count reaches its `nth` fires) and draws for every random fault whose
    /// filter matches. The first fault that fires decides.
    fn check(&mut self, op: SimOp, inode: Option<usize>, offset: u64, len: u64) -> Verdict {
        let path = inode.map(|i| self.inodes[i].path.as_path());
        let faults = &mut self.faults;
        let mut hit = None;
        for (fault, seen) in &mut faults.planned {
            if fault.filter.matches(op, path, offset, len) {
                *seen += 1;
                if *seen == fault.nth {
                    hit = hit.or(Some(fault.action));
                }
            }
        }
        for fault in &faults.random {
            // Every matching call draws, hit or not, so one fault's draws
            // never depend on another's.
            if fault.filter.matches(op, path, offset, len) && faults.rng.one_in(fault.one_in) {
                hit = hit.or(Some(fault.action));
            }
        }
        match hit {
            None => Verdict::Run,
            Some(action) => {
                tracing::debug!(?op, ?path, offset, "sim: injecting {action:?}");
                match action {
                    FaultAction::Errno(code) => Verdict::Fail(errno(code)),
                    FaultAction::Short(n) => Verdict::Short(n),
                }
            }
        }
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

    /// Journals a change to `inode` made since its last fsync.
    fn record(&mut self, inode: usize, change: impl FnOnce() -> Change) {
        if self.journal {
            self.inodes[inode].unsynced.push(change());
        }
    }

    /// A crash: each file's contents become its last-fsync snapshot plus the
    /// first `keep(n)` of its `n` journaled changes (none without a journal),
    /// and that is durable from now on. Files are visited in creation order.
    pub(super) fn crash(&mut self, mut keep: impl FnMut(usize) -> usize) {
        for inode in &mut self.inodes {
            let unsynced = std::mem::take(&mut inode.unsynced);
            let kept = keep(unsynced.len()).min(unsynced.len());
            for change in &unsynced[..kept] {
                inode.durable.apply(change);
            }
            inode.data.clone_from(&inode.durable);
        }
        self.pages_used = self.inodes.iter().map(|i| i.data.pages()).sum();
    }

    /// Writes the first `keep` bytes of `from` at `offset` of the file
    /// behind `fd` straight to disk: into its contents and its durable
    /// snapshot alike (the part of a torn write that reached the platter
    /// before a crash). Refuses what [`write`](SimFs::write) would refuse.
    pub(super) fn persist(
        &mut self,
        fd: RawFd,
        offset: u64,
        from: &[&[u8]],
        keep: usize,
    ) -> io::Result<()> {
        let open = self.open_of(fd)?;
        if !open.writable {
            return Err(errno(libc::EBADF));
        }
        let total: u64 = from.iter().map(|piece| piece.len() as u64).sum();
        rw_end(offset, total)?;
        check_direct(
            &open,
            "write",
            offset,
            from.iter().map(|p| (p.as_ptr() as usize, p.len())),
        )?;
        let mut data = from.concat();
        data.truncate(keep);
        let inode = &mut self.inodes[open.inode];
        self.pages_used += inode.data.write(offset, &data);
        inode.durable.write(offset, &data);
        Ok(())
    }

    /// The current contents of the file at `path`.
    pub(super) fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.by_path
            .get(path)
            .map(|&inode| self.inodes[inode].data.to_vec())
    }

    /// Creates or replaces the file at `path`, durably, with `data`.
    pub(super) fn insert(&mut self, path: &Path, data: &[u8]) {
        let inode = self.inode_at(path);
        let contents = Contents::from_bytes(data);
        let inode = &mut self.inodes[inode];
        self.pages_used -= inode.data.pages();
        self.pages_used += contents.pages();
        inode.durable = contents.clone();
        inode.data = contents;
        inode.unsynced.clear();
    }
}

/// `O_DIRECT`'s rule: offset, every buffer's address and length aligned.
/// A refusal names the misaligned part, as the ring's does.
fn check_direct(
    open: &Open,
    op: &'static str,
    offset: u64,
    pieces: impl Iterator<Item = (usize, usize)>,
) -> io::Result<()> {
    if !open.direct {
        return Ok(());
    }
    let alignment = DirectAlignment {
        memory: DIRECT_ALIGN,
        offset: DIRECT_ALIGN,
        basis: "the simulator's logical block size",
    };
    match alignment.check(op, offset, &pieces.collect::<Vec<_>>()) {
        Some(misaligned) => Err(misaligned),
        None => Ok(()),
    }
}

impl SimFs for Files {
    fn order(&mut self, n: usize) -> Vec<usize> {
        // Fisher-Yates, from the seed's order stream.
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.faults.order.up_to(i as u64) as usize;
            order.swap(i, j);
        }
        order
    }

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
            self.record(inode, || Change::SetLen(0));
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
        check_direct(&open, "read", offset, into.iter().map(|s| (s.addr, s.len)))?;
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
        check_direct(
            &open,
            "write",
            offset,
            from.iter().map(|p| (p.as_ptr() as usize, p.len())),
        )?;
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
        self.record(open.inode, || {
            let mut data = from.concat();
            data.truncate(len as usize);
            Change::Write { offset, data }
        });
        Ok(len as usize)
    }

    fn fsync(&mut self, fd: RawFd, _data_only: bool) -> io::Result<()> {
        let open = self.open_of(fd)?;
        if let Verdict::Fail(e) = self.check(SimOp::Fsync, Some(open.inode), 0, 0) {
            return Err(e);
        }
        let inode = &mut self.inodes[open.inode];
        inode.durable.clone_from(&inode.data);
        inode.unsynced.clear();
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
        let (zeroes, extends) = match mode {
            // Allocation: the range's holes count against the budget (they
            // stay holes in memory: reading them gives zeros either way).
            0 | KEEP_SIZE => {
                budget?;
                (false, mode == 0)
            }
            PUNCH => (true, false),
            _ if mode == ZERO || mode == ZERO | KEEP_SIZE => (true, mode & KEEP_SIZE == 0),
            _ => return Err(errno(libc::EOPNOTSUPP)),
        };
        if zeroes {
            self.pages_used -= data.zero(offset, end.min(data.len));
            self.record(open.inode, || Change::Zero { offset, end });
        }
        let data = &mut self.inodes[open.inode].data;
        if extends && end > data.len {
            data.len = end;
            self.record(open.inode, || Change::SetLen(end));
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
        self.record(open.inode, || Change::SetLen(len));
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
