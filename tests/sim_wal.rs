//! The simulated backend's crash semantics, through the `sim_wal` example: an
//! acknowledged (fsynced) record survives a crash, an unacknowledged one is
//! lost.

#[path = "../examples/sim_wal.rs"]
mod sim_wal;

use aioctx::sim::SimConfig;
use aioctx::{Backend, Context};

#[tokio::test(start_paused = true)]
async fn acknowledged_record_survives_unacknowledged_is_lost() {
    let ctx = Context::builder()
        .backend(Backend::Sim(SimConfig::new()))
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
