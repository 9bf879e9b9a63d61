//! [`Op`], the future that runs one operation, what it anchors (its context,
//! its file), and the op constructors that live on [`Context`].
//!
//! An op starts as an [`OpKind`](crate::ops::OpKind) value: the opcode's
//! arguments and the resources it owns (buffers, fds). On its first poll the
//! future moves it into a heap cell (`lifecycle`), hands the backend a
//! reference to the cell, and keeps the other:
//!
//! ```text
//!   future ──FutureHalf──► OpCell { state, waker, outcome, op, anchor } ◄──backend reference
//! ```
//!
//! The backend keeps its reference until the op is over (on the ring: until
//! the CQE arrives), so the kernel never writes memory that has been freed
//! (invariant 4), whatever the future does. A future dropped early gives its
//! reference to the backend as a cancel request; the op's resources are
//! released when the op is over.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use std::{fmt, future::Future, pin::Pin};

use crate::backend::{Anchored, AnyBackend, Placement, start};
use crate::context::{Context, Shared};
use crate::lifecycle::FutureHalf;
use crate::ops::raw::RawOp;
use crate::ops::{FileFd, Nop, OpKind, Timeout};

/// What an op holds on to: its context, and for a file's op the file (whose
/// fd must stay open until the kernel is done with the op).
///
/// One reference per op, kept in the op's cell until the cell is freed: the
/// op's future reaches its context through it, and the op's SQE names the fd
/// it keeps open.
#[derive(Clone)]
pub(crate) enum Anchor {
    Context(Arc<Shared>),
    /// A file's op on the file's own context.
    File(Arc<OpenFile>),
    /// A file's op on another context of the file's pool: the calling
    /// thread's. The file is held only to keep its fd open.
    FileOn {
        _file: Arc<OpenFile>,
        on: Arc<Shared>,
    },
    /// A pool file's op on the member whose thread made it, through that
    /// member's view of the file: the op counts a reference on the view,
    /// which only that member's ops touch.
    Member(Arc<MemberFile>),
}

/// A file as its handles ([`File`](crate::fs::File) clones) hold it: the open
/// file, and for a file whose ops follow the calling thread around a pool,
/// one view of it per member, made the first time that member uses it.
///
/// ```text
///   File ──► FileHandles ──► OpenFile (fd)
///                 └─ views[i] ──► MemberFile { file ─► OpenFile, on ─► member i }
///   op made on member i's thread ──anchor──► views[i]
/// ```
///
/// An op holds its member's view rather than the open file, so the ops of
/// different members never write the same reference count (every op clones
/// and drops its anchor): view i's count is written only by the threads
/// placed on member i (its home thread, and the threads whose sticky member
/// it is). The views hold the open file, never the handles, so nothing
/// cycles: the last handle's drop drops the views, and the open file (its
/// fd) goes with the last view an op still holds. Aligned to a cache line,
/// so that cloning a `File` (which writes the handles' count) does not
/// disturb the line every op reads the views from.
#[repr(align(64))]
pub(crate) struct FileHandles {
    file: Arc<OpenFile>,
    /// One per member; empty unless the file's ops follow threads (a pool's
    /// file, unregistered, on a backend whose fds every member shares).
    views: Box<[OnceLock<Arc<MemberFile>>]>,
}

/// A pool file as one member uses it; see [`FileHandles`]. Aligned to a cache
/// line of its own, so its reference count shares the line with nothing
/// another member writes.
#[repr(align(64))]
pub(crate) struct MemberFile {
    /// Keeps the fd open while an op holds the view.
    file: Arc<OpenFile>,
    on: Arc<Shared>,
    /// The member's index in its pool.
    index: usize,
}

/// An open file: its fd, its slot in the ring's file table if it is
/// registered, and the context its ops go to.
///
/// A registered file leaves the table before its fd is closed, so the file
/// (its `flock`s, the disk space of a deleted file) is released at close as
/// for any file: [`File::close`](crate::fs::File::close) unregisters and
/// then closes; a drop does the same on the home thread, right away there,
/// through a task from elsewhere.
pub(crate) struct OpenFile {
    /// `Some` until taken to be closed.
    fd: Option<OwnedFd>,
    raw: RawFd,
    slot: Option<u32>,
    pub(crate) shared: Arc<Shared>,
}

