//! [`Dir`]: an open directory, whose [`sync_all`](Dir::sync_all) is the
//! directory fsync that makes its names durable, and which the path calls
//! can be relative to (the `*at` forms: `mkdirat`, `renameat2`, ...).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use crate::context::Context;
use crate::context::state::ContextState;
use crate::file::{FileHandles, OpenFile};
use crate::op::Op;
use crate::ops::path::DirFd;
use crate::ops::{
    Fsync, LinkAt, MkdirAt, OpKind, OpenAt, ReadDir, RenameAt, RenameMode, Statx, SymlinkAt,
    UnlinkAt,
};
use crate::pool::membership::Membership;
use crate::pool::placement::Anchor;

use super::File;

/// An open directory.
///
/// Its ops go to the context it was opened on, as a [`File`]'s do. Paths
/// given to its methods are relative to it (an absolute path ignores it).
/// Cheap to clone; the fd closes with the last clone and the last op using
/// it.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use aioctx::fs::{self, Dir, OpenOptions};
///
/// let ctx = aioctx::Context::new()?;
/// let root = std::env::temp_dir().join(format!("aioctx-dir-doc-{}", std::process::id()));
/// ctx.block_on(async {
///     fs::create_dir(&ctx, &root).await?;
///     let dir = Dir::open(&ctx, &root).await?;
///     // Write a new version beside the old, make it durable, switch.
///     let tmp = OpenOptions::new().write(true).create(true).open_at(&dir, "CURRENT.tmp").await?;
///     tmp.write_all_at(b"v2".to_vec(), 0).await.0?;
///     tmp.sync_all().await?;
///     dir.rename("CURRENT.tmp", &dir, "CURRENT").await?;
///     dir.sync_all().await?; // the rename is durable from here on
///     let names: Vec<_> = dir.entries().await?.into_iter().map(|e| e.file_name().to_owned()).collect();
///     assert_eq!(names, ["CURRENT"]);
///     dir.remove_file("CURRENT").await?;
///     fs::remove_dir(&ctx, &root).await
/// })
/// # }
/// ```
#[derive(Clone)]
pub struct Dir {
    file: File,
}

impl Dir {
    /// Opens the directory `path` (`O_RDONLY | O_DIRECTORY`).
    ///
    /// # Errors
    ///
    /// `ENOENT`, `ENOTDIR` if it is not a directory, `EACCES`;
    /// `InvalidInput` for a path with a NUL byte.
    pub async fn open(ctx: &Context, path: impl AsRef<Path>) -> io::Result<Dir> {
        let anchor = Anchor::Context(ctx.state().clone());
        let pool = ctx.membership().cloned();
        Dir::open_from(ctx.state(), pool, anchor, DirFd::cwd(), path.as_ref()).await
    }

    /// Opens the directory `path`, relative to this one.
    ///
    /// # Errors
    ///
    /// As [`open`](Dir::open).
    pub async fn open_dir(&self, path: impl AsRef<Path>) -> io::Result<Dir> {
        let (anchor, state, pool) = self.placement();
        Dir::open_from(&state, pool, anchor, self.fd_for(&state), path.as_ref()).await
    }

