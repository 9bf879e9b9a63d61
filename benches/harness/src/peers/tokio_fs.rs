//! `tokio::fs::File`: `depth` tasks, each with its own handle, each read a seek and a
//! `read_exact` (both go through the blocking pool). Buffered reads only: tokio::fs reads into
//! its own unaligned buffer, so O_DIRECT fails with EINVAL. On a current-thread runtime
//! (`cached`) or a multi-thread one (`mt`).

use std::io::{self, SeekFrom};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::group::{RunResult, multi_thread, total_measurement, total_ops};
use crate::measure::{Latencies, Measurement, Phase, Sampler, Window};
use crate::testfile::{BLOCK_LEN, BlockOffsets, TestFile};

/// Why tokio::fs has no O_DIRECT row.
pub const NO_DIRECT: &str = "tokio::fs::File reads through a Vec of its own, not block-aligned: \
                             O_DIRECT reads fail with EINVAL";

/// Random 4 KiB buffered reads of `file` by `depth` concurrent tasks.
pub fn random_reads(file: &TestFile, depth: usize, window: Window) -> RunResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let phase = Arc::new(Phase::new());
    runtime.block_on(async {
        let workers: Vec<_> = (0..depth)
            .map(|task| {
                let path = file.path.clone();
                let mut offsets = BlockOffsets::new(file, task as u64);
                let phase = Arc::clone(&phase);
                tokio::spawn(async move {
                    let mut handle = tokio::fs::File::open(&path).await?;
                    let mut buffer = vec![0u8; BLOCK_LEN];
                    let mut ops = 0u64;
                    while !phase.is_stopped() {
                        handle.seek(SeekFrom::Start(offsets.next_offset())).await?;
                        handle.read_exact(&mut buffer).await?;
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

/// `mt`: `tasks` tasks on a multi-thread runtime of `workers` workers, each with its own handle,
/// a seek and a `read_exact` per read; one read in `latency_every` timed, the process's CPU time
/// reported.
pub fn random_reads_multi_thread(
    file: &TestFile,
    tasks: usize,
    workers: usize,
    latency_every: u32,
    window: Window,
) -> RunResult {
    let runtime = multi_thread(workers).build()?;
    let phase = Arc::new(Phase::new());
    let readers: Vec<_> = (0..tasks)
        .map(|task| {
            let path = file.path.clone();
            let mut offsets = BlockOffsets::new(file, task as u64);
            let phase = Arc::clone(&phase);
            let mut sampler = Sampler::every(latency_every);
            runtime.spawn(async move {
                let mut handle = tokio::fs::File::open(&path).await?;
                let mut buffer = vec![0u8; BLOCK_LEN];
                let mut latencies = Latencies::default();
                let mut ops = 0u64;
                while !phase.is_stopped() {
                    let started = sampler.start();
                    handle.seek(SeekFrom::Start(offsets.next_offset())).await?;
                    handle.read_exact(&mut buffer).await?;
                    if phase.is_measuring() {
                        ops += 1;
                        latencies.record_sampled(started);
                    }
                }
                io::Result::Ok((ops, latencies))
            })
        })
        .collect();
    let span = phase.run_blocking_timed(window);
    let measurement = runtime.block_on(total_measurement(readers, span.elapsed))?;
    Ok(measurement.with_cpu(span.cpu))
}
