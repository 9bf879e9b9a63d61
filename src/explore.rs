//! Seed exploration: one async test scenario run under many seeds, each on a
//! fresh simulated [`Context`] on its own paused current-thread runtime,
//! stopping at the first seed whose run fails (an `Err`, a panic, a hang
//! past its time limit, or a busy loop past its poll or real-time limit:
//! `busy.rs`) and reporting how to replay exactly that run. A surface file: it builds
//! contexts, so it sits above the backends; the public [`sim`](crate::sim)
//! module re-exports it.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::backend::Backend;
use crate::backend::sim::{Completion, CrashReport, SimConfig, SimHandle};
use crate::context::Context;

mod busy;

use busy::{Bounded, Busy, Limits, Watchdog};

/// The environment variable that narrows explorations to one seed, for
/// replaying a failure.
///
/// Its value is a comma-separated list of entries:
///
/// - `NAME=SEED` narrows only the exploration named `NAME` (see
///   [`Explore::name`]; by default the name of the thread that runs it,
///   which under `cargo test` is the test's path, such as
///   `wal::acked_records_survive`). This is the form a [`Failure`]'s replay
///   line prints: `AIOCTX_SIM_SEED='wal::acked_records_survive=417' cargo
///   test -- --exact wal::acked_records_survive`.
/// - `SEED` alone narrows every exploration in the process that no
///   `NAME=SEED` entry names.
///
/// **The trap of the bare form**: it narrows *every* exploration the test
/// binary runs, so a test that expects exploration to find a bug (such as
/// `examples/sim_wal.rs`'s planted one) fails when the one seed it is given
/// happens not to show the bug. Use the bare form only together with a
/// filter that runs the one test, or prefer `NAME=SEED`.
pub const SEED_VAR: &str = "AIOCTX_SIM_SEED";

/// The seed [`SEED_VAR`] gives the exploration called `name`, if any: an
/// entry naming it, else a bare seed.
///
/// # Panics
///
/// If the variable is set but malformed: a typo must not silently run
/// every seed.
fn seed_from_env(name: Option<&str>) -> Option<u64> {
    let value = std::env::var(SEED_VAR).ok()?;
    let parse = |seed: &str| -> u64 {
        seed.trim().parse().unwrap_or_else(|_| {
            panic!("{SEED_VAR}={value:?}: {seed:?} is not a u64 (expected SEED or NAME=SEED, comma-separated)")
        })
    };
    let mut named = None;
    let mut bare = None;
    for entry in value.split(',').filter(|entry| !entry.trim().is_empty()) {
        match entry.rsplit_once('=') {
            Some((entry_name, seed)) => {
                let seed = parse(seed);
                if Some(entry_name.trim()) == name {
                    named = Some(seed);
                }
            }
            None => bare = Some(parse(entry)),
        }
    }
    named.or(bare)
}

/// How long, in virtual time, a run may take by default before it counts as
/// hung.
const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(3600);

/// How many times, by default, a run's scenario may be polled while the
/// virtual clock stands still before the run counts as busy.
const DEFAULT_POLL_LIMIT: u64 = 1_000_000;

/// How much real time, by default, a run may take while the virtual clock
/// stands still before it counts as busy.
const DEFAULT_REAL_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Runs a scenario under many seeds: see [`explore`].
#[must_use = "an exploration runs nothing until `run`"]
pub struct Explore {
    seeds: Box<dyn Iterator<Item = u64>>,
    config: SimConfig,
    time_limit: Duration,
    busy: Limits,
    name: Option<String>,
}

impl fmt::Debug for Explore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Explore")
            .field("config", &self.config)
            .field("time_limit", &self.time_limit)
            .field("poll_limit", &self.busy.polls)
            .field("real_time_limit", &self.busy.real_time)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Explores `seeds`: each [`run`](Explore::run) of the result builds a fresh
