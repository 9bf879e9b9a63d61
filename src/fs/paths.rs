//! The file system's namespace as free functions in the shape of
//! `std::fs` and `tokio::fs`, each with the context whose ring runs it
//! first: [`rename`], [`remove_file`], [`create_dir`], [`hard_link`],
//! [`symlink`], [`metadata`], [`read_dir`], ... A relative path is resolved
//! from the process's current directory (the root, on the simulator); the
//! same calls relative to an open directory are on [`Dir`].
//!
//! Each returns the op's future (except the two that take several ops,
//! [`create_dir_all`] and [`sync_dir`]). A name change is durable only once
//! the directory holding the name has been fsynced ([`sync_dir`], or
//! [`Dir::sync_all`]); see the [`fs`](crate::fs#durability) module docs.

use std::io;
use std::path::Path;

use crate::context::Context;
use crate::op::Op;
use crate::ops::path::DirFd;
use crate::ops::{LinkAt, MkdirAt, ReadDir, RenameAt, RenameMode, Statx, SymlinkAt, UnlinkAt};
use crate::pool::placement::Anchor;

use super::Dir;

fn op<K: crate::ops::OpKind>(ctx: &Context, kind: K) -> Op<K> {
    Op::new(Anchor::Context(ctx.state().clone()), kind)
}

/// Renames `from` to `to`, replacing `to` if it exists, atomically: the
/// name `to` leads to the old file or the new one, never to neither
/// (`renameat2(2)`; `IORING_OP_RENAMEAT`).
///
/// Durable once the directories of both names have been fsynced.
///
/// # Errors
///
/// The kernel's errno: `ENOENT` if `from` or the directory of `to` does not
/// exist, `EISDIR` / `ENOTDIR` for a file over a directory or the reverse,
/// `ENOTEMPTY` for a directory over a non-empty one, `EINVAL` for a
/// directory moved below itself, `EXDEV` across file systems,
/// `ENAMETOOLONG`; `InvalidInput` for a path with a NUL byte.
///
/// # Cancel safety
///
/// Cancel safe (see [the ops module](crate::ops#cancel-safety)), but a
/// dropped rename may still happen.
pub fn rename(ctx: &Context, from: impl AsRef<Path>, to: impl AsRef<Path>) -> Op<RenameAt> {
    rename_with(ctx, from, to, RenameMode::Replace)
}

/// Renames `from` to `to` as `mode` says: [`rename`], or failing with
/// `EEXIST` if `to` exists ([`RenameMode::NoReplace`]), or swapping the two
/// ([`RenameMode::Exchange`]).
///
/// # Errors
///
/// As [`rename`]; with `NoReplace`, `EEXIST` if `to` exists; with
/// `Exchange`, `ENOENT` if it does not.
///
/// # Cancel safety
///
/// As [`rename`].
pub fn rename_with(
    ctx: &Context,
    from: impl AsRef<Path>,
    to: impl AsRef<Path>,
    mode: RenameMode,
) -> Op<RenameAt> {
    let kind = RenameAt::new(
        DirFd::cwd(),
        from.as_ref(),
        DirFd::cwd(),
        to.as_ref(),
        mode.flags(),
    );
    op(ctx, kind)
}

/// Removes a file's name (`unlinkat(2)`; `IORING_OP_UNLINKAT`). The file
/// itself goes with its last name and its last open fd.
///
/// # Errors
///
/// `ENOENT` if it does not exist, `EISDIR` for a directory (use
/// [`remove_dir`]), `ENOTDIR` if a component of the path is not a
/// directory, `ENAMETOOLONG`; `InvalidInput` for a path with a NUL byte.
///
/// # Cancel safety
///
/// Cancel safe, but a dropped removal may still happen.
pub fn remove_file(ctx: &Context, path: impl AsRef<Path>) -> Op<UnlinkAt> {
    op(ctx, UnlinkAt::new(DirFd::cwd(), path.as_ref(), false))
}

/// Removes an empty directory (`unlinkat(2)` with `AT_REMOVEDIR`).
///
/// # Errors
///
/// `ENOENT`, `ENOTDIR` if it is not a directory, `ENOTEMPTY` if it holds
/// anything, `EBUSY` for a mount point or the root, `EINVAL` for a path
/// ending in `.`; `InvalidInput` for a path with a NUL byte.
///
/// # Cancel safety
///
/// Cancel safe, but a dropped removal may still happen.
pub fn remove_dir(ctx: &Context, path: impl AsRef<Path>) -> Op<UnlinkAt> {
    op(ctx, UnlinkAt::new(DirFd::cwd(), path.as_ref(), true))
}

/// Creates a directory (`mkdirat(2)`, mode `0o777` before the umask;
/// `IORING_OP_MKDIRAT`).
///
/// # Errors
///
/// `EEXIST` if the name exists (whatever it is), `ENOENT` if its parent
/// does not, `ENOTDIR`, `ENAMETOOLONG`; `InvalidInput` for a path with a
/// NUL byte.
///
/// # Cancel safety
///
/// Cancel safe, but a dropped creation may still happen.
pub fn create_dir(ctx: &Context, path: impl AsRef<Path>) -> Op<MkdirAt> {
    op(ctx, MkdirAt::new(DirFd::cwd(), path.as_ref(), 0o777))
}

