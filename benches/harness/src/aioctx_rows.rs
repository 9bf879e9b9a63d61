//! The crate under test: the aioctx side of every benchmark, measured the same way as its peers.
//!
//! - `wake`: a plain std thread runs `ctx.block_on(ctx.nop())` against an idle context.
//! - `nop`: tasks spawned onto the home thread, each awaiting `ctx.nop()` in a loop.
//! - `randread` / `cached`: tasks spawned onto the home thread, each awaiting
//!   `aioctx::fs::File::read_at` into an `AlignedBuf`.
//! - `submitters`: foreign std threads, each keeping its share of the queue depth in flight from
//!   `ctx.block_on`, so every read goes through the inbox.
//! - `mt`: 64 reader tasks ([`Placement`]): on a Tokio multi-thread runtime submitting to one
//!   context (every read foreign), on that runtime submitting to a pool (each worker bound to a
//!   member with `Pool::thread_binder`, the file shared, each read going to its worker's
//!   member), spawned onto a pool (`Pool::spawn`: every read local), or on a runtime whose
//!   workers drive rings of their own (`aioctx::runtime::WorkerRings`: every read local).
//!
//! Rows carry the context's counters over the measured window as extras: `enters_per_op`
//! (`io_uring_enter` calls per completed op, the submit policy made visible) and, where ops come
//! from foreign threads, `kicks_per_op`; `mt` rows add `cpu_s_per_mop` (the process's CPU time
//! per million reads), `foreign_per_op` (reads that crossed threads on their way in, through an
//! inbox) and, on a pool, `busiest_member` (the largest member's share of the reads).

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aioctx::buf::AlignedBuf;
use aioctx::fs::{File, OpenOptions};
use aioctx::local::LocalRing;
use aioctx::{Context, FixedBuf, FixedBufPool, Metrics, Pool};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::affinity;
use super::group::{self, RunError, RunResult, total_measurement, uring_setup_error};
use super::measure::{Latencies, Phase, Sampler, Span, Window, process_cpu_time};
use super::testfile::{BLOCK_LEN, BlockOffsets, ReadMode, TestFile};

/// Ring entries of every benchmark context: room for the deepest queue (128) and more.
const ENTRIES: u32 = 256;

/// The options of every benchmark context.
fn builder() -> aioctx::Builder {
    Context::builder()
        .entries(ENTRIES)
        .thread_name("aioctx-bench")
}

/// A fresh context for one run; a machine without io_uring skips the row.
fn context() -> Result<Context, RunError> {
    builder().build().map_err(uring_setup_error)
}

/// How long an idle SQPOLL thread polls before it sleeps.
const SQPOLL_IDLE: Duration = Duration::from_millis(10);

/// Which of the crate's ring features a single-context row turns on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The defaults: an unregistered file, plain buffers, no SQPOLL.
    Plain,
    /// `Builder::sqpoll`: a kernel thread polls the SQ (the row says if the kernel refused).
    Sqpoll,
    /// `OpenOptions::register`: the file's reads carry `IOSQE_FIXED_FILE`.
    RegisteredFile,
    /// `Context::register_buffers`: reads with `File::read_fixed_at` into registered buffers.
    FixedBuffers,
    /// The home-thread path: `!Send` tasks (`Context::spawn_local`) with ops from a
    /// `LocalRing`.
    Local,
}

/// Spawns the `!Send` future `make` builds onto `ctx`'s home thread (`Context::spawn_local`,
/// from a task there), for the [`Flavor::Local`] rows.
fn spawn_local_task<F, Fut>(
    ctx: &Context,
    make: F,
) -> aioctx::JoinHandle<io::Result<(u64, Latencies)>>
where
    F: FnOnce(LocalRing) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = io::Result<(u64, Latencies)>> + 'static,
{
    let home = ctx.clone();
    ctx.spawn(async move {
        let task = {
            let ring = LocalRing::new(&home);
            if !ring.is_home_path() {
                return Err(io::Error::other("a local row off the home path"));
            }
            home.spawn_local(make(ring))
        };
        task.await.map_err(|e| io::Error::other(e.to_string()))?
    })
}

