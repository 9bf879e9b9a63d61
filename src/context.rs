//! [`Context`], the handle users hold, and the thread binding behind
//! [`current`]. Setting a context up is `home.rs`'s job; running its ops is
//! its backend's.
//!
//! A context is three parts: the user's handles ([`Context`], cheap to clone,
//! whose last drop shuts the context down through the [`Owner`]), the state
//! every thread shares ([`Shared`]: the backend, the home runtime, the home
//! thread), and the home thread's private driver state (inside the backend).

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, ThreadId};

use tokio::sync::watch;
use tokio::task::LocalSet;

use crate::backend::AnyBackend;
use crate::backend::sim::SimHandle;
use crate::home_thread::{HomeOnly, HomeThread};
use crate::metrics::{Metrics, RingFlags};

/// A handle to an io_uring AioContext: one ring, driven by one home thread.
///
/// Any thread may submit ops through a `Context`: the home thread's tasks put
/// them straight into the submission queue; every other thread (a Tokio task
/// on another runtime, a blocking thread, an emulator's vCPU thread) queues
/// them in the context's inbox, and the driver is woken at once if it sleeps.
/// Wakes coalesce: at most one per driver sleep, none while it is awake.
///
/// `Context` is `Clone + Send + Sync`; clones share one ring.
///
/// # Shutdown
///
/// Dropping the last `Context` shuts the context down and joins its home
/// thread. From async code prefer [`shutdown`](Context::shutdown), which does
/// not block; debug builds warn when the last handle is dropped inside a
/// Tokio runtime. Ops still in flight are cancelled; their futures resolve
/// with an error ([`is_shutdown`](crate::is_shutdown) or `ECANCELED`). Ops
/// started afterwards fail at once. Op futures and files do not keep a
/// context alive.
#[derive(Clone)]
pub struct Context {
    pub(crate) owner: Arc<Owner>,
}

/// Owns the home thread (if the crate spawned it); dropped with the last
/// [`Context`], which shuts the context down.
pub(crate) struct Owner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) home_thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// What every thread shares. Op futures and files hold this, not a
/// [`Context`], so they do not keep the context alive.
pub(crate) struct Shared {
    /// What runs this context's ops.
    pub(crate) backend: AnyBackend,
    runtime: tokio::runtime::Handle,
    home: HomeThread,
    /// Whether foreign pushes wake the driver (off only for diagnostics).
    kick_foreign: bool,
    /// Becomes `true` when the home thread has drained and closed the ring.
    finished: watch::Receiver<bool>,
    /// The handles' owner, for [`current`] on the home thread.
    pub(crate) owner: OnceLock<Weak<Owner>>,
    /// The pool this context belongs to, if any: set once by the pool.
    pub(crate) pool: OnceLock<Arc<Membership>>,
    /// The home thread's set of `!Send` tasks, where the crate drives one.
    pub(crate) local: Option<HomeOnly<Rc<LocalSet>>>,
    /// Set by the first [`warn_once`](Shared::warn_once).
    warned: std::sync::atomic::AtomicBool,
}

// A panic in user code never leaves a context half-updated for other
// threads: the driver contains user panics, every lock's critical section is
// a single push, take or store (so poisoning is ignored), and home-only state
// is only ever borrowed on the home thread. As Tokio's `Handle`, a `Context`
// may be used across `catch_unwind`.
impl std::panic::UnwindSafe for Context {}
impl std::panic::RefUnwindSafe for Context {}

// The compile-time promise the docs make.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Context>();
    assert_send_sync::<Shared>();
};

impl Shared {
    pub(crate) fn new(
        backend: AnyBackend,
        runtime: tokio::runtime::Handle,
        home: HomeThread,
        kick_foreign: bool,
        finished: watch::Receiver<bool>,
    ) -> Shared {
        Shared {
            backend,
            runtime,
            home,
            kick_foreign,
            finished,
            owner: OnceLock::new(),
            pool: OnceLock::new(),
            local: None,
            warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Logs `message` at `warn`, once per context: for fallbacks a user
    /// should hear about but not on every op.
    pub(crate) fn warn_once(&self, message: &str) {
        // Relaxed: only one log line is at stake.
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("{message}");
        }
    }

    pub(crate) fn home(&self) -> HomeThread {
        self.home
    }
}

impl Context {
    /// Starts configuring a context.
    pub fn builder() -> crate::Builder {
        crate::Builder::default()
    }

