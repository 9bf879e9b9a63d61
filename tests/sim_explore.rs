//! Seed exploration: a scenario run under many seeds stops at the first
//! failing one (an `Err`, a panic, or a hang past the time limit) and
//! reports it; replaying that seed gives the same completion log and the
//! same failure, every time.

use std::time::Duration;

use aioctx::Context;
use aioctx::fs::OpenOptions;
use aioctx::sim::{self, FailureKind, Latency, SimConfig};

fn config() -> SimConfig {
    SimConfig::new().latency(Latency::Uniform {
        min: Duration::from_micros(10),
        max: Duration::from_millis(3),
    })
}

/// Two writes to one byte in flight at once, and a read: fails when the
/// second write lands first, which only some seeds do.
async fn last_write_wins(ctx: Context) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open(&ctx, "/f")
        .await
        .map_err(|e| e.to_string())?;
    let (first, second) = tokio::join!(
        file.write_at(b"1".to_vec(), 0),
        file.write_at(b"2".to_vec(), 0)
    );
    first.0.map_err(|e| e.to_string())?;
    second.0.map_err(|e| e.to_string())?;
    let (n, data) = file.read_at(Vec::with_capacity(1), 0).await;
    n.map_err(|e| e.to_string())?;
    if data != b"2" {
        return Err(format!(
            "the first write landed last: {:?}",
            String::from_utf8_lossy(&data)
        ));
    }
    Ok(())
}

#[test]
fn exploration_stops_at_the_first_failing_seed_and_replays_it_exactly() {
    let failure = sim::explore(0..1000)
        .config(config())
        .run(last_write_wins)
        .expect_err("some seed completes the writes out of order");
    assert!(!failure.panicked);
    assert_eq!(failure.passed, failure.seed, "seeds before it passed");
    assert!(failure.error.contains("landed last"), "{failure}");
    assert_eq!(failure.config(), &config().seed(failure.seed));
    let report = failure.to_string();
    // The replay line names this test, so the variable narrows only it.
    let test = "exploration_stops_at_the_first_failing_seed_and_replays_it_exactly";
    assert!(
        report.contains(&format!("AIOCTX_SIM_SEED='{test}={}'", failure.seed)),
        "{report}"
    );
    // open, two writes, a read.
    assert_eq!(failure.completions.len(), 4);
    for _ in 0..2 {
        let again = failure
            .replay(last_write_wins)
            .expect_err("the same seed fails again");
        assert_eq!(again.seed, failure.seed);
        assert_eq!(again.error, failure.error);
        assert_eq!(again.completions, failure.completions);
    }
    // The seeds before it really pass.
    let explored = sim::explore(0..failure.seed)
        .config(config())
        .run(last_write_wins)
        .unwrap();
    assert_eq!(explored.seeds, failure.seed);
}

#[test]
fn a_panic_is_caught_and_reported_with_its_log() {
    let failure = sim::explore(0..10)
        .run(|ctx: Context| async move {
            ctx.nop().await.map_err(|e| e.to_string())?;
            let seed = ctx.sim().unwrap().seed();
            assert!(seed != 3, "seed three is unlucky");
            Ok::<(), String>(())
        })
        .unwrap_err();
    assert_eq!(
        (failure.seed, failure.passed, failure.panicked),
        (3, 3, true)
    );
    assert!(failure.error.contains("seed three is unlucky"), "{failure}");
    assert_eq!(failure.completions.len(), 1, "the nop before the panic");
}

#[test]
fn a_scenario_that_never_finishes_fails_at_the_time_limit() {
    let failure = sim::explore([5])
        .time_limit(Duration::from_secs(10))
        .run(|ctx: Context| async move {
            ctx.nop().await.map_err(|e| e.to_string())?;
            std::future::pending::<()>().await;
            Ok::<(), String>(())
        })
        .unwrap_err();
    assert_eq!(failure.seed, 5);
    assert_eq!(failure.kind, FailureKind::TimeLimit);
    assert!(
        failure.error.contains("still running after 10s"),
        "{failure}"
    );
}

#[test]
fn every_seed_of_a_passing_scenario_runs() {
    let explored = sim::explore((0..100).map(|n| n * 7))
        .config(config())
        .run(|ctx: Context| async move {
            let (a, b) = tokio::join!(ctx.nop(), ctx.nop());
            a.and(b).map_err(|e| e.to_string())
        })
        .unwrap();
    assert_eq!((explored.seeds, explored.ops), (100, 200));
}

#[tokio::test]
#[should_panic(expected = "call it from a plain #[test]")]
async fn exploring_inside_a_runtime_says_why_it_cannot() {
    let _ = sim::explore(0..1).run(|ctx: Context| async move { ctx.nop().await.map(drop) });
}

/// A scenario looping on `yield_now` keeps the runtime from idling, so the
/// paused clock, and the time limit with it, never moves: before the fix,
/// the exploration never returned. The poll limit stops it, at a poll count
/// the seed decides.
#[test]
fn explore_fails_a_busy_scenario_at_its_limit() {
    let busy = |ctx: Context| async move {
        ctx.nop().await.map_err(|e| e.to_string())?;
        loop {
            tokio::task::yield_now().await;
        }
        #[allow(unreachable_code)]
        Ok::<(), String>(())
    };
    let failure = sim::explore([5])
        .time_limit(Duration::from_secs(1))
        .run(busy)
        .unwrap_err();
    assert_eq!(failure.seed, 5);
    assert!(!failure.panicked);
    match failure.kind {
        FailureKind::BusyPolls { polls } => {
            assert_eq!(polls, 1_000_000, "the default limit: {failure}");
        }
        ref other => panic!("not stopped for its polls: {other:?}: {failure}"),
    }
    assert!(failure.kind.is_busy());
    let report = failure.to_string();
    assert!(report.contains("seed 5 was busy"), "{report}");
    assert!(report.contains("poll_limit"), "{report}");
    // The replay stops at the same poll.
    let again = failure.replay(busy).unwrap_err();
    assert_eq!(again.kind, failure.kind);
}

/// A task the scenario spawned spins on `yield_now` while the scenario
/// waits for it: the scenario's future is never polled, so only the
/// real-time limit (its watchdog wakes the run) can stop it.
#[test]
fn explore_fails_a_busy_spawned_task_at_the_real_time_limit() {
    let failure = sim::explore([2, 3])
        .time_limit(Duration::from_secs(1))
        .real_time_limit(Duration::from_millis(200))
        .run(|ctx: Context| async move {
            ctx.nop().await.map_err(|e| e.to_string())?;
            tokio::spawn(async {
                loop {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .map_err(|e| e.to_string())
        })
        .unwrap_err();
    assert_eq!((failure.seed, failure.passed), (2, 0));
    match failure.kind {
        FailureKind::BusyRealTime { real } => {
            assert!(real >= Duration::from_millis(200), "{failure}");
        }
        ref other => panic!("not stopped for real time: {other:?}: {failure}"),
    }
    assert!(failure.to_string().contains("real_time_limit"), "{failure}");
}

/// A run that is busy for a while at one instant, then moves on, is not
/// stopped: the poll count starts again whenever the clock moves.
#[test]
fn a_run_busy_below_its_limit_at_each_instant_passes() {
    let explored = sim::explore(0..3)
        .poll_limit(1000)
        .run(|ctx: Context| async move {
            for _ in 0..20 {
                for _ in 0..900 {
                    tokio::task::yield_now().await;
                }
                ctx.nop().await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        })
        .unwrap();
    assert_eq!((explored.seeds, explored.ops), (3, 60));
}
