//! Where an op goes, and what it holds on to meanwhile: the op's [`Anchor`].
//! The pool's upper half: a file on a pool context sends each op to the ring
//! of the thread that submits it. Imports the file's ownership (`file.rs`),
//! the pool's membership and the backends' contract.

use std::sync::Arc;

use crate::backend::{Anchored, AnyBackend};
use crate::context::state::ContextState;
use crate::file::{FileHandles, MemberFile, OpenFile, RingFile};
use crate::lifecycle::CellAnchor;
use crate::ops::FileFd;

/// What an op holds on to: its context, and for a file's op the file (whose
/// fd must stay open until the kernel is done with the op).
///
/// One reference per op, kept in the op's cell until the cell is freed: the
/// op's future reaches its context through it, and the op's SQE names the fd
/// it keeps open.
#[derive(Clone)]
pub(crate) enum Anchor {
    Context(Arc<ContextState>),
    /// A file's op on the file's own context.
    File(Arc<OpenFile>),
    /// A file's op on another context: the calling thread's member of the
    /// file's pool, or the ring a registered buffer belongs to. The file is
    /// held only to keep its fd open.
    FileOn {
        _file: Arc<OpenFile>,
        on: Arc<ContextState>,
    },
    /// A pool file's op on the member whose thread made it, through that
    /// member's view of the file: the op counts a reference on the view,
    /// which only that member's ops touch.
    Member(Arc<MemberFile>),
    /// A file's op on the ring of the thread that made it (rings made per
    /// thread), through that ring's view of the file: the op may name the
    /// file by the view's slot in that ring's table, and in no other ring.
    OnRing {
        _view: Arc<RingFile>,
        on: Arc<ContextState>,
    },
}

impl Anchor {
    /// The anchor of a file's op made on the calling thread, and the fd the
    /// op names the file by: its ring's or its member's view of a file whose
    /// ops follow threads, otherwise the file. Both come from the same view,
    /// so an op names a slot only of the ring its anchor leads to.
    #[inline]
    pub(crate) fn for_file(handles: &FileHandles) -> (Anchor, FileFd) {
        if handles.has_any_views() {
            return Anchor::for_view(handles, true);
        }
        let file = handles.file();
        (Anchor::File(file.clone()), file.fd())
    }

    /// The anchor of an op that names a file by its fd on whatever ring it
    /// goes to (an op on a path relative to a directory): as
    /// [`for_file`](Anchor::for_file), without registering the file.
    pub(crate) fn for_file_by_fd(handles: &FileHandles) -> Anchor {
        if handles.has_any_views() {
            return Anchor::for_view(handles, false).0;
        }
        Anchor::File(handles.file().clone())
    }

    /// [`for_file`](Anchor::for_file) for a file with views: out of line,
    /// so the plain file's path stays small enough to inline. On the ring of
    /// a worker thread, with `slot`, the op names the file by its slot in
    /// that ring's table, registered there on the view's first use.
    #[inline(never)]
    fn for_view(handles: &FileHandles, slot: bool) -> (Anchor, FileFd) {
        let file = handles.file();
        let Some(pool) = file.pool.as_ref() else {
            return (Anchor::File(file.clone()), file.fd());
        };
        if handles.has_ring_views() {
            if let Some((on, Some(index))) = pool.thread_ring()
                && let Some(view) = handles.ring_view(index)
            {
                let fd = match slot {
                    true => view.fd_on(&on),
                    false => FileFd::new(file.raw()),
                };
                let anchor = Anchor::OnRing {
                    _view: view.clone(),
                    on,
                };
                return (anchor, fd);
            }
        } else if let Some(view) = handles.view(pool.pick()) {
            return (Anchor::Member(view.clone()), file.fd());
        }
        (Anchor::File(file.clone()), file.fd())
    }

    pub(crate) fn state(&self) -> &Arc<ContextState> {
        match self {
            Anchor::Context(state)
            | Anchor::FileOn { on: state, .. }
            | Anchor::OnRing { on: state, .. } => state,
            Anchor::File(file) => &file.state,
            Anchor::Member(view) => &view.on,
        }
    }

    /// Where the op goes, decided on the thread that submits it: a file on a
    /// pool context goes to the calling thread's member of the pool (its own
    /// ring on a member's home thread), everything else where it was made.
    /// An op made for a worker ring and first polled on another thread
    /// leaves its ring's view (and so its slot; see `backend/worker`).
    #[inline(always)]
    pub(crate) fn place(self) -> Anchor {
        match &self {
            // A file on no pool, or registered (its slot is its own ring's):
            // where it was made.
            Anchor::File(file) if file.pool.is_none() || file.is_registered() => self,
            Anchor::File(_) | Anchor::Member(_) => self.place_file(),
            // Made on its ring's thread and polled there: the common case.
            Anchor::OnRing { on, .. } if on.home().is_current() => self,
            Anchor::OnRing { .. } => self.place_file(),
            Anchor::Context(_) | Anchor::FileOn { .. } => self,
        }
    }

