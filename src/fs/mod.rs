//! [`File`]: positional file I/O through a context's ring, with owned buffers.
//!
//! A `File` is `Clone + Send + Sync` and may be used from any thread; its ops
//! go to the context it was opened on (or, in a pool, the calling thread's
//! member). [`FileStream`] adapts a file to Tokio's `AsyncRead`, `AsyncWrite`
//! and `AsyncSeek`. Every op takes its buffer by value and hands
//! it back with the result, `(io::Result<usize>, B)`, so nothing borrowed can
//! be freed while the kernel writes. See [the ops module](crate::ops#cancel-safety)
//! for what dropping an op future mid-flight does.
//!
//! # Names and directories
//!
//! The namespace is I/O too: [`rename`] (and [`rename_with`] for
//! `RENAME_NOREPLACE` and `RENAME_EXCHANGE`), [`remove_file`],
//! [`remove_dir`], [`create_dir`], [`hard_link`], [`symlink`], [`metadata`]
//! and [`symlink_metadata`] are ops like reads, in the shape of `std::fs`
//! and `tokio::fs` with the context first, cancel safe, on every backend. On
//! the ring they are `IORING_OP_RENAMEAT`, `UNLINKAT`, `MKDIRAT`, `LINKAT`,
//! `SYMLINKAT` and `STATX`; where the kernel lacks one (before 5.15) its op
//! runs as a blocking call instead, never an error
//! ([`RingFlags::opcodes_blocking`](crate::RingFlags::opcodes_blocking)).
//! [`read_dir`] has no opcode: it is one blocking call on every backend. A
//! [`Dir`] is an open directory: the same calls relative to it (the `*at`
//! forms, and [`OpenOptions::open_at`]), and its [`sync_all`](Dir::sync_all).
//!
//! # Durability
//!
//! What survives a crash is what was fsynced, and a name is not its file's
//! data. An fsync of a file ([`File::sync_all`], [`File::sync_data`]) makes
//! its data durable, not its name: a created, renamed or removed name is
//! durable once its directory has been fsynced ([`Dir::sync_all`],
//! [`sync_dir`]). The safe way to replace a file is: write a new one,
//! fsync it, [`rename`] it over the old name, fsync the directory. Skip the
//! first fsync and a crash may leave the new name on an empty file; skip
//! the last and the old name may come back. An fsync that fails (`EIO`)
//! has dropped the data it could not write: retrying it reports success
//! without bringing that data back. The simulator ([`sim`](crate::sim))
//! models all of this, so tests find these bugs.
//!
//! # O_DIRECT
//!
//! Open with [`OpenOptions::direct`] to bypass the page cache. The kernel then
//! requires the buffer address, the length and the offset to be multiples of
//! the file's direct-I/O alignment, usually the device's logical block size
//! (use [`AlignedBuf`](crate::buf::AlignedBuf), 4096-aligned). A read or
//! write that breaks the rule fails with an error of kind `InvalidInput`
//! whose message says which of the three is misaligned and to what, for
//! example "O_DIRECT read refused (EINVAL): the offset 3 is not a multiple of
//! 512, the file's direct-I/O alignment (statx)"; its payload is a
//! [`Misaligned`], which keeps the errno (the `io::Error` itself has no
//! `raw_os_error()`: it holds a payload or an errno, not both). The context
//! and the file stay usable. This holds on every backend.
//!
//! A [`FileStream`] over an `O_DIRECT` file aligns its own buffers and
//! shapes its ops to whole blocks, so `tokio::io::copy` works through it; a
//! partial last block it cannot write is reported by its `flush` (see
//! [`FileStream`'s docs](FileStream#o_direct)).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

mod batch;
mod dir;
mod options;
mod paths;
mod stream;

pub use batch::Batch;
pub use dir::Dir;
pub use options::OpenOptions;
pub use paths::{
    create_dir, create_dir_all, hard_link, metadata, read_dir, remove_dir, remove_file, rename,
    rename_with, symlink, symlink_metadata, sync_dir,
};
pub use stream::FileStream;

