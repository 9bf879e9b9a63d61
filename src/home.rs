//! [`Builder`]: configuring a context and starting its home, either on a
//! thread of its own ([`Builder::build`]) or on the caller's thread
//! ([`Builder::build_local`], main-loop style), and the home's lifecycle from
//! setup to the drained shutdown. The surface's only file that starts
//! threads and runtimes.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::LocalSet;

use crate::backend::sim::SimConfig;
use crate::backend::{AnyBackend, Backend, Setup};
use crate::context::bind::{HomeBinding, bind_home};
use crate::context::handle::{Context, Owner};
use crate::context::state::ContextState;
use crate::home_thread::{HomeOnly, HomeThread};
use crate::ring::RingConfig;
use crate::trace;

/// Configures and starts a [`Context`].
#[derive(Debug, Clone)]
pub struct Builder {
    entries: u32,
    thread_name: String,
    single_issuer: bool,
    defer_taskrun: bool,
    kick_foreign: bool,
    backend: Backend,
    fallback_threads: usize,
    cpu: Option<usize>,
    sqpoll_idle: Option<std::time::Duration>,
    buffer_slots: u32,
    file_slots: u32,
    dwell_warning: Option<Duration>,
    /// The index of the pool member this builds, for its span.
    member: Option<usize>,
    #[cfg(feature = "test-util")]
    start_paused: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            entries: 256,
            thread_name: "aioctx-home".to_owned(),
            single_issuer: true,
            defer_taskrun: false,
            kick_foreign: true,
            backend: Backend::Auto,
            fallback_threads: 16,
            cpu: None,
            sqpoll_idle: None,
            buffer_slots: 1024,
            file_slots: 1024,
            dwell_warning: Some(trace::DEFAULT_DWELL_WARNING),
            member: None,
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

    /// Whether to try `IORING_SETUP_SINGLE_ISSUER` (only the home thread
    /// submits, which it is anyway), with `COOP_TASKRUN` (default `true`).
    /// Where the kernel refuses it the ring falls back to `COOP_TASKRUN`
    /// alone, then to no flags; [`Context::ring_flags`] tells which.
    pub fn single_issuer(mut self, enabled: bool) -> Self {
        self.single_issuer = enabled;
        self
    }

