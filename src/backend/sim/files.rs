//! The simulator's file system as the ops see it: the [`SimFs`] calls, the
//! fd table, the fault injector every call passes through, and what an
//! fsync makes durable. The tree of names is `namespace`'s, a file's bytes
//! `data`'s; the path calls (rename, unlink, mkdir, link, symlink, statx by
//! path, listing) are in `paths`.
//!
//! Fds are real (each is a `/dev/null` descriptor the op's future owns, so
//! closing and dropping behave as on the ring), but the simulator only uses
//! their numbers as keys into its fd table.
//!
//! Every call answers as the kernel would on a real file: offsets and sizes
//! are checked before any arithmetic (`EINVAL` for a range past `i64::MAX`,
//! `EFBIG` for one past the largest file), memory grows with the bytes
//! written, never with an offset, and a write past the memory budget fails
//! with `ENOSPC`. Pages are shared between a file's contents and its disk
//! until one of them is written (copy on write), so an fsync costs a copy
//! of the page table, not of the data.
//!
//! An fsync of a file writes its data back (`data`); one that fails (an
//! injected fault) drops the data instead, and the error is reported once
//! to each fd that was open on the file when it happened, as Linux's
//! `errseq` does: by the fsync that failed, and by the next fsync through
//! each other such fd. An fsync of a directory makes the changes of its
//! names durable (`namespace`); on the ext4 model any fsync commits every
//! change of names made before it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::error::DirectAlignment;
use crate::ops::simulated::{At, Segment, SimDirEntry, SimFs, SimStat, StatTarget};

use super::config::{CrashModel, Fault, FaultAction, FsModel, RandomFault, SimOp};
use super::contents::PAGE;
use super::data::FileData;
use super::namespace::{Edit, Ino, Namespace, Node, ROOT};
use super::rng::Rng;

pub(super) use super::namespace::errno;

/// The largest file, like a filesystem's `s_maxbytes`.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;
/// The logical block size `O_DIRECT` buffers, offsets and lengths must be
/// multiples of.
const DIRECT_ALIGN: u64 = 512;

/// [`DIRECT_ALIGN`] as the rule `O_DIRECT` files follow here.
const SIM_DIRECT_ALIGNMENT: DirectAlignment = DirectAlignment {
    memory: DIRECT_ALIGN,
    offset: DIRECT_ALIGN,
    basis: "the simulator's logical block size",
};

