//! tokio-uring 0.5: a thread-local ring under a current-thread Tokio runtime, driven from local
//! tasks. NOPs through `tokio_uring::no_op`; reads through `File::read_at`, with O_DIRECT opened
//! by `custom_flags(O_DIRECT)` into a [`PageBuf`] (tokio-uring has no aligned buffer of its own).

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::time::Instant;

use crate::harness::group::{RunError, RunResult, total_measurement, total_ops, uring_setup_error};
use crate::harness::measure::{Latencies, Measurement, Phase, Window};
use crate::harness::page_buf::PageBuf;
use crate::harness::testfile::{BLOCK_LEN, BlockOffsets, ReadMode, TestFile};

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
        let elapsed = phase.run_async(window.warmup, window.measure).await;
        let ops = total_ops(workers).await?;
        Ok(Measurement::throughput(ops, elapsed))
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
        let elapsed = phase.run_async(window.warmup, window.measure).await;
        let measurement = total_measurement(workers, elapsed).await?;
        drop(opened);
        Ok(measurement)
    })
}