    /// Whether to try `IORING_SETUP_DEFER_TASKRUN` (with `SINGLE_ISSUER`)
    /// first; default `false`.
    ///
    /// Under `DEFER_TASKRUN` the kernel posts completions that need task
    /// work (a read of a pipe or socket, a poll, a device read) only when
    /// the home thread enters the ring, and tells a sleeping home thread
    /// about them through the ring's eventfd, which it may signal late:
    /// measured here (Linux 6.18 on a 2-vCPU VM), a pipe read completed
    /// 14 ms (p50) after the write that made it ready, against 0.1 ms
    /// without it, so a main loop parked on such ops slept through them
    /// (BENCHMARKS.md, "DEFER_TASKRUN and the eventfd"). It pays for rings
    /// whose home thread is always busy entering, and costs nothing for ops
    /// that complete inside their submitting enter (page-cache reads,
    /// NOPs). Ignored with [`sqpoll`](Builder::sqpoll), which excludes it.
    pub fn defer_taskrun(mut self, enabled: bool) -> Self {
        self.defer_taskrun = enabled;
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

    /// Which backend runs the ops; default [`Backend::Auto`] (io_uring, or
    /// the thread-pool fallback where io_uring is unavailable).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// The most pool threads the fallback backend runs blocking syscalls on
    /// at once (the home runtime's `max_blocking_threads`); more ops wait in
    /// its queue. Default 16.
    pub fn fallback_threads(mut self, threads: usize) -> Self {
        self.fallback_threads = threads.max(1);
        self
    }

    /// Asks for `IORING_SETUP_SQPOLL`: a kernel thread polls the submission
    /// queue, so submitting costs no `io_uring_enter`; it sleeps after `idle`
    /// without work, and the driver wakes it when it next submits. The
    /// thread keeps a CPU busy while it polls, and while ops are in the
    /// kernel the driver polls the completion queue too (up to 50 µs after
    /// the last completion) instead of sleeping on its eventfd: two cores
    /// spent to take every syscall and wake off the op's path. It pays for
    /// latency (a QD1 O_DIRECT read: 1.4x the IOPS of the plain ring on a
    /// 2-CPU machine, at three times its CPU per read), not for throughput
    /// of ops that complete at once (NOPs: fewer than without); see
    /// BENCHMARKS.md. `SQPOLL` excludes
    /// `DEFER_TASKRUN`: the ring tries `SQPOLL | SINGLE_ISSUER`, then `SQPOLL`,
    /// then the flags it would use without this option;
    /// [`Context::ring_flags`] tells which it got. Default: off.
    pub fn sqpoll(mut self, idle: std::time::Duration) -> Self {
        self.sqpoll_idle = Some(idle);
        self
    }

    /// Slots of the ring's table of registered buffers
    /// ([`Context::register_buffers`]); 0 turns registration off. At most
    /// 65536. Default 1024.
    pub fn registered_buffer_slots(mut self, slots: u32) -> Self {
        self.buffer_slots = slots.min(1 << 16);
        self
    }

    /// Slots of the ring's table of registered files
    /// ([`OpenOptions::register`](crate::fs::OpenOptions::register)); 0 turns
    /// registration off. Default 1024. For
    /// [`WorkerRings`](crate::runtime::WorkerRings), each ring's table, which
    /// holds the files its ops have used (see there).
    pub fn registered_file_slots(mut self, slots: u32) -> Self {
        self.file_slots = slots;
        self
    }

    /// Pins the home thread to CPU `cpu` (`sched_setaffinity`): with
    /// [`build_local`](Builder::build_local), the calling thread. Default: no
    /// pinning. A [`Pool`](crate::Pool) can pin one member per CPU.
    ///
    /// Building fails with `EINVAL` if the CPU is not one this process may
    /// run on.
    pub fn pin_to_cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Logs a warning when an op pushed from another thread waited longer
    /// than `threshold` between its push and the kernel taking its SQE (its
    /// *dwell*, [`Metrics::dwell`](crate::Metrics::dwell)): the symptom of
    /// a home thread that was not woken, or was kept busy by its own tasks.
    /// One `warn` event per `io_uring_enter` that hands over such SQEs, with
    /// how many and the longest dwell (see [Tracing](crate#tracing)). `None`
    /// or a zero duration turns it off. Default 10 ms.
    ///
    /// io_uring only: the fallback's and the simulator's queues are timed in
    /// their metrics, not warned about. Costs nothing per op when no
    /// subscriber listens at `warn`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let quiet = aioctx::Context::builder().dwell_warning(None);
    /// let strict = aioctx::Context::builder().dwell_warning(Duration::from_millis(1));
    /// # let _ = (quiet, strict);
    /// ```
    pub fn dwell_warning(mut self, threshold: impl Into<Option<Duration>>) -> Self {
        self.dwell_warning = threshold.into().filter(|t| !t.is_zero());
        self
    }

    /// Marks the context as member `index` of a pool, for its span.
    pub(crate) fn member(mut self, index: usize) -> Self {
        self.member = Some(index);
        self
    }

    /// Starts the home runtime with Tokio's clock paused, for tests on
    /// virtual time (see `tokio::time::pause`). Default `false`.
    ///
    /// Only with the crate's `test-util` feature (which turns on Tokio's):
    /// without it this method does not exist ("no method named
    /// `start_paused`"). Add `aioctx = { version = "…", features =
    /// ["test-util"] }` to `[dev-dependencies]`.
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
        let home = HomeThread::current();
        let id = trace::next_context_id();
        let span = trace::context_span(id, self.member);
        // No home thread to enter it for good: entered for the setup, which
        // hands it to the simulator's task and alarm (`Common::span`).
        let _entered = span.enter();
        let backend = AnyBackend::new(self.setup(&Backend::Sim(config), &runtime, home))?;
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
        let driver = state.backend.spawn_driver()?;
        runtime.spawn(async move {
            if let Err(e) = driver.await {
                tracing::error!(error = %e, "aioctx driver failed");
            }
            // No receiver left means no context left to wait for it.
            let _ = finished_tx.send(true);
        });
        let owner = Owner::new(state);
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
        let home = HomeThread::current();
        let id = trace::next_context_id();
        let span = trace::context_span(id, self.member);
        // No home thread to enter it for good: entered for the setup.
        let _entered = span.enter();
        let mut setup = self.setup(&self.backend, runtime, home);
        setup.worker = true;
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
            let _receivers_gone = finished_tx.send(true);
        });
        Ok(Owner::new(state))
    }

    /// The backend this builder asks for.
    pub(crate) fn backend_choice(&self) -> &Backend {
        &self.backend
    }

    /// The home thread's name.
    pub(crate) fn name(&self) -> &str {
        &self.thread_name
    }

    fn setup<'a>(
        &self,
        choice: &'a Backend,
        runtime: &'a tokio::runtime::Handle,
        home: HomeThread,
    ) -> Setup<'a> {
        Setup {
            choice,
            ring: RingConfig {
                entries: self.entries,
                single_issuer: self.single_issuer,
                defer_taskrun: self.defer_taskrun,
                sqpoll_idle: self.sqpoll_idle,
                buffer_slots: self.buffer_slots,
                file_slots: self.file_slots,
                shared: false,
            },
            kicks: self.kick_foreign,
            dwell_warning: self.dwell_warning,
            runtime,
            home,
            worker: false,
        }
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
        self.state.backend.spawn_driver()
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
