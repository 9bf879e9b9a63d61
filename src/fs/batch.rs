//! [`Batch`]: reads and writes on one or more files, submitted together as
//! one op that resolves once all of them are done, with one wake of its task
//! (see [`BatchOp`]). Where a design with a task per op wakes a task per
//! read, a B-tree lookup, a vectored page fetch or a compaction read
//! submits its reads as one batch and is woken once.

use std::any::Any;
use std::sync::Arc;

use crate::buf::IoBufMut;
use crate::context::Context;
use crate::file::OpenFile;
use crate::fs::File;
use crate::op::Op;
use crate::ops::rw::Registration;
use crate::ops::{BatchOp, FileFd, ReadAt, WriteAt};
use crate::pool::placement::Anchor;

/// Reads and writes, on one or more files, to submit as one op.
///
/// Add members with [`read_at`](Batch::read_at) and
/// [`write_at`](Batch::write_at), then [`submit`](Batch::submit) the batch
/// to a context. Its output is each member's `(io::Result<usize>, B)`, in
/// the order they were added, with the same results and errors each would
/// have as an op of its own: one member failing (a read past the end, a bad
/// fd, a misaligned `O_DIRECT` buffer) does not fail the others. For a
/// batch on one file, [`File::read_batch`] and [`File::write_batch`] are
/// shorter.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// use aioctx::fs::{Batch, File};
///
/// let ctx = aioctx::Context::new()?;
/// let path = std::env::temp_dir().join(format!("aioctx-batch-doc-{}", std::process::id()));
/// std::fs::write(&path, b"0123456789")?;
/// let inner = ctx.clone();
/// let reads = ctx.block_on(async move {
///     let file = File::open(&inner, &path).await?;
///     let mut batch = Batch::new();
///     batch.read_at(&file, vec![0u8; 4], 0).read_at(&file, vec![0u8; 4], 6);
///     let results = batch.submit(&inner).await;
///     std::fs::remove_file(&path)?;
///     std::io::Result::Ok(results)
/// })?;
/// assert_eq!(reads[0].1, b"0123");
/// assert_eq!(reads[1].1, b"6789");
/// # Ok(())
/// # }
/// ```
///
/// # Cancel safety
///
/// Cancel safe: dropping the op asks the kernel to cancel the members still
/// in flight, and the buffers are released only when every member is over
/// (see [the ops module](crate::ops#cancel-safety)). Dropped writes may have
/// written.
///
/// # Errors
///
/// Per member, as the same read or write alone. A batch of more than 4096
/// members fails as a whole with `InvalidInput`.
pub struct Batch<B> {
    members: Vec<Pending<B>>,
}

struct Pending<B> {
    file: Arc<OpenFile>,
    write: bool,
    buf: B,
    offset: u64,
}

impl<B> std::fmt::Debug for Batch<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("members", &self.members.len())
            .finish()
    }
}

impl<B: IoBufMut> Default for Batch<B> {
    fn default() -> Self {
        Batch::new()
    }
}

impl<B: IoBufMut> Batch<B> {
    /// An empty batch.
    pub fn new() -> Batch<B> {
        Batch {
            members: Vec::new(),
        }
    }

    /// Members so far.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the batch has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Adds a read of up to the buffer's total size at `offset` of `file`
    /// (as [`File::read_at`]).
    pub fn read_at(&mut self, file: &File, buf: B, offset: u64) -> &mut Self {
        self.push(file, false, buf, offset)
    }

    /// Adds a write of the buffer's initialised bytes at `offset` of `file`
    /// (as [`File::write_at`]).
    pub fn write_at(&mut self, file: &File, buf: B, offset: u64) -> &mut Self {
        self.push(file, true, buf, offset)
    }

    fn push(&mut self, file: &File, write: bool, buf: B, offset: u64) -> &mut Self {
        self.members.push(Pending {
            file: file.handles().file().clone(),
            write,
            buf,
            offset,
        });
        self
    }

    /// Submits the batch to `ctx`'s ring (or backend), as one op.
    ///
    /// A member on a file opened on another context of `ctx`'s backend
    /// names the file by its fd; where fds mean something else there (the
    /// simulator's contexts each have their own files), that member fails
    /// with `EINVAL`.
    pub fn submit(self, ctx: &Context) -> Op<BatchOp<B>> {
        let state = ctx.state();
        let op = self.into_op(|file| {
            if Arc::ptr_eq(&file.state, state) {
                (file.fd(), Registration::None)
            } else if file.state.backend.shares_fds() && state.backend.shares_fds() {
                (FileFd::new(file.raw()), Registration::None)
            } else {
                (FileFd::new(file.raw()), Registration::Mismatched)
            }
        });
        Op::new(Anchor::Context(state.clone()), op)
    }

    /// The batch as an op; `fd` says how each member names its file.
    fn into_op(self, fd: impl Fn(&OpenFile) -> (FileFd, Registration)) -> BatchOp<B> {
        let mut op = BatchOp::new();
        let mut files: Vec<Arc<OpenFile>> = Vec::new();
        for Pending {
            file,
            write,
            buf,
            offset,
        } in self.members
        {
            let (fd, registration) = fd(&file);
            if write {
                op.push_write(WriteAt::fixed(fd, buf, offset, registration));
            } else {
                op.push_read(ReadAt::fixed(fd, buf, offset, registration));
            }
            if !files.iter().any(|kept| Arc::ptr_eq(kept, &file)) {
                files.push(file);
            }
        }
        for file in files {
            op.keep(file as Arc<dyn Any + Send + Sync>);
        }
        op
    }
}

impl File {
    /// Reads into each buffer at its offset, as one op: all the reads are
    /// submitted together, and the op resolves once every one is done, with
    /// one wake of its task. See [`Batch`] for the details; this is a batch
    /// on this file alone, whose ops go where this file's ops go.
    ///
    /// # Cancel safety
    ///
    /// As [`Batch`].
    pub fn read_batch<B2>(&self, reads: impl IntoIterator<Item = (B2, u64)>) -> Op<BatchOp<B2>>
    where
        B2: IoBufMut,
    {
        self.batch(reads.into_iter().map(|(buf, offset)| (false, buf, offset)))
    }

    /// Writes each buffer's initialised bytes at its offset, as one op; as
    /// [`read_batch`](File::read_batch).
    ///
    /// # Cancel safety
    ///
    /// As [`Batch`]; dropped writes may have written.
    pub fn write_batch<B2>(&self, writes: impl IntoIterator<Item = (B2, u64)>) -> Op<BatchOp<B2>>
    where
        B2: IoBufMut,
    {
        self.batch(writes.into_iter().map(|(buf, offset)| (true, buf, offset)))
    }

    fn batch<B2: IoBufMut>(
        &self,
        members: impl Iterator<Item = (bool, B2, u64)>,
    ) -> Op<BatchOp<B2>> {
        let file = self.handles().file();
        let batch = Batch {
            members: members
                .map(|(write, buf, offset)| Pending {
                    file: file.clone(),
                    write,
                    buf,
                    offset,
                })
                .collect(),
        };
        // Where this file's ops go, naming it as a read of its own would
        // there: by its fd, or by its slot in that ring's table.
        let (anchor, fd) = Anchor::for_file(self.handles());
        let op = batch.into_op(|_| (fd, Registration::None));
        Op::new(anchor, op)
    }
}
