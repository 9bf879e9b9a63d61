//! The simulator's timeline: every op scheduled at its deadline when it is
//! submitted, the alarm that completes ops when Tokio's clock reaches them,
//! the simulator task, crashes, and the controls users hold
//! ([`SimHandle`]). Imports the sim's other files, `common`, the ops'
//! crate-private traits and the leaves.
//!
//! # How an op completes at its deadline, however the clock is stepped
//!
//! ```text
//!  start(op) ── deadline = now + latency ──► timeline (deadline, tie, seq)
//!       │ wakes
//!       ▼
//!  sim task ── settle ──► alarm: one tokio Sleep at the earliest event,
//!                          polled with the alarm's own waker
//!  Tokio's time driver reaches it ── wakes the alarm ──► settle, right there:
//!       every event due by the alarm's instant runs, in timeline order; the
//!       ops' futures are woken; the alarm is set for the next event
//! ```
//!
//! The alarm's waker runs the due ops itself, inside the time driver, instead
//! of waking the simulator task. A test that advances a paused clock
//! (`tokio::time::advance`) is resumed only after the time driver has fired
//! its timers, but before the tasks those timers woke have run; so if the
//! ops waited for the simulator task, a test would see them one step late.
//! Run by the alarm, they are done before the test looks.
//!
//! An event is due when the alarm set at its instant is ready: exactly when
//! `tokio::time::sleep_until(deadline)` would be, whoever polls when. The
//! simulator task only sets the alarm (after a submission) and ends the
//! simulator on shutdown.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::os::fd::RawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use crate::backend::common::{Common, Placement};
use crate::backend::{Anchored, Reactor};
use crate::error::{Cqe, DirectAlignment, shutdown_error};
use crate::home_thread::HomeThread;
use crate::lifecycle::{Fresh, FutureHalf};
use crate::metrics::Counters;
use crate::ops::{OpRef, Operation, erase};
use crate::trace;

use super::config::{CrashModel, Latency, SimConfig};
use super::crash::{self, Tear};
use super::files::{Files, Injector};
use super::report::CrashReport;
use super::rng::{Rng, Stream};

/// One entry of the completion log: which op completed, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The op's submission number in this context, from 0.
    pub seq: u64,
    /// The op's type (`ReadAt`, `WriteAt`, `Fsync`, ...).
    pub op: &'static str,
    /// Its deadline: Tokio time since the context was built.
    pub at: Duration,
}

/// A simulated backend: cheap to clone, shared by every thread.
#[derive(Clone)]
pub(crate) struct Sim {
    shared: Arc<SimState>,
}

struct SimState {
    common: Common,
    /// The runtime whose clock the simulator keeps.
    runtime: tokio::runtime::Handle,
    seed: u64,
    state: Mutex<State>,
    /// The simulator task's waker: a submission asks it to set the alarm.
    task: AtomicWaker,
    /// The timer at the earliest event; `None` until first needed. Held
    /// only by [`SimState::settle`].
    alarm: Mutex<Option<Pin<Box<Sleep>>>>,
    /// The waker the alarm is polled with: runs [`SimState::settle`].
    alarm_waker: Waker,
    /// Asks whoever holds `alarm` for one more round of settling.
    settle_again: AtomicBool,
    /// How many crashes so far, for [`SimHandle::crashed`].
    crash_count: watch::Sender<usize>,
}

/// Something the timeline holds until its instant.
enum Event {
    /// An op in flight; `outcome` is set when a crash already decided it.
    Op { op: OpRef, outcome: Option<Cqe> },
    /// A crash planned by [`SimConfig::crash_at_random`].
    Crash,
}

struct State {
    files: Files,
    /// Latencies and tie-breaks.
    schedule_rng: Rng,
    /// What crashes keep.
    crash_rng: Rng,
    latency: Latency,
    crash_model: CrashModel,
    next_seq: u64,
    /// Events by (instant, tie-break, seq); a planned crash comes after the
    /// ops due at its instant.
    timeline: BTreeMap<(Instant, u64, u64), Event>,
    closed: bool,
    started: Instant,
    log: Vec<Completion>,
    /// What each crash so far drew.
    crashes: Vec<CrashReport>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim").finish_non_exhaustive()
    }
}

/// How far ahead an op that would never complete is put: Tokio's own notion
/// of "never" for timers (about 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

