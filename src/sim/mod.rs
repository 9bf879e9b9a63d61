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
//! Each op completes after its latency ([`Latency`]) on Tokio's clock, so
//! under `#[tokio::test(start_paused = true)]` a test of storage code runs in
//! no real time. Built inside a current-thread runtime (which
//! `#[tokio::test]` is), the simulator runs as a task on that runtime and
//! shares its clock; elsewhere it gets a home thread like the other backends.
//! Ops are numbered as they are submitted; the order in which they complete
//! follows from their deadlines, ties broken by a generator seeded with
//! [`SimConfig::seed`]. With the same seed and the same program, the order
//! is the same on every run.
//!
//! # Faults
//!
//! [`SimConfig::fault`] fails the *n*th op matching a [`OpFilter`] with an
//! errno, or cuts a read or write short. Each op takes effect when it
//! completes; [`SimHandle::crash`] then drops every byte written since each
//! file's last `fsync` (a file created and never fsynced comes back empty,
//! but still exists). Ops in flight at a crash complete afterwards.
//!
//! # Limits
//!
//! `O_DIRECT` alignment is not enforced, `fallocate` supports mode 0 only,
//! and [`submit_raw`](crate::Context::submit_raw) fails with `Unsupported`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::time::Instant;

use crate::context::{Engine, Shared, shutdown_error};
use crate::metrics::Counters;
use crate::op::{Cqe, Handoff, OpRef};

mod files;

#[doc(hidden)]
pub use files::Files;

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
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency: Latency::Fixed(Duration::from_micros(100)),
            faults: Vec::new(),
        }
    }
}

impl SimConfig {
    /// Seed 0, a fixed latency of 100 µs, no faults.
    pub fn new() -> SimConfig {
        SimConfig::default()
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

/// The simulator's state, shared by every thread.
pub(crate) struct Sim {
    state: Mutex<State>,
    /// The simulator task's waker: a new op or shutdown.
    waker: AtomicWaker,
}

struct State {
    files: Files,
    rng: u64,
    latency: Latency,
    next_seq: u64,
    /// Submitted, not yet given a deadline by the simulator task.
    arrivals: VecDeque<(u64, OpRef)>,
    /// Scheduled: (deadline, tie-break, seq) → op.
    scheduled: BTreeMap<(Instant, u64, u64), OpRef>,
    closed: bool,
    started: Option<Instant>,
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

impl Sim {
    pub(crate) fn new(config: SimConfig) -> Sim {
        Sim {
            state: Mutex::new(State {
                files: Files::new(config.faults),
                // Never zero: xorshift would stay at zero.
                rng: config.seed ^ 0x9E37_79B9_7F4A_7C15,
                latency: config.latency,
                next_seq: 0,
                arrivals: VecDeque::new(),
                scheduled: BTreeMap::new(),
                closed: false,
                started: None,
                log: Vec::new(),
            }),
            waker: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Op callbacks run under this lock only through `simulate`, which
        // does not panic on valid input; ignore poisoning.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an op for the simulator task; once the context has shut down,
    /// completes it with the shutdown error instead.
    pub(crate) fn start(&self, shared: &Arc<Shared>, op: OpRef) -> Handoff {
        {
            let mut state = self.lock();
            if state.closed {
                drop(state);
                op.complete(Cqe::error(shutdown_error()));
                return Handoff::Here;
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            state.arrivals.push_back((seq, op));
        }
        let counters = &shared.counters;
        if shared.runtime_is_home() {
            Counters::add(&counters.ops_local, 1);
        } else {
            Counters::add(&counters.ops_foreign, 1);
            Counters::add(&counters.kicks_sent, 1);
        }
        self.waker.wake();
        Handoff::Queued
    }

    /// Gives arrivals their deadlines, completes every op due by `now`, and
    /// returns the next deadline.
    fn turn(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        let started = *state.started.get_or_insert(now);
        while let Some((seq, op)) = state.arrivals.pop_front() {
            // SAFETY: `op` is the backend reference, not yet completed.
            let deadline = now + state.latency() + unsafe { op.cell().sim_delay() };
            let tie = state.next_random();
            state.scheduled.insert((deadline, tie, seq), op);
        }
        loop {
            let (&key, _) = state.scheduled.first_key_value()?;
            let (deadline, _, seq) = key;
            if deadline > now {
                return Some(deadline);
            }
            let op = state.scheduled.remove(&key).expect("just seen");
            state.log.push(Completion {
                seq,
                op: op.cell().kind_name(),
                at: now - started,
            });
            // SAFETY: as above.
            let cqe = unsafe { op.cell().simulate(&mut state.files) };
            op.complete(cqe);
        }
    }

    /// Closes the simulator and resolves every pending op with the shutdown
    /// error.
    fn shut_down(&self) {
        let ops: Vec<_> = {
            let mut state = self.lock();
            state.closed = true;
            let mut ops: Vec<_> = state.arrivals.drain(..).map(|(_, op)| op).collect();
            ops.extend(std::mem::take(&mut state.scheduled).into_values());
            ops
        };
        for op in ops {
            op.complete(Cqe::error(shutdown_error()));
        }
    }
}

/// The simulator task: runs until the context shuts down.
pub(crate) async fn drive(shared: Arc<Shared>) {
    let Engine::Sim(sim) = &shared.engine else {
        unreachable!("sim driver on another backend");
    };
    let mut sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        loop {
            sim.waker.register(cx.waker());
            shared.driver_waker.register(cx.waker());
            if shared.is_closing() {
                return std::task::Poll::Ready(());
            }
            Counters::add(&shared.counters.turns, 1);
            match sim.turn(Instant::now()) {
                None => {
                    sleep = None;
                    return std::task::Poll::Pending;
                }
                Some(deadline) => {
                    let timer =
                        sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    if timer.as_mut().poll(cx).is_pending() {
                        return std::task::Poll::Pending;
                    }
                }
            }
        }
    })
    .await;
    sim.shut_down();
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
    pub(crate) fn new(shared: Arc<Shared>) -> SimHandle {
        SimHandle { shared }
    }

    fn sim(&self) -> &Sim {
        match &self.shared.engine {
            Engine::Sim(sim) => sim,
            _ => unreachable!("SimHandle on another backend"),
        }
    }

    /// Simulates a power loss: every file loses what was written since its
    /// last `fsync`. Open files stay open; ops in flight complete afterwards.
    pub fn crash(&self) {
        self.sim().lock().files.crash();
    }

    /// The current contents of the file opened as `path`, if it exists.
    pub fn contents(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        self.sim().lock().files.contents(path.as_ref())
    }

    /// Creates or replaces the file `path`, durably, with `data`.
    pub fn insert_file(&self, path: impl AsRef<Path>, data: impl Into<Vec<u8>>) {
        self.sim().lock().files.insert(path.as_ref(), data.into());
    }

    /// Every op completed so far, in completion order.
    pub fn completions(&self) -> Vec<Completion> {
        self.sim().lock().log.clone()
    }
}
