//! Storage code tested step by step with `tokio-test` on the simulated
//! backend: a future polled by hand, the paused clock advanced by hand, and
//! `is_woken` telling exactly when an op completed. An op's deadline is its
//! submission instant plus its latency, so what a test sees does not depend
//! on how it steps the clock: before the fix, a 5 ms write polled at 0 was
//! woken at 6 ms with 1 ms steps (the simulator task ran the op only after
//! the test had looked).

pub mod support;

use std::future::Future;
use std::time::Duration;

use aioctx::fs::File;
use aioctx::sim::{FaultAction, Latency, OpFilter, SimConfig, SimOp};
use aioctx::{Backend, Context};
use tokio::time::{Instant, advance};
use tokio_test::task::{self, Spawn};
use tokio_test::{assert_pending, assert_ready};

const LATENCY: Duration = Duration::from_millis(5);

fn sim(config: SimConfig) -> Context {
    Context::builder()
        .backend(Backend::Sim(config))
        .build()
        .expect("a sim context always builds")
}

fn fixed(latency: Duration) -> SimConfig {
    SimConfig::new().latency(Latency::Fixed(latency))
}

/// Advances the clock by `step` until `task` is woken; returns the time
/// since `start` at that step. Panics past a second.
async fn step_until_woken<F: Future>(task: &Spawn<F>, start: Instant, step: Duration) -> Duration {
    while !task.is_woken() {
        assert!(start.elapsed() < Duration::from_secs(1), "never woken");
        advance(step).await;
    }
    start.elapsed()
}

/// Polls a 5 ms write once at virtual time 0 and steps the clock by `step`:
/// returns when the write's future was woken, checking that it was not
/// woken a step earlier and that it is ready then.
async fn write_woken_at(step: Duration) -> Duration {
    let ctx = sim(fixed(LATENCY));
    let file = support::open_rw(&ctx, "/f").await;
    let start = Instant::now();
    let mut write = task::spawn(file.write_at(b"abc".to_vec(), 0));
    assert_pending!(write.poll());
    let woken = step_until_woken(&write, start, step).await;
    assert!(woken - step < LATENCY, "woken a step late: at {woken:?}");
    let (n, _) = assert_ready!(write.poll());
    assert_eq!(n.unwrap(), 3);
    assert_eq!(ctx.sim().unwrap().contents("/f").unwrap(), b"abc");
    woken
}

#[tokio::test(start_paused = true)]
async fn op_woken_at_its_deadline_in_1ms_steps() {
    assert_eq!(write_woken_at(Duration::from_millis(1)).await, LATENCY);
}

#[tokio::test(start_paused = true)]
async fn op_woken_at_its_deadline_in_steps_of_its_latency() {
    assert_eq!(write_woken_at(LATENCY).await, LATENCY);
}

#[tokio::test(start_paused = true)]
async fn op_woken_at_the_first_step_past_its_deadline_in_3x_steps() {
    assert_eq!(write_woken_at(3 * LATENCY).await, 3 * LATENCY);
}

