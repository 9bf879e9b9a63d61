//! [`Context`], its [`Builder`], the home thread's lifecycle, and the
//! thread binding behind [`current`].
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
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::driver::{Core, DriverTask};
use crate::inbox::{Inbox, Kick};
use crate::metrics::{Counters, Metrics, RingFlags};
use crate::op::Request;
use crate::ring::{Ring, RingConfig};

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
    handle: Arc<Handle>,
}

/// Owns the home thread; dropped with the last [`Context`].
struct Handle {
    shared: Arc<Shared>,
    home_thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// What every thread shares. Op futures and files hold this, not a
/// [`Context`], so they do not keep the context alive.
pub(crate) struct Shared {
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
    handle: OnceLock<Weak<Handle>>,
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
        shared.counters.snapshot("io_uring", shared.ring_flags)
    }

    /// The io_uring setup flags the kernel accepted for this context's ring.
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
            .field("backend", &"io_uring")
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
    /// Hands a request to the driver: straight into the SQ on the home
    /// thread, through the inbox (with a kick if the driver sleeps) elsewhere.
    pub(crate) fn submit(self: &Arc<Self>, request: Request) -> io::Result<()> {
        let mut request = match Core::try_accept_local(self, request) {
            Ok(result) => return result,
            Err(request) => request,
        };
        if let Request::Submit(submission) = &mut request {
            submission.pushed_at = Some(Instant::now());
        }
        let is_submit = matches!(request, Request::Submit(_));
        match self.inbox.push(request) {
            Err(_) if is_submit => return Err(shutdown_error()),
            Err(_) => return Ok(()),
            Ok(Kick::Send) if self.kick_foreign => {
                Counters::add(&self.counters.kicks_sent, 1);
                self.driver_waker.wake();
            }
            Ok(Kick::Send) => Counters::add(&self.counters.kicks_suppressed, 1),
            Ok(Kick::Coalesced) => Counters::add(&self.counters.kicks_coalesced, 1),
        }
        if is_submit {
            Counters::add(&self.counters.ops_foreign, 1);
        }
        Ok(())
    }

    pub(crate) fn is_closing(&self) -> bool {
        // Acquire: pairs with the Release in `request_shutdown`.
        self.closing.load(Ordering::Acquire)
    }

    fn request_shutdown(&self) {
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
    static HOME_OF: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
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

/// Configures and starts a [`Context`].
#[derive(Debug, Clone)]
pub struct Builder {
    entries: u32,
    thread_name: String,
    single_issuer: bool,
    kick_foreign: bool,
    #[cfg(feature = "test-util")]
    start_paused: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            entries: 256,
            thread_name: "aioctx-home".to_owned(),
            single_issuer: true,
            kick_foreign: true,
            #[cfg(feature = "test-util")]
            start_paused: false,
        }
    }
}

