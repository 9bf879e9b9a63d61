//! Randomized stress over every way in: foreign threads blocking on ops,
//! tasks on the home thread, tasks on a multi-thread Tokio runtime (in some
//! rounds one with `WorkerRings`, whose tasks' ops go to the ring of the
//! worker that polls them),
//! futures `enter`ed from plain threads, and local tasks on the home thread
//! whose reads, writes, syncs and nops go through a `LocalRing` (the home
//! path, on io_uring) for a share of their steps; all running every op kind
//! (open, close, reads, writes, vectored, fsync, fallocate, set_len,
//! metadata, timeout, nop, fixed reads and writes), some kept, some polled
//! once and dropped, some raced against a short timer and dropped when it
//! wins; files opened registered or not, and some dropped (their last
//! handle, or given up to a `LocalFile`) while ops on them are in flight;
//! registered-buffer pools made (the registration itself sometimes dropped
//! midway) and dropped with their buffers in ops; `FileStream` sessions of
//! reads, writes, seeks and flushes, the stream dropped at any point. Each round runs on one context or on a pool of two
//! or three, whose actors share the members out; some rounds shut the
//! context down midway, or the pool (at once, or member by member while
//! files opened on a member gone are used through the others). In a round
//! with worker rings, the runtime actors open their files on the ring of the
//! worker running them and use them from either worker as their tasks move;
//! their steps now and then close their worker's ring with ops in it (its
//! next op makes a new one), and a shutdown takes the runtime down too
//! (dropped, or `shutdown_timeout`), before or after the host.
//!
//! What it checks:
//! - every kept future resolves (a watchdog ends the process, printing the
//!   seed and what each actor was doing, if nothing progresses for
//!   `AIOCTX_STRESS_STALL_SECS`, default 120);
//! - written data reads back: every write writes the byte
//!   `pattern(file, position)`, so overlapping and dropped writes agree, and a
//!   file byte is either 0 (hole, truncated) or its pattern, and is its
//!   pattern wherever a kept write (or a completed flush of a stream after
//!   the write) reported it written (and no kept truncate came after). Each
//!   actor owns its private files and a slice of a shared one; checked on
//!   every read and, at the end of a round, through `std::fs`;
//! - buffers come back intact: same allocation, a write's data unchanged, a
//!   read's bytes past its count untouched, and nothing written into a
//!   returned buffer later (returned read buffers, registered ones too, are
//!   held a while and checksummed again); every buffer an op took is dropped
//!   by the end, and every registered-buffer pool has all its buffers back;
//! - after shutdown every op fails fast with the shutdown error (on worker
//!   rings, an op fails only with the shutdown error or the cancel's answer,
//!   and only if a ring closed after its step began or the round is shutting
//!   down; no op starts once its runtime is gone);
//! - every worker ring closes once its runtime is gone, every op in it
//!   resolved, and on io_uring the run's worker-ring rounds did run ops on
//!   worker rings (by the rings' own counters; unless the run is too short);
//! - every slot of the rings' registered file and buffer tables is free
//!   again at the end of a round (the tables are small, and the check fills
//!   them);
//! - `/proc/self/fd` is back to its starting count after each round;
//! - a `LocalRing` made in a local task takes the home path on io_uring and
//!   makes ordinary ops on the fallback, and on io_uring the run's local ops
//!   did take it (unless the run is too short to have drawn any).
//!
//! Reproducing: the seed is printed on failure (and with `--nocapture`);
//! `AIOCTX_STRESS_SEED=<seed>` replays every actor's schedule of choices (the
//! interleaving of threads is the machine's). `AIOCTX_STRESS_OPS` sets the op
//! count, `AIOCTX_STRESS_ROUNDS` the rounds it is spread over,
//! `AIOCTX_STRESS_INIT_BUFS=1` pre-fills every read buffer (memcheck cannot
//! see the kernel's writes into an uninitialised one; a `FileStream` reads
//! into a buffer of its own, so its reads' bytes go unchecked then),
//! `AIOCTX_STRESS_SQPOLL=1` runs every ring as an SQPOLL one (of 1, 2 or
//! the default number of entries, drawn per round), and `AIOCTX_BACKEND`
//! picks the backend as for the rest of the suite.
//!
//! The test is alone in its binary: it counts the process's fds, which tests
//! running beside it in the same binary would disturb. Its parts: `actor`
//! (an actor's state and what it does each step; `actor/ops.rs` the data ops
//! and their checks, `actor/registered.rs` the registered buffers and files,
//! `actor/stream.rs` the stream sessions, `actor/local.rs` a local actor's
//! steps through a `LocalRing`), `host` (one context or a pool, its
//! shutdown, the table check), `model` (the dice, the byte patterns, what
//! is known of each file), `bufs` (the buffer types and their checks),
//! `watchdog` (the liveness guard and the replay line), `workers` (a
//! round's worker rings, their runtime's shutdown, their counters;
//! `actor/worker.rs` the step that closes a worker's ring), this file
//! (configuration, rounds), `stats` (the counters and the summary).