    /// A context with the default configuration.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`](crate::Builder::build).
    pub fn new() -> std::io::Result<Context> {
        crate::Builder::default().build()
    }

    /// The handle owning `shared`, made by the builder.
    pub(crate) fn own(shared: Arc<Shared>, home_thread: Option<thread::JoinHandle<()>>) -> Context {
        let owner = Arc::new(Owner {
            shared,
            home_thread: Mutex::new(home_thread),
        });
        let _ = owner.shared.owner.set(Arc::downgrade(&owner));
        Context { owner }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// A snapshot of the context's counters.
    pub fn metrics(&self) -> Metrics {
        self.shared().backend.metrics()
    }

    /// Which backend runs this context's ops: `"io_uring"`, `"fallback"` or
    /// `"sim"` (as [`Metrics::backend`]).
    pub fn backend(&self) -> &'static str {
        self.shared().backend.name()
    }

    /// The simulator's controls, when this context runs on
    /// [`Backend::Sim`](crate::Backend::Sim); `None` otherwise.
    pub fn sim(&self) -> Option<SimHandle> {
        self.shared().backend.sim()
    }

    /// The io_uring setup flags the kernel accepted for this context's ring
    /// (all `false` off io_uring).
    pub fn ring_flags(&self) -> RingFlags {
        self.shared().backend.ring_flags()
    }

    /// The home thread's id.
    pub fn home_thread(&self) -> ThreadId {
        self.shared().home.id()
    }

    /// Whether the calling thread is this context's home thread.
    pub fn is_home_thread(&self) -> bool {
        self.shared().home.is_current()
    }

    /// A handle to the home thread's Tokio runtime.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.shared().runtime
    }

    /// Binds the calling thread to this context until the guard is dropped:
    /// while bound, [`current`] returns this context.
    ///
    /// Bindings nest: `current` returns the most recent binding whose guard
    /// is still alive. Guards may be dropped in any order; each removes the
    /// binding it made, and only that one.
    ///
    /// This is the rule a vCPU thread follows while it holds the big lock and
    /// handles an MMIO exit: code deep in a device model finds the context it
    /// must submit to without being handed it.
    pub fn bind(&self) -> BindGuard {
        BindGuard {
            id: push_binding(Binding::Handle(self.clone())),
            _not_send: PhantomData,
        }
    }