    /// [`place`](Anchor::place) for a file's op.
    fn place_file(self) -> Anchor {
        let file = match self {
            Anchor::File(file) => file,
            Anchor::Member(view) => {
                // Made on this thread's member: the common case. On a
                // member's home thread one token compare tells; elsewhere,
                // the thread's sticky member.
                if view.on.home().is_current()
                    || view.file.pool.as_ref().map(|pool| pool.pick()) == Some(view.index)
                {
                    return Anchor::Member(view);
                }
                // First polled on another thread than it was made on (rare):
                // placed as a file's op, holding the open file itself.
                view.file.clone()
            }
            // As above, for a ring made per thread.
            Anchor::OnRing { _view: view, .. } => view.file.clone(),
            _ => return self,
        };
        // A registered file's ops name its slot in its own ring's table.
        let elsewhere = match file.is_registered() {
            true => None,
            false => file
                .pool
                .as_ref()
                .and_then(|pool| pool.elsewhere(&file.state)),
        };
        // The file's reference moves into the new anchor: one count taken
        // per op, not two.
        match elsewhere {
            Some(on) => Anchor::FileOn { _file: file, on },
            None => Anchor::File(file),
        }
    }
}

impl CellAnchor for Anchor {}

impl Anchored for Anchor {
    fn backend(&self) -> &AnyBackend {
        &self.state().backend
    }

    #[inline(always)]
    fn place(self) -> Anchor {
        Anchor::place(self)
    }

    fn through_ring_view(&self) -> bool {
        matches!(self, Anchor::OnRing { .. })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Anchor;
    use crate::Pool;
    use crate::backend::Anchored;
    use crate::fs::File;

    /// The point of the views: an op made and placed on a member's thread
    /// anchors that member's view, and leaves the shared open file's count
    /// alone.
    #[test]
    fn a_pool_files_op_on_a_member_anchors_its_view_not_the_shared_file() {
        let pool = Pool::builder().contexts(2).build().expect("a pool");
        let opener = &pool.members()[0];
        let file = opener
            .block_on(File::open(opener, "/dev/zero"))
            .expect("/dev/zero opens");
        for (index, ctx) in pool.members().iter().enumerate() {
            let file = file.clone();
            let (on_this_member, before, after) = ctx
                .spawn(async move {
                    let handles = file.handles();
                    // The first use makes the view, which holds the file.
                    drop(Anchor::for_file(handles));
                    let before = Arc::strong_count(handles.file());
                    let placed = Anchor::for_file(handles).0.place();
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

    /// A 2-worker runtime whose workers drive rings of their own, and a file
    /// opened on a worker's ring; `None` where the rings are not io_uring.
    fn worker_file() -> Option<(tokio::runtime::Runtime, File)> {
        let rings = crate::runtime::WorkerRings::new();
        let runtime = rings
            .runtime_builder()
            .worker_threads(2)
            .build()
            .expect("a runtime");
        let file = runtime
            .block_on(runtime.spawn(async {
                let ctx = crate::current().expect("a worker's ring");
                File::open(&ctx, "/dev/zero").await
            }))
            .expect("the task ran")
            .expect("/dev/zero opens");
        let on_rings = file.handles().file().state.backend.name() == "io_uring-worker";
        on_rings.then_some((runtime, file))
    }

    /// The same for rings made per thread: an op made and polled on a
    /// worker anchors its ring's view of the file, so workers' ops never
    /// write the shared open file's count.
    #[test]
    fn a_worker_rings_files_op_anchors_its_rings_view_not_the_shared_file() {
        let Some((runtime, file)) = worker_file() else {
            return eprintln!("skipping: no io_uring here");
        };
        let checks: Vec<_> = (0..8)
            .map(|_| {
                let file = file.clone();
                runtime.spawn(async move {
                    let handles = file.handles();
                    drop(Anchor::for_file(handles));
                    let before = Arc::strong_count(handles.file());
                    let placed = Anchor::for_file(handles).0.place();
                    let on_this_ring =
                        matches!(&placed, Anchor::OnRing { on, .. } if on.home().is_current());
                    (on_this_ring, before, Arc::strong_count(handles.file()))
                })
            })
            .collect();
        for check in checks {
            let (on_this_ring, before, after) = runtime.block_on(check).expect("the task ran");
            assert!(on_this_ring, "a worker's op did not anchor its ring's view");
            assert_eq!(before, after, "a worker's op counted on the shared file");
        }
    }

    /// A worker ring's op names its file by the slot its anchor's view
    /// recorded for that ring, and is placed there through the view; first
    /// polled on another thread, it leaves the view (and the worker backend
    /// it goes to names its file by fd).
    #[test]
    fn a_worker_rings_op_names_its_views_slot_for_its_ring() {
        let Some((runtime, file)) = worker_file() else {
            return eprintln!("skipping: no io_uring here");
        };
        let made = {
            let file = file.clone();
            runtime.spawn(async move {
                let (anchor, fd) = Anchor::for_file(file.handles());
                let Anchor::OnRing { on, .. } = &anchor else {
                    panic!("a worker's op anchors its ring's view");
                };
                assert!(fd.slot().is_some(), "the ring registered the file");
                assert!(
                    on.home().is_current(),
                    "the anchor leads to this thread's ring"
                );
                let (_, again) = Anchor::for_file(file.handles());
                assert_eq!(
                    again.slot(),
                    fd.slot(),
                    "the next op reads the slot its view recorded, not a new registration"
                );
                assert!(
                    anchor.clone().place().through_ring_view(),
                    "placed on its ring"
                );
                anchor
            })
        };
        // Polled first here, off the ring it was made for.
        let anchor = runtime.block_on(made).expect("the task ran");
        assert!(!anchor.place().through_ring_view());
    }
}
