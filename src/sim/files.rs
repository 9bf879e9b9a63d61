//! The simulator's in-memory file system: inodes by path, fds to inodes,
//! durable contents as of each file's last fsync, and the fault injector every
//! operation passes through.
//!
//! Fds are real (each is a `/dev/null` descriptor the op's future owns, so
//! closing and dropping behave as on the ring), but the simulator only uses
//! their numbers as keys into its fd table.

use std::collections::HashMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::{Fault, FaultAction, SimOp};

/// One in-memory file.
#[derive(Debug, Default)]
struct Inode {
    path: PathBuf,
    /// What reads see now.
    data: Vec<u8>,
    /// What survives [`Files::crash`]: `data` as of the last fsync.
    durable: Vec<u8>,
}

/// An open file description.
#[derive(Debug, Clone, Copy)]
struct Open {
    inode: usize,
    readable: bool,
    writable: bool,
}

/// The simulator's files. Used by each op's `simulate`.
#[allow(unreachable_pub)]
#[derive(Debug, Default)]
pub struct Files {
    inodes: Vec<Inode>,
    by_path: HashMap<PathBuf, usize>,
    fds: HashMap<RawFd, Open>,
    faults: Vec<(Fault, u64)>,
}

/// What the fault injector decided for one op.
enum Verdict {
    Run,
    Fail(io::Error),
    Short(usize),
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

impl Files {
    pub(crate) fn new(faults: Vec<Fault>) -> Files {
        Files {
            faults: faults.into_iter().map(|f| (f, 0)).collect(),
            ..Files::default()
        }
    }

    /// Counts `op` against every fault's filter; the fault whose count reaches
    /// its `nth` fires.
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

    /// `openat`: returns a new fd for `path`.
    pub(crate) fn open(&mut self, path: &Path, flags: i32) -> io::Result<OwnedFd> {
        let existing = self.by_path.get(path).copied();
        if let Verdict::Fail(e) = self.check(SimOp::Open, existing, 0, 0) {
            return Err(e);
        }
        let inode = match existing {
            Some(_) if flags & libc::O_CREAT != 0 && flags & libc::O_EXCL != 0 => {
                return Err(errno(libc::EEXIST));
            }
            Some(inode) => inode,
            None if flags & libc::O_CREAT != 0 => {
                self.inodes.push(Inode {
                    path: path.to_owned(),
                    ..Inode::default()
                });
                self.by_path.insert(path.to_owned(), self.inodes.len() - 1);
                self.inodes.len() - 1
            }
            None => return Err(errno(libc::ENOENT)),
        };
        let access = flags & libc::O_ACCMODE;
        let open = Open {
            inode,
            readable: access == libc::O_RDONLY || access == libc::O_RDWR,
            writable: access == libc::O_WRONLY || access == libc::O_RDWR,
        };
        if flags & libc::O_TRUNC != 0 && open.writable {
            self.inodes[inode].data.clear();
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

    /// `close`: forgets the fd; the caller closes the descriptor itself.
    pub(crate) fn close(&mut self, fd: RawFd) -> io::Result<()> {
        let open = self.open_of(fd)?;
        if let Verdict::Fail(e) = self.check(SimOp::Close, Some(open.inode), 0, 0) {
            return Err(e);
        }
        self.fds.remove(&fd);
        Ok(())
    }

    /// `pread`: up to `len` bytes at `offset`.
    pub(crate) fn read(&mut self, fd: RawFd, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let open = self.open_of(fd)?;
        if !open.readable {
            return Err(errno(libc::EBADF));
        }
        let len = match self.check(SimOp::Read, Some(open.inode), offset, len as u64) {
            Verdict::Fail(e) => return Err(e),
            Verdict::Short(n) => len.min(n),
            Verdict::Run => len,
        };
        let data = &self.inodes[open.inode].data;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(len).min(data.len());
        Ok(data[start..end].to_vec())
    }

    /// `pwrite`: writes `data` at `offset`, growing the file (with zeros in
    /// any gap). Returns the bytes written.
    pub(crate) fn write(&mut self, fd: RawFd, offset: u64, data: &[u8]) -> io::Result<usize> {
        let open = self.open_of(fd)?;
        if !open.writable {
            return Err(errno(libc::EBADF));
        }
        let len = match self.check(SimOp::Write, Some(open.inode), offset, data.len() as u64) {
            Verdict::Fail(e) => return Err(e),
            Verdict::Short(n) => data.len().min(n),
            Verdict::Run => data.len(),
        };
        let file = &mut self.inodes[open.inode].data;
        let start = usize::try_from(offset).map_err(|_| errno(libc::EFBIG))?;
        if file.len() < start + len {
            file.resize(start + len, 0);
        }
        file[start..start + len].copy_from_slice(&data[..len]);
        Ok(len)
    }

    /// `fsync` / `fdatasync`: what the file holds now becomes durable.
    pub(crate) fn fsync(&mut self, fd: RawFd) -> io::Result<()> {
        let open = self.open_of(fd)?;
        if let Verdict::Fail(e) = self.check(SimOp::Fsync, Some(open.inode), 0, 0) {
            return Err(e);
        }
        let inode = &mut self.inodes[open.inode];
        inode.durable.clone_from(&inode.data);
        Ok(())
    }

    /// `fallocate` (mode 0 grows the file) or `ftruncate` (`truncate`).
    pub(crate) fn resize(
        &mut self,
        fd: RawFd,
        op: SimOp,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> io::Result<()> {
        let open = self.open_of(fd)?;
        if !open.writable {
            return Err(errno(libc::EBADF));
        }
        if let Verdict::Fail(e) = self.check(op, Some(open.inode), offset, len) {
            return Err(e);
        }
        let end = usize::try_from(offset.saturating_add(len)).map_err(|_| errno(libc::EFBIG))?;
        let data = &mut self.inodes[open.inode].data;
        match (op, mode) {
            (SimOp::Ftruncate, _) => data.resize(end, 0),
            (SimOp::Fallocate, 0) if data.len() < end => data.resize(end, 0),
            (SimOp::Fallocate, 0) => {}
            _ => return Err(errno(libc::EOPNOTSUPP)),
        }
        Ok(())
    }

    /// `statx`: the size of the file behind `fd`.
    pub(crate) fn len(&mut self, fd: RawFd) -> io::Result<u64> {
        let open = self.open_of(fd)?;
        if let Verdict::Fail(e) = self.check(SimOp::Statx, Some(open.inode), 0, 0) {
            return Err(e);
        }
        Ok(self.inodes[open.inode].data.len() as u64)
    }

    /// Drops everything written since each file's last fsync.
    pub(crate) fn crash(&mut self) {
        for inode in &mut self.inodes {
            inode.data.clone_from(&inode.durable);
        }
    }

    /// The current contents of the file at `path`.
    pub(crate) fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.by_path
            .get(path)
            .map(|&inode| self.inodes[inode].data.clone())
    }

    /// Creates or replaces the file at `path`, durably, with `data`.
    pub(crate) fn insert(&mut self, path: &Path, data: Vec<u8>) {
        let inode = match self.by_path.get(path) {
            Some(&inode) => inode,
            None => {
                self.inodes.push(Inode {
                    path: path.to_owned(),
                    ..Inode::default()
                });
                self.by_path.insert(path.to_owned(), self.inodes.len() - 1);
                self.inodes.len() - 1
            }
        };
        self.inodes[inode].durable.clone_from(&data);
        self.inodes[inode].data = data;
    }
}
