//! The simulator's file system as the ops see it: the [`SimFs`] calls, the
//! fd table, and the fault injector every call passes through. The tree of
//! names is `namespace`'s, a file's bytes `data`'s; the path calls (rename,
//! unlink, mkdir, link, symlink, listing) are in `paths`.
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

use crate::ops::simulated::{At, Segment, SimDirEntry, SimFs, SimStat, StatTarget};

use super::config::{Fault, FaultAction, RandomFault, SimOp};
use super::contents::{Change, Contents, PAGE};
use super::data::FileData;
use super::namespace::{Edit, Ino, Namespace, Node, ROOT};
use super::rng::Rng;

pub(super) use super::namespace::errno;

/// The largest file, like a filesystem's `s_maxbytes`.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// The logical block size `O_DIRECT` buffers, offsets and lengths must be
/// multiples of.
const DIRECT_ALIGN: u64 = 512;

/// An open file description.
#[derive(Debug, Clone)]
pub(super) struct Open {
    pub(super) inode: Ino,
    readable: bool,
    writable: bool,
    direct: bool,
    /// The path it was opened as, from the root, for fault filters.
    path: PathBuf,
}

/// Which faults a simulator injects, and the generator behind the random
/// ones.
#[derive(Debug)]
pub(super) struct Injector {
    /// Each planned fault with the matching calls seen so far.
    pub(super) planned: Vec<(Fault, u64)>,
    pub(super) random: Vec<RandomFault>,
    pub(super) rng: Rng,
}

/// The simulator's files.
#[derive(Debug)]
pub(super) struct Files {
    pub(super) ns: Namespace,
    fds: HashMap<RawFd, Open>,
    faults: Injector,
    /// Whether each file journals its unsynced changes.
    journal: bool,
    /// Pages the files' current contents hold, and the most they may.
    pub(super) pages_used: u64,
    pages_budget: u64,
}

