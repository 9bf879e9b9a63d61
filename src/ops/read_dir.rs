//! A directory's listing. io_uring has no opcode for it (`getdents64` is not
//! an io_uring op), so on every backend but the simulator it is one blocking
//! call on the home runtime's blocking pool: `openat`, then `readdir` to the
//! end, then `closedir`; on the ring too, whatever the kernel.

use std::ffi::{CStr, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::Cqe;
use crate::ops::blocking::BlockingCall;
use crate::ops::path::{CPath, DirFd};
use crate::ops::simulated::{At, SimFs, cqe_of};
use crate::ops::{BlockingOp, Fallback, OnRing, OpKind, Operation, SimulatedOp, UringOp};
use crate::ring::Sqe;

/// The type of a file, as a directory entry or metadata reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileType {
    /// The `S_IFMT` bits of `st_mode`; 0 where the file system did not say.
    format: u32,
}

impl FileType {
    pub(crate) fn from_mode(mode: u32) -> FileType {
        FileType {
            format: mode & libc::S_IFMT,
        }
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.format == libc::S_IFREG
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.format == libc::S_IFDIR
    }

    /// Whether this is a symbolic link (not followed).
    pub fn is_symlink(&self) -> bool {
        self.format == libc::S_IFLNK
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    path: PathBuf,
    name: OsString,
    file_type: FileType,
    ino: u64,
}

impl DirEntry {
    /// The path listed, joined with the entry's name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry's name within its directory.
    pub fn file_name(&self) -> &OsStr {
        &self.name
    }

    /// What the entry is: a file, a directory, a symlink (not followed).
    pub fn file_type(&self) -> FileType {
        self.file_type
    }

    /// The inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }
}

/// An entry as the listing produced it, before the op joins it to its path.
#[derive(Debug, Clone)]
struct Listed {
    name: OsString,
    mode: u32,
    ino: u64,
}

/// Lists a directory: every entry but `.` and `..`, in no particular order.
#[derive(Debug, Clone)]
pub struct ReadDir {
    dir: DirFd,
    path: CPath,
    listed: Vec<Listed>,
}

impl ReadDir {
    /// Lists `path` (relative to `dir`).
    pub(crate) fn new(dir: DirFd, path: &Path) -> Self {
        ReadDir {
            dir,
            path: CPath::new(path),
            listed: Vec::new(),
        }
    }
}

impl OpKind for ReadDir {
    type Output = io::Result<Vec<DirEntry>>;
}

impl Operation for ReadDir {
    type Resolved = io::Result<Vec<DirEntry>>;

    fn validate(&self) -> io::Result<()> {
        self.path.check()
    }

    fn complete(self, cqe: Cqe) -> io::Result<Vec<DirEntry>> {
        cqe.result?;
        let base = self.path.as_path();
        Ok(self
            .listed
            .into_iter()
            .map(|listed| DirEntry {
                path: base.join(&listed.name),
                name: listed.name,
                file_type: FileType::from_mode(listed.mode),
                ino: listed.ino,
            })
            .collect())
    }
}

impl UringOp for ReadDir {
    const ON_RING: OnRing = OnRing::Blocking;

    fn sqe(&mut self) -> Sqe {
        unreachable!("a directory listing runs as a blocking call on the ring")
    }
}

impl BlockingOp for ReadDir {
    /// A copy of the op (holding its directory open) that lists into its
    /// own vector.
    type Call = ReadDir;

    fn fallback(&mut self) -> Fallback<ReadDir> {
        Fallback::Call(self.clone())
    }

    fn land(&mut self, call: ReadDir, _cqe: &mut Cqe) {
        self.listed = call.listed;
    }
}

/// `errno` now, as an error.
fn last_error() -> io::Error {
    io::Error::last_os_error()
}

impl BlockingCall for ReadDir {
    fn run(&mut self) -> Cqe {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: a NUL-terminated path this call owns, relative to a
        // directory fd it holds open.
        let fd = unsafe { libc::openat(self.dir.raw(), self.path.as_ptr(), flags) };
        if fd < 0 {
            return Cqe::error(last_error());
        }
        // SAFETY: `fd` is a directory fd just opened; the stream owns it
        // from here, and `closedir` below closes both.
        let stream = unsafe { libc::fdopendir(fd) };
        if stream.is_null() {
            let error = last_error();
            // SAFETY: fdopendir failed, so `fd` is still ours to close.
            unsafe { libc::close(fd) };
            return Cqe::error(error);
        }
        let result = list(stream, fd, &mut self.listed);
        // SAFETY: `stream` came from fdopendir above and is closed once.
        unsafe { libc::closedir(stream) };
        match result {
            Ok(()) => Cqe::from_raw(0, 0),
            Err(e) => Cqe::error(e),
        }
    }
}

/// Reads `stream` (over the directory `fd`) to its end into `listed`.
fn list(stream: *mut libc::DIR, fd: i32, listed: &mut Vec<Listed>) -> io::Result<()> {
    loop {
        // readdir reports an error only through errno: clear it first.
        // SAFETY: errno is this thread's own.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is an open directory stream used by this thread
        // only.
        let entry = unsafe { libc::readdir64(stream) };
        if entry.is_null() {
            return match last_error().raw_os_error() {
                Some(0) | None => Ok(()),
                Some(_) => Err(last_error()),
            };
        }
        // SAFETY: a non-null entry from readdir is valid until the next call
        // on the stream; its name is NUL-terminated.
        let (name, d_type, ino) = unsafe {
            let entry = &*entry;
            (
                CStr::from_ptr(entry.d_name.as_ptr()),
                entry.d_type,
                entry.d_ino,
            )
        };
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        // `DT_*` is `S_IF*` shifted down by 12 bits (`DT_DIR << 12 ==
        // S_IFDIR`), except where the file system did not say.
        let mode = match d_type {
            libc::DT_UNKNOWN => lstat_mode(fd, name),
            known => u32::from(known) << 12,
        };
        listed.push(Listed {
            name: OsStr::from_bytes(name.to_bytes()).to_owned(),
            mode,
            ino,
        });
    }
}

/// The file type of `name` in the directory `fd`, not following a symlink,
/// for file systems whose listing does not say (0 if it cannot be told).
fn lstat_mode(fd: i32, name: &CStr) -> u32 {
    // SAFETY: stat is plain old data; all-zero is a valid value.
    let mut stat = unsafe { std::mem::zeroed::<libc::stat>() };
    // SAFETY: a NUL-terminated name, an open directory fd, and a stat this
    // function owns.
    let ret = unsafe { libc::fstatat(fd, name.as_ptr(), &mut stat, libc::AT_SYMLINK_NOFOLLOW) };
    if ret == 0 { stat.st_mode } else { 0 }
}

impl SimulatedOp for ReadDir {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let at = At {
            dir: self.dir.raw(),
            path: self.path.as_path(),
        };
        let result = fs.read_dir(at).map(|entries| {
            self.listed = entries
                .into_iter()
                .map(|entry| Listed {
                    name: entry.name,
                    mode: entry.kind,
                    ino: entry.ino,
                })
                .collect();
            0
        });
        cqe_of(result)
    }
}
