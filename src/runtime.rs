//! Rings driven by the threads of a Tokio multi-thread runtime:
//! [`WorkerRings`]. Each thread of the runtime gets a ring of its own the
//! first time it submits, and an op polled on that thread goes into it with
//! no other thread involved (see the `worker` backend for how it submits
//! and reaps). Imports the context, the builder and the pool's membership.
//!
//! ```text
//!   worker thread 0 ── its ring 0        an op polled here goes into ring 0;
//!   worker thread 1 ── its ring 1        a file's op goes into the ring of
//!   blocking thread ── its ring 2        the thread that polls it
//!   other thread   ── the file's ring (submitted under its lock)
//! ```

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::backend::Backend;
use crate::context::Context;
use crate::context::bind::{LazyContext, bind_lazily};
use crate::context::handle::Owner;
use crate::context::state::ContextState;
use crate::home::Builder;
use crate::metrics::Metrics;
use crate::pool::membership::{Membership, ThreadRings, thread_ring_views};

/// Rings owned by the threads of a Tokio multi-thread runtime, for services
/// on `#[tokio::main]`-style runtimes: an op polled on a runtime worker goes
/// into that worker's own ring, so no op crosses threads on its way in, and
/// the ops of the worker's tasks go to the kernel together, one
/// `io_uring_enter` for each round of them.
///
/// Install it on the runtime's builder with
/// [`configure`](WorkerRings::configure) (or use
/// [`runtime_builder`](WorkerRings::runtime_builder)); then
/// [`current`](crate::current) on any of the runtime's threads returns that
/// thread's ring, made on first use, and a [`File`](crate::fs::File) opened
/// on it sends each op to the ring of the thread that polls the op.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let rings = aioctx::runtime::WorkerRings::new();
/// let runtime = rings.runtime_builder().worker_threads(2).build()?;
/// let read = runtime.block_on(runtime.spawn(async {
///     let ctx = aioctx::current().expect("every runtime thread has a ring");
///     let file = aioctx::fs::File::open(&ctx, "/proc/self/stat").await?;
///     let (n, _) = file.read_at(Vec::with_capacity(64), 0).await;
///     n
/// }))??;
/// assert!(read > 0);
/// # Ok(())
/// # }
/// ```
///
/// # How ops get to the kernel, and back
///
/// A submission queues its SQE under the ring's lock and asks the ring's
/// reaper task to flush: the reaper runs once the submitting worker has run
/// its other ready tasks (or at its next maintenance tick, if it never runs
/// out of them), and enters once for every SQE they queued, then reaps, so
/// the reads of a round of tasks go to the kernel together. A completion
/// that comes later (a device read) signals the ring's eventfd, which wakes
/// the reaper through Tokio's reactor on whichever worker runs it. A task stolen by another worker while its op is in
/// flight is woken by that op's completion wherever it runs; a ring whose
/// thread has exited (a blocking thread after its idle time, every thread at
/// the runtime's shutdown) is closed first: what is in it is cancelled and
/// drained, and every future resolves.
///
/// # Backends
///
/// With the builder's backend set to [`Backend::Fallback`] or
/// [`Backend::Sim`], every thread uses one context instead (built from the
/// same builder). On the simulator, completion order follows the seed for
/// a given order of submissions; on a multi-thread runtime that order itself
/// depends on which worker runs which task, so only a current-thread runtime
/// replays a seed exactly.
///
/// # Registered files
///
/// Each ring registers the files its ops use in a sparse file table of its
/// own (of [`Builder::registered_file_slots`] slots, 1024 by default), the
/// first time its thread makes an op on the file, and its ops name the file
/// by that slot from then on: the kernel skips the fd's lookup, and the
/// reference count of the open file every worker shares. The slot is that
/// ring's alone: an op polled first on another thread, or made by a ring
/// that replaced one whose thread exited, never names it. The file leaves
/// every table when its last handle and op are gone, before its fd closes,
/// so `flock`s and a deleted file's space are released as for any file
/// (from a ring shutting down meanwhile, at that ring's close).
/// Where a ring's table is full, or its kernel refused one (before 5.19),
/// the ring names the file by fd, silently (logged at `debug`).
/// [`Metrics::fixed_file_ops`] counts the ops that named a slot.
/// [`OpenOptions::register`](crate::fs::OpenOptions::register) changes
/// nothing here, and [`File::is_registered`](crate::fs::File::is_registered)
/// is `false`: the registration is each ring's, not the file's.
///
/// Buffers are not registered on worker rings
/// ([`FixedBufPool::is_registered`](crate::FixedBufPool::is_registered) is
/// `false` there): a buffer's ops would have to follow it to its ring.
#[derive(Clone)]
pub struct WorkerRings {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    template: Builder,
    /// Every ring open: what keeps it alive (its thread holds it weakly).
    /// A ring leaves when it closes.
    rings: Mutex<Vec<Arc<Owner>>>,
    /// The one context of a non-ring backend.
    shared: OnceLock<io::Result<Context>>,
    /// How files opened on these rings follow threads.
    membership: OnceLock<Arc<Membership>>,
    /// Which view indexes (see `pool/membership.rs`) open rings hold.
    indexes: Mutex<Vec<bool>>,
}