/// Creates a directory and every missing directory above it, as
/// `std::fs::create_dir_all`: one [`create_dir`] per missing level.
///
/// # Errors
///
/// The first [`create_dir`] error other than "it exists as a directory".
///
/// # Cancel safety
///
/// Not cancel safe as a whole: dropped midway, some levels exist.
pub async fn create_dir_all(ctx: &Context, path: impl AsRef<Path>) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path.as_ref());
    // Up from the path to the first level that exists (or is made).
    while let Some(level) = at.filter(|level| !level.as_os_str().is_empty()) {
        match create_dir(ctx, level).await {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(level);
                at = level.parent();
            }
            Err(_) if is_dir(ctx, level).await => break,
            Err(e) => return Err(e),
        }
    }
    for level in missing.into_iter().rev() {
        match create_dir(ctx, level).await {
            Ok(()) => {}
            Err(_) if is_dir(ctx, level).await => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn is_dir(ctx: &Context, path: &Path) -> bool {
    metadata(ctx, path).await.is_ok_and(|m| m.is_dir())
}

/// Makes `link` a new name for the file `original` names (`linkat(2)`,
/// not following a symlink; `IORING_OP_LINKAT`).
///
/// # Errors
///
/// `EEXIST` if `link` exists, `ENOENT` if `original` (or `link`'s parent)
/// does not, `EPERM` for a directory, `EXDEV` across file systems;
/// `InvalidInput` for a path with a NUL byte.
///
/// # Cancel safety
///
/// Cancel safe, but a dropped link may still be made.
pub fn hard_link(ctx: &Context, original: impl AsRef<Path>, link: impl AsRef<Path>) -> Op<LinkAt> {
    let kind = LinkAt::new(
        DirFd::cwd(),
        original.as_ref(),
        DirFd::cwd(),
        link.as_ref(),
        false,
    );
    op(ctx, kind)
}

/// Makes `link` a symbolic link to `original`, which is stored as it is and
/// need not exist (`symlinkat(2)`; `IORING_OP_SYMLINKAT`).
///
/// # Errors
///
/// `EEXIST` if `link` exists, `ENOENT` if its parent does not or `original`
/// is empty; `InvalidInput` for a path with a NUL byte.
///
/// # Cancel safety
///
/// Cancel safe, but a dropped symlink may still be made.
pub fn symlink(ctx: &Context, original: impl AsRef<Path>, link: impl AsRef<Path>) -> Op<SymlinkAt> {
    op(
        ctx,
        SymlinkAt::new(original.as_ref(), DirFd::cwd(), link.as_ref()),
    )
}

/// The metadata of what `path` names, following symlinks (`statx(2)`).
///
/// # Errors
///
/// `ENOENT`, `ENOTDIR`, `ELOOP`, `ENAMETOOLONG`; `InvalidInput` for a path
/// with a NUL byte.
///
/// # Cancel safety
///
/// Cancel safe; see [the ops module](crate::ops#cancel-safety).
pub fn metadata(ctx: &Context, path: impl AsRef<Path>) -> Op<Statx> {
    op(ctx, Statx::path(DirFd::cwd(), path.as_ref(), true))
}

/// The metadata of what `path` names, a symlink itself rather than its
/// target (`statx(2)` with `AT_SYMLINK_NOFOLLOW`).
///
/// # Errors
///
/// As [`metadata`].
///
/// # Cancel safety
///
/// Cancel safe; see [the ops module](crate::ops#cancel-safety).
pub fn symlink_metadata(ctx: &Context, path: impl AsRef<Path>) -> Op<Statx> {
    op(ctx, Statx::path(DirFd::cwd(), path.as_ref(), false))
}

/// The entries of the directory `path` (without `.` and `..`), in no
/// particular order.
///
/// io_uring has no opcode for listing a directory, so this is one blocking
/// call (`openat`, `readdir` to the end, `closedir`) on the home runtime's
/// blocking pool on the ring as on the fallback, counted in
/// [`Metrics::ops_blocking`](crate::Metrics::ops_blocking) on the ring; the
/// simulator lists its directory in virtual time like any op. A directory
/// that changes meanwhile may be listed with or without the change.
///
/// # Errors
///
/// `ENOENT`, `ENOTDIR` if it is not a directory, `EACCES`; `InvalidInput`
/// for a path with a NUL byte.
///
/// # Cancel safety
///
/// Cancel safe; a listing already running finishes on its pool thread.
pub fn read_dir(ctx: &Context, path: impl AsRef<Path>) -> Op<ReadDir> {
    op(ctx, ReadDir::new(DirFd::cwd(), path.as_ref()))
}

/// Makes the names in the directory `path` durable: opens it, fsyncs it
/// ([`Dir::sync_all`]), closes it. After a file is created, renamed or
/// removed, this is what makes the change survive a crash.
///
/// # Errors
///
/// The open's error (`ENOENT`, `ENOTDIR`), or the fsync's (`EIO`).
///
/// # Cancel safety
///
/// Cancel safe: dropped, the directory is closed; the fsync may still
/// happen.
pub async fn sync_dir(ctx: &Context, path: impl AsRef<Path>) -> io::Result<()> {
    let dir = Dir::open(ctx, path).await?;
    dir.sync_all().await?;
    dir.close().await
}