pub mod support;

// The parts, in `tests/stress_random_ops/` beside this file. A test's crate
// root looks for its `mod` files in `tests/` itself, so they are declared in
// a module named after their directory.
mod stress_random_ops {
    pub(crate) mod actor;
    pub(crate) mod bufs;
    pub(crate) mod host;
    pub(crate) mod model;
    pub(crate) mod stats;
    pub(crate) mod watchdog;
    pub(crate) mod workers;
}

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aioctx::JoinError;
use aioctx::local::LocalRing;

use stress_random_ops::{actor, bufs, host, model, stats, watchdog, workers};

use actor::{Actor, Driver, Round, Stats, bump};
use host::{Host, HostPlan};
use model::{Dice, FILE_SIZE, FileModel, SLICE, Snapshot};
use watchdog::{report_seed_on_panic, set_doing, start_watchdog};
use workers::Workers;

/// Default op count: a few seconds in a debug build.
const DEFAULT_OPS: u64 = 12_000;

/// Each round's actors, by how their ops are driven.
const DRIVERS: [Driver; 8] = [
    Driver::Thread,
    Driver::Thread,
    Driver::Home,
    Driver::Home,
    Driver::Enter,
    Driver::Runtime,
    Driver::Runtime,
    Driver::Local,
];

/// The least budget a round gives each actor for which the run must show
/// local ops on the home path, and ops on worker rings (on io_uring): below
/// it, a run may be too short to draw one, or its runtimes may all be shut
/// down before their actors begin.
const SURFACE_CHECK_BUDGET: u64 = 64;

// ---------------------------------------------------------------------------
// Configuration.

#[derive(Clone, Debug)]
struct Config {
    seed: u64,
    ops: u64,
    rounds: u64,
    init_bufs: bool,
    stall: Duration,
    /// Every ring an SQPOLL one.
    sqpoll: bool,
}