/// A thread's own ring of one `WorkerRings`: its id, the ring's owner, its
/// state (which a file's op on this thread anchors) and its view index.
type ThisThreads = (u64, Weak<Owner>, Weak<ContextState>, Option<usize>);

/// `WorkerRings` made so far, for their ids.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's own ring of each `WorkerRings` it has used.
    static THREAD_RINGS: std::cell::RefCell<Vec<ThisThreads>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Default for WorkerRings {
    fn default() -> Self {
        WorkerRings::new()
    }
}

impl WorkerRings {
    /// Worker rings configured as [`Builder::default`].
    pub fn new() -> WorkerRings {
        WorkerRings::with_builder(Builder::default())
    }

    /// Worker rings configured by `builder` (its ring entries and backend;
    /// options that concern a home thread of its own, such as its name or
    /// CPU, do not apply).
    pub fn with_builder(builder: Builder) -> WorkerRings {
        let rings = WorkerRings {
            inner: Arc::new(Inner {
                // Relaxed: ids only need to be distinct.
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                template: builder,
                rings: Mutex::new(Vec::new()),
                shared: OnceLock::new(),
                membership: OnceLock::new(),
                indexes: Mutex::new(vec![false; thread_ring_views()]),
            }),
        };
        let threads: Arc<dyn ThreadRings> = Arc::new(rings.clone().downgrade());
        // A fresh `OnceLock`: this cannot fail.
        let _ = rings
            .inner
            .membership
            .set(Arc::new(Membership::per_thread(threads)));
        rings
    }

    /// A Tokio multi-thread runtime builder with IO and time enabled and
    /// these rings installed ([`configure`](WorkerRings::configure)).
    pub fn runtime_builder(&self) -> tokio::runtime::Builder {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        self.configure(&mut builder);
        builder
    }

    /// Installs these rings on a runtime builder: its `on_thread_start`
    /// binds each thread (so [`current`](crate::current) returns the
    /// thread's ring, made on first use) and its `on_thread_stop` closes the
    /// thread's ring. Those hooks replace any set before; a runtime that
    /// needs hooks of its own calls [`bind_thread`](WorkerRings::bind_thread)
    /// and [`close_thread`](WorkerRings::close_thread) from them instead.
    /// The runtime needs IO enabled (`enable_io` or `enable_all`).
    pub fn configure<'a>(
        &self,
        builder: &'a mut tokio::runtime::Builder,
    ) -> &'a mut tokio::runtime::Builder {
        let (start, stop) = (self.clone(), self.clone());
        builder
            .on_thread_start(move || start.bind_thread())
            .on_thread_stop(move || stop.close_thread())
    }

    /// Binds the calling thread to its ring, for good: [`current`](crate::current)
    /// returns it, made on first use. For a runtime thread's start hook.
    pub fn bind_thread(&self) {
        bind_lazily(Arc::new(self.downgrade()));
    }

    /// Closes the calling thread's ring, if it made one: cancels and drains
    /// what is in it, resolving every op. For a runtime thread's stop hook.
    pub fn close_thread(&self) {
        let id = self.inner.id;
        let owner = THREAD_RINGS.with(|rings| {
            let mut rings = rings.borrow_mut();
            let at = rings.iter().position(|(ring, ..)| *ring == id)?;
            rings.swap_remove(at).1.upgrade()
        });
        if let Some(owner) = owner {
            // Closing takes it out of the rings, too.
            owner.state.backend.shut_down();
        }
    }

    /// The calling thread's context: its own ring, made now if it is not
    /// yet (inside a Tokio runtime, whose handle the ring's reaper runs on),
    /// or the one shared context of a non-ring backend.
    ///
    /// # Errors
    ///
    /// Outside any Tokio runtime (for a thread of its own ring); the ring's
    /// setup error ([`Builder::build`]'s), where the builder's backend
    /// allows no fallback.
    pub fn thread_context(&self) -> io::Result<Context> {
        if !matches!(
            self.inner.template.backend_choice(),
            Backend::Auto | Backend::Uring
        ) {
            return self.shared();
        }
        let id = self.inner.id;
        let mine = THREAD_RINGS.with(|rings| {
            let mut rings = rings.borrow_mut();
            let at = rings.iter().position(|(ring, ..)| *ring == id)?;
            // A ring that closed (with its runtime) is replaced.
            match rings[at].1.upgrade() {
                Some(owner) if !owner.state.backend.is_shut_down() => Some(owner),
                _ => {
                    rings.swap_remove(at);
                    None
                }
            }
        });
        if let Some(owner) = mine {
            return Ok(Context { owner });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            io::Error::other("a worker ring is made on a thread of a Tokio runtime")
        })?;
        let owner = self.inner.template.build_worker(&runtime)?;
        if let Some(membership) = self.inner.membership.get() {
            // A ring just built belongs to no pool yet: this cannot fail.
            let _ = owner.pool.set(membership.clone());
        }
        self.inner
            .rings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(owner.clone());
        let index = self.inner.take_index();
        // When it closes (its thread stops, or its runtime goes), it leaves
        // the rings, so nothing keeps its runtime's handle alive, and gives
        // its view index back.
        let (rings, closing) = (Arc::downgrade(&self.inner), Arc::downgrade(&owner));
        let _closes_on_its_own = owner.state.backend.on_close(Box::new(move || {
            if let Some(rings) = rings.upgrade() {
                rings
                    .rings
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .retain(|open| !std::ptr::eq(Arc::as_ptr(open), closing.as_ptr()));
                if let Some(index) = index {
                    rings.give_index(index);
                }
            }
        }));
        let state = Arc::downgrade(&owner.state);
        THREAD_RINGS.with(|rings| {
            rings
                .borrow_mut()
                .push((id, Arc::downgrade(&owner), state, index))
        });
        Ok(Context { owner })
    }

    /// The one context of a non-ring backend, built on first use.
    fn shared(&self) -> io::Result<Context> {
        let shared = self.inner.shared.get_or_init(|| {
            let context = self.inner.template.clone().build()?;
            if let Some(membership) = self.inner.membership.get() {
                // A context just built belongs to no pool yet: this cannot fail.
                let _ = context.owner.pool.set(membership.clone());
            }
            Ok(context)
        });
        match shared {
            Ok(context) => Ok(context.clone()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    /// Each ring's counters (the rings alive now, in the order they were
    /// made; the shared context's, for a non-ring backend).
    pub fn metrics(&self) -> Vec<Metrics> {
        if let Some(Ok(shared)) = self.inner.shared.get() {
            return vec![shared.metrics()];
        }
        self.inner
            .rings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|owner| owner.state.backend.metrics())
            .collect()
    }

    /// The rings' counters summed (see [`Metrics::sum`]); all zero before
    /// any ring is made.
    pub fn total_metrics(&self) -> Metrics {
        let all = self.metrics();
        match all.is_empty() {
            true => Metrics::none("io_uring-worker"),
            false => Metrics::sum(&all),
        }
    }

    fn downgrade(&self) -> ThreadRing {
        ThreadRing {
            id: self.inner.id,
            inner: Arc::downgrade(&self.inner),
        }
    }
}

impl fmt::Debug for WorkerRings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerRings")
            .field("backend", self.inner.template.backend_choice())
            .finish_non_exhaustive()
    }
}