impl OpenFile {
    pub(crate) fn new(fd: OwnedFd, shared: Arc<Shared>, slot: Option<u32>) -> OpenFile {
        OpenFile {
            raw: fd.as_raw_fd(),
            fd: Some(fd),
            slot,
            shared,
        }
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.raw
    }

    /// Whether the file is in its ring's file table.
    pub(crate) fn is_registered(&self) -> bool {
        self.slot.is_some()
    }

    /// The fd for an op on the file's own context: its slot where it has one.
    pub(crate) fn fd(&self) -> FileFd {
        match self.slot {
            Some(slot) => FileFd::registered(self.raw, slot),
            None => FileFd::new(self.raw),
        }
    }

    /// Takes the file out of the ring's file table, on the home thread.
    pub(crate) async fn unregister(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        if self.shared.home().is_current() {
            self.shared.backend.unregister_file(slot);
            return;
        }
        let shared = self.shared.clone();
        // Gone with the runtime means gone with the ring, and its table.
        let _ = self
            .shared
            .runtime()
            .spawn(async move { shared.backend.unregister_file(slot) })
            .await;
    }

    /// The fd, to close: after [`unregister`](OpenFile::unregister).
    pub(crate) fn take_fd(&mut self) -> OwnedFd {
        debug_assert!(self.slot.is_none(), "closing a file still in the table");
        self.fd
            .take()
            .expect("an open file has its fd until closed")
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let fd = self.fd.take();
        if self.shared.home().is_current() {
            self.shared.backend.unregister_file(slot);
            drop(fd);
            return;
        }
        let shared = self.shared.clone();
        // If the runtime is gone the task is dropped unrun, closing the fd:
        // the ring, and its table, are gone too.
        drop(self.shared.runtime().clone().spawn(async move {
            shared.backend.unregister_file(slot);
            drop(fd);
        }));
    }
}

impl FileHandles {
    pub(crate) fn new(file: OpenFile) -> FileHandles {
        let members = match (file.is_registered(), file.shared.pool.get()) {
            (false, Some(pool)) if pool.files_follow_threads() => pool.len(),
            _ => 0,
        };
        FileHandles {
            file: Arc::new(file),
            views: (0..members).map(|_| OnceLock::new()).collect(),
        }
    }

    pub(crate) fn file(&self) -> &Arc<OpenFile> {
        &self.file
    }

    /// The anchor of an op made on the calling thread: its member's view of
    /// a pool file, otherwise the file.
    #[inline]
    pub(crate) fn anchor(&self) -> Anchor {
        if !self.views.is_empty() {
            let view = self
                .file
                .shared
                .pool
                .get()
                .and_then(|pool| self.view(pool.pick()));
            if let Some(view) = view {
                return Anchor::Member(view.clone());
            }
        }
        Anchor::File(self.file.clone())
    }

    /// Member `index`'s view, made on first use; `None` if the member is
    /// gone (its ops would go to the file's own context anyway).
    fn view(&self, index: usize) -> Option<&Arc<MemberFile>> {
        let slot = &self.views[index];
        if let Some(view) = slot.get() {
            return Some(view);
        }
        let on = self.file.shared.pool.get()?.member(index)?;
        Some(slot.get_or_init(|| {
            Arc::new(MemberFile {
                file: self.file.clone(),
                on,
                index,
            })
        }))
    }

    /// The open file, if these were its last handles and no op holds it
    /// (through a view or not).
    pub(crate) fn into_only(self) -> Option<OpenFile> {
        // The views first: an op in flight keeps its own.
        drop(self.views);
        Arc::try_unwrap(self.file).ok()
    }
}

impl Anchor {
    fn shared(&self) -> &Arc<Shared> {
        match self {
            Anchor::Context(shared) | Anchor::FileOn { on: shared, .. } => shared,
            Anchor::File(file) => &file.shared,
            Anchor::Member(view) => &view.on,
        }
    }