/// simulated context per seed, from [`config`](Explore::config) with that
/// seed, on a new current-thread runtime whose clock starts paused (so a
/// run takes no real time beyond its computation), and runs the scenario on
/// it. The first failing seed stops the exploration. A run fails when its
/// scenario returns `Err` or panics, when it is still waiting after
/// [`time_limit`](Explore::time_limit) of virtual time, and when it is busy
/// (the runtime never idles, so virtual time cannot pass) past
/// [`poll_limit`](Explore::poll_limit) or
/// [`real_time_limit`](Explore::real_time_limit); [`Failure::kind`] says
/// which.
///
/// The seed decides the order of ops due at the same instant and every
/// latency drawn from [`Latency::Uniform`](crate::sim::Latency::Uniform);
/// with the config's options, also where [random
/// faults](SimConfig::random_fault) land, when a [random
/// crash](SimConfig::crash_at_random) happens, and what a crash keeps.
///
/// With the environment variable [`AIOCTX_SIM_SEED`](SEED_VAR) naming this
/// exploration (`NAME=SEED`), or set to a bare seed, only that seed runs: the
/// replay a [`Failure`] suggests. A bare seed narrows every exploration in
/// the process; see [`SEED_VAR`] for the trap that sets.
///
/// ```
/// use std::time::Duration;
///
/// use aioctx::fs::OpenOptions;
/// use aioctx::sim::{self, Latency, SimConfig};
///
/// let config = SimConfig::new()
///     .latency(Latency::Uniform {
///         min: Duration::from_micros(50),
///         max: Duration::from_millis(2),
///     })
///     .crash_at_random(Duration::ZERO..Duration::from_millis(10));
/// let explored = sim::explore(0..100).config(config).run(|ctx| async move {
///     let sim = ctx.sim().unwrap();
///     let file = OpenOptions::new().write(true).create(true).open(&ctx, "/f").await?;
///     aioctx::fs::sync_dir(&ctx, "/").await?; // the file's name survives a crash
///     file.write_at(b"saved".to_vec(), 0).await.0?;
///     file.sync_data().await?;
///     // Synced before the crash (which the seed places): it must survive.
///     let synced_first = sim.crashes().is_empty();
///     sim.crashed().await;
///     let data = sim.contents("/f").unwrap_or_default();
///     if synced_first && data != b"saved" {
///         return Err(format!("a synced write was lost: {data:?}").into());
///     }
///     Ok::<(), Box<dyn std::error::Error>>(())
/// });
/// assert_eq!(explored.expect("no seed loses synced data").seeds, 100);
/// ```
pub fn explore(seeds: impl IntoIterator<Item = u64, IntoIter: 'static>) -> Explore {
    Explore {
        seeds: Box::new(seeds.into_iter()),
        config: SimConfig::new(),
        time_limit: DEFAULT_TIME_LIMIT,
        busy: Limits {
            polls: DEFAULT_POLL_LIMIT,
            real_time: DEFAULT_REAL_TIME_LIMIT,
        },
        name: None,
    }
}

impl Explore {
    /// The configuration every run starts from; each run replaces its seed.
    /// Default [`SimConfig::new`].
    pub fn config(mut self, config: SimConfig) -> Explore {
        self.config = config;
        self
    }

    /// The most virtual time one run may take; a scenario still running then
    /// (waiting for something that never comes, say) fails with
    /// [`FailureKind::TimeLimit`]. Default one hour.
    ///
    /// Virtual time passes only while the run's runtime is idle (Tokio's
    /// paused clock jumps to the next timer when no task is ready), so this
    /// limit bounds a run that waits, not one that is busy: a scenario, or
    /// a task it spawned, looping on `tokio::task::yield_now()` keeps the
    /// runtime from idling, and the clock, with this limit, stands still.
    /// Busy runs are bounded by [`poll_limit`](Explore::poll_limit) and
    /// [`real_time_limit`](Explore::real_time_limit), which do not need the
    /// clock to move.
    pub fn time_limit(mut self, limit: Duration) -> Explore {
        self.time_limit = limit;
        self
    }

    /// The most times a run's scenario future may be polled while the
    /// virtual clock stands still; one polled more often is busy, and fails
    /// with [`FailureKind::BusyPolls`]. The count starts again each time
    /// the clock moves. Deterministic: the same seed fails at the same poll.
    /// Default 1,000,000, which a scenario waiting on the simulator's ops
    /// (each takes virtual time) does not approach; raise it for one that
    /// does that much work at one instant (ops of zero latency, say).
    ///
    /// It counts the polls of the scenario's own future: a task the scenario
    /// spawned that spins while the scenario waits for it is caught by the
    /// real-time limit instead.
    pub fn poll_limit(mut self, polls: u64) -> Explore {
        self.busy.polls = polls;
        self
    }

