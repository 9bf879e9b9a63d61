//! The batch op: N reads and writes submitted as one op that resolves once
//! all are done, with one wake of its task; each member's result reported
//! on its own; cancel-safe; on every backend, the simulator running the
//! members in an order drawn from the seed.

pub mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};

use aioctx::fs::{Batch, File, OpenOptions};
use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

/// A file of 64 KiB whose byte at `i` is `i % 251`.
fn known_file(tag: &str) -> support::TempPath {
    let path = support::TempPath::new(tag);
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path.0, data).unwrap();
    path
}

fn expected(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i % 251) as u8)
        .collect()
}

/// Counts the polls of the future it wraps.
struct Polls<F> {
    inner: Pin<Box<F>>,
    polls: Arc<AtomicUsize>,
}

impl<F: Future> Future for Polls<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.inner.as_mut().poll(cx)
    }
}

#[test]
fn thirty_two_reads_complete_with_one_wake() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = known_file("batch-reads");
    let file = ctx.block_on(File::open(&ctx, &path.0)).unwrap();
    let offsets: Vec<u64> = (0..32).map(|i| (i * 1999) % 60000).collect();
    let reads = offsets.iter().map(|&o| (vec![0u8; 1000], o));
    let polls = Arc::new(AtomicUsize::new(0));
    let batch = Polls {
        inner: Box::pin(file.read_batch(reads)),
        polls: polls.clone(),
    };
    let results = ctx.block_on(batch);
    assert_eq!(results.len(), 32);
    for ((result, buf), offset) in results.into_iter().zip(&offsets) {
        assert_eq!(result.unwrap(), 1000);
        assert_eq!(buf, expected(*offset, 1000), "the read at {offset}");
    }
    // Submitted by the first poll, resolved by the second: one wake for 32.
    assert_eq!(
        polls.load(Ordering::Relaxed),
        2,
        "one wake for the whole batch"
    );
}

#[test]
fn writes_on_two_files_then_reads_back() {
    let Some(ctx) = support::context() else {
        return;
    };
    let (a, b) = (
        support::TempPath::new("batch-a"),
        support::TempPath::new("batch-b"),
    );
    let inner = ctx.clone();
    let (pa, pb) = (a.0.clone(), b.0.clone());
    ctx.block_on(async move {
        let open = |path| {
            let ctx = inner.clone();
            async move {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .open(&ctx, path)
                    .await
                    .unwrap()
            }
        };
        let (fa, fb) = (open(pa).await, open(pb).await);
        let mut writes = Batch::new();
        for i in 0..8u8 {
            writes.write_at(&fa, vec![i; 100], u64::from(i) * 100);
            writes.write_at(&fb, vec![i + 100; 50], u64::from(i) * 50);
        }
        for (result, _) in writes.submit(&inner).await {
            assert!(result.unwrap() > 0);
        }
        let mut reads = Batch::new();
        reads
            .read_at(&fa, vec![0u8; 800], 0)
            .read_at(&fb, vec![0u8; 400], 0);
        let results = reads.submit(&inner).await;
        let expect_a: Vec<u8> = (0..8u8).flat_map(|i| vec![i; 100]).collect();
        let expect_b: Vec<u8> = (0..8u8).flat_map(|i| vec![i + 100; 50]).collect();
        assert_eq!(results[0].1, expect_a);
        assert_eq!(results[1].1, expect_b);
    });
}

#[test]
fn each_member_reports_its_own_failure() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = known_file("batch-partial");
    let write_only = support::TempPath::new("batch-wo");
    let inner = ctx.clone();
    let (p, wo) = (path.0.clone(), write_only.0.clone());
    let results = ctx.block_on(async move {
        let file = File::open(&inner, &p).await.unwrap();
        let writer = File::create(&inner, &wo).await.unwrap();
        let mut batch = Batch::new();
        batch
            .read_at(&file, vec![0u8; 100], 0)
            // Past the end: a read of 0 bytes, not an error.
            .read_at(&file, vec![0u8; 100], 1 << 20)
            // A write-only file: EBADF for the read.
            .read_at(&writer, vec![0u8; 100], 0)
            // An offset the kernel would misread: refused, EINVAL.
            .read_at(&file, vec![0u8; 100], u64::MAX)
            .read_at(&file, vec![0u8; 100], 500);
        batch.submit(&inner).await
    });
    assert_eq!(results[0].0.as_ref().unwrap(), &100);
    assert_eq!(results[0].1, expected(0, 100));
    assert_eq!(results[1].0.as_ref().unwrap(), &0, "past the end");
    assert_eq!(
        results[2].0.as_ref().unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    assert_eq!(
        results[3].0.as_ref().unwrap_err().raw_os_error(),
        Some(libc::EINVAL)
    );
    assert_eq!(results[4].1, expected(500, 100));
    // The context is still usable.
    ctx.block_on(ctx.nop()).unwrap();
}