/// A fresh context for a `flavor` row; a kernel that refuses SQPOLL skips it.
fn context_for(flavor: Flavor) -> Result<Context, RunError> {
    if flavor != Flavor::Sqpoll {
        return context();
    }
    let ctx = builder()
        .sqpoll(SQPOLL_IDLE)
        .build()
        .map_err(uring_setup_error)?;
    if ctx.ring_flags().sqpoll {
        Ok(ctx)
    } else {
        Err(RunError::Skip(
            "the kernel refused IORING_SETUP_SQPOLL".to_owned(),
        ))
    }
}

/// A fresh pool of `members` for one run; a machine without io_uring skips the row.
fn pool(members: usize) -> Result<Pool, RunError> {
    Pool::builder()
        .contexts(members)
        .context_builder(builder())
        .build()
        .map_err(uring_setup_error)
}

/// The note for an aioctx row: which backend and ring flags ran it.
pub fn backend_note() -> String {
    match context() {
        Ok(ctx) => {
            let metrics = ctx.metrics();
            let flags = metrics.ring_flags;
            format!(
                "backend {}{}{}",
                metrics.backend,
                if flags.single_issuer {
                    ", SINGLE_ISSUER"
                } else {
                    ""
                },
                if flags.defer_taskrun {
                    "+DEFER_TASKRUN"
                } else {
                    ""
                },
            )
        }
        Err(RunError::Skip(reason) | RunError::Fail(reason)) => reason,
    }
}

fn join_error(error: aioctx::JoinError) -> RunError {
    RunError::Fail(format!("benchmark task failed: {error}"))
}

/// Counter deltas over a measured window.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    ops: u64,
    ops_foreign: u64,
    submits: u64,
    kicks_sent: u64,
}

impl Counters {
    fn of(metrics: &Metrics) -> Counters {
        Counters {
            ops: metrics.ops_local + metrics.ops_foreign,
            ops_foreign: metrics.ops_foreign,
            submits: metrics.submits,
            kicks_sent: metrics.kicks_sent,
        }
    }

    fn since(self, earlier: Counters) -> Counters {
        Counters {
            ops: self.ops - earlier.ops,
            ops_foreign: self.ops_foreign - earlier.ops_foreign,
            submits: self.submits - earlier.submits,
            kicks_sent: self.kicks_sent - earlier.kicks_sent,
        }
    }

    fn sum(all: &[Counters]) -> Counters {
        all.iter().fold(Counters::default(), |sum, one| Counters {
            ops: sum.ops + one.ops,
            ops_foreign: sum.ops_foreign + one.ops_foreign,
            submits: sum.submits + one.submits,
            kicks_sent: sum.kicks_sent + one.kicks_sent,
        })
    }

    fn per_op(count: u64, ops: u64) -> f64 {
        if ops == 0 {
            0.0
        } else {
            count as f64 / ops as f64
        }
    }
}

/// Runs the measured window from this (non-home) thread: warm-up, then `measure` with the
/// context's counters read at both ends.
fn measured_window(ctx: &Context, phase: &Phase, window: Window) -> (Span, Counters) {
    let (span, counters) = window_over(|| vec![ctx.metrics()], phase, window);
    (span, Counters::sum(&counters))
}

/// Runs the measured window from this (non-home) thread: warm-up, then `measure`, timed in wall
/// and CPU time, with the counters of every context `metrics` returns read at both ends.
fn window_over(
    metrics: impl Fn() -> Vec<Metrics>,
    phase: &Phase,
    window: Window,
) -> (Span, Vec<Counters>) {
    thread::sleep(window.warmup);
    let before: Vec<Counters> = metrics().iter().map(Counters::of).collect();
    let cpu = process_cpu_time();
    phase.start_measuring();
    let start = Instant::now();
    thread::sleep(window.measure);
    phase.stop();
    let span = Span {
        elapsed: start.elapsed(),
        cpu: process_cpu_time() - cpu,
    };
    let after = metrics().iter().map(Counters::of).collect::<Vec<_>>();
    let deltas = after.iter().zip(before).map(|(a, b)| a.since(b));
    (span, deltas.collect())
}