use crate::buf::{IoBuf, IoBufMut};
use crate::context::Context;
pub use crate::error::{Misaligned, MisalignedPart};
use crate::file::{FileHandles, OpenFile};
use crate::fixed::FixedBuf;
use crate::op::Op;
use crate::ops::rw::Registration;
use crate::ops::{
    Close, Fallocate, FileFd, Fsync, Ftruncate, OpKind, ReadAt, ReadvAt, Statx, WriteAt, WritevAt,
};
pub use crate::ops::{DirEntry, FileType, Metadata, RenameMode};
use crate::pool::placement::Anchor;

/// An open file whose I/O runs on a context's ring.
///
/// Cheap to clone: clones share the fd, which closes when the last clone (and
/// the last op using it) is gone. The file shares its fd with its ops in
/// flight: each op holds one reference (its anchor), so the fd stays open,
/// and the context reachable, until the kernel is done with the op.
///
/// Ops go to the context the file was opened on; if that context is a member
/// of a [`Pool`](crate::Pool), each op goes to the calling thread's member
/// instead (see the pool's docs). [`File::stream`] gives a cursor that
/// implements Tokio's `AsyncRead`, `AsyncWrite` and `AsyncSeek`.
#[derive(Clone)]
pub struct File {
    inner: Arc<FileHandles>,
}

impl File {
    /// Opens `path` read-only.
    ///
    /// # Errors
    ///
    /// The kernel's `openat` error.
    pub async fn open(ctx: &Context, path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new().read(true).open(ctx, path).await
    }

