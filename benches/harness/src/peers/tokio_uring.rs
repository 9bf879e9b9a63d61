//! tokio-uring 0.5: a thread-local ring under a current-thread Tokio runtime, driven from local
//! tasks. NOPs through `tokio_uring::no_op`; reads through `File::read_at`, with O_DIRECT opened
//! by `custom_flags(O_DIRECT)` into a [`PageBuf`] (tokio-uring has no aligned buffer of its own).
//! For `mt`, one runtime per CPU on a thread of its own, the tasks split evenly over them: the
//! thread-per-core shape a tokio-uring service takes.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use crate::group::{RunError, RunResult, total_measurement, total_ops, uring_setup_error};
use crate::measure::{Latencies, Measurement, Phase, Sampler, Window};
use crate::page_buf::PageBuf;
use crate::testfile::{BLOCK_LEN, BlockOffsets, ReadMode, TestFile};

/// Starts a tokio-uring runtime for `body`, mapping a refused ring to a skip (tokio-uring itself
/// panics when `io_uring_setup` fails, so probe first).
fn start<T>(body: impl Future<Output = Result<T, RunError>>) -> Result<T, RunError> {
    io_uring::IoUring::new(8).map_err(uring_setup_error)?;
    tokio_uring::start(body)
}

/// NOP throughput: `tasks` local tasks, each awaiting `tokio_uring::no_op()` in a loop.
pub fn nop_tasks(window: Window, tasks: usize) -> RunResult {
    start(async {
        let phase = Rc::new(Phase::new());
        let workers: Vec<_> = (0..tasks)
            .map(|_| {
                let phase = Rc::clone(&phase);
                tokio_uring::spawn(async move {
                    let mut ops = 0u64;
                    while !phase.is_stopped() {
                        tokio_uring::no_op().await?;
                        if phase.is_measuring() {
                            ops += 1;
                        }
                    }
                    io::Result::Ok(ops)
                })
            })
            .collect();
        let span = phase.run_async(window).await;
        let ops = total_ops(workers).await?;
        Ok(Measurement::throughput(ops, span.elapsed).with_cpu(span.cpu))
    })
}

/// Random 4 KiB reads of `file` by `depth` local tasks, each awaiting `read_at`.
pub fn random_reads(file: &TestFile, mode: ReadMode, depth: usize, window: Window) -> RunResult {
    start(async {
        let opened = tokio_uring::fs::OpenOptions::new()
            .read(true)
            .custom_flags(mode.open_flags())
            .open(&file.path)
            .await?;
        let opened = Rc::new(opened);
        let phase = Rc::new(Phase::new());
        let workers: Vec<_> = (0..depth)
            .map(|task| {
                let opened = Rc::clone(&opened);
                let phase = Rc::clone(&phase);
                let mut offsets = BlockOffsets::new(file, task as u64);
                let record_latency = mode.records_latency();
                tokio_uring::spawn(async move {
                    let mut buffer = PageBuf::zeroed(BLOCK_LEN);
                    let mut latencies = Latencies::default();
                    let mut ops = 0u64;
                    while !phase.is_stopped() {
                        let started = Instant::now();
                        let (read, returned) = opened.read_at(buffer, offsets.next_offset()).await;
                        buffer = returned;
                        if read? != BLOCK_LEN {
                            return Err(io::Error::other("short read"));
                        }
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
        let span = phase.run_async(window).await;
        let measurement = total_measurement(workers, span.elapsed).await?;
        drop(opened);
        Ok(measurement.with_cpu(span.cpu))
    })
}

/// `mt`: `runtimes` tokio-uring runtimes, each on a thread of its own with its own handle to
/// `file`, `tasks` local tasks split evenly over them, each awaiting `read_at`; one read in
/// `latency_every` timed, the process's CPU time reported.
pub fn random_reads_per_runtime(
    file: &TestFile,
    mode: ReadMode,
    tasks: usize,
    runtimes: usize,
    latency_every: u32,
    window: Window,
) -> RunResult {
    io_uring::IoUring::new(8).map_err(uring_setup_error)?;
    let phase = Arc::new(Phase::new());
    let threads: Vec<_> = (0..runtimes)
        .map(|runtime| {
            // Tasks runtime, runtime + runtimes, ...: an even split, remainder to the first.
            let own: Vec<usize> = (runtime..tasks).step_by(runtimes).collect();
            let (file, phase) = (file.clone(), Arc::clone(&phase));
            thread::Builder::new()
                .name(format!("tokio-uring-{runtime}"))
                .spawn(move || runtime_reads(&file, mode, &own, &phase, latency_every))
        })
        .collect::<Result<_, _>>()?;
    let span = phase.run_blocking_timed(window);
    let mut all = Latencies::default();
    let mut ops = 0;
    for thread in threads {
        let (thread_ops, latencies) = thread
            .join()
            .map_err(|_| RunError::Fail("a tokio-uring runtime thread panicked".into()))??;
        ops += thread_ops;
        all.absorb(latencies);
    }
    Ok(all.into_measurement(ops, span.elapsed).with_cpu(span.cpu))
}

/// One runtime of [`random_reads_per_runtime`]: the tasks numbered `tasks`, until `phase` stops.
fn runtime_reads(
    file: &TestFile,
    mode: ReadMode,
    tasks: &[usize],
    phase: &Arc<Phase>,
    latency_every: u32,
) -> io::Result<(u64, Latencies)> {
    tokio_uring::start(async {
        let opened = tokio_uring::fs::OpenOptions::new()
            .read(true)
            .custom_flags(mode.open_flags())
            .open(&file.path)
            .await?;
        let opened = Rc::new(opened);
        let readers: Vec<_> = tasks
            .iter()
            .map(|&task| {
                let opened = Rc::clone(&opened);
                let phase = Arc::clone(phase);
                let mut offsets = BlockOffsets::new(file, task as u64);
                let mut sampler = Sampler::every(latency_every);
                tokio_uring::spawn(async move {
                    let mut buffer = PageBuf::zeroed(BLOCK_LEN);
                    let mut latencies = Latencies::default();
                    let mut ops = 0u64;
                    while !phase.is_stopped() {
                        let started = sampler.start();
                        let (read, returned) = opened.read_at(buffer, offsets.next_offset()).await;
                        buffer = returned;
                        if read? != BLOCK_LEN {
                            return Err(io::Error::other("short read"));
                        }
                        if phase.is_measuring() {
                            ops += 1;
                            latencies.record_sampled(started);
                        }
                    }
                    io::Result::Ok((ops, latencies))
                })
            })
            .collect();
        let mut all = Latencies::default();
        let mut ops = 0;
        for reader in readers {
            let (reader_ops, latencies) = reader.await.map_err(io::Error::other)??;
            ops += reader_ops;
            all.absorb(latencies);
        }
        drop(opened);
        Ok((ops, all))
    })
}