/// `wake`: round trips of `ctx.block_on(ctx.nop())` from this std thread to an idle context,
/// the two threads pinned to different CPUs.
pub fn wake_round_trip(window: Window) -> RunResult {
    let cpus = affinity::wake_cpus();
    let _pinned = cpus
        .map(|(caller, _)| affinity::pin_current_thread(caller))
        .transpose()?;
    let ctx = context()?;
    // The spawned task runs on the home thread, so this pins the home thread.
    ctx.spawn(async move { affinity::pin_for_life(cpus.map(|(_, home)| home)) })
        .join()
        .map_err(join_error)??;
    let warmup_end = Instant::now() + window.warmup;
    while Instant::now() < warmup_end {
        ctx.block_on(ctx.nop())?;
    }
    let mut latencies = Latencies::with_capacity(1 << 16);
    let start = Instant::now();
    let mut round_trips = 0;
    while start.elapsed() < window.measure {
        let sent = Instant::now();
        ctx.block_on(ctx.nop())?;
        latencies.record_since(sent);
        round_trips += 1;
    }
    Ok(latencies.into_measurement(round_trips, start.elapsed()))
}

/// `nop`: `tasks` tasks on the home thread, each awaiting `ctx.nop()` in a loop; with
/// `timed`, every NOP's latency recorded.
pub fn nop_tasks(window: Window, tasks: usize, flavor: Flavor, timed: bool) -> RunResult {
    let ctx = context_for(flavor)?;
    let phase = Arc::new(Phase::new());
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let task_ctx = ctx.clone();
            let phase = Arc::clone(&phase);
            if flavor == Flavor::Local {
                return spawn_local_task(&ctx, move |ring| async move {
                    let mut latencies = Latencies::default();
                    let mut ops = 0u64;
                    while !phase.is_stopped() {
                        let started = timed.then(Instant::now);
                        ring.nop().await?;
                        if phase.is_measuring() {
                            ops += 1;
                            latencies.record_sampled(started);
                        }
                    }
                    io::Result::Ok((ops, latencies))
                });
            }
            ctx.spawn(async move {
                let mut latencies = Latencies::default();
                let mut ops = 0u64;
                while !phase.is_stopped() {
                    let started = timed.then(Instant::now);
                    task_ctx.nop().await?;
                    if phase.is_measuring() {
                        ops += 1;
                        latencies.record_sampled(started);
                    }
                }
                io::Result::Ok((ops, latencies))
            })
        })
        .collect();
    let (span, counters) = measured_window(&ctx, &phase, window);
    let (ops, all) = join_home_tasks(workers)?;
    Ok(all
        .into_measurement(ops, span.elapsed)
        .with_cpu(span.cpu)
        .with_extra(
            "enters_per_op",
            Counters::per_op(counters.submits, counters.ops),
        ))
}

/// Joins the tasks of a single-context row: the ops each counted and the latencies each recorded,
/// merged.
fn join_home_tasks(
    workers: Vec<aioctx::JoinHandle<io::Result<(u64, Latencies)>>>,
) -> Result<(u64, Latencies), RunError> {
    let mut all = Latencies::default();
    let mut ops = 0;
    for worker in workers {
        let (worker_ops, latencies) = worker.join().map_err(join_error)??;
        ops += worker_ops;
        all.absorb(latencies);
    }
    Ok((ops, all))
}

/// Opens `file` on `ctx` for `mode` (`OpenOptions::direct` for [`ReadMode::Direct`]).
fn open(ctx: &Context, file: &TestFile, mode: ReadMode) -> io::Result<Arc<File>> {
    open_registered(ctx, file, mode, false)
}

/// As [`open`], in the ring's file table if `register`.
fn open_registered(
    ctx: &Context,
    file: &TestFile,
    mode: ReadMode,
    register: bool,
) -> io::Result<Arc<File>> {
    let direct = mode == ReadMode::Direct;
    let opened = ctx.block_on(
        OpenOptions::new()
            .read(true)
            .direct(direct)
            .register(register)
            .open(ctx, &file.path),
    )?;
    Ok(Arc::new(opened))
}