    /// Where the op goes, decided on the thread that submits it: a file on a
    /// pool context goes to the calling thread's member of the pool (its own
    /// ring on a member's home thread), everything else where it was made.
    #[inline]
    fn place(self) -> Anchor {
        let file = match self {
            Anchor::File(file) => file,
            Anchor::Member(view) => {
                // Made on this thread's member: the common case. On a
                // member's home thread one token compare tells; elsewhere,
                // the thread's sticky member.
                if view.on.home().is_current()
                    || view.file.shared.pool.get().map(|pool| pool.pick()) == Some(view.index)
                {
                    return Anchor::Member(view);
                }
                // First polled on another thread than it was made on (rare):
                // placed as a file's op, holding the open file itself.
                view.file.clone()
            }
            _ => return self,
        };
        // A registered file's ops name its slot in its own ring's table.
        let elsewhere = match file.is_registered() {
            true => None,
            false => file
                .shared
                .pool
                .get()
                .and_then(|pool| pool.elsewhere(&file.shared)),
        };
        // The file's reference moves into the new anchor: one count taken
        // per op, not two.
        match elsewhere {
            Some(on) => Anchor::FileOn { _file: file, on },
            None => Anchor::File(file),
        }
    }
}

impl Anchored for Anchor {
    fn backend(&self) -> &AnyBackend {
        &self.shared().backend
    }
}

/// The future of one operation. Created unsubmitted; submitted on first poll.
///
/// Dropping it before it resolves is always safe and never blocks: the op's
/// resources go to the driver until the kernel is done with them, and the
/// driver asks the kernel to cancel the op. See [the ops
/// module](crate::ops#cancel-safety).
#[must_use = "ops do nothing unless polled"]
pub struct Op<K: OpKind> {
    stage: Stage<K>,
}

enum Stage<K: OpKind> {
    Unsubmitted(K, Anchor),
    Submitted(FutureHalf<K, Anchor>),
    Done,
}

// Nothing in an `Op` is ever pinned: the kind moves into a heap cell on first
// poll, and the cell is reached through a pointer.
impl<K: OpKind> Unpin for Op<K> {}

impl<K: OpKind> fmt::Debug for Op<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match &self.stage {
            Stage::Unsubmitted(..) => "Unsubmitted",
            Stage::Submitted(_) => "Submitted",
            Stage::Done => "Done",
        };
        f.debug_struct("Op")
            .field("kind", &std::any::type_name::<K>())
            .field("stage", &stage)
            .finish()
    }
}

impl<K: OpKind> Op<K> {
    pub(crate) fn new(anchor: Anchor, kind: K) -> Op<K> {
        Op {
            stage: Stage::Unsubmitted(kind, anchor),
        }
    }
}

impl<K: OpKind> Future for Op<K> {
    type Output = K::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<K::Output> {
        let this = self.get_mut();
        let half = match std::mem::replace(&mut this.stage, Stage::Done) {
            Stage::Unsubmitted(kind, anchor) => {
                let (half, placement) = start(kind, anchor.place(), cx.waker());
                // An op handled on this thread may be complete already
                // (refused, or run by the home driver on the spot). One
                // queued for another thread always waits for a wake, even if
                // it raced to completion: where the code after it runs must
                // not depend on timing.
                if placement == Placement::Queued || !half.is_complete() {
                    this.stage = Stage::Submitted(half);
                    return Poll::Pending;
                }
                half
            }
            Stage::Submitted(half) => half,
            Stage::Done => panic!("aioctx: op polled after it resolved"),
        };
        match half.poll(cx.waker()) {
            Ok((kind, cqe)) => Poll::Ready(kind.complete(cqe)),
            Err(half) => {
                this.stage = Stage::Submitted(half);
                Poll::Pending
            }
        }
    }
}