impl Config {
    fn from_env() -> Config {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let seed = var("AIOCTX_STRESS_SEED")
            .map(|s| parse_u64(&s).expect("AIOCTX_STRESS_SEED: a number (decimal or 0x hex)"))
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                nanos ^ u64::from(std::process::id()).rotate_left(32)
            });
        let ops = var("AIOCTX_STRESS_OPS")
            .map(|s| parse_u64(&s).expect("AIOCTX_STRESS_OPS: a number"))
            .unwrap_or(DEFAULT_OPS);
        let rounds = var("AIOCTX_STRESS_ROUNDS")
            .map(|s| parse_u64(&s).expect("AIOCTX_STRESS_ROUNDS: a number"))
            .unwrap_or_else(|| (ops / 2_000).clamp(3, 16))
            .max(1);
        let init_bufs = var("AIOCTX_STRESS_INIT_BUFS").is_some_and(|v| v != "0");
        let stall = var("AIOCTX_STRESS_STALL_SECS")
            .map(|s| parse_u64(&s).expect("AIOCTX_STRESS_STALL_SECS: a number"))
            .unwrap_or(120);
        let sqpoll = var("AIOCTX_STRESS_SQPOLL").is_some_and(|v| v != "0");
        Config {
            seed,
            ops,
            rounds,
            init_bufs,
            stall: Duration::from_secs(stall),
            sqpoll,
        }
    }

    fn replay_line(&self) -> String {
        format!(
            "AIOCTX_STRESS_SEED={:#x} AIOCTX_STRESS_OPS={} AIOCTX_STRESS_ROUNDS={} AIOCTX_STRESS_SQPOLL={} AIOCTX_BACKEND={}",
            self.seed,
            self.ops,
            self.rounds,
            u8::from(self.sqpoll),
            std::env::var("AIOCTX_BACKEND").unwrap_or_else(|_| "auto".into()),
        )
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

// ---------------------------------------------------------------------------
// Driving actors.

fn run_actor(actor: Actor, rt: tokio::runtime::Handle) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("stress-actor-{}", actor.id))
        .spawn(move || drive(actor, &rt))
        .expect("spawn an actor thread")
}

/// Runs up to this many steps as one future.
const CHUNK: u64 = 24;

async fn chunk(mut actor: Actor, steps: u64) -> Actor {
    for _ in 0..steps {
        if actor.budget == 0 {
            break;
        }
        actor.step().await;
    }
    actor
}

/// `chunk` in a local task on the actor's home thread, with a `LocalRing`
/// made there: the home path on io_uring, ordinary ops elsewhere.
async fn local_chunk(mut actor: Actor, steps: u64) -> Actor {
    let ring = LocalRing::new(&actor.ctx);
    assert_eq!(
        ring.is_home_path(),
        actor.ctx.backend() == "io_uring",
        "round {} actor {}: a LocalRing made on the home thread takes the home path on io_uring, and only there",
        actor.round.index,
        actor.id
    );
    for _ in 0..steps {
        if actor.budget == 0 {
            break;
        }
        actor.step_local(&ring).await;
    }
    actor
}

