//! `IORING_OP_STATX`, on an open file or on a path (following its last
//! symlink or not).

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::Cqe;
use crate::ops::blocking::BlockingCall;
use crate::ops::path::{CPath, DirFd};
use crate::ops::simulated::{At, SimFs, StatTarget, cqe_of};
use crate::ops::{BlockingOp, Fallback, FileFd, OpKind, Opcode, Operation, SimulatedOp, UringOp};
use crate::ring::{Sqe, op, ty};

pub(crate) const OPCODE: Opcode = (op::Statx::CODE, "STATX");

/// What a `statx` asks about.
#[derive(Debug, Clone)]
enum Target {
    /// An open file (`AT_EMPTY_PATH`).
    File(FileFd),
    /// A path relative to `dir`; its last symlink followed if `follow`.
    Path {
        dir: DirFd,
        path: CPath,
        follow: bool,
    },
}

impl Target {
    /// The arguments `statx(2)` takes: dirfd, path, flags.
    fn args(&self) -> (i32, *const libc::c_char, i32) {
        match self {
            Target::File(fd) => (fd.as_raw_fd(), EMPTY_PATH.as_ptr(), libc::AT_EMPTY_PATH),
            Target::Path { dir, path, follow } => {
                let flags = if *follow {
                    0
                } else {
                    libc::AT_SYMLINK_NOFOLLOW
                };
                (dir.raw(), path.as_ptr(), flags)
            }
        }
    }
}

/// `statx(2)` of an open file or a path.
pub struct Statx {
    target: Target,
    /// Boxed so the kernel's write target does not move with the op.
    buf: Box<libc::statx>,
}

impl std::fmt::Debug for Statx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statx")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A zeroed `statx`, for the kernel to fill.
fn zeroed() -> Box<libc::statx> {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    Box::new(unsafe { std::mem::zeroed::<libc::statx>() })
}

impl Statx {
    /// The metadata of an open file.
    pub(crate) fn new(fd: FileFd) -> Self {
        Statx {
            target: Target::File(fd),
            buf: zeroed(),
        }
    }

    /// The metadata of what `path` (relative to `dir`) names: the file a
    /// symlink points to if `follow`, the symlink itself if not.
    pub(crate) fn path(dir: DirFd, path: &Path, follow: bool) -> Self {
        Statx {
            target: Target::Path {
                dir,
                path: CPath::new(path),
                follow,
            },
            buf: zeroed(),
        }
    }
}

const EMPTY_PATH: &std::ffi::CStr = c"";

const MASK: u32 = libc::STATX_BASIC_STATS | libc::STATX_BTIME;

impl OpKind for Statx {
    type Output = io::Result<Metadata>;
}

impl Operation for Statx {
    type Resolved = io::Result<Metadata>;

    fn validate(&self) -> io::Result<()> {
        match &self.target {
            Target::File(_) => Ok(()),
            Target::Path { path, .. } => path.check(),
        }
    }

    fn complete(self, cqe: Cqe) -> io::Result<Metadata> {
        cqe.result.map(|_| Metadata { statx: *self.buf })
    }
}

impl UringOp for Statx {
    fn sqe(&mut self) -> Sqe {
        let buf: *mut libc::statx = &mut *self.buf;
        let (dir, path, flags) = self.target.args();
        op::Statx::new(ty::Fd(dir), path, buf.cast())
            .flags(flags)
            .mask(MASK)
            .build()
    }
}

impl BlockingOp for Statx {
    type Call = StatxCall;

    fn fallback(&mut self) -> Fallback<StatxCall> {
        Fallback::Call(StatxCall {
            target: self.target.clone(),
            buf: zeroed(),
        })
    }

    fn land(&mut self, call: StatxCall, _cqe: &mut Cqe) {
        *self.buf = *call.buf;
    }
}

impl SimulatedOp for Statx {
    fn simulate(&mut self, fs: &mut dyn SimFs) -> Cqe {
        let target = match &self.target {
            Target::File(fd) => StatTarget::Fd(fd.as_raw_fd()),
            Target::Path { dir, path, follow } => StatTarget::Path {
                at: At {
                    dir: dir.raw(),
                    path: path.as_path(),
                },
                follow: *follow,
            },
        };
        let result = fs.stat(target).map(|stat| {
            self.buf.stx_size = stat.len;
            self.buf.stx_mode = stat.mode as u16;
            self.buf.stx_nlink = stat.nlink;
            self.buf.stx_ino = stat.ino;
            self.buf.stx_blksize = 4096;
            self.buf.stx_blocks = stat.len.div_ceil(512);
            self.buf.stx_mask = libc::STATX_BASIC_STATS;
            0
        });
        cqe_of(result)
    }
}

/// The fallback's `statx(2)`, into a buffer of its own; holds the file or
/// the directory it names open.
pub struct StatxCall {
    target: Target,
    buf: Box<libc::statx>,
}

impl std::fmt::Debug for StatxCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatxCall")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl BlockingCall for StatxCall {
    fn run(&mut self) -> Cqe {
        let buf: *mut libc::statx = &mut *self.buf;
        let (dir, path, flags) = self.target.args();
        // SAFETY: `buf` is this call's own statx, live for the syscall; the
        // path is a static empty C string or one this call owns.
        let ret = unsafe { libc::statx(dir, path, flags, MASK, buf) };
        Cqe::of_syscall(i64::from(ret))
    }
}

/// A file's metadata, from `statx(2)`.
#[derive(Clone, Copy)]
pub struct Metadata {
    statx: libc::statx,
}

impl Metadata {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.statx.stx_size
    }

    /// Whether the size is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        u32::from(self.statx.stx_mode) & libc::S_IFMT == libc::S_IFREG
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        u32::from(self.statx.stx_mode) & libc::S_IFMT == libc::S_IFDIR
    }

    /// Whether this is a symbolic link (only from
    /// [`symlink_metadata`](crate::fs::symlink_metadata): everything else
    /// follows symlinks).
    pub fn is_symlink(&self) -> bool {
        u32::from(self.statx.stx_mode) & libc::S_IFMT == libc::S_IFLNK
    }

    /// Whether this is a block device.
    pub fn is_block_device(&self) -> bool {
        u32::from(self.statx.stx_mode) & libc::S_IFMT == libc::S_IFBLK
    }

    /// Hard links to the inode (`st_nlink`).
    pub fn nlink(&self) -> u32 {
        self.statx.stx_nlink
    }

    /// The inode number (`st_ino`).
    pub fn ino(&self) -> u64 {
        self.statx.stx_ino
    }

    /// Permission and type bits (`st_mode`).
    pub fn mode(&self) -> u32 {
        u32::from(self.statx.stx_mode)
    }

    /// The preferred I/O block size.
    pub fn block_size(&self) -> u32 {
        self.statx.stx_blksize
    }

    /// 512-byte blocks allocated.
    pub fn blocks(&self) -> u64 {
        self.statx.stx_blocks
    }

    /// Last modification time.
    pub fn modified(&self) -> SystemTime {
        let t = self.statx.stx_mtime;
        SystemTime::UNIX_EPOCH + Duration::new(t.tv_sec as u64, t.tv_nsec)
    }
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata")
            .field("len", &self.len())
            .field("mode", &format_args!("{:o}", self.mode()))
            .field("nlink", &self.nlink())
            .field("blocks", &self.blocks())
            .finish()
    }
}