/// Opens `file` from a task on `runtime`, whose threads have worker rings: the `File` sends
/// each op to the ring of the thread that polls it.
async fn open_on_worker(
    runtime: &tokio::runtime::Runtime,
    file: &TestFile,
    mode: ReadMode,
) -> io::Result<Arc<File>> {
    let path = file.path.clone();
    let direct = mode == ReadMode::Direct;
    let opened = runtime.spawn(async move {
        let ctx =
            aioctx::current().ok_or_else(|| io::Error::other("a runtime worker without a ring"))?;
        OpenOptions::new()
            .read(true)
            .direct(direct)
            .open(&ctx, &path)
            .await
    });
    Ok(Arc::new(opened.await.map_err(io::Error::other)??))
}

/// Reads one block at `offset` into `buffer` and hands the buffer back.
async fn read_block(file: &File, buffer: AlignedBuf, offset: u64) -> io::Result<AlignedBuf> {
    let (read, buffer) = file.read_at(buffer, offset).await;
    match read? {
        BLOCK_LEN => Ok(buffer),
        short => Err(io::Error::other(format!("short read: {short} bytes"))),
    }
}

/// Reads one block at `offset` into the registered `buffer` and hands the buffer back.
async fn read_fixed_block(file: &File, buffer: FixedBuf, offset: u64) -> io::Result<FixedBuf> {
    let (read, buffer) = file.read_fixed_at(buffer, offset).await;
    match read? {
        BLOCK_LEN => Ok(buffer),
        short => Err(io::Error::other(format!("short read: {short} bytes"))),
    }
}

/// The buffer one reader task reads into, by flavor.
enum ReadBuf {
    Plain(AlignedBuf),
    Fixed(FixedBuf),
}

impl ReadBuf {
    async fn read(self, file: &File, offset: u64) -> io::Result<ReadBuf> {
        match self {
            ReadBuf::Plain(buffer) => read_block(file, buffer, offset).await.map(ReadBuf::Plain),
            ReadBuf::Fixed(buffer) => read_fixed_block(file, buffer, offset)
                .await
                .map(ReadBuf::Fixed),
        }
    }
}

/// `randread` / `cached`: `depth` tasks on the home thread, each reading random blocks with
/// `File::read_at` (or what `flavor` says). Records latency in [`ReadMode::Direct`]. Reports
/// the process's CPU time per read and, for [`Flavor::FixedBuffers`], `fixed_share`: the share
/// of reads whose buffer the kernel had registered.
pub fn random_reads(
    file: &TestFile,
    mode: ReadMode,
    depth: usize,
    window: Window,
    flavor: Flavor,
) -> RunResult {
    let ctx = context_for(flavor)?;
    let opened = open_registered(&ctx, file, mode, flavor == Flavor::RegisteredFile)?;
    if flavor == Flavor::RegisteredFile && !opened.is_registered() {
        return Err(RunError::Skip(
            "the ring has no file table to register the file in".to_owned(),
        ));
    }
    let pool = match flavor {
        Flavor::FixedBuffers => Some(ctx.block_on(ctx.register_buffers(depth, BLOCK_LEN))?),
        _ => None,
    };
    let registered = pool.as_ref().is_some_and(FixedBufPool::is_registered);
    let phase = Arc::new(Phase::new());
    let record_latency = mode.records_latency();
    let workers: Vec<_> = (0..depth)
        .map(|task| {
            let opened = Arc::clone(&opened);
            let phase = Arc::clone(&phase);
            let mut offsets = BlockOffsets::new(file, task as u64);
            let mut buffer = match &pool {
                Some(pool) => ReadBuf::Fixed(pool.try_get().expect("one buffer per reader")),
                None => ReadBuf::Plain(AlignedBuf::with_capacity(BLOCK_LEN)),
            };
            if flavor == Flavor::Local {
                return spawn_local_task(&ctx, move |ring| async move {
                    let file = ring.file(&opened);
                    let mut buffer = AlignedBuf::with_capacity(BLOCK_LEN);
                    let mut latencies = Latencies::default();
                    let mut ops = 0u64;
                    while !phase.is_stopped() {
                        let started = Instant::now();
                        let (read, back) = file.read_at(buffer, offsets.next_offset()).await;
                        buffer = match read? {
                            BLOCK_LEN => back,
                            short => return Err(io::Error::other(format!("short read: {short}"))),
                        };
                        if phase.is_measuring() {
                            ops += 1;
                            if record_latency {
                                latencies.record_since(started);
                            }
                        }
                    }
                    io::Result::Ok((ops, latencies))
                });
            }
            ctx.spawn(async move {
                let mut latencies = Latencies::default();
                let mut ops = 0u64;
                while !phase.is_stopped() {
                    let started = Instant::now();
                    buffer = buffer.read(&opened, offsets.next_offset()).await?;
                    if phase.is_measuring() {
                        ops += 1;
                        if record_latency {
                            latencies.record_since(started);
                        }
                    }
                }
                io::Result::Ok((ops, latencies))
            })
        })
        .collect();
    let (span, counters) = measured_window(&ctx, &phase, window);
    let (ops, all) = join_home_tasks(workers)?;
    let mut measurement = all
        .into_measurement(ops, span.elapsed)
        .with_cpu(span.cpu)
        .with_extra(
            "enters_per_op",
            Counters::per_op(counters.submits, counters.ops),
        );
    if flavor == Flavor::FixedBuffers {
        measurement = measurement.with_extra("fixed_share", if registered { 1.0 } else { 0.0 });
    }
    Ok(measurement)
}

