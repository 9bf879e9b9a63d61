//! The simulated backend: in-memory files, every op completing in Tokio
//! virtual time, deterministically, with fault injection and crashes.
//!
//! Build a context with [`Backend::Sim`](crate::Backend::Sim) and use it as
//! any other: the ops, [`fs::File`](crate::fs::File), `enter`, `block_on` and
//! metrics all work. [`Context::sim`](crate::Context::sim) returns the
//! controls: [`SimHandle::crash`], the completion log, file contents.
//!
//! # Time and determinism
//!
//! An op's deadline is the instant it was submitted plus its latency
//! ([`Latency`]) on Tokio's clock, fixed at submission: whoever polls when, and
//! however a test steps a paused clock, the op completes at that instant.
//! Under `#[tokio::test(start_paused = true)]` a test of storage code runs in
//! no real time. Built inside a current-thread runtime (which `#[tokio::test]`
//! is), the simulator runs as a task on that runtime and shares its clock;
//! elsewhere it gets a home thread like the other backends. Ops are numbered
//! as they are submitted; ops due at the same instant complete in an order
//! drawn by a generator seeded with [`SimConfig::seed`], which also draws
//! random latencies, in submission order. With the same seed and the same
//! program, the completion order and times are the same on every run.
//!
//! # Faults
//!
//! [`SimConfig::fault`] fails the *n*th op matching a [`OpFilter`] with an
//! errno, or cuts a read or write short. Each op takes effect when it
//! completes; [`SimHandle::crash`] then drops every byte written since each
//! file's last `fsync` (a file created and never fsynced comes back empty,
//! but still exists). Ops in flight at a crash complete afterwards.
//!
//! # What the kernel would say
//!
//! Files are sparse, held in 4 KiB pages, so an offset costs no memory; a
//! write past [`SimConfig::memory_budget`] fails with `ENOSPC`. Ranges past
//! `i64::MAX` fail with `EINVAL` (reads and writes) or `EFBIG` (allocation,
//! truncation), as the kernel answers. A file opened with `O_DIRECT` refuses
//! offsets, lengths and buffer addresses that are not multiples of 512 with
//! `EINVAL`, as the ring would. `fallocate` supports mode 0, `KEEP_SIZE`,
//! `PUNCH_HOLE | KEEP_SIZE` and `ZERO_RANGE` (with or without `KEEP_SIZE`),
//! and refuses the rest with `EOPNOTSUPP`. [`submit_raw`](crate::Context::submit_raw)
//! fails with `Unsupported`.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::Instant;

use crate::backend::common::{Common, Placement};
use crate::error::{Cqe, shutdown_error};
use crate::home_thread::HomeThread;
use crate::metrics::Counters;
use crate::ops::OpRef;

mod files;

use files::Files;

/// How long each simulated op takes, in Tokio time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Latency {
    /// Every op takes exactly this long.
    Fixed(Duration),
    /// Each op takes a duration drawn uniformly from `min..=max` by the
    /// seeded generator.
    Uniform {
        /// Shortest.
        min: Duration,
        /// Longest.
        max: Duration,
    },
}

/// The kinds of operation a fault filter can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SimOp {
    /// `read_at`, `readv_at`.
    Read,
    /// `write_at`, `writev_at`.
    Write,
    /// `sync_all`, `sync_data`.
    Fsync,
    /// `fallocate`.
    Fallocate,
    /// `set_len`.
    Ftruncate,
    /// Opening a file.
    Open,
    /// `close`.
    Close,
    /// `metadata`.
    Statx,
}

/// Which ops a [`Fault`] counts. Every field left `None` matches any op.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpFilter {
    /// The kind of op.
    pub op: Option<SimOp>,
    /// The file's path, as it was opened.
    pub path: Option<PathBuf>,
    /// Byte range the op must overlap (reads, writes, fallocate, ftruncate).
    pub offsets: Option<Range<u64>>,
}

impl OpFilter {
    /// Matches ops of kind `op` only.
    pub fn op(op: SimOp) -> OpFilter {
        OpFilter {
            op: Some(op),
            ..OpFilter::default()
        }
    }

    /// Narrows the filter to the file opened as `path`.
    pub fn path(mut self, path: impl Into<PathBuf>) -> OpFilter {
        self.path = Some(path.into());
        self
    }

    /// Narrows the filter to ops overlapping `offsets`.
    pub fn offsets(mut self, offsets: Range<u64>) -> OpFilter {
        self.offsets = Some(offsets);
        self
    }

    fn matches(&self, op: SimOp, path: Option<&Path>, offset: u64, len: u64) -> bool {
        self.op.is_none_or(|want| want == op)
            && self.path.as_deref().is_none_or(|want| path == Some(want))
            && self.offsets.as_ref().is_none_or(|range| {
                offset < range.end && offset.saturating_add(len.max(1)) > range.start
            })
    }
}

