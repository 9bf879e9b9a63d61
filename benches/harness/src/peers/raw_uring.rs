//! The limit: the `io-uring` crate driven by hand on one thread, with no runtime, no futures and
//! no allocation per op. NOPs go in batches of 32 with one `io_uring_enter` per batch; random
//! reads keep `depth` reads in flight and submit replacements either as fio does (one enter per
//! replacement) or batched (reap everything, push every replacement, one enter).

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, SubmissionQueue, cqueue, opcode, types};

use crate::group::{RunError, RunResult, uring_setup_error};
use crate::measure::{Latencies, Measurement, Window, process_cpu_time};
use crate::page_buf::PageBuf;
use crate::testfile::{BLOCK_LEN, BlockOffsets, ReadMode, TestFile};

/// When replacement reads go to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitPolicy {
    /// One `io_uring_enter` per replacement read, as fio submits (its default
    /// `iodepth_batch_submit=1`).
    PerReplacement,
    /// Reap every completion, push every replacement, then one `io_uring_enter` for all of them.
    PerReap,
}

/// Completion result as an `io::Result` of the byte count.
fn completion_result(cqe: &cqueue::Entry) -> io::Result<usize> {
    let result = cqe.result();
    if result < 0 {
        Err(io::Error::from_raw_os_error(-result))
    } else {
        Ok(result as usize)
    }
}

/// NOP throughput: `batch` NOPs pushed, one `submit_and_wait(batch)`, all reaped; repeated.
pub fn nop_batches(window: Window, batch: usize) -> RunResult {
    let mut ring: IoUring =
        IoUring::new(batch.next_power_of_two() as u32).map_err(uring_setup_error)?;
    let (submitter, mut sq, mut cq) = ring.split();
    let nop = opcode::Nop::new().build();
    let mut run_until = |end: Instant| -> io::Result<u64> {
        let mut ops = 0;
        loop {
            for _ in 0..batch {
                // SAFETY: a NOP borrows no memory, so nothing must outlive the submission.
                unsafe { sq.push(&nop) }.expect("the SQ holds a whole batch");
            }
            sq.sync();
            submitter.submit_and_wait(batch)?;
            // `SubmissionQueue::sync` also reloads the kernel's head: without it the next batch
            // would find the queue still full.
            sq.sync();
            cq.sync();
            for cqe in &mut cq {
                completion_result(&cqe)?;
                ops += 1;
            }
            // One clock read per 16 batches keeps the check off the per-op cost.
            if ops % (16 * batch as u64) == 0 && Instant::now() >= end {
                return Ok(ops);
            }
        }
    };
    run_until(Instant::now() + window.warmup)?;
    let cpu = process_cpu_time();
    let start = Instant::now();
    let ops = run_until(start + window.measure)?;
    let elapsed = start.elapsed();
    Ok(Measurement::throughput(ops, elapsed).with_cpu(process_cpu_time() - cpu))
}

/// The reads in flight: one buffer and one push time per slot (`user_data` is the slot index).
struct ReadSlots {
    fd: types::Fd,
    // Freed only once every read has been reaped: an early return on error leaks them instead,
    // as the kernel may still write into them.
    buffers: ManuallyDrop<Vec<PageBuf>>,
    pushed_at: Vec<Instant>,
    offsets: BlockOffsets,
    record_latency: bool,
}

impl ReadSlots {
    /// Pushes a read into `slot`'s buffer at the next random offset.
    fn push(&mut self, slot: usize, sq: &mut SubmissionQueue<'_>) {
        let entry = opcode::Read::new(self.fd, self.buffers[slot].as_mut_ptr(), BLOCK_LEN as u32)
            .offset(self.offsets.next_offset())
            .build()
            .user_data(slot as u64);
        if self.record_latency {
            self.pushed_at[slot] = Instant::now();
        }
        // SAFETY: `buffers[slot]` stays allocated and untouched until this read's CQE is reaped:
        // a slot is pushed again only after its completion, and the buffers are freed only in
        // `free_buffers`, after every read has been reaped (never, on an early return).
        unsafe { sq.push(&entry) }.expect("the SQ holds `depth` entries");
    }

