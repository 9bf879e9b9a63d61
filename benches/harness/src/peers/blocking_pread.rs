//! What a Tokio program does today for O_DIRECT or positioned reads: `depth` tasks on a
//! current-thread runtime (or, for `mt`, a multi-thread one), each handing one `pread` at a time
//! to `spawn_blocking` and awaiting it.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::group::{RunResult, multi_thread, total_measurement};
use crate::measure::{Latencies, Phase, Sampler, Window};
use crate::page_buf::PageBuf;
use crate::testfile::{BLOCK_LEN, BlockOffsets, ReadMode, TestFile};

/// Random 4 KiB reads of `file` by `depth` concurrent tasks, each awaiting
/// `spawn_blocking(pread)`.
pub fn random_reads(file: &TestFile, mode: ReadMode, depth: usize, window: Window) -> RunResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let opened = Arc::new(file.open(mode)?);
    let phase = Arc::new(Phase::new());
    runtime.block_on(async {
        let workers: Vec<_> = (0..depth)
            .map(|task| {
                let worker = Worker {
                    file: Arc::clone(&opened),
                    offsets: BlockOffsets::new(file, task as u64),
                    phase: Arc::clone(&phase),
                    sampler: Sampler::every(u32::from(mode.records_latency())),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        let span = phase.run_async(window).await;
        Ok(total_measurement(workers, span.elapsed)
            .await?
            .with_cpu(span.cpu))
    })
}

/// `mt`: `tasks` tasks on a multi-thread runtime of `workers` workers, each awaiting
/// `spawn_blocking(pread)`; one op in `latency_every` timed, the process's CPU time reported.
pub fn random_reads_multi_thread(
    file: &TestFile,
    mode: ReadMode,
    tasks: usize,
    workers: usize,
    latency_every: u32,
    window: Window,
) -> RunResult {
    let runtime = multi_thread(workers).build()?;
    let opened = Arc::new(file.open(mode)?);
    let phase = Arc::new(Phase::new());
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let worker = Worker {
                file: Arc::clone(&opened),
                offsets: BlockOffsets::new(file, task as u64),
                phase: Arc::clone(&phase),
                sampler: Sampler::every(latency_every),
            };
            runtime.spawn(worker.run())
        })
        .collect();
    let span = phase.run_blocking_timed(window);
    let measurement = runtime.block_on(total_measurement(workers, span.elapsed))?;
    Ok(measurement.with_cpu(span.cpu))
}

struct Worker {
    file: Arc<std::fs::File>,
    offsets: BlockOffsets,
    phase: Arc<Phase>,
    sampler: Sampler,
}

impl Worker {
    async fn run(mut self) -> io::Result<(u64, Latencies)> {
        let mut buffer = PageBuf::zeroed(BLOCK_LEN);
        let mut latencies = Latencies::default();
        let mut ops = 0;
        while !self.phase.is_stopped() {
            let offset = self.offsets.next_offset();
            let file = Arc::clone(&self.file);
            let started = self.sampler.start();
            let (read, returned) = tokio::task::spawn_blocking(move || {
                let read = file.read_at(buffer.as_mut_slice(), offset);
                (read, buffer)
            })
            .await?;
            buffer = returned;
            if read? != BLOCK_LEN {
                return Err(io::Error::other("short read"));
            }
            if self.phase.is_measuring() {
                ops += 1;
                latencies.record_sampled(started);
            }
        }
        Ok((ops, latencies))
    }
}