fn drive(mut actor: Actor, rt: &tokio::runtime::Handle) {
    let ctx = actor.ctx.clone();
    let round = actor.round.clone();
    let id = actor.id;
    while actor.budget > 0 {
        let steps = actor.dice.range(1, CHUNK);
        let joined = match actor.driver {
            Driver::Thread => {
                for _ in 0..steps {
                    if actor.budget == 0 {
                        break;
                    }
                    if round.shutdown_requested.load(SeqCst) {
                        // Plain threads outlive the home thread: let their
                        // last steps start after shutdown has finished, and
                        // check that each fails fast.
                        while !round.shutdown_complete.load(SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    ctx.block_on(actor.step());
                }
                Ok(actor)
            }
            Driver::Home => {
                bump(&round.stats.spawns, 1);
                ctx.spawn(chunk(actor, steps)).join()
            }
            Driver::Enter => {
                bump(&round.stats.enters, 1);
                ctx.enter(chunk(actor, steps)).join()
            }
            Driver::Local => {
                bump(&round.stats.local_tasks, 1);
                // `spawn_local` is called on the home thread, from a task
                // there that hands the local task's handle back at once
                // (yielding the handle is the point): the actor is never
                // left in a local task whose waiter is gone.
                let home = ctx.clone();
                #[allow(clippy::async_yields_async)]
                let spawner = ctx.spawn(async move { home.spawn_local(local_chunk(actor, steps)) });
                spawner.join().and_then(|local| local.join())
            }
            Driver::Runtime => match rt.block_on(rt.spawn(chunk(actor, steps))) {
                Ok(actor) => Ok(actor),
                Err(e) if e.is_cancelled() => {
                    // Dropped by the runtime's shutdown: only that of worker
                    // rings, midway through a round that shuts down.
                    assert!(
                        round.workers.is_some() && round.shutdown_requested.load(SeqCst),
                        "round {} actor {id}: its task was cancelled without a shutdown",
                        round.index
                    );
                    set_doing(
                        id,
                        format!(
                            "round {} actor {id}: dropped by the runtime's shutdown",
                            round.index
                        ),
                    );
                    return;
                }
                Err(e) => match e.try_into_panic() {
                    Ok(payload) => std::panic::resume_unwind(payload),
                    Err(e) => panic!("actor {id}: runtime task failed: {e}"),
                },
            },
        };
        actor = match joined {
            Ok(actor) => actor,
            Err(JoinError::Panicked(payload)) => std::panic::resume_unwind(payload),
            Err(e) => {
                // The home runtime dropped the future: only at shutdown.
                assert!(
                    round.shutdown_requested.load(SeqCst),
                    "round {} actor {id}: {e} without a shutdown",
                    round.index
                );
                set_doing(
                    id,
                    format!("round {} actor {id}: dropped by shutdown", round.index),
                );
                return;
            }
        };
    }
    actor.finish();
}

struct RoundPlan {
    index: u64,
    seed: u64,
    ops: u64,
    shutdown: bool,
}

/// What one round ran on, for the run's totals per surface.
struct RoundRan {
    ops: u64,
    sqpoll: bool,
    pool: bool,
    workers: bool,
}

/// One context or pool, its actors and files, from start to the final
/// checks.
fn run_round(plan: &RoundPlan, config: &Config, totals: &Stats) -> Option<RoundRan> {
    let mut dice = Dice::new(plan.seed);
    let host_plan = HostPlan::draw(&mut dice, plan.index, config.sqpoll);
    let host = Host::build(&host_plan)?;
    if config.sqpoll && host.members()[0].backend() == "io_uring" && !host.sqpoll() {
        eprintln!(
            "note: the kernel refused SQPOLL ({:?}); round {} runs on a plain ring",
            host.members()[0].ring_flags(),
            plan.index
        );
    }
    let dir = std::env::temp_dir().join(format!(
        "aioctx-stress-{}-{}",
        std::process::id(),
        plan.index
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // The runtime actors' runtime: with worker rings, built from the host's
    // choice of ring, or a plain one.
    let (workers, runtime) = match host_plan.workers {
        true => {
            let (workers, runtime) = Workers::build(host_plan.builder());
            (Some(workers), runtime)
        }
        false => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            (None, runtime)
        }
    };
    let rt = runtime.handle().clone();
    let mut runtime = Some(runtime);
    let round = Arc::new(Round {
        index: plan.index,
        shutdown_requested: AtomicBool::new(false),
        shutdown_complete: AtomicBool::new(false),
        started: AtomicU64::new(0),
        live: Arc::new(AtomicUsize::new(0)),
        init_bufs: config.init_bufs,
        stats: Stats::default(),
        kept_pools: Mutex::new(Vec::new()),
        workers,
    });
    let actors = DRIVERS.len() as u64;
    let shared = Arc::new(Mutex::new(FileModel::new(
        1000 + plan.index,
        dir.join("shared"),
        SLICE * actors,
    )));
    let mut models = vec![shared.clone()];
    let mut handles = Vec::new();
    let members = host.members();
    for (id, &driver) in DRIVERS.iter().enumerate() {
        let private: Vec<Arc<Mutex<FileModel>>> = (0..2)
            .map(|k| {
                let file_id = plan.index * 100 + id as u64 * 2 + k;
                Arc::new(Mutex::new(FileModel::new(
                    file_id,
                    dir.join(format!("actor{id}-{k}")),
                    FILE_SIZE,
                )))
            })
            .collect();
        models.extend(private.iter().cloned());
        let mut actor_models = private;
        actor_models.push(shared.clone());
        let writable = vec![
            (0, FILE_SIZE),
            (0, FILE_SIZE),
            (id as u64 * SLICE, (id as u64 + 1) * SLICE),
        ];
        let actor = Actor {
            id,
            driver,
            // In a pool, the actors share the members out: each opens its
            // files, spawns and enters on its own.
            ctx: members[id % members.len()].clone(),
            round: round.clone(),
            dice: Dice::new(plan.seed ^ (id as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)),
            budget: plan.ops / actors,
            models: actor_models,
            writable,
            open: Vec::new(),
            held: VecDeque::new(),
            fixed: None,
            ring_closes_seen: 0,
            fixed_closes_seen: 0,
        };
        handles.push(run_actor(actor, rt.clone()));
    }

    let host = Arc::new(host);
    let stopper = plan.shutdown.then(|| {
        let at = dice.range(plan.ops / 5, plan.ops * 4 / 5);
        let mut order = Dice::new(dice.0.next_u64());
        let (host, round) = (host.clone(), round.clone());
        // Worker rings' runtime goes too, before or after the host.
        let mut runtime = round.workers.as_ref().and_then(|_| runtime.take());
        std::thread::spawn(move || {
            while round.started.load(SeqCst) < at {
                std::thread::sleep(Duration::from_micros(200));
            }
            round.shutdown_requested.store(true, SeqCst);
            let workers = round.workers.as_ref();
            if let Some(workers) = workers
                && order.chance(50)
                && let Some(runtime) = runtime.take()
            {
                workers.shut_down_runtime(runtime, &round, &mut order);
            }
            host.shut_down(&round, &mut order);
            if let (Some(workers), Some(runtime)) = (workers, runtime) {
                workers.shut_down_runtime(runtime, &round, &mut order);
            }
            round.shutdown_complete.store(true, SeqCst);
        })
    });

    for handle in handles {
        if let Err(payload) = handle.join() {
            std::panic::resume_unwind(payload);
        }
    }
    if let Some(stopper) = stopper {
        stopper.join().unwrap();
    }
    let what = format!("round {}", plan.index);
    if !plan.shutdown {
        for (i, member) in host.members().iter().enumerate() {
            if member.backend() != "io_uring" {
                continue;
            }
            // Dropped ops are still the driver's: every SQE gets its CQE.
            support::eventually(
                &format!("member {i}: every submitted SQE's CQE is reaped"),
                || {
                    let m = member.metrics();
                    m.cqes_reaped >= m.sqes_submitted
                },
            );
        }
        if let Some(workers) = &round.workers {
            workers.check_cqes_reaped(&what);
        }
    }
    // Every buffer of every registered pool comes back once its op is over.
    for pool in round.kept_pools.lock().unwrap().drain(..) {
        support::eventually(&format!("{what}: every buffer of {pool:?} back"), || {
            pool.available() == pool.count()
        });
    }
    if !plan.shutdown {
        host.check_tables_free(&host_plan, &dir, &what);
    }
    let metrics = host.metrics();
    let described = host.describe(&host_plan);
    let sqpoll = host.sqpoll();
    drop(Arc::into_inner(host).expect("the stopper has ended"));
    if let Some(workers) = &round.workers {
        workers.count_open_rings();
    }
    drop(runtime);
    let worker_ring_ops = round.workers.as_ref().map(|workers| {
        workers.finish(&what);
        let (ops, own_thread) = workers.ops();
        bump(&round.stats.worker_ring_ops, ops);
        bump(&round.stats.worker_ring_own_thread, own_thread);
        ops
    });
    support::eventually("every buffer an op took is dropped", || {
        round.live.load(SeqCst) == 0
    });

    // Read the files back past the crate: each byte 0 or its pattern, and
    // its pattern where a kept write said so.
    for model in &models {
        let model = model.lock().unwrap();
        let data = match std::fs::read(&model.path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading {:?}: {e}", model.path),
        };
        let what = format!("round {} final read of {:?}", plan.index, model.path);
        Snapshot {
            file: model.id,
            offset: 0,
            must: model.must.clone(),
            extent: model.extent,
        }
        .check(&data, &what);
        assert!(
            data.len() as u64 >= model.extent,
            "{what}: {} bytes, but {} were written",
            data.len(),
            model.extent
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let on_workers = worker_ring_ops.map_or_else(String::new, |ops| {
        format!(
            "; {ops} ops on worker rings, {} rings closed with ops in them, {} runtime shutdowns",
            round.stats.ring_closes.load(SeqCst),
            round.stats.runtime_shutdowns.load(SeqCst),
        )
    });
    eprintln!(
        "stress round {}: {} ops on {described}, shutdown {}, {} dropped, {} shutdown errors ({} submits, {} backlogged, {} cancels){on_workers}",
        plan.index,
        round.stats.ops.load(SeqCst),
        plan.shutdown,
        round.stats.dropped.load(SeqCst),
        round.stats.shutdown_errors.load(SeqCst),
        metrics.submits,
        metrics.backlogged,
        metrics.cancels_sent,
    );
    totals.add(&round.stats);
    Some(RoundRan {
        ops: round.stats.ops.load(SeqCst),
        sqpoll,
        pool: host_plan.members.is_some(),
        workers: host_plan.workers,
    })
}

#[test]
fn stress_random_ops() {
    let config = Config::from_env();
    report_seed_on_panic(&config);
    eprintln!("stress: {}", config.replay_line());

    // One full lifecycle first: process-wide lazy state opens fds of its own
    // the first time (the test harness, Tokio's and std's machinery).
    let Some(ctx) = support::context() else {
        return;
    };
    let backend = ctx.backend();
    drop(ctx);
    drop(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap(),
    );
    let fds_before = support::open_fds();
    start_watchdog(&config);

    let started = Instant::now();
    let mut dice = Dice::new(config.seed);
    let totals = Stats::default();
    let (mut sqpoll_ops, mut sqpoll_rounds, mut pool_ops, mut pool_rounds) = (0, 0, 0, 0);
    let (mut worker_ops, mut worker_rounds) = (0, 0);
    for index in 0..config.rounds {
        // The first round runs to the end, the last shuts down midway, and
        // the others are drawn.
        let shutdown = match index {
            0 => false,
            _ if index == config.rounds - 1 => true,
            _ => dice.chance(35),
        };
        let plan = RoundPlan {
            index,
            seed: dice.0.next_u64(),
            ops: config.ops / config.rounds,
            shutdown,
        };
        let Some(ran) = run_round(&plan, &config, &totals) else {
            return;
        };
        if ran.sqpoll {
            sqpoll_ops += ran.ops;
            sqpoll_rounds += 1;
        }
        if ran.pool {
            pool_ops += ran.ops;
            pool_rounds += 1;
        }
        if ran.workers {
            worker_ops += ran.ops;
            worker_rounds += 1;
        }
        support::eventually("the process's fd count is back where it started", || {
            support::open_fds() == fds_before
        });
    }
    totals.report(
        started.elapsed(),
        config.rounds,
        &[
            ("SQPOLL", sqpoll_ops, sqpoll_rounds),
            ("pools", pool_ops, pool_rounds),
            ("worker-ring rounds", worker_ops, worker_rounds),
        ],
    );
    // The local actor ran on the home path, not silently beside it (each
    // local task checked that its ring takes the home path on io_uring and
    // only there).
    let budget = config.ops / config.rounds / DRIVERS.len() as u64;
    if backend == "io_uring" && budget >= SURFACE_CHECK_BUDGET {
        assert!(
            totals.local_home_ops.load(SeqCst) > 0,
            "no local op took the home path on io_uring"
        );
    }
    // Worker-ring rounds ran (the second round always is one), and their
    // runtime actors' ops went to worker rings, not silently to the host: by
    // the rings' own counters.
    if backend == "io_uring" && config.rounds > 1 && budget >= SURFACE_CHECK_BUDGET {
        assert!(
            totals.worker_ring_ops.load(SeqCst) > 0,
            "{worker_rounds} rounds with worker rings, but no op ran on one on io_uring"
        );
    }
}