/// `cached` with one task on the home thread reading `depth` random blocks at a time, each
/// `depth` one batch op (`File::read_batch`): one slot, one submission and one wake for all of
/// them. Counts every read of a batch as an op; latency is the batch's.
pub fn batched_reads(file: &TestFile, depth: usize, window: Window) -> RunResult {
    let ctx = context()?;
    let opened = open(&ctx, file, ReadMode::Cached)?;
    let phase = Arc::new(Phase::new());
    let reader = {
        let phase = Arc::clone(&phase);
        let mut offsets = BlockOffsets::new(file, 0);
        ctx.spawn(async move {
            let mut buffers: Vec<_> = (0..depth)
                .map(|_| AlignedBuf::with_capacity(BLOCK_LEN))
                .collect();
            let mut latencies = Latencies::default();
            let mut ops = 0u64;
            while !phase.is_stopped() {
                let started = Instant::now();
                let reads = buffers.drain(..).map(|buf| (buf, offsets.next_offset()));
                for (read, buf) in opened.read_batch(reads).await {
                    match read? {
                        BLOCK_LEN => buffers.push(buf),
                        short => return Err(io::Error::other(format!("short read: {short}"))),
                    }
                }
                if phase.is_measuring() {
                    ops += depth as u64;
                    latencies.record_since(started);
                }
            }
            io::Result::Ok((ops, latencies))
        })
    };
    let (span, counters) = measured_window(&ctx, &phase, window);
    let (ops, all) = join_home_tasks(vec![reader])?;
    Ok(all
        .into_measurement(ops, span.elapsed)
        .with_cpu(span.cpu)
        .with_extra("enters_per_op", Counters::per_op(counters.submits, ops)))
}