/// What the fault injector decided for one call.
pub(super) enum Verdict {
    Run,
    Fail(io::Error),
    Short(usize),
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
    /// An empty root directory; with `journal`, each file keeps its unsynced
    /// changes for [`crash`](Files::crash) to choose from.
    pub(super) fn new(faults: Injector, memory_budget: u64, journal: bool) -> Files {
        Files {
            ns: Namespace::new(),
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
    pub(super) fn check(
        &mut self,
        op: SimOp,
        path: Option<&Path>,
        offset: u64,
        len: u64,
    ) -> Verdict {
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

    /// Fails the call if a fault hits it (a short count means nothing to a
    /// call that moves no bytes).
    pub(super) fn check_call(&mut self, op: SimOp, path: &Path) -> io::Result<()> {
        match self.check(op, Some(path), 0, 0) {
            Verdict::Fail(e) => Err(e),
            Verdict::Run | Verdict::Short(_) => Ok(()),
        }
    }

    /// Checks a call on the open file `open` against the faults.
    fn check_open(&mut self, op: SimOp, open: &Open, offset: u64, len: u64) -> Verdict {
        let path = open.path.clone();
        self.check(op, Some(&path), offset, len)
    }

    pub(super) fn open_of(&self, fd: RawFd) -> io::Result<&Open> {
        self.fds.get(&fd).ok_or_else(|| errno(libc::EBADF))
    }

    /// The data of the regular file `open` is open on; `what` for anything
    /// else (a directory).
    fn data_of(&mut self, open: &Open, what: i32) -> io::Result<&mut FileData> {
        self.ns.file_mut(open.inode).ok_or_else(|| errno(what))
    }

    /// The directory a path call starts from: the root for `AT_FDCWD`, else
    /// the directory `dir` is open on.
    pub(super) fn start(&self, dir: RawFd) -> io::Result<Ino> {
        if dir == libc::AT_FDCWD {
            return Ok(ROOT);
        }
        let open = self.open_of(dir)?;
        if !self.ns.is_dir(open.inode) {
            return Err(errno(libc::ENOTDIR));
        }
        Ok(open.inode)
    }

    /// The path `at` names, from the root, as fault filters and reports see
    /// it.
    pub(super) fn full_path(&self, at: At<'_>) -> PathBuf {
        if at.path.is_absolute() || at.dir == libc::AT_FDCWD {
            return Path::new("/").join(at.path);
        }
        let base = self
            .fds
            .get(&at.dir)
            .map(|open| {
                self.ns
                    .dir_path(open.inode)
                    .unwrap_or_else(|| open.path.clone())
            })
            .unwrap_or_default();
        base.join(at.path)
    }

    /// Takes `pages` from the budget, or refuses with `ENOSPC`.
    fn reserve(&self, pages: u64) -> io::Result<()> {
        if self.pages_used.saturating_add(pages) > self.pages_budget {
            return Err(errno(libc::ENOSPC));
        }
        Ok(())
    }

    /// Journals a change to a file made since its last fsync.
    fn record(journal: bool, data: &mut FileData, change: impl FnOnce() -> Change) {
        if journal {
            data.unsynced.push(change());
        }
    }

    /// A crash: each file's contents become its last-fsync snapshot plus the
    /// first `keep(n)` of its `n` journaled changes (none without a journal),
    /// and that is durable from now on. Files are visited in creation order.
    pub(super) fn crash(&mut self, mut keep: impl FnMut(usize) -> usize) {
        for inode in &mut self.ns.inodes {
            if let Node::File(data) = &mut inode.node {
                data.crash(&mut keep);
            }
        }
        self.pages_used = self
            .ns
            .inodes
            .iter()
            .filter_map(|inode| match &inode.node {
                Node::File(data) => Some(data.data.pages()),
                _ => None,
            })
            .sum();
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
        let open = self.open_of(fd)?.clone();
        if !open.writable {
            return Err(errno(libc::EBADF));
        }
        let total: u64 = from.iter().map(|piece| piece.len() as u64).sum();
        rw_end(offset, total)?;
        check_direct(
            &open,
            offset,
            from.iter().map(|p| (p.as_ptr() as usize, p.len())),
        )?;
        let mut bytes = from.concat();
        bytes.truncate(keep);
        let data = self.data_of(&open, libc::EBADF)?;
        let allocated = data.data.write(offset, &bytes);
        data.durable.write(offset, &bytes);
        self.pages_used += allocated;
        Ok(())
    }

    /// The current contents of the file at `path`.
    pub(super) fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let found = self.ns.lookup(ROOT, path, true).ok()?;
        Some(self.ns.file(found.ino?)?.data.to_vec())
    }

    /// Creates or replaces the file at `path`, durably, with `data`,
    /// creating the directories above it.
    ///
    /// # Panics
    ///
    /// If `path` leads through a file or names a directory.
    pub(super) fn insert(&mut self, path: &Path, data: &[u8]) {
        let contents = Contents::from_bytes(data);
        let mut dir = ROOT;
        let names: Vec<_> = path.iter().filter(|c| *c != "/").collect();
        let Some((file, above)) = names.split_last() else {
            panic!("sim: cannot insert a file at {path:?}");
        };
        for name in above {
            let found = self.ns.lookup(dir, Path::new(name), true);
            dir = match found.as_ref().ok().and_then(|f| f.ino) {
                Some(ino) if self.ns.is_dir(ino) => ino,
                Some(_) => panic!("sim: {path:?} leads through a file"),
                None => {
                    let new = self.ns.add(Node::Dir(Default::default()), 0o755);
                    self.ns.change(&[Edit {
                        dir,
                        name: name.into(),
                        to: Some(new),
                    }]);
                    new
                }
            };
        }
        let existing = self
            .ns
            .lookup(dir, Path::new(file), true)
            .ok()
            .and_then(|f| f.ino);
        let ino = match existing {
            Some(ino) if self.ns.file(ino).is_some() => ino,
            Some(_) => panic!("sim: {path:?} is not a file"),
            None => {
                let new = self.ns.add(Node::File(FileData::default()), 0o644);
                self.ns.change(&[Edit {
                    dir,
                    name: (*file).into(),
                    to: Some(new),
                }]);
                new
            }
        };
        let data = self.ns.file_mut(ino).expect("a file");
        self.pages_used -= data.data.pages();
        self.pages_used += contents.pages();
        *data = FileData::durable(contents);
    }
}

/// `O_DIRECT`'s rule: offset, every buffer's address and length aligned.
fn check_direct(
    open: &Open,
    offset: u64,
    pieces: impl Iterator<Item = (usize, usize)>,
) -> io::Result<()> {
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
    fn open(&mut self, at: At<'_>, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let path = self.full_path(at);
        self.check_call(SimOp::Open, &path)?;
        let start = self.start(at.dir)?;
        let create = flags & libc::O_CREAT != 0;
        let exclusive = create && flags & libc::O_EXCL != 0;
        let follow = flags & libc::O_NOFOLLOW == 0 && !exclusive;
        let found = self.ns.lookup(start, at.path, follow)?;
        let access = flags & libc::O_ACCMODE;
        let writable = access == libc::O_WRONLY || access == libc::O_RDWR;
        let inode = match found.ino {
            Some(_) if exclusive => return Err(errno(libc::EEXIST)),
            Some(ino) if matches!(self.ns.inodes[ino].node, Node::Symlink(_)) => {
                return Err(errno(libc::ELOOP));
            }
            Some(ino) => ino,
            None if create => {
                if found.trailing_slash {
                    return Err(errno(libc::EISDIR));
                }
                let name = found.name(libc::EISDIR)?.to_owned();
                let new = self.ns.add(Node::File(FileData::default()), mode & 0o7777);
                self.ns.change(&[Edit {
                    dir: found.parent,
                    name,
                    to: Some(new),
                }]);
                new
            }
            None => return Err(errno(libc::ENOENT)),
        };
        if self.ns.is_dir(inode) {
            if writable || create || flags & libc::O_TRUNC != 0 {
                return Err(errno(libc::EISDIR));
            }
        } else if flags & libc::O_DIRECTORY != 0 || found.trailing_slash {
            return Err(errno(libc::ENOTDIR));
        }
        let open = Open {
            inode,
            readable: access == libc::O_RDONLY || access == libc::O_RDWR,
            writable,
            direct: flags & libc::O_DIRECT != 0,
            path,
        };
        if flags & libc::O_TRUNC != 0 && writable {
            let journal = self.journal;
            let data = self.data_of(&open, libc::EISDIR)?;
            let freed = data.data.truncate(0);
            Files::record(journal, data, || Change::SetLen(0));
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
        let open = self.open_of(fd)?.clone();
        if let Verdict::Fail(e) = self.check_open(SimOp::Close, &open, 0, 0) {
            return Err(e);
        }
        self.fds.remove(&fd);
        Ok(())
    }

    fn read(&mut self, fd: RawFd, offset: u64, into: &[Segment]) -> io::Result<Vec<u8>> {
        let open = self.open_of(fd)?.clone();
        if !open.readable {
            return Err(errno(libc::EBADF));
        }
        if self.ns.is_dir(open.inode) {
            return Err(errno(libc::EISDIR));
        }
        let len: u64 = into.iter().map(|s| s.len as u64).sum();
        rw_end(offset, len)?;
        check_direct(&open, offset, into.iter().map(|s| (s.addr, s.len)))?;
        let len = match self.check_open(SimOp::Read, &open, offset, len) {
            Verdict::Fail(e) => return Err(e),
            Verdict::Short(n) => len.min(n as u64),
            Verdict::Run => len,
        };
        Ok(self.data_of(&open, libc::EISDIR)?.data.read(offset, len))
    }

    fn write(&mut self, fd: RawFd, offset: u64, from: &[&[u8]]) -> io::Result<usize> {
        let open = self.open_of(fd)?.clone();
        if !open.writable {
            return Err(errno(libc::EBADF));
        }
        let total: u64 = from.iter().map(|piece| piece.len() as u64).sum();
        rw_end(offset, total)?;
        check_direct(
            &open,
            offset,
            from.iter().map(|p| (p.as_ptr() as usize, p.len())),
        )?;
        let len = match self.check_open(SimOp::Write, &open, offset, total) {
            Verdict::Fail(e) => return Err(e),
            Verdict::Short(n) => total.min(n as u64),
            Verdict::Run => total,
        };
        let end = offset + len;
        let (journal, used, budget) = (self.journal, self.pages_used, self.pages_budget);
        let data = self.data_of(&open, libc::EBADF)?;
        let needed = data.data.holes_in(offset, end);
        if used.saturating_add(needed) > budget {
            return Err(errno(libc::ENOSPC));
        }
        let mut at = offset;
        let mut allocated = 0;
        for piece in from {
            let n = (piece.len() as u64).min(end - at) as usize;
            allocated += data.data.write(at, &piece[..n]);
            at += n as u64;
        }
        Files::record(journal, data, || {
            let mut bytes = from.concat();
            bytes.truncate(len as usize);
            Change::Write {
                offset,
                data: bytes,
            }
        });
        self.pages_used += allocated;
        Ok(len as usize)
    }

    fn fsync(&mut self, fd: RawFd, _data_only: bool) -> io::Result<()> {
        let open = self.open_of(fd)?.clone();
        if let Verdict::Fail(e) = self.check_open(SimOp::Fsync, &open, 0, 0) {
            return Err(e);
        }
        if let Some(data) = self.ns.file_mut(open.inode) {
            data.sync();
        }
        Ok(())
    }

    fn fallocate(&mut self, fd: RawFd, offset: u64, len: u64, mode: i32) -> io::Result<()> {
        let open = self.open_of(fd)?.clone();
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
        if let Verdict::Fail(e) = self.check_open(SimOp::Fallocate, &open, offset, len) {
            return Err(e);
        }
        const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        const ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;
        let holes = self.data_of(&open, libc::EBADF)?.data.holes_in(offset, end);
        let budget = self.reserve(holes);
        let journal = self.journal;
        let data = self.data_of(&open, libc::EBADF)?;
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
        let mut freed = 0;
        if zeroes {
            freed = data.data.zero(offset, end.min(data.data.len));
            Files::record(journal, data, || Change::Zero { offset, end });
        }
        if extends && end > data.data.len {
            data.data.len = end;
            Files::record(journal, data, || Change::SetLen(end));
        }
        self.pages_used -= freed;
        Ok(())
    }

    fn ftruncate(&mut self, fd: RawFd, len: u64) -> io::Result<()> {
        let open = self.open_of(fd)?.clone();
        if !open.writable {
            return Err(errno(libc::EINVAL));
        }
        if len > MAX_FILE_SIZE {
            return Err(errno(libc::EFBIG));
        }
        if let Verdict::Fail(e) = self.check_open(SimOp::Ftruncate, &open, 0, len) {
            return Err(e);
        }
        let journal = self.journal;
        let data = self.data_of(&open, libc::EINVAL)?;
        let freed = data.data.truncate(len);
        Files::record(journal, data, || Change::SetLen(len));
        self.pages_used -= freed;
        Ok(())
    }

    fn stat(&mut self, target: StatTarget<'_>) -> io::Result<SimStat> {
        let ino = match target {
            StatTarget::Fd(fd) => {
                let open = self.open_of(fd)?.clone();
                if let Verdict::Fail(e) = self.check_open(SimOp::Statx, &open, 0, 0) {
                    return Err(e);
                }
                open.inode
            }
            StatTarget::Path { at, follow } => {
                let path = self.full_path(at);
                self.check_call(SimOp::Statx, &path)?;
                let found = self.ns.lookup(self.start(at.dir)?, at.path, follow)?;
                let ino = found.ino.ok_or_else(|| errno(libc::ENOENT))?;
                if found.trailing_slash && !self.ns.is_dir(ino) {
                    return Err(errno(libc::ENOTDIR));
                }
                ino
            }
        };
        let len = match &self.ns.inodes[ino].node {
            Node::File(data) => data.data.len,
            Node::Dir(_) => PAGE,
            Node::Symlink(target) => target.as_os_str().len() as u64,
        };
        Ok(SimStat {
            mode: self.ns.mode(ino),
            len,
            nlink: self.ns.nlink(ino),
            ino: ino as u64 + 1,
        })
    }

    fn rename(&mut self, from: At<'_>, to: At<'_>, flags: u32) -> io::Result<()> {
        self.rename_at(from, to, flags)
    }

    fn unlink(&mut self, at: At<'_>, dir: bool) -> io::Result<()> {
        self.unlink_at(at, dir)
    }

    fn mkdir(&mut self, at: At<'_>, mode: u32) -> io::Result<()> {
        self.mkdir_at(at, mode)
    }

    fn link(&mut self, from: At<'_>, to: At<'_>, follow: bool) -> io::Result<()> {
        self.link_at(from, to, follow)
    }

    fn symlink(&mut self, target: &Path, at: At<'_>) -> io::Result<()> {
        self.symlink_at(target, at)
    }

    fn read_dir(&mut self, at: At<'_>) -> io::Result<Vec<SimDirEntry>> {
        self.read_dir_at(at)
    }
}