    /// The most real time a run may take while the virtual clock stands
    /// still; one that takes longer is busy, and fails with
    /// [`FailureKind::BusyRealTime`]. The clock starts again each time the
    /// virtual clock moves, so a long run that keeps its clock moving is
    /// never stopped by it. Default 60 seconds.
    ///
    /// Unlike every other bound here it depends on the machine's speed: it
    /// is the backstop for what the poll limit cannot see (a spawned task
    /// spinning on `yield_now` while the scenario waits for it), checked by
    /// a watchdog thread that wakes the run at the deadline. A task that
    /// spins without ever yielding holds the run's only thread, and nothing
    /// can stop it.
    pub fn real_time_limit(mut self, limit: Duration) -> Explore {
        self.busy.real_time = limit;
        self
    }

    /// The name a `NAME=SEED` entry of [`SEED_VAR`] must give to narrow
    /// this exploration, and that a [`Failure`]'s replay line prints. Default:
    /// the name of the thread that calls [`run`](Explore::run), which under
    /// `cargo test` is the test's path (`module::test_name`); an exploration
    /// on an unnamed thread has no name and is narrowed only by a bare seed.
    /// Set one when a test runs several explorations.
    pub fn name(mut self, name: impl Into<String>) -> Explore {
        self.name = Some(name.into());
        self
    }

    /// Runs `scenario` once per seed, in order, and stops at the first run
    /// that returns an `Err` or panics.
    ///
    /// `scenario` gets the run's context; everything it spawns runs on the
    /// run's runtime, which is dropped after the run (a panic in a task it
    /// spawned reaches it only through that task's `JoinHandle`).
    ///
    /// # Errors
    ///
    /// The first failing seed, with what failed and how to replay it.
    ///
    /// # Panics
    ///
    /// Called inside a Tokio runtime (from `#[tokio::test]` rather than
    /// `#[test]`): each run needs a runtime of its own.
    pub fn run<S, F, E>(self, mut scenario: S) -> Result<Explored, Failure>
    where
        S: FnMut(Context) -> F,
        F: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "sim::explore runs each seed on a runtime of its own: call it from a plain #[test], \
             not inside a Tokio runtime"
        );
        let Explore {
            seeds,
            config,
            time_limit,
            busy,
            name,
        } = self;
        let name = name.or_else(|| std::thread::current().name().map(str::to_owned));
        let seeds: Box<dyn Iterator<Item = u64>> = match seed_from_env(name.as_deref()) {
            Some(seed) => {
                let which = name.as_deref().unwrap_or("an unnamed exploration");
                eprintln!("{SEED_VAR}: running only seed {seed} of {which}");
                Box::new(std::iter::once(seed))
            }
            None => seeds,
        };
        let mut explored = Explored { seeds: 0, ops: 0 };
        let watchdog = Watchdog::start();
        for seed in seeds {
            let run = Replay {
                config: config.clone().seed(seed),
                seed,
                time_limit,
                busy,
                name: name.clone(),
            };
            match run.run(&mut scenario, explored.seeds, &watchdog) {
                Ok(run) => {
                    explored.seeds += 1;
                    explored.ops += run.completions.len() as u64;
                }
                Err(failure) => return Err(failure),
            }
        }
        Ok(explored)
    }
}

/// What an exploration in which every seed passed covered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Explored {
    /// Seeds run.
    pub seeds: u64,
    /// Ops completed, over all runs.
    pub ops: u64,
}

/// One passing run, from [`Failure::replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Run {
    /// The run's seed.
    pub seed: u64,
    /// Every op completed, in order.
    pub completions: Vec<Completion>,
    /// Each crash: when it happened, and the crash state it drew (what it
    /// kept and lost of what was not durable).
    pub crashes: Vec<CrashReport>,
}