    async fn open_from(
        state: &Arc<ContextState>,
        pool: Option<Arc<Membership>>,
        anchor: Anchor,
        at: DirFd,
        path: &Path,
    ) -> io::Result<Dir> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let fd = Op::new(anchor, OpenAt::new(at, path, flags, 0)?).await?;
        let open = OpenFile::new(fd, state.clone(), pool, None);
        let file = File {
            inner: Arc::new(FileHandles::new(open)),
        };
        Ok(Dir { file })
    }

    /// Flushes the directory to the device (`fsync` of the directory): the
    /// names created, renamed or removed in it so far survive a crash from
    /// here on. On Linux, an fsync of a file does not make its name durable;
    /// this does.
    ///
    /// # Errors
    ///
    /// The kernel's errno (`EIO`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    pub fn sync_all(&self) -> Op<Fsync> {
        self.file.sync_all()
    }

    /// The directory's own metadata.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn dir_metadata(&self) -> Op<Statx> {
        self.file.metadata()
    }

    /// The metadata of what `path` (relative to this directory) names,
    /// following symlinks. As [`fs::metadata`](super::metadata).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn metadata(&self, path: impl AsRef<Path>) -> Op<Statx> {
        self.op(Statx::path(self.own_fd(), path.as_ref(), true))
    }

    /// The metadata of what `path` names, a symlink itself rather than its
    /// target. As [`fs::symlink_metadata`](super::symlink_metadata).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn symlink_metadata(&self, path: impl AsRef<Path>) -> Op<Statx> {
        self.op(Statx::path(self.own_fd(), path.as_ref(), false))
    }

    /// Creates the directory `path`. As [`fs::create_dir`](super::create_dir).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped creation may still happen.
    pub fn create_dir(&self, path: impl AsRef<Path>) -> Op<MkdirAt> {
        self.op(MkdirAt::new(self.own_fd(), path.as_ref(), 0o777))
    }

    /// Removes the name `path`. As [`fs::remove_file`](super::remove_file).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped removal may still happen.
    pub fn remove_file(&self, path: impl AsRef<Path>) -> Op<UnlinkAt> {
        self.op(UnlinkAt::new(self.own_fd(), path.as_ref(), false))
    }

    /// Removes the empty directory `path`. As
    /// [`fs::remove_dir`](super::remove_dir).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped removal may still happen.
    pub fn remove_dir(&self, path: impl AsRef<Path>) -> Op<UnlinkAt> {
        self.op(UnlinkAt::new(self.own_fd(), path.as_ref(), true))
    }

    /// Renames `from` (relative to this directory) to `to` (relative to
    /// `to_dir`, which may be this one), replacing `to`, atomically. As
    /// [`fs::rename`](super::rename).
    ///
    /// # Errors
    ///
    /// As [`fs::rename`](super::rename); `EBADF` if `to_dir` belongs to a
    /// simulator other than this directory's context and `to` is relative.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped rename may still happen.
    pub fn rename(
        &self,
        from: impl AsRef<Path>,
        to_dir: &Dir,
        to: impl AsRef<Path>,
    ) -> Op<RenameAt> {
        self.rename_with(from, to_dir, to, RenameMode::Replace)
    }

    /// [`rename`](Dir::rename) as `mode` says. As
    /// [`fs::rename_with`](super::rename_with).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped rename may still happen.
    pub fn rename_with(
        &self,
        from: impl AsRef<Path>,
        to_dir: &Dir,
        to: impl AsRef<Path>,
        mode: RenameMode,
    ) -> Op<RenameAt> {
        let to_fd = to_dir.fd_for(self.state());
        self.op(RenameAt::new(
            self.own_fd(),
            from.as_ref(),
            to_fd,
            to.as_ref(),
            mode.flags(),
        ))
    }

    /// Makes `link` (relative to `link_dir`) a new name for the file
    /// `original` (relative to this directory) names. As
    /// [`fs::hard_link`](super::hard_link).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped link may still be made.
    pub fn hard_link(
        &self,
        original: impl AsRef<Path>,
        link_dir: &Dir,
        link: impl AsRef<Path>,
    ) -> Op<LinkAt> {
        let link_fd = link_dir.fd_for(self.state());
        self.op(LinkAt::new(
            self.own_fd(),
            original.as_ref(),
            link_fd,
            link.as_ref(),
            false,
        ))
    }

    /// Makes `link` (relative to this directory) a symbolic link to
    /// `original`. As [`fs::symlink`](super::symlink).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, but a dropped symlink may still be made.
    pub fn symlink(&self, original: impl AsRef<Path>, link: impl AsRef<Path>) -> Op<SymlinkAt> {
        self.op(SymlinkAt::new(
            original.as_ref(),
            self.own_fd(),
            link.as_ref(),
        ))
    }

    /// The entries of the directory `path` (relative to this one). As
    /// [`fs::read_dir`](super::read_dir): one blocking call, on every
    /// backend but the simulator.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn read_dir(&self, path: impl AsRef<Path>) -> Op<ReadDir> {
        self.op(ReadDir::new(self.own_fd(), path.as_ref()))
    }

    /// This directory's entries: [`read_dir(".")`](Dir::read_dir).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn entries(&self) -> Op<ReadDir> {
        self.read_dir(".")
    }

    /// Closes the directory. As [`File::close`].
    ///
    /// # Errors
    ///
    /// The kernel's `close` error.
    pub async fn close(self) -> io::Result<()> {
        self.file.close().await
    }

    fn state(&self) -> &Arc<ContextState> {
        &self.file.inner.file().state
    }

    /// This directory as the op's own directory: the op's anchor keeps its
    /// fd open, and so does the `DirFd` (for the fallback's call).
    fn own_fd(&self) -> DirFd {
        let open = self.file.inner.file();
        DirFd::open(open.raw(), open.clone())
    }

    /// This directory as a second directory of an op that runs on `on`: its
    /// fd, held open by the op, where it means the same there.
    pub(super) fn fd_for(&self, on: &Arc<ContextState>) -> DirFd {
        let own = self.state();
        if Arc::ptr_eq(own, on) || (own.backend.shares_fds() && on.backend.shares_fds()) {
            self.own_fd()
        } else {
            DirFd::foreign()
        }
    }

    /// Where an op relative to this directory goes: its anchor, and the
    /// context the directory was opened on, and that context's pool.
    pub(super) fn placement(&self) -> (Anchor, Arc<ContextState>, Option<Arc<Membership>>) {
        let file = self.file.inner.file();
        (
            Anchor::for_file_by_fd(&self.file.inner),
            file.state.clone(),
            file.pool.clone(),
        )
    }

    fn op<K: OpKind>(&self, kind: K) -> Op<K> {
        self.file.op_by_fd(kind)
    }
}

impl AsRawFd for Dir {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl fmt::Debug for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dir")
            .field("fd", &self.as_raw_fd())
            .finish()
    }
}
