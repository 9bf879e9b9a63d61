//! The simulated backend: the same seed gives the same completion order on
//! every run, faults hit exactly the configured op, crashes drop what was not
//! fsynced, and a foreign thread can enter a sim context.

pub mod support;

use std::time::Duration;

use aioctx::fs::File;
use aioctx::sim::{Completion, FaultAction, Latency, OpFilter, SimConfig, SimOp};
use aioctx::{Backend, Context};

fn sim(config: SimConfig) -> Context {
    Context::builder()
        .backend(Backend::Sim(config))
        .build()
        .expect("a sim context always builds")
}

/// Eight tasks writing, syncing and reading concurrently with random
/// latencies; returns the completion log.
fn concurrent_workload(seed: u64) -> Vec<Completion> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let ctx = sim(SimConfig::new().seed(seed).latency(Latency::Uniform {
            min: Duration::from_micros(10),
            max: Duration::from_millis(5),
        }));
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let file = support::open_rw(&ctx, &format!("/f{}", t % 3)).await;
                    for i in 0..5u64 {
                        let (n, _) = file.write_at(vec![t as u8; 16], (t * 5 + i) * 16).await;
                        n.unwrap();
                        if i % 2 == 0 {
                            file.sync_data().await.unwrap();
                        }
                        let (n, _) = file.read_at(Vec::with_capacity(16), i * 16).await;
                        n.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        ctx.sim().unwrap().completions()
    })
}

#[test]
fn same_seed_same_completion_order() {
    let first = concurrent_workload(42);
    // Per task: an open, five writes, three syncs, five reads.
    assert_eq!(first.len(), 8 * 14);
    for run in 0..30 {
        assert_eq!(concurrent_workload(42), first, "run {run} diverged");
    }
    assert_ne!(
        concurrent_workload(43),
        first,
        "another seed should give another interleaving"
    );
}

#[tokio::test(start_paused = true)]
async fn fault_hits_exactly_the_configured_op() {
    let ctx = sim(SimConfig::new().fault(
        OpFilter::op(SimOp::Write).path("/data").offsets(4096..8192),
        2,
        FaultAction::Errno(libc::EIO),
    ));
    let data = support::open_rw(&ctx, "/data").await;
    let other = support::open_rw(&ctx, "/other").await;
    let mut results = Vec::new();
    for i in 0..4u64 {
        // Writes to another file and outside the range never count.
        other.write_at(vec![1; 8], 4096 + i * 8).await.0.unwrap();
        data.write_at(vec![1; 8], i * 8).await.0.unwrap();
        let (n, _) = data.write_at(vec![2; 8], 4096 + i * 8).await;
        results.push(n.map_err(|e| e.raw_os_error()));
    }
    assert_eq!(results, vec![Ok(8), Err(Some(libc::EIO)), Ok(8), Ok(8)]);
    // The failed write had no effect.
    let contents = ctx.sim().unwrap().contents("/data").unwrap();
    assert_eq!(&contents[4096 + 8..4096 + 16], &[0; 8]);
}

#[tokio::test(start_paused = true)]
async fn short_reads_and_writes() {
    let ctx = sim(SimConfig::new()
        .fault(OpFilter::op(SimOp::Write), 1, FaultAction::Short(3))
        .fault(OpFilter::op(SimOp::Read), 1, FaultAction::Short(2)));
    let file = support::open_rw(&ctx, "/short").await;
    assert_eq!(file.write_at(b"abcdef".to_vec(), 0).await.0.unwrap(), 3);
    let (n, buf) = file.read_at(Vec::with_capacity(8), 0).await;
    assert_eq!((n.unwrap(), &buf[..]), (2, &b"ab"[..]));
    let (n, buf) = file.read_at(Vec::with_capacity(8), 0).await;
    assert_eq!((n.unwrap(), &buf[..]), (3, &b"abc"[..]));
}

#[tokio::test(start_paused = true)]
async fn crash_drops_what_was_not_fsynced() {
    // The pessimistic model: every unsynced byte is lost.
    let ctx = sim(SimConfig::new().reorder_unsynced_writes(false));
    let a = support::open_rw(&ctx, "/a").await;
    let b = support::open_rw(&ctx, "/b").await;
    // Their names are durable; their data only as fsynced.
    aioctx::fs::sync_dir(&ctx, "/").await.unwrap();
    a.write_at(b"durable".to_vec(), 0).await.0.unwrap();
    a.sync_all().await.unwrap();
    a.write_at(b"-lost".to_vec(), 7).await.0.unwrap();
    b.write_at(b"never synced".to_vec(), 0).await.0.unwrap();
    let sim = ctx.sim().unwrap();
    sim.crash();
    assert_eq!(sim.contents("/a").unwrap(), b"durable");
    assert_eq!(sim.contents("/b").unwrap(), b"");
    assert_eq!(a.metadata().await.unwrap().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn ops_take_their_latency_in_virtual_time() {
    let ctx = sim(SimConfig::new().latency(Latency::Fixed(Duration::from_millis(3))));
    let start = tokio::time::Instant::now();
    ctx.nop().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(3));
    ctx.timeout(Duration::from_secs(1)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(1006));
}

#[tokio::test(start_paused = true)]
async fn foreign_thread_enters_a_sim_context() {
    let ctx = sim(SimConfig::new());
    ctx.sim().unwrap().insert_file("/seed", b"hello".to_vec());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let foreign = ctx.clone();
    std::thread::spawn(move || {
        let inner = foreign.clone();
        let handle = foreign.enter(async move {
            let file = File::open(&inner, "/seed").await.unwrap();
            let (n, buf) = file.read_at(Vec::with_capacity(8), 0).await;
            n.map(|n| buf[..n].to_vec())
        });
        tx.send(handle).unwrap();
    });
    let handle = rx.await.unwrap();
    assert_eq!(handle.await.unwrap().unwrap(), b"hello");
    let m = ctx.metrics();
    assert_eq!(m.backend, "sim");
    assert!(m.ops_foreign >= 1, "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn raw_sqes_are_unsupported_on_the_sim() {
    let ctx = sim(SimConfig::new());
    let entry = io_uring::opcode::Nop::new().build();
    // SAFETY: a NOP points at no memory.
    let done = unsafe { ctx.submit_raw(entry, ()) }.await;
    assert_eq!(
        done.result.unwrap_err().kind(),
        std::io::ErrorKind::Unsupported
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_resolves_pending_sim_ops() {
    let ctx = sim(SimConfig::new().latency(Latency::Fixed(Duration::from_secs(60))));
    let pending = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.nop().await }
    });
    tokio::task::yield_now().await;
    ctx.shutdown().await;
    let err = pending.await.unwrap().unwrap_err();
    assert!(aioctx::is_shutdown(&err), "{err}");
}