    /// Shuts the context down and waits until its home thread has cancelled
    /// and drained every op in flight. Other handles stay valid, but every op
    /// submitted through them fails.
    ///
    /// Called on the home thread itself, it only requests the shutdown: the
    /// home thread cannot wait for itself.
    pub async fn shutdown(&self) {
        let shared = self.shared();
        shared.backend.shut_down();
        if self.is_home_thread() {
            return;
        }
        let mut finished = shared.finished.clone();
        // An error means the home thread is gone, which is finished too.
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Whether the context has been asked to shut down (or its driver has
    /// ended).
    pub fn is_shut_down(&self) -> bool {
        self.shared().backend.is_shut_down()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.shared();
        f.debug_struct("Context")
            .field("backend", &shared.backend.name())
            .field("ring_flags", &shared.backend.ring_flags())
            .field("home_thread", &shared.home.id())
            .field("kick_foreign_pushes", &shared.kick_foreign)
            .field("shut_down", &shared.backend.is_shut_down())
            .finish()
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.backend.shut_down();
        let home = self
            .home_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(home) = home else { return };
        // The home thread cannot join itself; it exits on its own.
        if home.thread().id() == thread::current().id() {
            return;
        }
        #[cfg(debug_assertions)]
        if tokio::runtime::Handle::try_current().is_ok() {
            tracing::warn!(
                "the last aioctx::Context was dropped inside a Tokio runtime: the drop blocks \
                 until the home thread has drained; `ctx.shutdown().await` first avoids that"
            );
        }
        if home.join().is_err() {
            tracing::error!("aioctx home thread panicked");
        }
    }
}

/// One entry of a thread's binding stack.
enum Binding {
    /// From [`Context::bind`]: a handle, kept alive by the binding.
    Handle(Context),
    /// A context this thread belongs to without holding it: its home
    /// thread's own context, or a pool member the thread was given. Weak, so
    /// the binding does not keep the context alive.
    Weak(Weak<Shared>),
}

impl Binding {
    fn context(&self) -> Option<Context> {
        match self {
            Binding::Handle(context) => Some(context.clone()),
            Binding::Weak(shared) => {
                let owner = shared.upgrade()?.owner.get()?.upgrade()?;
                Some(Context { owner })
            }
        }
    }
}

thread_local! {
    /// This thread's bindings, innermost last, each with its id.
    static BOUND: RefCell<Vec<(u64, Binding)>> = const { RefCell::new(Vec::new()) };
    static NEXT_BINDING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn push_binding(binding: Binding) -> u64 {
    let id = NEXT_BINDING.with(|next| {
        let id = next.get();
        next.set(id + 1);
        id
    });
    BOUND.with(|bound| {
        let mut bound = bound.borrow_mut();
        // Forget weak bindings whose context is gone.
        bound.retain(|(_, b)| !matches!(b, Binding::Weak(shared) if shared.strong_count() == 0));
        bound.push((id, binding));
    });
    id
}

fn remove_binding(id: u64) {
    // Taken out under the borrow, dropped after it: dropping a context's
    // last handle may run arbitrary code.
    let removed = BOUND.with(|bound| {
        let mut bound = bound.borrow_mut();
        let at = bound.iter().rposition(|(entry, _)| *entry == id)?;
        Some(bound.remove(at))
    });
    drop(removed);
}

/// The context the calling thread should submit to: the most recent
/// [`Context::bind`] guard's, else the context whose home thread this is, else
/// the context a [`Pool`](crate::Pool) gave this thread
/// ([`Pool::bind_thread`](crate::Pool::bind_thread)), else `None`.
pub fn current() -> Option<Context> {
    BOUND.with(|bound| {
        bound
            .borrow()
            .iter()
            .rev()
            .find_map(|(_, binding)| binding.context())
    })
}

/// Binds the calling thread, the home of `shared`, to its context: weakly,
/// until the guard is dropped (or, if it is forgotten, until the context is
/// gone).
pub(crate) fn bind_home(shared: &Arc<Shared>) -> HomeBinding {
    HomeBinding {
        id: push_binding(Binding::Weak(Arc::downgrade(shared))),
        _not_send: PhantomData,
    }
}

/// Keeps the calling thread bound to a context; see [`Context::bind`].
#[must_use = "the thread is unbound when the guard is dropped"]
#[derive(Debug)]
pub struct BindGuard {
    id: u64,
    /// Bindings are per thread: the guard must be dropped where it was made.
    _not_send: PhantomData<*const ()>,
}

impl Drop for BindGuard {
    fn drop(&mut self) {
        remove_binding(self.id);
    }
}

/// A home thread's binding to its own context; see [`bind_home`].
#[derive(Debug)]
pub(crate) struct HomeBinding {
    id: u64,
    _not_send: PhantomData<*const ()>,
}

impl Drop for HomeBinding {
    fn drop(&mut self) {
        remove_binding(self.id);
    }
}

/// Binds the calling thread, weakly and for good, to `shared`: a pool's
/// choice for this thread. Lapses when the context is gone.
pub(crate) fn bind_weakly(shared: &Arc<Shared>) {
    push_binding(Binding::Weak(Arc::downgrade(shared)));
}

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
    members: Vec<Weak<Shared>>,
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
    pub(crate) fn new(members: &[Context]) -> Membership {
        Membership {
            // Relaxed: ids only need to be distinct.
            id: NEXT_POOL.fetch_add(1, Ordering::Relaxed),
            members: members.iter().map(|c| Arc::downgrade(c.shared())).collect(),
            files_follow_threads: members.iter().all(|c| c.shared().backend.shares_fds()),
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
                .position(|member| member.upgrade().is_some_and(|m| m.home.is_current()))
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
    pub(crate) fn member(&self, index: usize) -> Option<Arc<Shared>> {
        self.members[index].upgrade()
    }

    /// The calling thread's member, if it is not `shared` itself and still
    /// alive: where an op of a file opened on `shared` should go instead.
    pub(crate) fn elsewhere(&self, shared: &Arc<Shared>) -> Option<Arc<Shared>> {
        if !self.files_follow_threads {
            return None;
        }
        let member = &self.members[self.pick()];
        if std::ptr::eq(member.as_ptr(), Arc::as_ptr(shared)) {
            return None;
        }
        member.upgrade()
    }
}

/// Runs `f` on the caller's thread with `context` bound and its runtime
/// entered, so `current()`, `tokio::spawn` and Tokio timers work inside.
pub(crate) fn with_context<R>(context: &Context, f: impl FnOnce() -> R) -> R {
    let _bound = context.bind();
    let _runtime = context.runtime().enter();
    f()
}
