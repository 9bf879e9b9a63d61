//! The simulated backend's crash semantics through the `sim_wal` example: an
//! acknowledged (fsynced) record survives a crash, an unacknowledged one is
//! lost; and seed exploration over the example's log: the planted bug (a
//! record acknowledged before its fsync completes) is found and replays
//! exactly, and the correct log survives every seed tried.

#[path = "../examples/sim_wal.rs"]
mod sim_wal;

use std::time::Instant;

use aioctx::sim::{self, SimConfig};
use aioctx::{Backend, Context};
use sim_wal::Variant;

#[tokio::test(start_paused = true)]
async fn acknowledged_record_survives_unacknowledged_is_lost() {
    // Unsynced data all lost, whatever the seed.
    let ctx = Context::builder()
        .backend(Backend::Sim(
            SimConfig::new().reorder_unsynced_writes(false),
        ))
        .build()
        .unwrap();
    assert_eq!(ctx.backend(), "sim");
    let records = sim_wal::crash_after_two_writes(&ctx).await.unwrap();
    assert_eq!(records, vec![b"acknowledged".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn without_a_crash_both_records_are_there() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
        .build()
        .unwrap();
    let mut wal = sim_wal::Wal::open(&ctx, "/wal").await.unwrap();
    wal.append(b"one").await.unwrap();
    wal.write(b"two").await.unwrap();
    let records = wal.records().await.unwrap();
    assert_eq!(records, vec![b"one".to_vec(), b"two".to_vec()]);
}

const SEEDS: u64 = 1000;

#[test]
fn exploration_finds_the_planted_bug_and_replays_it() {
    let scenario =
        |ctx| sim_wal::acknowledged_records_survive_a_crash(ctx, Variant::AcksBeforeFsync);
    let failure = sim::explore(0..SEEDS)
        .config(sim_wal::exploration_config())
        .run(scenario)
        .expect_err("a crash between the acknowledgement and the fsync loses a record");
    eprintln!("{failure}");
    assert!(!failure.panicked);
    assert!(failure.error.contains("acknowledged record"), "{failure}");
    assert_eq!(failure.crashes.len(), 1);
    // The same seed, twice in a row: the same log, the same crash, the same
    // failure.
    for _ in 0..2 {
        let again = failure.replay(scenario).expect_err("the failure replays");
        assert_eq!(again.seed, failure.seed);
        assert_eq!(again.error, failure.error);
        assert_eq!(again.completions, failure.completions);
        assert_eq!(again.crashes, failure.crashes);
    }
}

#[test]
fn the_correct_log_survives_every_seed() {
    let started = Instant::now();
    let explored = sim::explore(0..SEEDS)
        .config(sim_wal::exploration_config())
        .run(|ctx| sim_wal::acknowledged_records_survive_a_crash(ctx, Variant::Correct))
        .unwrap();
    // Informational (tests assert behaviour, not speed).
    eprintln!(
        "{} seeds, {} ops, in {:.2?}",
        explored.seeds,
        explored.ops,
        started.elapsed()
    );
    assert_eq!(explored.seeds, SEEDS);
}