impl State {
    fn latency(&mut self) -> Duration {
        match self.latency {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let span = max.saturating_sub(min).as_nanos().min(u128::from(u64::MAX)) as u64;
                min + Duration::from_nanos(self.schedule_rng.up_to(span))
            }
        }
    }

    /// A crash at `at`: names and files lose what the crash model says,
    /// and with torn writes every op in flight is decided now (see `crash`).
    fn crash(&mut self, at: Instant) {
        let since = at.saturating_duration_since(self.started);
        let model = &self.crash_model;
        let mut report = crash::lose_unsynced(&mut self.files, model, &mut self.crash_rng, since);
        if let Some(sector) = self.crash_model.torn_sector {
            let mut tear = Tear::new(&mut self.files, &mut self.crash_rng, sector);
            for event in self.timeline.values_mut() {
                if let Event::Op {
                    op,
                    outcome: outcome @ None,
                } = event
                {
                    // SAFETY: `op` is the backend reference, not yet completed.
                    *outcome = Some(unsafe { op.cell().simulate(&mut tear) });
                }
            }
            let torn = std::mem::take(&mut tear.torn);
            crash::report_torn(&mut report, &self.files, torn);
        }
        tracing::debug!(%report, "sim: crash");
        self.crashes.push(report);
    }
}

/// The alarm's waker: settles the simulator from inside Tokio's time driver.
struct Alarm(Weak<SimState>);

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        // Inside Tokio's time driver, which may run on the caller's thread:
        // what the simulator logs here belongs to its context.
        let _span = shared.common.span.enter();
        // This runs inside Tokio's time driver: a panic here (a bug in the
        // simulator) must not unwind through it. Contained, it shuts the
        // simulator down in order instead; every pending future resolves.
        let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.settle()));
        if settled.is_err() {
            tracing::error!("aioctx simulator panicked; shutting its context down");
            shared.shut_down_now();
        }
    }
}

impl Sim {
    /// A simulator on `runtime`'s clock; called inside that runtime.
    pub(crate) fn new(config: SimConfig, runtime: tokio::runtime::Handle, home: HomeThread) -> Sim {
        let started = {
            let _runtime = runtime.enter();
            Instant::now()
        };
        let seed = config.seed;
        let mut crash_rng = Rng::new(seed, Stream::Crash);
        let mut timeline = BTreeMap::new();
        if let Some(window) = &config.crash.random_crash {
            let span = window.end.saturating_sub(window.start).as_nanos();
            let offset = crash_rng.up_to(span.min(u128::from(u64::MAX)) as u64);
            let at = started
                .checked_add(window.start + Duration::from_nanos(offset))
                .unwrap_or(started + FAR_FUTURE);
            timeline.insert((at, u64::MAX, u64::MAX), Event::Crash);
        }
        let injector = Injector {
            planned: config.faults.into_iter().map(|f| (f, 0)).collect(),
            random: config.random_faults,
            rng: Rng::new(seed, Stream::Faults),
            order: Rng::new(seed, Stream::Order),
        };
        let state = State {
            files: Files::new(injector, config.memory_budget, config.crash.clone()),
            schedule_rng: Rng::new(seed, Stream::Schedule),
            crash_rng,
            latency: config.latency,
            crash_model: config.crash,
            next_seq: 0,
            timeline,
            closed: false,
            started,
            log: Vec::new(),
            crashes: Vec::new(),
        };
        let shared = Arc::new_cyclic(|weak| SimState {
            common: Common::new(home),
            runtime,
            seed,
            state: Mutex::new(state),
            task: AtomicWaker::new(),
            alarm: Mutex::new(None),
            alarm_waker: Waker::from(Arc::new(Alarm(weak.clone()))),
            settle_again: AtomicBool::new(false),
            crash_count: watch::Sender::new(0),
        });
        Sim { shared }
    }

    /// Schedules an op at its submission instant plus its latency; once the
    /// context has shut down, completes it with the shutdown error instead.
    fn schedule_op(&self, op: OpRef) -> Placement {
        let shared = &*self.shared;
        {
            let mut state = shared.lock();
            if state.closed {
                drop(state);
                op.complete(Cqe::not_run(shutdown_error()));
                return Placement::Here;
            }
            let now = shared.now();
            // SAFETY: `op` is the backend reference, not yet completed.
            let delay = unsafe { op.cell().sim_delay() };
            let deadline = now
                .checked_add(state.latency())
                .and_then(|t| t.checked_add(delay))
                .unwrap_or_else(|| now + FAR_FUTURE);
            let tie = state.schedule_rng.next_u64();
            let seq = state.next_seq;
            state.next_seq += 1;
            let event = Event::Op { op, outcome: None };
            state.timeline.insert((deadline, tie, seq), event);
        }
        shared.common.count_op();
        shared.task.wake();
        Placement::Queued
    }
}

impl Reactor for Sim {
    const NAME: &'static str = "sim";

