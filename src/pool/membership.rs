//! Who is in a pool, and which member each thread submits to. The pool's
//! lower half: `file.rs` and `placement.rs` ask it where an op goes; the
//! [`Pool`](crate::Pool) handle (`pool/mod.rs`) builds it. Imports the
//! context's shared state only.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crate::context::state::ContextState;

/// The pool a context belongs to: its members, and which one each thread
/// submits to.
///
/// A thread's member is sticky: the member whose home the thread is, or, for
/// any other thread, one chosen round-robin the first time it asks, so the
/// workers of a runtime spread evenly over the pool (no member gets more than
/// `ceil(threads / members)` of them).
#[derive(Debug)]
pub(crate) struct Membership {
    id: u64,
    /// A fixed set of members; empty for rings made per thread.
    members: Vec<Weak<ContextState>>,
    /// Rings made per thread ([`WorkerRings`](crate::runtime::WorkerRings)):
    /// the calling thread's own, made on first use.
    threads: Option<Arc<dyn ThreadRings>>,
    /// Whether a file's ops may go to any member: fds mean the same on every
    /// member (not on the simulator, whose members each have their own
    /// files).
    files_follow_threads: bool,
    /// Round-robin cursor for threads that are no member's home.
    next_thread: AtomicUsize,
}

/// Pools made so far, for their ids.
static NEXT_POOL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's member of each pool it has used: (pool id, index).
    static STICKY: RefCell<Vec<(u64, usize)>> = const { RefCell::new(Vec::new()) };
}

/// Rings made per thread, as a membership sees them.
pub(crate) trait ThreadRings: Send + Sync + std::fmt::Debug {
    /// The calling thread's own ring, made on first use, and its index among
    /// the rings open now (below [`thread_ring_views`], if it has one);
    /// `None` on a thread that has no ring (not one of the runtime's).
    fn this_thread(&self) -> Option<(Arc<ContextState>, Option<usize>)>;
}

/// How many rings made per thread get a view of each file of theirs (see
/// `file.rs`): a ring's index, reused once it closes, names its view. The
/// runtime's workers take the first indexes; rings past them (blocking
/// threads beyond the first few) use the file itself.
pub(crate) fn thread_ring_views() -> usize {
    static VIEWS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *VIEWS.get_or_init(|| {
        std::thread::available_parallelism().map_or(4, std::num::NonZeroUsize::get) + 4
    })
}

impl Membership {
    pub(crate) fn new(members: &[Arc<ContextState>]) -> Membership {
        Membership {
            // Relaxed: ids only need to be distinct.
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            members: members.iter().map(Arc::downgrade).collect(),
            threads: None,
            files_follow_threads: members.iter().all(|m| m.backend.shares_fds()),
            next_thread: AtomicUsize::new(0),
        }
    }

    /// The membership of rings made per thread: a file's op goes to the
    /// ring of the thread that submits it.
    pub(crate) fn per_thread(threads: Arc<dyn ThreadRings>) -> Membership {
        Membership {
            // Relaxed: as above.
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            members: Vec::new(),
            threads: Some(threads),
            files_follow_threads: true,
            next_thread: AtomicUsize::new(0),
        }
    }

    /// The index of the calling thread's member (of a fixed set).
    pub(crate) fn pick(&self) -> usize {
        STICKY.with(|sticky| {
            if let Some(&(_, index)) = sticky.borrow().iter().find(|(id, _)| *id == self.id) {
                return index;
            }
            let index = self
                .members
                .iter()
                .position(|member| member.upgrade().is_some_and(|m| m.home().is_current()))
                // Relaxed: the cursor only spreads threads; any order will do.
                .unwrap_or_else(|| {
                    self.next_thread.fetch_add(1, Ordering::Relaxed) % self.members.len()
                });
            sticky.borrow_mut().push((self.id, index));
            index
        })
    }

    /// Whether a file's ops may go to any member (see the field).
    pub(crate) fn files_follow_threads(&self) -> bool {
        self.files_follow_threads
    }

    /// Whether the members are rings made per thread.
    pub(crate) fn is_per_thread(&self) -> bool {
        self.threads.is_some()
    }

    /// The calling thread's own ring and its view index, for rings made per
    /// thread.
    pub(crate) fn thread_ring(&self) -> Option<(Arc<ContextState>, Option<usize>)> {
        self.threads.as_ref()?.this_thread()
    }

    /// How many members (of a fixed set; 0 for rings made per thread).
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Member `index`, if it is still alive.
    pub(crate) fn member(&self, index: usize) -> Option<Arc<ContextState>> {
        self.members[index].upgrade()
    }

    /// The calling thread's member, if it is not `state` itself and still
    /// alive: where an op of a file opened on `state` should go instead.
    pub(crate) fn elsewhere(&self, state: &Arc<ContextState>) -> Option<Arc<ContextState>> {
        if !self.files_follow_threads {
            return None;
        }
        if let Some(threads) = &self.threads {
            return threads
                .this_thread()
                .map(|(ring, _)| ring)
                .filter(|ring| !Arc::ptr_eq(ring, state));
        }
        let member = &self.members[self.pick()];
        if std::ptr::eq(member.as_ptr(), Arc::as_ptr(state)) {
            return None;
        }
        member.upgrade()
    }
}