/// The first failing run of an exploration: its seed, what failed, what the
/// simulator did up to the failure (the crash state it drew: which changes
/// of names and which unsynced data survived, per directory and per file),
/// and how to replay it.
///
/// `Debug` prints the same report as `Display`, so `explore(..).run(..)
/// .unwrap()` shows the seed and the replay line.
#[non_exhaustive]
pub struct Failure {
    /// The failing seed.
    pub seed: u64,
    /// Seeds that passed before it in this exploration.
    pub passed: u64,
    /// Why the run failed.
    pub kind: FailureKind,
    /// The scenario's error (its `Display`), the panic's message, or which
    /// limit the run reached.
    pub error: String,
    /// Whether the scenario panicked (rather than returning `Err`):
    /// `kind == FailureKind::Panicked`.
    pub panicked: bool,
    /// Every op completed up to the failure, in order.
    pub completions: Vec<Completion>,
    /// Each crash: when it happened (`at`), and the crash state the seed
    /// drew (which changes of names and which unsynced data survived, per
    /// directory and per file).
    pub crashes: Vec<CrashReport>,
    replay: Box<Replay>,
}

/// Why a run failed: [`Failure::kind`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// The scenario returned `Err`.
    Returned,
    /// The scenario panicked.
    Panicked,
    /// Still running when [`Explore::time_limit`] of virtual time had
    /// passed: waiting for something that never comes.
    TimeLimit,
    /// Busy: the scenario's future was polled more than
    /// [`Explore::poll_limit`] times while the virtual clock stood still
    /// (a loop on `yield_now`, say), which keeps the time limit from
    /// passing.
    BusyPolls {
        /// The polls at that instant (the message says which instant).
        polls: u64,
    },
    /// Busy: more than [`Explore::real_time_limit`] of real time passed
    /// while the virtual clock stood still (a spawned task looping on
    /// `yield_now` while the scenario waits, say).
    BusyRealTime {
        /// The real time spent at that instant (the message says which
        /// instant).
        real: Duration,
    },
    /// The run could not start: building its runtime or its context failed.
    Setup,
}

impl FailureKind {
    /// Whether the run was stopped for being busy (either busy limit).
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            FailureKind::BusyPolls { .. } | FailureKind::BusyRealTime { .. }
        )
    }
}

impl Failure {
    /// The exact configuration of the failing run (its seed included).
    pub fn config(&self) -> &SimConfig {
        &self.replay.config
    }