    /// Frees the buffers.
    ///
    /// # Safety
    ///
    /// No read into them may be in flight.
    unsafe fn free_buffers(&mut self) {
        // SAFETY: the caller guarantees that the kernel holds no pointer into the buffers, and
        // `self` is not used after this (it is only ever called last).
        unsafe { ManuallyDrop::drop(&mut self.buffers) }
    }
}

/// Random 4 KiB reads of `file` with `depth` in flight, replacements submitted per `policy`.
/// Records per-op latency (push to reap) in [`ReadMode::Direct`], and the process's CPU time.
pub fn random_reads(
    file: &TestFile,
    mode: ReadMode,
    depth: usize,
    policy: SubmitPolicy,
    window: Window,
) -> RunResult {
    let (measurement, cpu) = reads(file, mode, depth, policy, window)?;
    Ok(measurement.with_cpu(cpu))
}

/// The loop of [`random_reads`]: its measurement, and the process's CPU time from the first
/// reap in the measured window to the first one after it.
fn reads(
    file: &TestFile,
    mode: ReadMode,
    depth: usize,
    policy: SubmitPolicy,
    window: Window,
) -> Result<(Measurement, Duration), RunError> {
    let opened = file.open(mode)?;
    let mut ring: IoUring =
        IoUring::new(depth.next_power_of_two() as u32).map_err(uring_setup_error)?;
    let (submitter, mut sq, mut cq) = ring.split();
    let mut slots = ReadSlots {
        fd: types::Fd(opened.as_raw_fd()),
        buffers: ManuallyDrop::new((0..depth).map(|_| PageBuf::zeroed(BLOCK_LEN)).collect()),
        pushed_at: vec![Instant::now(); depth],
        offsets: BlockOffsets::new(file, depth as u64),
        record_latency: mode.records_latency(),
    };
    let measure_start = Instant::now() + window.warmup;
    let end = measure_start + window.measure;
    let mut latencies = Latencies::with_capacity(if slots.record_latency { 1 << 18 } else { 0 });
    let mut ops = 0;
    for slot in 0..depth {
        slots.push(slot, &mut sq);
    }
    sq.sync();
    submitter.submit()?;
    sq.sync();
    let mut in_flight = depth;
    let mut failure = None;
    let (mut cpu_start, mut cpu_end) = (None, None);
    while in_flight > 0 {
        submitter.submit_and_wait(1)?;
        sq.sync();
        cq.sync();
        let now = Instant::now();
        let measuring = now >= measure_start && now < end;
        if measuring && cpu_start.is_none() {
            cpu_start = Some(process_cpu_time());
        }
        if now >= end && cpu_end.is_none() {
            cpu_end = Some(process_cpu_time());
        }
        for cqe in &mut cq {
            in_flight -= 1;
            let slot = cqe.user_data() as usize;
            match completion_result(&cqe) {
                Ok(BLOCK_LEN) => {}
                Ok(short) => failure = Some(io::Error::other(format!("short read: {short} bytes"))),
                Err(error) => failure = Some(error),
            }
            if measuring {
                ops += 1;
                if slots.record_latency {
                    latencies.record(now - slots.pushed_at[slot]);
                }
            }
            if now < end && failure.is_none() {
                slots.push(slot, &mut sq);
                in_flight += 1;
                if policy == SubmitPolicy::PerReplacement {
                    sq.sync();
                    submitter.submit()?;
                    sq.sync();
                }
            }
        }
        sq.sync();
    }
    // SAFETY: `in_flight` is zero: every read has been reaped.
    unsafe { slots.free_buffers() };
    if let Some(error) = failure {
        return Err(error.into());
    }
    let cpu = match (cpu_start, cpu_end) {
        (Some(start), Some(end)) => end - start,
        _ => Duration::ZERO,
    };
    Ok((latencies.into_measurement(ops, window.measure), cpu))
}