impl<K: OpKind> Drop for Op<K> {
    fn drop(&mut self) {
        // Resolved ops (the common case) have nothing to hand over.
        if !matches!(self.stage, Stage::Submitted(_)) {
            return;
        }
        let Stage::Submitted(half) = std::mem::replace(&mut self.stage, Stage::Done) else {
            unreachable!("checked above");
        };
        // Dropped in flight (rare): the context outlives the cancel request.
        let anchor = half.anchor().clone();
        if let Some(canceller) = half.abandon() {
            // Best effort: a backend that cannot cancel drops the request, and
            // shutdown cancels everything in flight anyway.
            anchor.backend().cancel(canceller);
        }
    }
}

impl Context {
    fn op<K: OpKind>(&self, kind: K) -> Op<K> {
        Op::new(Anchor::Context(self.shared().clone()), kind)
    }

    /// Submits a no-op and resolves when its completion comes back: the
    /// cheapest way to measure the path through the ring.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    ///
    /// # Errors
    ///
    /// Only if the context has shut down ([`is_shutdown`](crate::is_shutdown)).
    pub fn nop(&self) -> Op<Nop> {
        self.op(Nop::new())
    }

    /// Resolves after `duration`, timed by the kernel (`CLOCK_MONOTONIC`, real
    /// time: Tokio's paused clock does not apply) on io_uring, by a Tokio
    /// timer of the home runtime on the fallback, and in the simulator's
    /// virtual time on the sim.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety). A dropped
    /// timeout's timer is cancelled on every backend.
    ///
    /// # Errors
    ///
    /// `ECANCELED` if the context shut down first; a shutdown error if it had
    /// already.
    pub fn timeout(&self, duration: Duration) -> Op<Timeout> {
        self.op(Timeout::new(duration))
    }

    /// Submits a caller-built SQE. `resources` are owned by the op until its
    /// CQE arrives, then handed back in the
    /// [`RawCompletion`](crate::ops::RawCompletion), so memory the
    /// SQE points into can live there.
    ///
    /// The SQE's `user_data` is the driver's and is overwritten. Ops that post
    /// more than one CQE (multishot) are not supported: the op completes at
    /// the first.
    ///
    /// # Safety
    ///
    /// Every pointer and fd in `entry` must stay valid until the op completes:
    /// point only into heap memory owned by `resources` (a `Vec`'s or `Box`'s
    /// contents do not move when the value does), or into memory that lives
    /// for `'static`. The op must not outlive what it names in any other way.
    ///
    /// # Errors
    ///
    /// The op resolves with an `Unsupported` error (and the resources back)
    /// on the fallback and sim backends, which cannot run an arbitrary SQE.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; see [the ops module](crate::ops#cancel-safety).
    pub unsafe fn submit_raw<R: Send + 'static>(
        &self,
        entry: io_uring::squeue::Entry,
        resources: R,
    ) -> Op<RawOp<R>> {
        // SAFETY: the caller's contract is `RawOp::new`'s.
        self.op(unsafe { RawOp::new(entry, resources) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pool;
    use crate::fs::File;

    /// The point of the views: an op made and placed on a member's thread
    /// anchors that member's view, and leaves the shared open file's count
    /// alone.
    #[test]
    fn a_pool_files_op_on_a_member_anchors_its_view_not_the_shared_file() {
        let pool = Pool::builder().contexts(2).build().expect("a pool");
        let opener = &pool.contexts()[0];
        let file = opener
            .block_on(File::open(opener, "/dev/zero"))
            .expect("/dev/zero opens");
        for (index, ctx) in pool.contexts().iter().enumerate() {
            let file = file.clone();
            let (on_this_member, before, after) = ctx
                .spawn(async move {
                    let handles = file.handles();
                    // The first use makes the view, which holds the file.
                    drop(handles.anchor());
                    let before = Arc::strong_count(handles.file());
                    let placed = handles.anchor().place();
                    let on_this_member =
                        matches!(&placed, Anchor::Member(view) if view.on.home().is_current());
                    let after = Arc::strong_count(handles.file());
                    (on_this_member, before, after)
                })
                .join()
                .expect("the task ran");
            assert!(
                on_this_member,
                "member {index}'s op did not anchor its view"
            );
            assert_eq!(
                before, after,
                "member {index}'s op counted on the shared file"
            );
        }
    }
}