/// A thread's way to its ring, held by its binding and by files'
/// memberships: weak, so neither keeps the rings alive.
#[derive(Debug, Clone)]
struct ThreadRing {
    id: u64,
    inner: Weak<Inner>,
}

impl ThreadRing {
    fn rings(&self) -> Option<WorkerRings> {
        self.inner.upgrade().map(|inner| WorkerRings { inner })
    }
}

impl LazyContext for ThreadRing {
    fn context(&self) -> Option<Context> {
        match self.rings()?.thread_context() {
            Ok(context) => Some(context),
            Err(e) => {
                tracing::warn!(error = %e, "no aioctx ring for this thread");
                None
            }
        }
    }
}

impl ThreadRings for ThreadRing {
    fn this_thread(&self) -> Option<(Arc<ContextState>, Option<usize>)> {
        // The common case, on every file op: this thread's ring is made and
        // open. One lookup, and the state's reference goes to the op.
        let known = THREAD_RINGS.with(|rings| {
            let rings = rings.borrow();
            let (.., state, index) = rings.iter().find(|(ring, ..)| *ring == self.id)?;
            Some((state.upgrade()?, *index))
        });
        if let Some(known) = known.filter(|(state, _)| !state.backend.is_shut_down()) {
            return Some(known);
        }
        let rings = self.rings()?;
        // Only a thread the rings were installed on, or one that made its
        // ring already, gets one; others submit to the file's own ring.
        tokio::runtime::Handle::try_current().ok()?;
        rings.thread_context().ok()?;
        // Made (or replaced) just now: its entry is there.
        THREAD_RINGS.with(|rings| {
            let rings = rings.borrow();
            let (.., state, index) = rings.iter().find(|(ring, ..)| *ring == self.id)?;
            Some((state.upgrade()?, *index))
        })
    }
}

impl Inner {
    /// The lowest view index no open ring holds, if any is left.
    fn take_index(&self) -> Option<usize> {
        let mut taken = self
            .indexes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = taken.iter().position(|taken| !taken)?;
        taken[index] = true;
        Some(index)
    }

    /// Gives back the view index of a ring that closed.
    fn give_index(&self, index: usize) {
        self.indexes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())[index] = false;
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerRings")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