/// Whatever the latency (Tokio's timers tick in whole milliseconds) and
/// whatever the step, an op is woken at the same step as a
/// `tokio::time::sleep_until` of its deadline made at submission.
#[tokio::test(start_paused = true)]
async fn op_woken_with_a_sleep_until_its_deadline_for_any_step() {
    let latencies = [100, 2_500, 5_000, 7_300].map(Duration::from_micros);
    let steps = [250, 1_000, 2_500, 5_000, 15_000].map(Duration::from_micros);
    for latency in latencies {
        for step in steps {
            let ctx = sim(fixed(latency));
            let start = Instant::now();
            let mut nop = task::spawn(ctx.nop());
            let mut sleep = task::spawn(tokio::time::sleep_until(start + latency));
            assert_pending!(nop.poll());
            assert_pending!(sleep.poll());
            loop {
                advance(step).await;
                assert_eq!(
                    nop.is_woken(),
                    sleep.is_woken(),
                    "latency {latency:?}, step {step:?}, at {:?}",
                    start.elapsed()
                );
                if nop.is_woken() {
                    break;
                }
            }
            assert_ready!(nop.poll()).unwrap();
            assert_eq!(ctx.sim().unwrap().completions()[0].at, latency);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn read_step_by_step() {
    let ctx = sim(fixed(LATENCY));
    ctx.sim()
        .unwrap()
        .insert_file("/data", b"hello sim".to_vec());
    let file = support::open_rw(&ctx, "/data").await;
    let mut read = task::spawn(file.read_at(Vec::with_capacity(5), 6));
    assert_pending!(read.poll());
    advance(LATENCY - Duration::from_millis(1)).await;
    assert!(!read.is_woken());
    assert_pending!(read.poll());
    advance(Duration::from_millis(1)).await;
    assert!(read.is_woken());
    let (n, buf) = assert_ready!(read.poll());
    assert_eq!((n.unwrap(), &buf[..]), (3, &b"sim"[..]));
}

/// The storage code under test: a record is saved once written and synced.
async fn save(file: &File, record: &[u8]) -> std::io::Result<()> {
    let (n, _) = file.write_at(record.to_vec(), 0).await;
    n?;
    file.sync_data().await
}

#[tokio::test(start_paused = true)]
async fn write_then_fsync_step_by_step_and_a_crash_before_the_fsync() {
    // The pessimistic model: every unsynced byte is lost.
    let ctx = sim(fixed(LATENCY).reorder_unsynced_writes(false));
    let sim = ctx.sim().unwrap();
    let file = support::open_rw(&ctx, "/rec").await;
    // The name is durable; the data only once saved.
    aioctx::fs::sync_dir(&ctx, "/").await.unwrap();
    let mut saving = task::spawn(save(&file, b"v1"));
    assert_pending!(saving.poll());
    advance(LATENCY).await;
    assert!(saving.is_woken());
    // The write is done; this poll submits the fsync.
    assert_pending!(saving.poll());
    assert_eq!(sim.contents("/rec").unwrap(), b"v1");
    advance(LATENCY).await;
    assert!(saving.is_woken());
    assert_ready!(saving.poll()).unwrap();
    sim.crash();
    assert_eq!(sim.contents("/rec").unwrap(), b"v1", "synced: survives");

    // The same again, crashing while the fsync is in flight.
    let mut saving = task::spawn(save(&file, b"v2"));
    assert_pending!(saving.poll());
    advance(LATENCY).await;
    assert_pending!(saving.poll());
    sim.crash();
    assert_eq!(
        sim.contents("/rec").unwrap(),
        b"v1",
        "v2 was not synced yet"
    );
    advance(LATENCY).await;
    // Without torn writes, an op in flight at a crash completes afterwards.
    assert_ready!(saving.poll()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn injected_fsync_fault_step_by_step() {
    let ctx =
        sim(fixed(LATENCY).fault(OpFilter::op(SimOp::Fsync), 1, FaultAction::Errno(libc::EIO)));
    let file = support::open_rw(&ctx, "/rec").await;
    let mut saving = task::spawn(save(&file, b"v1"));
    assert_pending!(saving.poll());
    advance(LATENCY).await;
    assert_pending!(saving.poll());
    advance(LATENCY).await;
    assert!(saving.is_woken());
    let err = assert_ready!(saving.poll()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    // The second fsync is not hit.
    let mut saving = task::spawn(save(&file, b"v2"));
    assert_pending!(saving.poll());
    advance(2 * LATENCY).await;
    assert_pending!(saving.poll());
    advance(LATENCY).await;
    assert_ready!(saving.poll()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn crash_between_two_polls_tears_the_write_in_flight() {
    let ctx = sim(fixed(LATENCY).torn_writes(512).seed(3));
    let sim = ctx.sim().unwrap();
    let file = support::open_rw(&ctx, "/big").await;
    aioctx::fs::sync_dir(&ctx, "/").await.unwrap();
    let mut write = task::spawn(file.write_at(vec![0xAB; 16 * 1024], 0));
    assert_pending!(write.poll());
    advance(LATENCY / 2).await;
    assert!(!write.is_woken());
    sim.crash();
    let kept = sim.contents("/big").unwrap();
    assert_eq!(kept.len() % 512, 0, "a torn write keeps whole sectors");
    assert!(kept.iter().all(|&b| b == 0xAB));
    // The write still resolves at its deadline: it failed.
    advance(LATENCY / 2).await;
    assert!(write.is_woken());
    let (n, _) = assert_ready!(write.poll());
    assert_eq!(n.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(
        sim.contents("/big").unwrap(),
        kept,
        "and wrote nothing more"
    );
}

/// Two tasks each write one byte at offset 0, due at the same instant: the
/// seed alone decides which completes last, so which byte stays.
fn last_writer(seed: u64) -> u8 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let ctx = sim(fixed(LATENCY).seed(seed));
        let file = support::open_rw(&ctx, "/shared").await;
        let mut a = task::spawn(file.write_at(vec![b'a'], 0));
        let mut b = task::spawn(file.write_at(vec![b'b'], 0));
        assert_pending!(a.poll());
        assert_pending!(b.poll());
        advance(LATENCY).await;
        assert!(a.is_woken() && b.is_woken(), "both due at the same instant");
        assert_ready!(a.poll()).0.unwrap();
        assert_ready!(b.poll()).0.unwrap();
        let last = ctx.sim().unwrap().contents("/shared").unwrap()[0];
        // The log agrees: ops 1 and 2 are a's and b's writes (0 the open).
        let log = ctx.sim().unwrap().completions();
        let order: Vec<u64> = log.iter().map(|c| c.seq).collect();
        assert_eq!(order, if last == b'b' { [0, 1, 2] } else { [0, 2, 1] });
        last
    })
}

#[test]
fn the_seed_decides_the_completion_order_of_two_tasks() {
    let outcomes: Vec<u8> = (0..32).map(last_writer).collect();
    assert!(
        outcomes.contains(&b'a') && outcomes.contains(&b'b'),
        "{outcomes:?}"
    );
    for seed in 0..32 {
        assert_eq!(
            last_writer(seed),
            outcomes[seed as usize],
            "seed {seed} changed its mind"
        );
    }
}