impl Builder {
    /// Submission queue entries (rounded up to a power of two by the kernel).
    /// The completion queue gets twice as many. Default 256.
    ///
    /// More ops than this may be in flight at once: the excess waits in a
    /// backlog and enters the ring as room frees.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries.max(1);
        self
    }

    /// Name of the home thread. Default `aioctx-home`.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Whether to try `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`
    /// (default `true`). Where the kernel refuses them the ring falls back to
    /// `COOP_TASKRUN`, then to no flags; [`Context::ring_flags`] tells which.
    pub fn single_issuer(mut self, enabled: bool) -> Self {
        self.single_issuer = enabled;
        self
    }

    /// **Diagnostic only: reproduces the bug this crate exists to prevent.**
    ///
    /// With `false`, a push from a thread other than the home thread does not
    /// wake a sleeping driver: the op waits until the driver turns for some
    /// other reason (a completion, or a task on the home thread using the
    /// ring, as QEMU's timers do in its main loop), exactly like QEMU before
    /// commit 2ae361ef1d. It exists so a harness can show that bug beside the fix
    /// (`examples/iotest`); never turn it off in real code. Default `true`.
    pub fn kick_foreign_pushes(mut self, enabled: bool) -> Self {
        self.kick_foreign = enabled;
        self
    }

    /// Starts the home runtime with Tokio's clock paused, for tests on
    /// virtual time (see `tokio::time::pause`). Default `false`.
    #[cfg(feature = "test-util")]
    pub fn start_paused(mut self, paused: bool) -> Self {
        self.start_paused = paused;
        self
    }

    /// Spawns the home thread, sets up its ring and runtime, and returns a
    /// handle once the driver is running.
    ///
    /// # Errors
    ///
    /// The io_uring setup error (`ENOSYS` where io_uring is missing, `EPERM`
    /// where it is disabled or filtered, `ENOMEM` past `RLIMIT_MEMLOCK` on
    /// old kernels), or a failure to spawn the thread or build the runtime.
    pub fn build(self) -> io::Result<Context> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let config = self.clone();
        let thread = thread::Builder::new()
            .name(self.thread_name.clone())
            .spawn(move || {
                let started = Home::new(&config).and_then(|home| {
                    let driver = home.start_driver()?;
                    Ok((home, driver))
                });
                match started {
                    Ok((home, driver)) => {
                        let _ = ready_tx.send(Ok(home.shared.clone()));
                        home.run_until_shut_down(driver);
                    }
                    Err(e) => {
                        Core::uninstall();
                        HOME_OF.with(|home| home.borrow_mut().take());
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        let shared = match ready_rx.recv() {
            Ok(Ok(shared)) => shared,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(io::Error::other("aioctx home thread died during setup"));
            }
        };
        let handle = Arc::new(Handle {
            shared,
            home_thread: Mutex::new(Some(thread)),
        });
        let _ = handle.shared.handle.set(Arc::downgrade(&handle));
        Ok(Context { handle })
    }
}

impl Builder {
    /// Makes the calling thread the home thread: sets up the ring and a
    /// current-thread runtime here, and returns a [`LocalContext`] whose
    /// [`block_on`](LocalContext::block_on) runs the main loop.
    ///
    /// # Errors
    ///
    /// As [`build`](Builder::build).
    ///
    /// # Panics
    ///
    /// If the calling thread is already home to a context.
    pub fn build_local(self) -> io::Result<LocalContext> {
        let home = Home::new(&self)?;
        let driver = match home.start_driver() {
            Ok(driver) => driver,
            Err(e) => {
                Core::uninstall();
                HOME_OF.with(|home| home.borrow_mut().take());
                return Err(e);
            }
        };
        let handle = Arc::new(Handle {
            shared: home.shared.clone(),
            home_thread: Mutex::new(None),
        });
        let _ = handle.shared.handle.set(Arc::downgrade(&handle));
        Ok(LocalContext {
            home: Some(home),
            driver: Some(driver),
            context: Context { handle },
            _home_only: PhantomData,
        })
    }
}

/// The home thread's side: ring, runtime, driver. Lives on the home thread.
struct Home {
    shared: Arc<Shared>,
    runtime: Runtime,
    finished: watch::Sender<bool>,
}

impl Home {
    fn new(config: &Builder) -> io::Result<Home> {
        let ring = Ring::new(RingConfig {
            entries: config.entries,
            single_issuer: config.single_issuer,
        })?;
        let ring_flags = ring.flags();

        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder.enable_all();
        #[cfg(feature = "test-util")]
        builder.start_paused(config.start_paused);
        let runtime = builder.build()?;

        let (finished_tx, finished_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            inbox: Inbox::new(),
            driver_waker: AtomicWaker::new(),
            counters: Counters::default(),
            runtime: runtime.handle().clone(),
            home_thread: thread::current().id(),
            ring_flags,
            kick_foreign: config.kick_foreign,
            closing: AtomicBool::new(false),
            finished: finished_rx,
            handle: OnceLock::new(),
        });
        tracing::debug!(?ring_flags, entries = config.entries, "aioctx ring ready");

        Core::install(shared.clone(), ring);
        HOME_OF.with(|home| *home.borrow_mut() = Some(shared.clone()));
        Ok(Home {
            shared,
            runtime,
            finished: finished_tx,
        })
    }

    /// Spawns the driver task on the home runtime.
    fn start_driver(&self) -> io::Result<tokio::task::JoinHandle<()>> {
        let _runtime = self.runtime.enter();
        let driver = DriverTask::new(self.shared.clone())?;
        Ok(tokio::spawn(tokio::task::coop::unconstrained(driver)))
    }

    /// Runs the driver until shutdown has drained the ring, then tears the
    /// runtime and the ring down, in that order.
    fn run_until_shut_down(self, driver: tokio::task::JoinHandle<()>) {
        if let Err(e) = self.runtime.block_on(driver) {
            tracing::error!(error = %e, "aioctx driver failed");
        }
        let Home {
            shared,
            runtime,
            finished,
        } = self;
        // Dropping the runtime drops the tasks still on it; their ops fail
        // fast, because the driver is closed.
        drop(runtime);
        HOME_OF.with(|home| home.borrow_mut().take());
        Core::uninstall();
        let _ = finished.send(true);
        drop(shared);
    }
}

/// A context whose home is the thread that built it, QEMU main-loop style:
/// the driver runs whenever that thread runs [`LocalContext::block_on`].
///
/// From [`Builder::build_local`]. `!Send`: it stays on its home thread.
/// Dropping it shuts the context down (cancelling and draining what is in
/// flight) on the calling thread.
pub struct LocalContext {
    home: Option<Home>,
    driver: Option<tokio::task::JoinHandle<()>>,
    context: Context,
    _home_only: PhantomData<*const ()>,
}

impl LocalContext {
    /// A handle to the context, to clone and hand to other threads.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Runs `future` to completion on this, the home, thread. The driver runs
    /// alongside it: ops from any thread make progress only while some
    /// `block_on` runs (between calls, foreign pushes wait in the inbox).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        let home = self.home.as_ref().expect("home present until drop");
        home.runtime.block_on(future)
    }
}

impl fmt::Debug for LocalContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalContext")
            .field("context", &self.context)
            .finish()
    }
}

impl Drop for LocalContext {
    fn drop(&mut self) {
        self.context.shared().request_shutdown();
        if let (Some(home), Some(driver)) = (self.home.take(), self.driver.take()) {
            home.run_until_shut_down(driver);
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
