//! [`Context`], the state its threads share, and the thread binding behind
//! [`current`]. Setting a context up is [`crate::builder`]'s job.
//!
//! A context is three parts: the user's handles ([`Context`], cheap to clone),
//! the state every thread shares ([`Shared`]: the inbox, the kick, the
//! counters), and the home thread's private driver state (in `driver.rs`).
//! Dropping the last handle, or [`Context::shutdown`], shuts the driver down:
//! ops in flight are cancelled and drained, and every pending future resolves.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, ThreadId};
use std::time::Instant;

use futures::task::AtomicWaker;
use tokio::sync::watch;

use crate::builder::Builder;
use crate::driver::Core;
use crate::fallback::Pool;
use crate::inbox::{Inbox, Kick};
use crate::metrics::{Counters, Metrics, RingFlags};
use crate::lifecycle::Canceller;
use crate::op::{Cqe, Handoff, Request, Submission};
use crate::sim::Sim;

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
/// thread (from async code prefer [`shutdown`](Context::shutdown), which does
/// not block). Ops still in flight are cancelled; their futures resolve with
/// an error ([`is_shutdown`](crate::is_shutdown) or `ECANCELED`). Ops started
/// afterwards fail at once. Op futures and files do not keep a context alive.
#[derive(Clone)]
pub struct Context {
    pub(crate) handle: Arc<Handle>,
}

/// Owns the home thread; dropped with the last [`Context`].
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) home_thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// What every thread shares. Op futures and files hold this, not a
/// [`Context`], so they do not keep the context alive.
pub(crate) struct Shared {
    /// The backend running this context's ops.
    pub(crate) engine: Engine,
    pub(crate) inbox: Inbox<Request>,
    /// The driver task's waker, for kicks from other threads.
    pub(crate) driver_waker: AtomicWaker,
    pub(crate) counters: Counters,
    pub(crate) runtime: tokio::runtime::Handle,
    home_thread: ThreadId,
    ring_flags: RingFlags,
    /// Off only under the diagnostic switch [`Builder::kick_foreign_pushes`].
    kick_foreign: bool,
    /// Set once by the first shutdown request.
    closing: AtomicBool,
    /// Becomes `true` when the home thread has drained and closed the ring.
    finished: watch::Receiver<bool>,
    /// For [`current`] on the home thread.
    pub(crate) handle: OnceLock<Weak<Handle>>,
}

/// What runs a context's ops: the ring (through the driver), the blocking
/// pool, or the simulator. See [`crate::backend`] for the contract.
pub(crate) enum Engine {
    Uring,
    Fallback(Pool),
    Sim(Box<Sim>),
}

impl Engine {
    /// The name [`Metrics::backend`] reports.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Engine::Uring => "io_uring",
            Engine::Fallback(_) => "fallback",
            Engine::Sim(_) => "sim",
        }
    }
}

// The compile-time promise the docs make.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Context>();
    assert_send_sync::<Shared>();
};

impl Context {
    /// Starts configuring a context.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A context with the default configuration.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> io::Result<Context> {
        Builder::default().build()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// A snapshot of the context's counters.
    pub fn metrics(&self) -> Metrics {
        let shared = self.shared();
        shared
            .counters
            .snapshot(shared.engine.name(), shared.ring_flags)
    }

    /// Which backend runs this context's ops: `"io_uring"`, `"fallback"` or
    /// `"sim"` (as [`Metrics::backend`]).
    pub fn backend(&self) -> &'static str {
        self.shared().engine.name()
    }

    /// The simulator's controls, when this context runs on
    /// [`Backend::Sim`](crate::Backend::Sim); `None` otherwise.
    pub fn sim(&self) -> Option<crate::sim::SimHandle> {
        match &self.shared().engine {
            Engine::Sim(_) => Some(crate::sim::SimHandle::new(self.shared().clone())),
            _ => None,
        }
    }

    /// The io_uring setup flags the kernel accepted for this context's ring
    /// (all `false` off io_uring).
    pub fn ring_flags(&self) -> RingFlags {
        self.shared().ring_flags
    }

    /// The home thread's id.
    pub fn home_thread(&self) -> ThreadId {
        self.shared().home_thread
    }

    /// Whether the calling thread is this context's home thread.
    pub fn is_home_thread(&self) -> bool {
        thread::current().id() == self.shared().home_thread
    }

    /// A handle to the home thread's Tokio runtime.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.shared().runtime
    }

    /// Binds the calling thread to this context until the guard is dropped:
    /// while bound, [`current`] returns this context. Bindings nest.
    ///
    /// This is the rule a vCPU thread follows while it holds the big lock and
    /// handles an MMIO exit: code deep in a device model finds the context it
    /// must submit to without being handed it.
    pub fn bind(&self) -> BindGuard {
        BOUND.with(|bound| bound.borrow_mut().push(self.clone()));
        BindGuard {
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
        shared.request_shutdown();
        if self.is_home_thread() {
            return;
        }
        let mut finished = shared.finished.clone();
        // An error means the home thread is gone, which is finished too.
        let _ = finished.wait_for(|done| *done).await;
    }

    /// Whether the context has been asked to shut down.
    pub fn is_shut_down(&self) -> bool {
        self.shared().is_closing()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.shared();
        f.debug_struct("Context")
            .field("backend", &shared.engine.name())
            .field("ring_flags", &shared.ring_flags)
            .field("home_thread", &shared.home_thread)
            .field("kick_foreign_pushes", &shared.kick_foreign)
            .field("shut_down", &shared.is_closing())
            .finish()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.request_shutdown();
        let home = self
            .home_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(home) = home {
            // The home thread cannot join itself; it exits on its own.
            if home.thread().id() != thread::current().id() && home.join().is_err() {
                tracing::error!("aioctx home thread panicked");
            }
        }
    }
}

