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
    members: Vec<Weak<ContextState>>,
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

impl Membership {
    pub(crate) fn new(members: &[Arc<ContextState>]) -> Membership {
        Membership {
            // Relaxed: ids only need to be distinct.
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            members: members.iter().map(Arc::downgrade).collect(),
            files_follow_threads: members.iter().all(|m| m.backend.shares_fds()),
            next_thread: AtomicUsize::new(0),
        }
    }

    /// The index of the calling thread's member.
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

    /// How many members.
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
        let member = &self.members[self.pick()];
        if std::ptr::eq(member.as_ptr(), Arc::as_ptr(state)) {
            return None;
        }
        member.upgrade()
    }
}
