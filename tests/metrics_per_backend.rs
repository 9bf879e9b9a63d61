//! Each backend fills the counters it has, and only those (the table in the
//! `metrics` module docs).

pub mod support;

use std::time::Duration;

use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

/// The fallback's pool threads record dwell times concurrently; before the
/// fix the histogram was written for one writer and lost updates.
#[test]
fn fallback_dwell_counts_every_op_from_eight_threads() {
    const THREADS: u64 = 8;
    const OPS: u64 = 10_000;
    let ctx = Context::builder()
        .backend(Backend::Fallback)
        .fallback_threads(8)
        .build()
        .unwrap();
    let path = support::TempPath::new("fallback-dwell");
    std::fs::write(&path.0, vec![7u8; 4096]).unwrap();
    let file = std::sync::Arc::new(ctx.block_on(aioctx::fs::File::open(&ctx, &path.0)).unwrap());
    let before = ctx.metrics().dwell.count;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (ctx, file) = (ctx.clone(), file.clone());
            std::thread::spawn(move || {
                for _ in 0..OPS {
                    let (n, _) = ctx.block_on(file.read_at(Vec::with_capacity(64), 0));
                    assert_eq!(n.unwrap(), 64);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let m = ctx.metrics();
    assert_eq!(m.dwell.count - before, THREADS * OPS);
    assert_eq!(m.ops_foreign, THREADS * OPS + 1);
}

/// The sim never sends a kick; before the fix it counted one for every
/// foreign op.
#[test]
fn sim_reports_no_kicks() {
    let ctx = Context::builder()
        .backend(Backend::Sim(
            SimConfig::new().latency(aioctx::sim::Latency::Fixed(Duration::from_micros(1))),
        ))
        .build()
        .unwrap();
    for _ in 0..100 {
        ctx.block_on(ctx.nop()).unwrap();
    }
    let m = ctx.metrics();
    assert_eq!(m.ops_foreign, 100);
    assert_eq!(
        (m.kicks_sent, m.kicks_coalesced, m.kicks_suppressed),
        (0, 0, 0)
    );
    assert_eq!(m.cqes_reaped, 100);
}
