//! The crate under test: the aioctx side of every benchmark, measured the same way as its peers.
//!
//! - `wake`: a plain std thread runs `ctx.block_on(ctx.nop())` against an idle context.
//! - `nop`: tasks spawned onto the home thread, each awaiting `ctx.nop()` in a loop.
//! - `randread` / `cached`: tasks spawned onto the home thread, each awaiting
//!   `aioctx::fs::File::read_at` into an `AlignedBuf`.
//! - `submitters`: foreign std threads, each keeping its share of the queue depth in flight from
//!   `ctx.block_on`, so every read goes through the inbox.
//!
//! Rows carry the context's counters over the measured window as extras: `enters_per_op`
//! (`io_uring_enter` calls per completed op, the submit policy made visible) and, where ops come
//! from foreign threads, `kicks_per_op`.

use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aioctx::buf::AlignedBuf;
use aioctx::fs::{File, OpenOptions};
use aioctx::{Context, Metrics};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::affinity;
use super::group::{RunError, RunResult, uring_setup_error};
use super::measure::{Latencies, Measurement, Phase, Window};
use super::testfile::{BLOCK_LEN, BlockOffsets, ReadMode, TestFile};

/// Ring entries of every benchmark context: room for the deepest queue (128) and more.
const ENTRIES: u32 = 256;

/// A fresh context for one run; a machine without io_uring skips the row.
fn context() -> Result<Context, RunError> {
    Context::builder()
        .entries(ENTRIES)
        .thread_name("aioctx-bench")
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
fn measured_window(ctx: &Context, phase: &Phase, window: Window) -> (Duration, Counters) {
    thread::sleep(window.warmup);
    let before = Counters::of(&ctx.metrics());
    phase.start_measuring();
    let start = Instant::now();
    thread::sleep(window.measure);
    phase.stop();
    let elapsed = start.elapsed();
    (elapsed, Counters::of(&ctx.metrics()).since(before))
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

/// `nop`: `tasks` tasks on the home thread, each awaiting `ctx.nop()` in a loop.
pub fn nop_tasks(window: Window, tasks: usize) -> RunResult {
    let ctx = context()?;
    let phase = Arc::new(Phase::new());
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let task_ctx = ctx.clone();
            let phase = Arc::clone(&phase);
            ctx.spawn(async move {
                let mut ops = 0u64;
                while !phase.is_stopped() {
                    task_ctx.nop().await?;
                    if phase.is_measuring() {
                        ops += 1;
                    }
                }
                io::Result::Ok(ops)
            })
        })
        .collect();
    let (elapsed, counters) = measured_window(&ctx, &phase, window);
    let mut ops = 0;
    for worker in workers {
        ops += worker.join().map_err(join_error)??;
    }
    Ok(Measurement::throughput(ops, elapsed).with_extra(
        "enters_per_op",
        Counters::per_op(counters.submits, counters.ops),
    ))
}

/// Opens `file` on `ctx` for `mode` (`OpenOptions::direct` for [`ReadMode::Direct`]).
fn open(ctx: &Context, file: &TestFile, mode: ReadMode) -> io::Result<Arc<File>> {
    let direct = mode == ReadMode::Direct;
    let opened = ctx.block_on(
        OpenOptions::new()
            .read(true)
            .direct(direct)
            .open(ctx, &file.path),
    )?;
    Ok(Arc::new(opened))
}

/// Reads one block at `offset` into `buffer` and hands the buffer back.
async fn read_block(file: &File, buffer: AlignedBuf, offset: u64) -> io::Result<AlignedBuf> {
    let (read, buffer) = file.read_at(buffer, offset).await;
    match read? {
        BLOCK_LEN => Ok(buffer),
        short => Err(io::Error::other(format!("short read: {short} bytes"))),
    }
}

/// `randread` / `cached`: `depth` tasks on the home thread, each reading random blocks with
/// `File::read_at`. Records latency in [`ReadMode::Direct`].
pub fn random_reads(file: &TestFile, mode: ReadMode, depth: usize, window: Window) -> RunResult {
    let ctx = context()?;
    let opened = open(&ctx, file, mode)?;
    let phase = Arc::new(Phase::new());
    let record_latency = mode.records_latency();
    let workers: Vec<_> = (0..depth)
        .map(|task| {
            let opened = Arc::clone(&opened);
            let phase = Arc::clone(&phase);
            let mut offsets = BlockOffsets::new(file, task as u64);
            ctx.spawn(async move {
                let mut buffer = AlignedBuf::with_capacity(BLOCK_LEN);
                let mut latencies = Latencies::default();
                let mut ops = 0u64;
                while !phase.is_stopped() {
                    let started = Instant::now();
                    buffer = read_block(&opened, buffer, offsets.next_offset()).await?;
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
    let (elapsed, counters) = measured_window(&ctx, &phase, window);
    let mut all = Latencies::default();
    let mut ops = 0;
    for worker in workers {
        let (worker_ops, latencies) = worker.join().map_err(join_error)??;
        ops += worker_ops;
        all.absorb(latencies);
    }
    Ok(all.into_measurement(ops, elapsed).with_extra(
        "enters_per_op",
        Counters::per_op(counters.submits, counters.ops),
    ))
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
    let (elapsed, counters, results) = thread::scope(|scope| {
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
        let (elapsed, counters) = measured_window(&ctx, &phase, window);
        let results: Vec<_> = submitters
            .into_iter()
            .map(|s| s.join().expect("submitter panicked"))
            .collect();
        (elapsed, counters, results)
    });
    let mut all = Latencies::default();
    let mut ops = 0;
    for result in results {
        let (thread_ops, latencies) = result?;
        ops += thread_ops;
        all.absorb(latencies);
    }
    Ok(all
        .into_measurement(ops, elapsed)
        .with_extra(
            "kicks_per_op",
            Counters::per_op(counters.kicks_sent, counters.ops_foreign),
        )
        .with_extra(
            "enters_per_op",
            Counters::per_op(counters.submits, counters.ops),
        ))
}