/// `submitters`: `threads` foreign std threads, each keeping `total_depth / threads` O_DIRECT
/// reads in flight from `ctx.block_on`. Reports IOPS, latency, and kicks and enters per op.
pub fn foreign_submitters(
    file: &TestFile,
    threads: usize,
    total_depth: usize,
    window: Window,
) -> RunResult {
    let ctx = context()?;
    let opened = open(&ctx, file, ReadMode::Direct)?;
    let phase = Phase::new();
    let per_thread = total_depth / threads;
    let (span, counters, results) = thread::scope(|scope| {
        let submitters: Vec<_> = (0..threads)
            .map(|index| {
                let (ctx, opened, phase) = (&ctx, &opened, &phase);
                let mut offsets = BlockOffsets::new(file, index as u64);
                scope.spawn(move || {
                    ctx.block_on(async {
                        let mut latencies = Latencies::default();
                        let mut ops = 0u64;
                        let mut in_flight = FuturesUnordered::new();
                        let read = |buffer, offset| async move {
                            let started = Instant::now();
                            (read_block(opened, buffer, offset).await, started)
                        };
                        for _ in 0..per_thread {
                            in_flight.push(read(
                                AlignedBuf::with_capacity(BLOCK_LEN),
                                offsets.next_offset(),
                            ));
                        }
                        while let Some((result, started)) = in_flight.next().await {
                            let buffer = result?;
                            if phase.is_measuring() {
                                ops += 1;
                                latencies.record_since(started);
                            }
                            if !phase.is_stopped() {
                                in_flight.push(read(buffer, offsets.next_offset()));
                            }
                        }
                        io::Result::Ok((ops, latencies))
                    })
                })
            })
            .collect();
        let (span, counters) = measured_window(&ctx, &phase, window);
        let results: Vec<_> = submitters
            .into_iter()
            .map(|s| s.join().expect("submitter panicked"))
            .collect();
        (span, counters, results)
    });
    let mut all = Latencies::default();
    let mut ops = 0;
    for result in results {
        let (thread_ops, latencies) = result?;
        ops += thread_ops;
        all.absorb(latencies);
    }
    Ok(all
        .into_measurement(ops, span.elapsed)
        .with_cpu(span.cpu)
        .with_extra(
            "kicks_per_op",
            Counters::per_op(counters.kicks_sent, counters.ops_foreign),
        )
        .with_extra(
            "enters_per_op",
            Counters::per_op(counters.submits, counters.ops),
        ))
}

/// Where the readers of an `mt` run live and which ring each read goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// One context; the readers are tasks on a multi-thread runtime of `workers` workers, so
    /// every read is pushed through the context's inbox from a worker.
    OneContext {
        /// Worker threads of the runtime.
        workers: usize,
    },
    /// A pool of `members`; the readers are tasks on a multi-thread runtime of `workers` workers
    /// whose threads are bound with `Pool::thread_binder`. The file is opened once and shared:
    /// each read goes to the ring of the member its worker thread was given.
    PoolFromRuntime {
        /// Members of the pool.
        members: usize,
        /// Worker threads of the runtime.
        workers: usize,
    },
    /// A pool of `members`; the readers are spawned onto it (`Pool::spawn`, round-robin), so
    /// every read is pushed straight into the ring of the member the reader runs on.
    PoolSpawned {
        /// Members of the pool.
        members: usize,
    },
    /// The readers are tasks on a multi-thread runtime of `workers` workers, each worker driving
    /// a ring of its own (`aioctx::runtime::WorkerRings`): a read goes into the ring of the
    /// worker that polls it, with no inbox and no other thread.
    WorkerRings {
        /// Worker threads of the runtime, one ring each.
        workers: usize,
    },
}

/// One reader of the `mt` rows: random blocks of `file` into an `AlignedBuf` until the phase
/// stops, one read in `sampler`'s interval timed.
async fn reader(
    file: File,
    mut offsets: BlockOffsets,
    phase: Arc<Phase>,
    mut sampler: Sampler,
) -> io::Result<(u64, Latencies)> {
    let mut buffer = AlignedBuf::with_capacity(BLOCK_LEN);
    let mut latencies = Latencies::default();
    let mut ops = 0u64;
    while !phase.is_stopped() {
        let started = sampler.start();
        buffer = read_block(&file, buffer, offsets.next_offset()).await?;
        if phase.is_measuring() {
            ops += 1;
            latencies.record_sampled(started);
        }
    }
    Ok((ops, latencies))
}

/// A multi-thread runtime of `workers` workers, its threads bound to `pool`'s members if given.
fn multi_thread(workers: usize, pool: Option<&Pool>) -> io::Result<tokio::runtime::Runtime> {
    let mut builder = group::multi_thread(workers);
    if let Some(pool) = pool {
        builder.on_thread_start(pool.thread_binder());
    }
    builder.build()
}

