//! Starting a context's home, either on a thread of its own
//! ([`Builder::build`]) or on the caller's thread ([`Builder::build_local`],
//! main-loop style; a simulated context on the caller's runtime; a worker's
//! ring), and the home's lifecycle from setup to the drained shutdown. The
//! surface's only file that starts threads and runtimes.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;

use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::LocalSet;

use crate::backend::sim::SimConfig;
use crate::backend::{AnyBackend, Backend, Setup};
use crate::context::bind::{HomeBinding, bind_home};
use crate::context::handle::{Context, Owner};
use crate::context::state::ContextState;
use crate::home_thread::{HomeOnly, HomeThread};
use crate::trace;

use super::Builder;

impl Builder {
    /// Spawns the home thread, sets up its ring and runtime, and returns a
    /// handle once the driver is running.
    ///
    /// # Errors
    ///
    /// The io_uring setup error (`ENOSYS` where io_uring is missing, `EPERM`
    /// where it is disabled or filtered, `ENOMEM` past `RLIMIT_MEMLOCK` on
    /// old kernels), or a failure to spawn the thread or build the runtime.
    ///
    /// With [`Backend::Sim`], called inside a current-thread Tokio runtime
    /// (such as `#[tokio::test]`'s), there is no home thread: the simulator
    /// runs as a task on the caller's runtime, on its (possibly paused)
    /// clock, and that thread counts as home.
    pub fn build(self) -> io::Result<Context> {
        if let Backend::Sim(config) = &self.backend
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
            && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        {
            return self.build_sim_on(runtime, config.clone());
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let config = self.clone();
        let id = trace::next_context_id();
        let thread = thread::Builder::new()
            .name(self.thread_name.clone())
            .spawn(move || {
                // Entered for the thread's whole life: everything it logs
                // (setup, the driver, the home runtime's tasks) carries the
                // context's span.
                let span = trace::context_span(id, config.member);
                let _entered = span.enter();
                let started = Home::new(&config, id, &span).and_then(|(home, owner)| {
                    let driver = home.start_driver()?;
                    Ok((home, owner, driver))
                });
                // `build` waits in `recv` for this, so the sends cannot fail.
                match started {
                    Ok((home, owner, driver)) => {
                        let _ = ready_tx.send(Ok(owner));
                        home.run_until_shut_down(driver);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        let owner = match ready_rx.recv() {
            Ok(Ok(owner)) => owner,
            Ok(Err(e)) => {
                if thread.join().is_err() {
                    tracing::error!("aioctx home thread panicked after its setup failed");
                }
                return Err(e);
            }
            Err(_) => {
                // Gone without a word: it panicked during setup; say how.
                let why = match thread.join() {
                    Err(panic) => panic_message(&*panic),
                    Ok(()) => "it ended without reporting".to_owned(),
                };
                return Err(io::Error::other(format!(
                    "aioctx home thread died during setup: {why}"
                )));
            }
        };
        owner.set_home_thread(thread);
        Ok(Context { owner })
    }

    /// A sim context driven by a task on `runtime`, the caller's: the
    /// calling thread, which runs that runtime, is its home.
    fn build_sim_on(
        &self,
        runtime: tokio::runtime::Handle,
        config: SimConfig,
    ) -> io::Result<Context> {
        let choice = Backend::Sim(config);
        let setup = self.setup(&choice, &runtime, HomeThread::current());
        let owner = self.start_on(setup)?;
        // Weak, and never removed: it lapses when the context is gone.
        std::mem::forget(bind_home(&owner));
        Ok(Context { owner })
    }

    /// Makes the calling thread the home thread: sets up the ring and a
    /// current-thread runtime here, and returns a [`LocalContext`] whose
    /// [`block_on`](LocalContext::block_on) runs the main loop.
    ///
    /// # Errors
    ///
    /// As [`build`](Builder::build).
    pub fn build_local(self) -> io::Result<LocalContext> {
        let id = trace::next_context_id();
        let span = trace::context_span(id, self.member);
        let (home, owner) = span.in_scope(|| Home::new(&self, id, &span))?;
        let driver = span.in_scope(|| home.start_driver())?;
        let context = Context { owner };
        Ok(LocalContext {
            home: Some(home),
            driver: Some(driver),
            context,
            _home_only: PhantomData,
        })
    }

    /// A ring of the calling thread's own, on `runtime` (the thread's): the
    /// context a [`WorkerRings`](crate::runtime::WorkerRings) makes for each
    /// runtime thread. No thread is started: the calling thread is its home,
    /// and its reaper runs as a task of `runtime`.
    ///
    /// # Errors
    ///
    /// As [`build`](Builder::build).
    pub(crate) fn build_worker(&self, runtime: &tokio::runtime::Handle) -> io::Result<Arc<Owner>> {
        let mut setup = self.setup(&self.backend, runtime, HomeThread::current());
        setup.worker = true;
        self.start_on(setup)
    }

    /// Starts a context whose home is the calling thread, which runs
    /// `runtime`: no thread is started, the driver runs as a task of
    /// `runtime`, and the context is finished when that task ends. What a
    /// simulated context on the caller's runtime and a worker's ring share.
    fn start_on(&self, setup: Setup<'_>) -> io::Result<Arc<Owner>> {
        let (home, runtime) = (setup.home, setup.runtime.clone());
        let id = trace::next_context_id();
        let span = trace::context_span(id, self.member);
        // No home thread to enter it for good: entered for the setup, which
        // hands it to the driver's task (`Common::span`).
        let _entered = span.enter();
        let backend = AnyBackend::new(setup)?;
        span.record("backend", backend.name());
        let (finished_tx, finished_rx) = watch::channel(false);
        let state = Arc::new(ContextState::new(
            id,
            backend,
            runtime.clone(),
            home,
            self.kick_foreign,
            finished_rx,
        ));
        announce(&state, self.entries);
        let driver = {
            let _runtime = runtime.enter();
            state.backend.spawn_driver()?
        };
        runtime.spawn(async move {
            if let Err(e) = driver.await {
                tracing::error!(error = %e, "aioctx driver failed");
            }
            // No receiver left means no context left to wait for it.
            let _receivers_gone = finished_tx.send(true);
        });
        Ok(Owner::new(state))
    }
}

/// The home thread's side: runtime and backend. Lives on the home thread.
struct Home {
    /// Not the [`Owner`]: the home must not keep its own context alive.
    state: Arc<ContextState>,
    runtime: Runtime,
    /// Runs `!Send` tasks ([`Context::spawn_local`]); driven whenever the
    /// home runtime is.
    local: Rc<LocalSet>,
    finished: watch::Sender<bool>,
    /// This thread's binding to its context, for `current()`.
    binding: HomeBinding,
    /// The context's span, entered wherever the home runs.
    span: tracing::Span,
}

impl Home {
    /// Builds the home runtime and the backend on the calling thread; returns
    /// the home, and the owner for the context's handles.
    /// `span` is the context's, entered by the caller.
    fn new(config: &Builder, id: u64, span: &tracing::Span) -> io::Result<(Home, Arc<Owner>)> {
        if let Some(cpu) = config.cpu {
            pin_current_thread(cpu)?;
        }
        let home = HomeThread::current();
        let mut builder = tokio::runtime::Builder::new_current_thread();
        builder
            .enable_all()
            .max_blocking_threads(config.fallback_threads);
        #[cfg(feature = "test-util")]
        builder.start_paused(config.start_paused);
        let runtime = builder.build()?;
        let backend = {
            let _runtime = runtime.enter();
            AnyBackend::new(config.setup(&config.backend, runtime.handle(), home))?
        };
        span.record("backend", backend.name());
        let (finished_tx, finished_rx) = watch::channel(false);
        let local = Rc::new(LocalSet::new());
        let mut state = ContextState::new(
            id,
            backend,
            runtime.handle().clone(),
            home,
            config.kick_foreign,
            finished_rx,
        );
        state.local = Some(HomeOnly::new(home, local.clone()));
        let owner = Owner::new(Arc::new(state));
        announce(&owner.state, config.entries);
        let binding = bind_home(&owner);
        let home = Home {
            state: owner.state.clone(),
            runtime,
            local,
            finished: finished_tx,
            binding,
            span: span.clone(),
        };
        Ok((home, owner))
    }

    /// Spawns the backend's driver task on the home runtime.
    fn start_driver(&self) -> io::Result<tokio::task::JoinHandle<()>> {
        let _runtime = self.runtime.enter();
        let driver = self.state.backend.spawn_driver()?;
        if let Some(turns) = self.state.backend.local_turns() {
            // Detached: it ends once the driver has dropped the ring.
            drop(self.local.spawn_local(turns));
        }
        Ok(driver)
    }

    /// Runs the driver until it has shut the backend down, then tears the
    /// runtime down.
    fn run_until_shut_down(self, driver: tokio::task::JoinHandle<()>) {
        if let Err(e) = self.runtime.block_on(self.local.run_until(driver)) {
            tracing::error!(error = %e, "aioctx driver failed");
        }
        let Home {
            state,
            runtime,
            local,
            finished,
            binding,
            span: _,
        } = self;
        // Local tasks go first, inside the runtime (their ops fail fast: the
        // backend is shut down).
        if let Some(cell) = &state.local {
            drop(cell.take());
        }
        {
            let _runtime = runtime.enter();
            drop(local);
        }
        // Dropping the runtime drops the tasks still on it; their ops fail
        // fast, because the backend is shut down. Blocking threads are not
        // waited for: the fallback's may be stuck in syscalls that never
        // return, and the thread dropping the last handle may itself be one
        // of this runtime's blocking threads, waiting to join this one.
        runtime.shutdown_background();
        drop(binding);
        // `state` holds a receiver until after this, so it cannot fail.
        let _ = finished.send(true);
        drop(state);
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
        let _entered = home.span.enter();
        home.runtime.block_on(home.local.run_until(future))
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
        self.context.state().backend.shut_down();
        if let (Some(home), Some(driver)) = (self.home.take(), self.driver.take()) {
            let span = home.span.clone();
            span.in_scope(|| home.run_until_shut_down(driver));
        }
    }
}

/// Logs that a context is ready (inside its span, which names its backend):
/// at `info`, with the setup flags its ring got on io_uring; at `debug` on
/// the simulator, of which a seed exploration makes one per seed.
fn announce(state: &ContextState, entries: u32) {
    match state.backend.name() {
        "io_uring" => {}
        "sim" => {
            tracing::debug!("aioctx context ready");
            return;
        }
        _ => {
            tracing::info!("aioctx context ready");
            return;
        }
    }
    let flags = state.backend.ring_flags();
    tracing::info!(
        entries,
        single_issuer = flags.single_issuer,
        defer_taskrun = flags.defer_taskrun,
        coop_taskrun = flags.coop_taskrun,
        sqpoll = flags.sqpoll,
        registered_ring_fd = flags.registered_ring_fd,
        "aioctx context ready"
    );
}

/// The message a panic carried, when it is a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_owned())
}

/// Pins the calling thread to `cpu`.
fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside
    // it for `cpu < CPU_SETSIZE`, checked above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity(2) on the calling thread (0) with a set of
    // the size it is told.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