    fn common(&self) -> &Common {
        &self.shared.common
    }

    fn start<K: Operation, A: Anchored>(
        &self,
        fresh: Fresh<K, A>,
        waker: &Waker,
    ) -> (FutureHalf<K, A>, Placement) {
        let (half, op) = fresh.share(waker.clone());
        (half, self.schedule_op(erase(op)))
    }

    /// Spawns the simulator task on the current runtime, in the context's
    /// span (a simulator on the caller's runtime has no home thread to enter
    /// it). However the task ends (shutdown, or the runtime dropped under
    /// it), every pending op is resolved.
    fn spawn_driver(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let guard = ShutDownOnDrop(self.shared.clone());
        let span = self.shared.common.span.clone();
        Ok(tokio::spawn(
            async move {
                guard.0.drive().await;
                drop(guard);
            }
            .instrument(span),
        ))
    }

    /// The simulator's fds are keys into its own files.
    fn shares_fds(&self) -> bool {
        false
    }

    /// The simulator's own rule, for the files it opened `O_DIRECT`.
    fn direct_alignment(&self, fd: RawFd) -> Option<DirectAlignment> {
        self.shared.lock().files.direct_alignment(fd)
    }

    fn sim(&self) -> Option<SimHandle> {
        Some(SimHandle {
            shared: self.shared.clone(),
        })
    }
}

impl SimState {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Ops run under this lock only through `simulate`, which should not
        // panic on any input; if it does (a simulator bug), the alarm or the
        // task that ran it shuts the simulator down. Ignore poisoning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The simulator's clock, from whichever thread asks.
    fn now(&self) -> Instant {
        let _runtime = self.runtime.enter();
        Instant::now()
    }

    /// Runs every event that is due and sets the alarm at the next one.
    ///
    /// Called by the simulator task and by the alarm's waker, which Tokio
    /// may call while `settle` polls the alarm (a reset to an instant the
    /// clock has passed fires at once). So one caller at a time holds the
    /// alarm and settles, and any other caller, or a nested one, leaves a
    /// request (`settle_again`, set before trying the lock) that the holder
    /// serves before it lets go: no settling is lost.
    ///
    /// The two `SeqCst` fences: a caller stores `settle_again` and then
    /// tries the lock; the holder unlocks and then loads `settle_again`.
    /// Each side writes one place and reads the other, so at least one must
    /// see the other's write; a failed `try_lock` orders nothing by itself,
    /// and a fence on each side, between its write and its read, rules out
    /// both missing. (In practice both callers run on the runtime's thread;
    /// a runtime shut down from another thread is the exception.)
    fn settle(&self) {
        self.settle_again.store(true, Ordering::SeqCst);
        loop {
            std::sync::atomic::fence(Ordering::SeqCst);
            let mut alarm = match self.alarm.try_lock() {
                Ok(alarm) => alarm,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            while self.settle_again.swap(false, Ordering::SeqCst) {
                Counters::add_shared(&self.common.counters.turns, 1);
                self.settle_locked(&mut alarm);
            }
            drop(alarm);
            std::sync::atomic::fence(Ordering::SeqCst);
            // A request left between our last look and the unlock.
            if !self.settle_again.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    fn settle_locked(&self, alarm: &mut Option<Pin<Box<Sleep>>>) {
        loop {
            let next = {
                let state = self.lock();
                if state.closed {
                    *alarm = None;
                    return;
                }
                state.timeline.keys().next().map(|&(at, _, _)| at)
            };
            // With nothing scheduled, a stale alarm may still ring; it
            // finds nothing due.
            let Some(at) = next else { return };
            let sleep = alarm.get_or_insert_with(|| {
                let _runtime = self.runtime.enter();
                Box::pin(tokio::time::sleep_until(at))
            });
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            // Unconstrained: inside the simulator task, Tokio's cooperative
            // budget could otherwise return `Pending` and wake the alarm
            // forever.
            let mut ring = tokio::task::unconstrained(sleep.as_mut());
            if Pin::new(&mut ring)
                .poll(&mut Context::from_waker(&self.alarm_waker))
                .is_pending()
            {
                return;
            }
            self.run_until(at);
        }
    }

    /// Runs every event at or before `until`, in timeline order; wakes the
    /// ops' futures after the lock is released, so a waker may submit again.
    fn run_until(&self, until: Instant) {
        let mut done = Vec::new();
        let mut crashed = false;
        {
            let mut state = self.lock();
            let state = &mut *state;
            while let Some(entry) = state.timeline.first_entry() {
                let (at, _, seq) = *entry.key();
                if at > until {
                    break;
                }
                match entry.remove() {
                    Event::Op { op, outcome } => {
                        state.log.push(Completion {
                            seq,
                            op: op.cell().kind_name(),
                            at: at - state.started,
                        });
                        let cqe = outcome.unwrap_or_else(|| {
                            // SAFETY: `op` is the backend reference, not yet
                            // completed.
                            unsafe { op.cell().simulate(&mut state.files) }
                        });
                        done.push((op, cqe));
                    }
                    Event::Crash => {
                        state.crash(at);
                        crashed = true;
                    }
                }
            }
        }
        Counters::add_shared(&self.common.counters.cqes_reaped, done.len() as u64);
        for (op, cqe) in done {
            if let Err(error) = &cqe.result {
                let dropped = op.header().is_dropped();
                trace::op_failed(|| op.cell().kind_name(), error, dropped);
            }
            op.complete(cqe);
        }
        if crashed {
            self.crash_count.send_modify(|n| *n += 1);
        }
    }

    /// The simulator task: sets the alarm after submissions, until shutdown.
    async fn drive(&self) {
        std::future::poll_fn(|cx| {
            self.task.register(cx.waker());
            self.common.shutdown.register(cx.waker());
            if self.common.shutdown.is_raised() {
                return Poll::Ready(());
            }
            self.settle();
            Poll::Pending
        })
        .await;
    }

    /// Closes the simulator and resolves every pending op with the shutdown
    /// error.
    fn shut_down_now(&self) {
        self.common.shutdown.raise();
        let events: Vec<Event> = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.timeline).into_values().collect()
        };
        for event in events {
            if let Event::Op { op, .. } = event {
                op.complete(Cqe::not_run(shutdown_error()));
            }
        }
        // The alarm goes now unless someone is settling, who drops it on
        // seeing `closed`.
        if let Ok(mut alarm) = self.alarm.try_lock() {
            *alarm = None;
        }
    }
}

/// Shuts the simulator down when its task ends, however it ends.
struct ShutDownOnDrop(Arc<SimState>);

impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        self.0.shut_down_now();
    }
}