    /// Runs the failing seed again, exactly as before: the same
    /// configuration, seed and limits. Give it the same scenario.
    ///
    /// # Errors
    ///
    /// The run's failure (for a deterministic scenario, the same one).
    pub fn replay<S, F, E>(&self, mut scenario: S) -> Result<Run, Failure>
    where
        S: FnMut(Context) -> F,
        F: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        self.replay.run(&mut scenario, 0, &Watchdog::start())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.kind {
            FailureKind::Panicked => "panicked",
            FailureKind::BusyPolls { .. } | FailureKind::BusyRealTime { .. } => "was busy",
            FailureKind::TimeLimit => "hung",
            _ => "failed",
        };
        writeln!(
            f,
            "seed {} {how} ({} seed(s) passed before it): {}",
            self.seed, self.passed, self.error
        )?;
        let at: Vec<Duration> = self.crashes.iter().map(|crash| crash.at).collect();
        writeln!(
            f,
            "  {} op(s) completed, crashes at {at:?}",
            self.completions.len(),
        )?;
        for state in &self.crashes {
            for line in state.to_string().lines() {
                writeln!(f, "  {line}")?;
            }
        }
        match &self.replay.name {
            Some(name) => write!(
                f,
                "  replay exactly this run: {SEED_VAR}='{name}={seed}' cargo test -- --exact {name}, \
                 or `failure.replay(scenario)` in code",
                seed = self.seed
            ),
            None => write!(
                f,
                "  replay exactly this run: {SEED_VAR}={} cargo test <this test>, \
                 or `failure.replay(scenario)` in code",
                self.seed
            ),
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Failure {}

/// Everything that decides one run.
#[derive(Debug, Clone)]
struct Replay {
    config: SimConfig,
    seed: u64,
    time_limit: Duration,
    busy: Limits,
    /// The exploration's name, for the replay line.
    name: Option<String>,
}

/// How one run ended, short of a panic.
struct Ended {
    error: Option<(FailureKind, String)>,
    completions: Vec<Completion>,
    crash_states: Vec<CrashReport>,
}

impl Replay {
    fn run<S, F, E>(
        &self,
        scenario: &mut S,
        passed: u64,
        watchdog: &Watchdog,
    ) -> Result<Run, Failure>
    where
        S: FnMut(Context) -> F,
        F: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        let fail = |(kind, error): (FailureKind, String),
                    completions,
                    crash_states: Vec<CrashReport>| Failure {
            seed: self.seed,
            passed,
            panicked: kind == FailureKind::Panicked,
            kind,
            error,
            completions,
            crashes: crash_states,
            replay: Box::new(self.clone()),
        };
        // Outside the unwind, so a panicking run still shows its log.
        let mut sim = None;
        match catch_unwind(AssertUnwindSafe(|| {
            self.run_on_fresh_runtime(scenario, &mut sim, watchdog)
        })) {
            Ok(Ok(Ended {
                error: None,
                completions,
                crash_states,
            })) => Ok(Run {
                seed: self.seed,
                completions,
                crashes: crash_states,
            }),
            Ok(Ok(Ended {
                error: Some(error),
                completions,
                crash_states,
            })) => Err(fail(error, completions, crash_states)),
            Ok(Err(setup)) => Err(fail(
                (
                    FailureKind::Setup,
                    format!("the run could not start: {setup}"),
                ),
                Vec::new(),
                Vec::new(),
            )),
            Err(panic) => {
                let (completions, crash_states) = sim
                    .map(|sim| (sim.completions(), sim.crash_reports()))
                    .unwrap_or_default();
                Err(fail(
                    (FailureKind::Panicked, panic_message(&*panic)),
                    completions,
                    crash_states,
                ))
            }
        }
    }
    fn run_on_fresh_runtime<S, F, E>(
        &self,
        scenario: &mut S,
        sim_out: &mut Option<SimHandle>,
        watchdog: &Watchdog,
    ) -> std::io::Result<Ended>
    where
        S: FnMut(Context) -> F,
        F: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()?;
        runtime.block_on(async {
            let ctx = Context::builder()
                .backend(Backend::Sim(self.config.clone()))
                .build()?;
            let sim = ctx.sim().expect("a sim context");
            *sim_out = Some(sim.clone());
            let run = tokio::time::timeout(self.time_limit, scenario(ctx.clone()));
            let error = match Bounded::new(run, self.busy, watchdog).await {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(e))) => Some((FailureKind::Returned, e.to_string())),
                Ok(Err(_)) => Some((
                    FailureKind::TimeLimit,
                    format!(
                        "still running after {:?} of virtual time (waiting for something that never comes?)",
                        self.time_limit
                    ),
                )),
                Err(busy) => Some(self.busy_failure(busy)),
            };
            let ended = Ended {
                error,
                completions: sim.completions(),
                crash_states: sim.crash_reports(),
            };
            ctx.shutdown().await;
            Ok(ended)
        })
    }
}

impl Replay {
    /// The failure of a run stopped for being busy, with its message.
    fn busy_failure(&self, busy: Busy) -> (FailureKind, String) {
        let why = "the runtime never idled, so virtual time (and the time limit) could not pass";
        match busy {
            Busy::Polls { polls, at } => (
                FailureKind::BusyPolls { polls },
                format!(
                    "busy: the scenario was polled {polls} times at {at:?} of virtual time without \
                     the clock moving ({why}; a loop on yield_now?); the limit is \
                     Explore::poll_limit({})",
                    self.busy.polls
                ),
            ),
            Busy::RealTime { real, at } => (
                FailureKind::BusyRealTime { real },
                format!(
                    "busy: {real:?} of real time at {at:?} of virtual time without the clock \
                     moving ({why}; a spawned task looping on yield_now?); the limit is \
                     Explore::real_time_limit({:?})",
                    self.busy.real_time
                ),
            ),
        }
    }
}

/// The message a panic carried, when it is a string.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_owned())
}