impl Shared {
    /// Hands an op to the ring's driver: straight into the SQ on the home
    /// thread, through the inbox (with a kick if the driver sleeps) elsewhere.
    /// An op the driver cannot take (shut down) is completed with the error.
    /// Only for ring contexts: other backends start their ops themselves.
    pub(crate) fn submit(self: &Arc<Self>, submission: Submission) -> Handoff {
        debug_assert!(matches!(self.engine, Engine::Uring), "submit off the ring");
        let mut submission = match Core::try_submit_local(self, submission) {
            Ok(()) => return Handoff::Here,
            Err(submission) => submission,
        };
        submission.pushed_at = Some(Instant::now());
        if let Err(Request::Submit(submission)) = self.push(Request::Submit(submission)) {
            submission.op.complete(Cqe::error(shutdown_error()));
            return Handoff::Here;
        }
        Counters::add(&self.counters.ops_foreign, 1);
        Handoff::Queued
    }

    /// Passes a dropped op's reference to the driver, which cancels the op
    /// if it is in the kernel. Other backends cannot cancel a started op:
    /// dropping the reference is all there is to do.
    pub(crate) fn cancel(self: &Arc<Self>, canceller: Canceller) {
        if !matches!(self.engine, Engine::Uring) {
            return;
        }
        if let Err(canceller) = Core::try_cancel_local(self, canceller) {
            // Shut down: shutdown cancels everything in flight anyway.
            let _ = self.push(Request::Cancel(canceller));
        }
    }

    /// Queues a request in the inbox, kicking the driver if it sleeps. Gives
    /// the request back if the inbox has closed.
    fn push(&self, request: Request) -> Result<(), Request> {
        match self.inbox.push(request).map_err(|closed| closed.0)? {
            Kick::Send if self.kick_foreign => {
                Counters::add(&self.counters.kicks_sent, 1);
                self.driver_waker.wake();
            }
            Kick::Send => Counters::add(&self.counters.kicks_suppressed, 1),
            Kick::Coalesced => Counters::add(&self.counters.kicks_coalesced, 1),
        }
        Ok(())
    }

    /// Whether the calling thread is the context's home thread.
    pub(crate) fn runtime_is_home(&self) -> bool {
        thread::current().id() == self.home_thread
    }

    /// Resolves once shutdown has been requested. For the drivers of the
    /// backends other than the ring; woken by `request_shutdown`.
    pub(crate) async fn closed(&self) {
        std::future::poll_fn(|cx| {
            self.driver_waker.register(cx.waker());
            if self.is_closing() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    pub(crate) fn is_closing(&self) -> bool {
        // Acquire: pairs with the Release in `request_shutdown`.
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn request_shutdown(&self) {
        // Release: pairs with the Acquire in `is_closing`, read by the driver
        // at the start of the turn this wake causes.
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.driver_waker.wake();
        }
    }
}

/// The error of an op submitted to a context that has shut down.
pub(crate) fn shutdown_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, ShutDown)
}

/// Whether `error` says the op's context has shut down (rather than the
/// kernel failing the op).
pub fn is_shutdown(error: &io::Error) -> bool {
    error.get_ref().is_some_and(|inner| inner.is::<ShutDown>())
}

#[derive(Debug)]
struct ShutDown;

impl fmt::Display for ShutDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the aioctx context has shut down")
    }
}

impl std::error::Error for ShutDown {}

thread_local! {
    /// Contexts this thread is bound to, innermost last.
    static BOUND: RefCell<Vec<Context>> = const { RefCell::new(Vec::new()) };
    /// The context whose home this thread is.
    pub(crate) static HOME_OF: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

/// The context the calling thread should submit to: the innermost
/// [`Context::bind`] guard's, else the context whose home thread this is,
/// else `None`.
pub fn current() -> Option<Context> {
    if let Some(context) = BOUND.with(|bound| bound.borrow().last().cloned()) {
        return Some(context);
    }
    HOME_OF.with(|home| {
        let home = home.borrow();
        let handle = home.as_ref()?.handle.get()?.upgrade()?;
        Some(Context { handle })
    })
}

/// Keeps the calling thread bound to a context; see [`Context::bind`].
#[must_use = "the thread is unbound when the guard is dropped"]
#[derive(Debug)]
pub struct BindGuard {
    /// Bindings are per thread: the guard must be dropped where it was made.
    _not_send: PhantomData<*const ()>,
}

impl Drop for BindGuard {
    fn drop(&mut self) {
        BOUND.with(|bound| bound.borrow_mut().pop());
    }
}

impl Shared {
    pub(crate) fn new(
        engine: Engine,
        runtime: tokio::runtime::Handle,
        ring_flags: RingFlags,
        kick_foreign: bool,
        finished: watch::Receiver<bool>,
    ) -> Shared {
        Shared {
            engine,
            inbox: Inbox::new(),
            driver_waker: AtomicWaker::new(),
            counters: Counters::default(),
            runtime,
            home_thread: thread::current().id(),
            ring_flags,
            kick_foreign,
            closing: AtomicBool::new(false),
            finished,
            handle: OnceLock::new(),
        }
    }
}

/// Runs a future on the caller's thread with `context` bound and its runtime
/// entered, so `current()`, `tokio::spawn` and Tokio timers work inside.
pub(crate) fn with_context<R>(context: &Context, f: impl FnOnce() -> R) -> R {
    let _bound = context.bind();
    let _runtime = context.runtime().enter();
    f()
}