/// The controls of a simulated context, from [`Context::sim`](crate::Context::sim).
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<SimState>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("seed", &self.shared.seed)
            .finish_non_exhaustive()
    }
}

impl SimHandle {
    /// Simulates a power loss now: every file loses what was written since
    /// its last `fsync`, and every directory the changes of its names since
    /// its last fsync, or part of them, as the crash model says (see the
    /// [`sim`](crate::sim#crashes) docs). Open files stay open. Ops in
    /// flight complete afterwards, unless
    /// [torn writes](crate::sim::SimConfig::torn_writes) are on: then each
    /// fails with `EIO`, a write after persisting a torn prefix.
    /// [`crash_reports`](SimHandle::crash_reports) says what it kept.
    pub fn crash(&self) {
        let at = self.shared.now();
        self.shared.lock().crash(at);
        self.shared.crash_count.send_modify(|n| *n += 1);
    }

    /// The current contents of the file at `path` (symlinks followed), if
    /// there is one.
    ///
    /// # Panics
    ///
    /// If the (sparse) file is too large to copy into one `Vec`.
    pub fn contents(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.shared.lock().files.contents(path.as_ref())
    }

    /// Creates or replaces the file `path`, durably, with `data`, and any
    /// directory above it that is missing, durably too: a file that was
    /// there before the run.
    ///
    /// # Panics
    ///
    /// If the path leads through a file, or names a directory.
    pub fn insert_file(&self, path: impl AsRef<Path>, data: impl Into<Vec<u8>>) {
        self.shared.lock().files.insert(path.as_ref(), &data.into());
    }

    /// Every op completed so far, in completion order.
    pub fn completions(&self) -> Vec<Completion> {
        self.shared.lock().log.clone()
    }

    /// The seed this simulator was built with.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// When each crash so far happened, as Tokio time since the context was
    /// built.
    pub fn crashes(&self) -> Vec<Duration> {
        self.shared
            .lock()
            .crashes
            .iter()
            .map(|report| report.at)
            .collect()
    }

    /// What each crash so far kept and lost of what was not durable: the
    /// crash state the seed drew, per directory and per file.
    pub fn crash_reports(&self) -> Vec<CrashReport> {
        self.shared.lock().crashes.clone()
    }

    /// Resolves once the simulator has crashed (at once if it already has):
    /// how a scenario waits for a [random crash](crate::sim::SimConfig::crash_at_random).
    pub fn crashed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut count = self.shared.crash_count.subscribe();
        async move {
            // An error means the simulator is gone: nothing left to wait for.
            let _ = count.wait_for(|&n| n > 0).await;
        }
    }
}