/// What an injected fault does to the op it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Fail with this errno (`libc::EIO`, `libc::ENOSPC`, ...); the op has no
    /// effect.
    Errno(i32),
    /// Read or write at most this many bytes.
    Short(usize),
}

/// Fails the `nth` (from 1) op that matches `filter`, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which ops count.
    pub filter: OpFilter,
    /// Which matching op is hit, counting from 1.
    pub nth: u64,
    /// What happens to it.
    pub action: FaultAction,
}

/// The simulator's configuration, for [`Backend::Sim`](crate::Backend::Sim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    seed: u64,
    latency: Latency,
    faults: Vec<Fault>,
    memory_budget: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency: Latency::Fixed(Duration::from_micros(100)),
            faults: Vec::new(),
            memory_budget: 1 << 30,
        }
    }
}

impl SimConfig {
    /// Seed 0, a fixed latency of 100 µs, no faults, a 1 GiB memory budget.
    pub fn new() -> SimConfig {
        SimConfig::default()
    }

    /// The most file data the simulator holds in memory, in bytes (rounded
    /// down to 4 KiB pages); past it, writes and allocations fail with
    /// `ENOSPC`, as on a full disk. Holes cost nothing. Default 1 GiB.
    pub fn memory_budget(mut self, bytes: u64) -> SimConfig {
        self.memory_budget = bytes;
        self
    }

    /// The seed of the generator behind random latencies and tie-breaks.
    pub fn seed(mut self, seed: u64) -> SimConfig {
        self.seed = seed;
        self
    }

    /// How long each op takes.
    pub fn latency(mut self, latency: Latency) -> SimConfig {
        self.latency = latency;
        self
    }

    /// Adds a fault: the `nth` (from 1) op matching `filter` suffers `action`.
    pub fn fault(mut self, filter: OpFilter, nth: u64, action: FaultAction) -> SimConfig {
        self.faults.push(Fault {
            filter,
            nth,
            action,
        });
        self
    }
}

/// One entry of the completion log: which op completed, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The op's submission number in this context, from 0.
    pub seq: u64,
    /// The op's type (`ReadAt`, `WriteAt`, `Fsync`, ...).
    pub op: &'static str,
    /// Tokio time since the context was built.
    pub at: Duration,
}

/// A simulated backend: cheap to clone, shared by every thread.
#[derive(Clone)]
pub(crate) struct Sim {
    shared: Arc<Shared>,
}

struct Shared {
    common: Common,
    /// The runtime whose clock the simulator keeps.
    runtime: tokio::runtime::Handle,
    state: Mutex<State>,
    /// The simulator task's waker: an op due earlier than it sleeps for.
    task: AtomicWaker,
}

struct State {
    files: Files,
    rng: u64,
    latency: Latency,
    next_seq: u64,
    /// Ops in flight: (deadline, tie-break, seq) → op.
    scheduled: BTreeMap<(Instant, u64, u64), OpRef>,
    closed: bool,
    started: Instant,
    log: Vec<Completion>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim").finish_non_exhaustive()
    }
}

impl State {
    /// xorshift64*: small, seedable, and the same everywhere.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn latency(&mut self) -> Duration {
        match self.latency.clone() {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let span = max.saturating_sub(min).as_nanos() as u64;
                min + Duration::from_nanos(self.next_random() % span.saturating_add(1))
            }
        }
    }
}

/// How far ahead an op that would never complete is put: Tokio's own notion
/// of "never" for timers (about 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

impl Sim {
    /// A simulator on `runtime`'s clock; called inside that runtime.
    pub(crate) fn new(config: SimConfig, runtime: tokio::runtime::Handle, home: HomeThread) -> Sim {
        let started = {
            let _runtime = runtime.enter();
            Instant::now()
        };
        Sim {
            shared: Arc::new(Shared {
                common: Common::new(home),
                runtime,
                state: Mutex::new(State {
                    files: Files::new(config.faults, config.memory_budget),
                    // Never zero: xorshift would stay at zero.
                    rng: config.seed ^ 0x9E37_79B9_7F4A_7C15,
                    latency: config.latency,
                    next_seq: 0,
                    scheduled: BTreeMap::new(),
                    closed: false,
                    started,
                    log: Vec::new(),
                }),
                task: AtomicWaker::new(),
            }),
        }
    }

    pub(crate) fn common(&self) -> &Common {
        &self.shared.common
    }