/// An open file description.
#[derive(Debug, Clone)]
pub(super) struct Open {
    pub(super) inode: Ino,
    readable: bool,
    writable: bool,
    direct: bool,
    /// The path it was opened as, from the root, for fault filters.
    path: PathBuf,
    /// How many of the file's writeback errors this fd has reported (or
    /// were there when it was opened): the kernel's `errseq` cursor.
    seen: u64,
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
    pub(super) ns: Namespace,
    fds: HashMap<RawFd, Open>,
    faults: Injector,
    /// What a crash keeps, and what an fsync makes durable.
    pub(super) model: CrashModel,
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
    /// An empty root directory, persisting as `model` says.
    pub(super) fn new(faults: Injector, memory_budget: u64, model: CrashModel) -> Files {
        Files {
            ns: Namespace::new(),
            fds: HashMap::new(),
            faults,
            model,
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
    pub(super) fn check_open(&mut self, op: SimOp, open: &Open, offset: u64, len: u64) -> Verdict {
        let path = open.path.clone();
        self.check(op, Some(&path), offset, len)
    }

    pub(super) fn open_of(&self, fd: RawFd) -> io::Result<&Open> {
        self.fds.get(&fd).ok_or_else(|| errno(libc::EBADF))
    }

    /// What `O_DIRECT` asks of ops on `fd`, if it was opened with it.
    pub(super) fn direct_alignment(&self, fd: RawFd) -> Option<DirectAlignment> {
        self.open_of(fd)
            .is_ok_and(|open| open.direct)
            .then_some(SIM_DIRECT_ALIGNMENT)
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

    /// Counts the pages the files' current contents hold (after a crash):
    /// those of files with a name or an open fd.
    pub(super) fn recount_pages(&mut self) {
        let open: std::collections::HashSet<Ino> = self.fds.values().map(|o| o.inode).collect();
        self.pages_used = self
            .ns
            .inodes
            .iter()
            .enumerate()
            .filter_map(|(ino, inode)| match &inode.node {
                Node::File(data) if inode.links > 0 || open.contains(&ino) => {
                    Some(data.now.pages())
                }
                _ => None,
            })
            .sum();
    }

    /// Gives a file's pages back to the budget once nothing leads to it: no
    /// name and no open fd, as a file system frees an unlinked file's space
    /// at its last close. (Its data stays, out of the budget: a crash may
    /// bring its name back, if the removal was not yet durable.)
    pub(super) fn release_if_orphan(&mut self, ino: Ino) {
        let inode = &self.ns.inodes[ino];
        if inode.links > 0 || self.fds.values().any(|open| open.inode == ino) {
            return;
        }
        if let Node::File(data) = &inode.node {
            self.pages_used -= data.now.pages();
        }
    }

    /// The sector size unsynced data is tracked in.
    pub(super) fn sector(&self) -> u64 {
        self.model.sector()
    }

    /// Writes the first `keep` bytes of `from` at `offset` of the file
    /// behind `fd` straight to disk: into what reads see and the disk alike
    /// (the part of a torn write that reached the platter before a crash).
    /// Refuses what [`write`](SimFs::write) would refuse. Returns the file's
    /// inode.
    pub(super) fn persist(
        &mut self,
        fd: RawFd,
        offset: u64,
        from: &[&[u8]],
        keep: usize,
    ) -> io::Result<Ino> {
        let open = self.open_of(fd)?.clone();
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
        let mut bytes = from.concat();
        bytes.truncate(keep);
        let data = self.data_of(&open, libc::EBADF)?;
        let allocated = data.persist(offset, &bytes);
        self.pages_used += allocated;
        Ok(open.inode)
    }

    /// An fsync of the directory `dir`: its changes of names, or on a model
    /// that journals names in order every change, are durable from now on.
    fn sync_names(&mut self, dir: Option<Ino>) {
        match (self.model.fs, dir) {
            (FsModel::Ext4Ordered, _) => self.ns.sync_all(),
            (FsModel::Weakest, Some(dir)) => self.ns.sync_dir(dir),
            (FsModel::Weakest, None) => {}
        }
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
    match SIM_DIRECT_ALIGNMENT.check(op, offset, &pieces.collect::<Vec<_>>()) {
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
                let edit = Edit {
                    dir: found.parent,
                    name,
                    to: Some(new),
                };
                self.ns
                    .change(vec![edit], format!("create {}", path.display()));
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
            seen: self.ns.file(inode).map_or(0, |data| data.errors),
        };
        if flags & libc::O_TRUNC != 0 && writable {
            let sector = self.sector();
            let data = self.data_of(&open, libc::EISDIR)?;
            let old = data.now.len;
            let freed = data.now.truncate(0);
            data.touched(0, old, sector);
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
        self.release_if_orphan(open.inode);
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
        check_direct(&open, "read", offset, into.iter().map(|s| (s.addr, s.len)))?;
        let len = match self.check_open(SimOp::Read, &open, offset, len) {
            Verdict::Fail(e) => return Err(e),
            Verdict::Short(n) => len.min(n as u64),
            Verdict::Run => len,
        };
        Ok(self.data_of(&open, libc::EISDIR)?.now.read(offset, len))
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
            "write",
            offset,
            from.iter().map(|p| (p.as_ptr() as usize, p.len())),
        )?;
        let len = match self.check_open(SimOp::Write, &open, offset, total) {
            Verdict::Fail(e) => return Err(e),
            Verdict::Short(n) => total.min(n as u64),
            Verdict::Run => total,
        };
        let end = offset + len;
        let (sector, used, budget) = (self.sector(), self.pages_used, self.pages_budget);
        let data = self.data_of(&open, libc::EBADF)?;
        let needed = data.now.holes_in(offset, end);
        if used.saturating_add(needed) > budget {
            return Err(errno(libc::ENOSPC));
        }
        let mut at = offset;
        let mut allocated = 0;
        for piece in from {
            let n = (piece.len() as u64).min(end - at) as usize;
            allocated += data.now.write(at, &piece[..n]);
            at += n as u64;
        }
        data.touched(offset, end, sector);
        self.pages_used += allocated;
        Ok(len as usize)
    }

    fn fsync(&mut self, fd: RawFd, _data_only: bool) -> io::Result<()> {
        let open = self.open_of(fd)?.clone();
        let verdict = self.check_open(SimOp::Fsync, &open, 0, 0);
        let Some(data) = self.ns.file_mut(open.inode) else {
            // A directory: its names are durable, unless the fsync failed.
            if let Verdict::Fail(e) = verdict {
                return Err(e);
            }
            self.sync_names(Some(open.inode));
            return Ok(());
        };
        let result = match verdict {
            Verdict::Fail(e) => {
                data.fail_write_back(e.raw_os_error().unwrap_or(libc::EIO));
                Err(e)
            }
            Verdict::Run | Verdict::Short(_) => {
                data.write_back();
                Ok(())
            }
        };
        // The kernel's errseq: a writeback error this fd has not reported
        // yet is reported now, once, whichever fd's writeback hit it.
        let (errors, last_error) = (data.errors, data.last_error);
        let unseen = self.fds.get_mut(&fd).is_some_and(|open| {
            let unseen = open.seen < errors;
            open.seen = errors;
            unseen
        });
        result?;
        self.sync_names(None);
        if unseen {
            return Err(errno(last_error));
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
        let holes = self.data_of(&open, libc::EBADF)?.now.holes_in(offset, end);
        let budget = self.reserve(holes);
        let sector = self.sector();
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
            let zeroed = end.min(data.now.len);
            freed = data.now.zero(offset, zeroed);
            data.touched(offset, zeroed, sector);
        }
        if extends && end > data.now.len {
            let old = data.now.len;
            data.now.len = end;
            data.touched(old, end, sector);
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
        let sector = self.sector();
        let data = self.data_of(&open, libc::EINVAL)?;
        let old = data.now.len;
        let freed = data.now.truncate(len);
        data.touched(old.min(len), old.max(len), sector);
        self.pages_used -= freed;
        Ok(())
    }

    fn stat(&mut self, target: StatTarget<'_>) -> io::Result<SimStat> {
        self.stat_at(target)
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