    /// Opens `path` write-only, creating it or truncating it.
    ///
    /// # Errors
    ///
    /// The kernel's `openat` error.
    pub async fn create(ctx: &Context, path: impl AsRef<Path>) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(ctx, path)
            .await
    }

    /// Adopts an fd opened elsewhere; its I/O will run on `ctx`.
    pub fn from_fd(ctx: &Context, fd: OwnedFd) -> File {
        File {
            inner: Arc::new(FileHandles::new(OpenFile::new(
                fd,
                ctx.state().clone(),
                ctx.membership().cloned(),
                None,
            ))),
        }
    }

    /// Reads up to the buffer's total size at `offset`; the buffer's
    /// initialised length grows to cover what was read. `Ok(0)` is end of file.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    pub fn read_at<B: IoBufMut>(&self, buf: B, offset: u64) -> Op<ReadAt<B>> {
        self.op(ReadAt::new(self.fd(), buf, 0, offset))
    }

    /// Writes the buffer's initialised bytes at `offset`; may write fewer.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped write may still have written.
    pub fn write_at<B: IoBuf>(&self, buf: B, offset: u64) -> Op<WriteAt<B>> {
        self.op(WriteAt::new(self.fd(), buf, 0, offset))
    }

    /// Fills the whole buffer (its total size) from `offset`, resubmitting the
    /// remainder after short reads.
    ///
    /// # Errors
    ///
    /// `UnexpectedEof` if the file ends first. A read that fails with `EINTR`
    /// is resubmitted; `EAGAIN` (`WouldBlock`) is returned, not retried: the
    /// kernel posts it only for non-blocking I/O (a pipe, socket or device
    /// opened `O_NONBLOCK` and adopted with [`File::from_fd`]), where
    /// resubmitting at once would spin. Any other error is returned with the
    /// kernel's errno. Either way the buffer keeps what was read.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe as a whole: dropping it loses the buffer and how much
    /// was read; each underlying read is.
    pub async fn read_exact_at<B: IoBufMut>(&self, mut buf: B, offset: u64) -> (io::Result<()>, B) {
        let total = buf.bytes_total();
        let mut filled = 0;
        while filled < total {
            let (result, returned) = self
                .op(ReadAt::new(self.fd(), buf, filled, offset + filled as u64))
                .await;
            buf = returned;
            match result {
                Ok(0) => {
                    let eof = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "end of file before the buffer was filled",
                    );
                    return (Err(eof), buf);
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes all of the buffer's initialised bytes at `offset`, resubmitting
    /// the remainder after short writes.
    ///
    /// # Errors
    ///
    /// `WriteZero` if the kernel accepts nothing. As for
    /// [`read_exact_at`](File::read_exact_at), `EINTR` is retried and
    /// `EAGAIN` returned; otherwise the write's error, with its errno.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe as a whole: dropping it loses the buffer and how much
    /// was written; each underlying write is.
    pub async fn write_all_at<B: IoBuf>(&self, mut buf: B, offset: u64) -> (io::Result<()>, B) {
        let total = buf.bytes_init();
        let mut written = 0;
        while written < total {
            let (result, returned) = self
                .op(WriteAt::new(
                    self.fd(),
                    buf,
                    written,
                    offset + written as u64,
                ))
                .await;
            buf = returned;
            match result {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Reads into each buffer in turn at `offset` (`preadv`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    pub fn readv_at<B: IoBufMut>(&self, bufs: Vec<B>, offset: u64) -> Op<ReadvAt<B>> {
        self.op(ReadvAt::new(self.fd(), bufs, offset))
    }

    /// Writes each buffer's initialised bytes in turn at `offset` (`pwritev`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped write may still have written.
    pub fn writev_at<B: IoBuf>(&self, bufs: Vec<B>, offset: u64) -> Op<WritevAt<B>> {
        self.op(WritevAt::new(self.fd(), bufs, offset))
    }

    /// Flushes data and metadata to the device (`fsync`). Not the file's
    /// name: see [durability](self#durability).
    ///
    /// # Errors
    ///
    /// `EIO` (or `ENOSPC`) for a writeback error: the data that could not
    /// be written is gone from the page cache's dirty set, and a retried
    /// fsync does not bring it back.
    pub fn sync_all(&self) -> Op<Fsync> {
        self.op(Fsync::new(self.fd(), false))
    }

    /// Flushes data, and metadata only as needed to read it back (`fdatasync`).
    pub fn sync_data(&self) -> Op<Fsync> {
        self.op(Fsync::new(self.fd(), true))
    }

    /// `fallocate(2)`: `mode` 0 allocates `len` bytes at `offset` (growing the
    /// file); see `libc::FALLOC_FL_*` for the others.
    pub fn fallocate(&self, offset: u64, len: u64, mode: i32) -> Op<Fallocate> {
        self.op(Fallocate::new(self.fd(), offset, len, mode))
    }

    /// Truncates or extends the file to `len` bytes (`ftruncate`).
    pub fn set_len(&self, len: u64) -> Op<Ftruncate> {
        self.op(Ftruncate::new(self.fd(), len))
    }

    /// The file's metadata (`statx`).
    pub fn metadata(&self) -> Op<Statx> {
        self.op(Statx::new(self.fd()))
    }

    /// Closes the file through the ring and reports the kernel's verdict.
    ///
    /// Other clones of the file, and ops still in flight, keep the fd open;
    /// then this returns `Ok(())` at once and the close happens when the last
    /// of them is gone (synchronously, with no error to report).
    ///
    /// A registered file leaves its ring's file table first, so the close
    /// releases it (its `flock`s, a deleted file's disk space) as it would an
    /// unregistered one.
    pub async fn close(self) -> io::Result<()> {
        let Some(mut file) = Arc::try_unwrap(self.inner)
            .ok()
            .and_then(FileHandles::into_only)
        else {
            return Ok(());
        };
        file.unregister().await;
        let fd = file.take_fd();
        // On the calling thread's member or ring where the file's ops follow
        // threads (the ring it was opened on may have closed with its
        // thread), on its own context otherwise.
        let on = file
            .pool
            .as_ref()
            .and_then(|pool| pool.elsewhere(&file.state))
            .unwrap_or_else(|| file.state.clone());
        Op::new(Anchor::Context(on), Close::new(fd)).await
    }

    /// Whether the file is registered with its ring (see
    /// [`OpenOptions::register`]).
    pub fn is_registered(&self) -> bool {
        self.inner.file().is_registered()
    }

    /// Reads into a registered buffer at `offset`, up to the buffer's
    /// capacity: `IORING_OP_READ_FIXED`, which skips pinning the buffer's
    /// pages. The op goes to the ring the buffer is registered with, from
    /// any thread.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the buffer belongs to a context whose fds mean something
    /// else than this file's (a simulator's buffer with a real file, or the
    /// reverse); otherwise as [`read_at`](File::read_at).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the buffer goes back to its pool when the kernel is done
    /// with it.
    pub fn read_fixed_at(&self, buf: FixedBuf, offset: u64) -> Op<ReadAt<FixedBuf>> {
        let (anchor, fd, registration) = self.fixed_placement(&buf);
        Op::new(anchor, ReadAt::fixed(fd, buf, offset, registration))
    }

    /// Writes a registered buffer's data at `offset`:
    /// `IORING_OP_WRITE_FIXED`. As [`read_fixed_at`](File::read_fixed_at).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped write may still have written.
    pub fn write_fixed_at(&self, buf: FixedBuf, offset: u64) -> Op<WriteAt<FixedBuf>> {
        let (anchor, fd, registration) = self.fixed_placement(&buf);
        Op::new(anchor, WriteAt::fixed(fd, buf, offset, registration))
    }

    /// Where a fixed op on `buf` goes (the buffer's ring), the fd it names
    /// there, and how it uses the buffer.
    fn fixed_placement(&self, buf: &FixedBuf) -> (Anchor, FileFd, Registration) {
        let file = self.inner.file();
        let on = buf.context().clone();
        let own = Arc::ptr_eq(&on, &file.state);
        let fd = if own {
            file.fd()
        } else {
            FileFd::new(file.raw())
        };
        let fds_agree = own || (on.backend.shares_fds() && file.state.backend.shares_fds());
        let registration = if !fds_agree {
            Registration::Mismatched
        } else {
            buf.slot().map_or(Registration::None, Registration::Slot)
        };
        let anchor = Anchor::FileOn {
            _file: file.clone(),
            on,
        };
        (anchor, fd, registration)
    }

    /// A cursor over this file (a clone) from position 0, implementing
    /// Tokio's `AsyncRead`, `AsyncWrite` and `AsyncSeek`; see [`FileStream`]
    /// (its writes run behind, in a task that finishes them even if the
    /// stream is dropped; over an `O_DIRECT` file its buffers are aligned).
    pub fn stream(&self) -> FileStream {
        FileStream::new(self.clone())
    }

    /// What the file's handles share.
    pub(crate) fn handles(&self) -> &FileHandles {
        &self.inner
    }

    /// The fd an op's SQE names the file by on its own context: its slot
    /// there where it has one. An op that goes elsewhere through a view is
    /// given the view's instead ([`op`](File::op)).
    fn fd(&self) -> FileFd {
        self.inner.file().fd()
    }

    /// `kind`, made with [`fd`](File::fd), as an op where the calling
    /// thread's ops on this file go.
    fn op<K: OpKind>(&self, kind: K) -> Op<K> {
        if self.inner.has_any_views() {
            return File::op_through_view(&self.inner, kind);
        }
        Op::new(Anchor::File(self.inner.file().clone()), kind)
    }

    /// [`op`](File::op) for a file whose ops follow threads, out of line (so
    /// the plain file's path stays small enough to inline): the anchor and
    /// the fd (or slot) the op names the file by, both from the view of the
    /// calling thread's ring or member.
    #[inline(never)]
    fn op_through_view<K: OpKind>(handles: &FileHandles, mut kind: K) -> Op<K> {
        let (anchor, fd) = Anchor::for_file(handles);
        kind.name_file_by(fd.slot());
        Op::new(anchor, kind)
    }

    /// An op relative to this file (a directory) that names it by its fd
    /// wherever it goes, as `*at` calls do.
    pub(crate) fn op_by_fd<K: OpKind>(&self, kind: K) -> Op<K> {
        Op::new(Anchor::for_file_by_fd(&self.inner), kind)
    }

    /// The open file every clone shares.
    pub(crate) fn open_file(&self) -> &Arc<OpenFile> {
        self.inner.file()
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.file().raw()
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("fd", &self.inner.file().raw())
            .field("registered", &self.inner.file().is_registered())
            .finish()
    }
}