    /// Schedules an op at its submission instant plus its latency; once the
    /// context has shut down, completes it with the shutdown error instead.
    pub(crate) fn start(&self, op: OpRef) -> Placement {
        let shared = &*self.shared;
        {
            let mut state = shared.lock();
            if state.closed {
                drop(state);
                op.complete(Cqe::not_run(shutdown_error()));
                return Placement::Here;
            }
            let now = {
                // The simulator's clock, from whichever thread submits.
                let _runtime = shared.runtime.enter();
                Instant::now()
            };
            // SAFETY: `op` is the backend reference, not yet completed.
            let delay = unsafe { op.cell().sim_delay() };
            let deadline = now
                .checked_add(state.latency())
                .and_then(|t| t.checked_add(delay))
                .unwrap_or_else(|| now + FAR_FUTURE);
            let tie = state.next_random();
            let seq = state.next_seq;
            state.next_seq += 1;
            state.scheduled.insert((deadline, tie, seq), op);
        }
        shared.common.count_op();
        shared.task.wake();
        Placement::Queued
    }

    /// Spawns the simulator task on the current runtime. However the task
    /// ends (shutdown, or the runtime dropped under it), every pending op is
    /// resolved.
    pub(crate) fn spawn_driver(&self) -> tokio::task::JoinHandle<()> {
        let guard = ShutDownOnDrop(self.shared.clone());
        tokio::spawn(async move {
            guard.0.drive().await;
            drop(guard);
        })
    }

    /// Asks the simulator task to shut down.
    pub(crate) fn shut_down(&self) {
        self.shared.common.shutdown.raise();
    }

    pub(crate) fn handle(&self) -> SimHandle {
        SimHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Ops run under this lock only through `simulate`, which does not
        // panic on any input; ignore poisoning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs every op due by `now` and returns the next deadline. Ops run
    /// under the lock, in deadline order; their futures are woken after it
    /// is released, so a waker may submit again.
    fn turn(&self, now: Instant) -> Option<Instant> {
        let mut done = Vec::new();
        let next = {
            let mut state = self.lock();
            let state = &mut *state;
            loop {
                let Some((&key, _)) = state.scheduled.first_key_value() else {
                    break None;
                };
                let (deadline, _, seq) = key;
                if deadline > now {
                    break Some(deadline);
                }
                let op = state.scheduled.remove(&key).expect("just seen");
                state.log.push(Completion {
                    seq,
                    op: op.cell().kind_name(),
                    at: deadline - state.started,
                });
                // SAFETY: `op` is the backend reference, not yet completed.
                let cqe = unsafe { op.cell().simulate(&mut state.files) };
                done.push((op, cqe));
            }
        };
        Counters::add(&self.common.counters.cqes_reaped, done.len() as u64);
        for (op, cqe) in done {
            op.complete(cqe);
        }
        next
    }

    /// The simulator task: sleeps until the earliest deadline, runs what is
    /// due, until shutdown.
    async fn drive(&self) {
        let mut sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        std::future::poll_fn(|cx| {
            loop {
                self.task.register(cx.waker());
                self.common.shutdown.register(cx.waker());
                if self.common.shutdown.is_raised() {
                    return Poll::Ready(());
                }
                Counters::add(&self.common.counters.turns, 1);
                let Some(deadline) = self.turn(Instant::now()) else {
                    sleep = None;
                    return Poll::Pending;
                };
                let timer =
                    sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await;
    }

    /// Closes the simulator and resolves every pending op with the shutdown
    /// error.
    fn shut_down_now(&self) {
        self.common.shutdown.raise();
        let ops: Vec<OpRef> = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.scheduled).into_values().collect()
        };
        for op in ops {
            op.complete(Cqe::not_run(shutdown_error()));
        }
    }
}

/// Shuts the simulator down when its task ends, however it ends.
struct ShutDownOnDrop(Arc<Shared>);

impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        self.0.shut_down_now();
    }
}

/// The controls of a simulated context, from [`Context::sim`](crate::Context::sim).
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle").finish_non_exhaustive()
    }
}

impl SimHandle {
    /// Simulates a power loss: every file loses what was written since its
    /// last `fsync`. Open files stay open; ops in flight complete afterwards.
    pub fn crash(&self) {
        self.shared.lock().files.crash();
    }

    /// The current contents of the file opened as `path`, if it exists.
    ///
    /// # Panics
    ///
    /// If the (sparse) file is too large to copy into one `Vec`.
    pub fn contents(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.shared.lock().files.contents(path.as_ref())
    }

    /// Creates or replaces the file `path`, durably, with `data`.
    pub fn insert_file(&self, path: impl AsRef<Path>, data: impl Into<Vec<u8>>) {
        self.shared
            .lock()
            .files
            .insert(path.as_ref(), &data.into());
    }

    /// Every op completed so far, in completion order.
    pub fn completions(&self) -> Vec<Completion> {
        self.shared.lock().log.clone()
    }
}