/// `mt`: `tasks` readers of `file` placed as `placement` says, one read in `latency_every`
/// timed. Reports the process's CPU time per million reads, `enters_per_op`, `kicks_per_op`
/// where reads were foreign, and on a pool the busiest member's share of the reads.
pub fn mt_random_reads(
    file: &TestFile,
    mode: ReadMode,
    tasks: usize,
    placement: Placement,
    latency_every: u32,
    window: Window,
) -> RunResult {
    let phase = Arc::new(Phase::new());
    let readers = |opened: &File| -> Vec<_> {
        (0..tasks)
            .map(|task| {
                let offsets = BlockOffsets::new(file, task as u64);
                let sampler = Sampler::every(latency_every);
                reader(opened.clone(), offsets, Arc::clone(&phase), sampler)
            })
            .collect()
    };
    let (measurement, span, counters) = match placement {
        Placement::OneContext { workers } => {
            let ctx = context()?;
            let opened = open(&ctx, file, mode)?;
            let runtime = multi_thread(workers, None)?;
            let tasks: Vec<_> = readers(&opened)
                .into_iter()
                .map(|r| runtime.spawn(r))
                .collect();
            let (span, counters) = window_over(|| vec![ctx.metrics()], &phase, window);
            let measurement = runtime.block_on(total_measurement(tasks, span.elapsed))?;
            (measurement, span, counters)
        }
        Placement::PoolFromRuntime { members, workers } => {
            let pool = pool(members)?;
            // Opened through member 0 from this thread, which takes no member of its own.
            let opened = open(&pool.members()[0], file, mode)?;
            let runtime = multi_thread(workers, Some(&pool))?;
            let tasks: Vec<_> = readers(&opened)
                .into_iter()
                .map(|r| runtime.spawn(r))
                .collect();
            let (span, counters) = window_over(|| pool.metrics(), &phase, window);
            let measurement = runtime.block_on(total_measurement(tasks, span.elapsed))?;
            (measurement, span, counters)
        }
        Placement::WorkerRings { workers } => {
            let rings = aioctx::runtime::WorkerRings::with_builder(builder());
            let mut runtime = group::multi_thread(workers);
            rings.configure(&mut runtime);
            let runtime = runtime.build()?;
            let opened = runtime.block_on(open_on_worker(&runtime, file, mode))?;
            let tasks: Vec<_> = readers(&opened)
                .into_iter()
                .map(|r| runtime.spawn(r))
                .collect();
            let (span, counters) = window_over(|| rings.metrics(), &phase, window);
            let measurement = runtime.block_on(total_measurement(tasks, span.elapsed))?;
            (measurement, span, counters)
        }
        Placement::PoolSpawned { members } => {
            let pool = pool(members)?;
            let opened = open(&pool.members()[0], file, mode)?;
            let tasks: Vec<_> = readers(&opened)
                .into_iter()
                .map(|r| pool.spawn(r))
                .collect();
            let (span, counters) = window_over(|| pool.metrics(), &phase, window);
            let measurement = futures::executor::block_on(total_measurement(tasks, span.elapsed))?;
            (measurement, span, counters)
        }
    };
    let total = Counters::sum(&counters);
    let mut measurement = measurement
        .with_cpu(span.cpu)
        .with_extra("enters_per_op", Counters::per_op(total.submits, total.ops))
        .with_extra(
            "foreign_per_op",
            Counters::per_op(total.ops_foreign, total.ops),
        );
    if total.ops_foreign > 0 {
        measurement = measurement.with_extra(
            "kicks_per_op",
            Counters::per_op(total.kicks_sent, total.ops_foreign),
        );
    }
    if counters.len() > 1 {
        let busiest = counters.iter().map(|c| c.ops).max().unwrap_or(0);
        measurement =
            measurement.with_extra("busiest_member", Counters::per_op(busiest, total.ops));
    }
    Ok(measurement)
}