#[test]
fn a_batch_dropped_with_half_its_reads_done_releases_everything() {
    let Some(ctx) = support::context() else {
        return;
    };
    let path = known_file("batch-drop");
    let fds = support::open_fds();
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two fresh fds.
    assert_eq!(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
        0
    );
    // SAFETY: both fds are fresh and owned by these values alone.
    let (reader, writer) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(pipe[0]),
            std::fs::File::from_raw_fd(pipe[1]),
        )
    };
    let inner = ctx.clone();
    let p = path.0.clone();
    ctx.block_on(async move {
        let file = File::open(&inner, &p).await.unwrap();
        let pipe = File::from_fd(&inner, reader);
        let mut batch = Batch::new();
        for i in 0..4 {
            batch.read_at(&file, vec![0u8; 512], i * 512);
            // Reads of an empty pipe: they stay in flight.
            batch.read_at(&pipe, vec![0u8; 512], 0);
        }
        let mut op = Box::pin(batch.submit(&inner));
        assert!(futures::poll!(op.as_mut()).is_pending());
        // Let the file's reads complete; the pipe's stay.
        inner.nop().await.unwrap();
        drop(op);
        drop(pipe);
    });
    // The pipe reads' buffers and the pipe's fd go once the kernel is done
    // with them: cancelled on the ring (the drop above ran off the home
    // thread, so the cancels go out on its next turn; closing the writer
    // before then would end the reads at EOF instead), and on the fallback
    // once closing the writer lets the blocked reads return.
    if ctx.backend() == "io_uring" {
        support::eventually("the pipe reads in flight cancelled", || {
            ctx.metrics().cancels_sent >= 4
        });
    }
    drop(writer);
    support::eventually("every fd of the batch closed", || {
        support::open_fds() <= fds
    });
    ctx.block_on(ctx.nop()).unwrap();
}

#[test]
fn the_simulator_runs_members_in_the_seeds_order_reproducibly() {
    let run = |seed: u64| -> Vec<u8> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let ctx = Context::builder()
                .backend(Backend::Sim(SimConfig::new().seed(seed)))
                .build()
                .unwrap();
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .open(&ctx, "/f")
                .await
                .unwrap();
            // Eight writes to the same byte: the last to run wins.
            let mut batch = Batch::new();
            for i in 0..8u8 {
                batch.write_at(&file, vec![i], 0);
            }
            for (result, _) in batch.submit(&ctx).await {
                assert_eq!(result.unwrap(), 1);
            }
            ctx.sim().unwrap().contents("/f").unwrap()
        })
    };
    let outcomes: Vec<Vec<u8>> = (0..16).map(run).collect();
    for seed in 0..16 {
        assert_eq!(run(seed), outcomes[seed as usize], "seed {seed} replays");
    }
    let distinct: std::collections::BTreeSet<_> = outcomes.iter().collect();
    assert!(
        distinct.len() > 1,
        "the order depends on the seed: {outcomes:?}"
    );
}

/// A batch larger than the ring's SQ and in-flight limit: its members wait
/// in the backlog and go in as room frees (invariant 6), and all complete.
#[test]
fn a_batch_larger_than_the_ring_completes() {
    let Some(ctx) = support::build(Context::builder().entries(4)) else {
        return;
    };
    let path = known_file("batch-big");
    let file = ctx.block_on(File::open(&ctx, &path.0)).unwrap();
    let offsets: Vec<u64> = (0..200).map(|i| i * 300).collect();
    let results = ctx.block_on(file.read_batch(offsets.iter().map(|&o| (vec![0u8; 64], o))));
    for ((result, buf), offset) in results.into_iter().zip(&offsets) {
        assert_eq!(result.unwrap(), 64);
        assert_eq!(buf, expected(*offset, 64));
    }
    if ctx.backend() == "io_uring" {
        assert!(ctx.metrics().backlogged > 0, "members waited for room");
    }
}
