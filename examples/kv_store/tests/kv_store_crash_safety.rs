//! The `kv_store` example's crash safety: on the simulator, the correct
//! store keeps every acknowledged put through a crash at a random point
//! over 10,000 seeds (in a release build; fewer in a debug one), and each of
//! the four planted bugs is found within 1,000 seeds, its seed printed, its
//! failure (the same crash state) replayed twice; on a real disk, the same
//! store, unchanged, is killed with SIGKILL mid-run and recovers every put
//! it acknowledged.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use aioctx::sim::CrashReport;
use aioctx::{Backend, Context};
use kv_store::scenario;
use kv_store::store::{self, Bug};

/// Seeds the correct store must pass: the 10,000 where the build is
/// optimised (CI runs `cargo test --release`), a tenth otherwise.
const CORRECT_SEEDS: u64 = if cfg!(debug_assertions) {
    1_000
} else {
    10_000
};

/// Within how many seeds each planted bug must be found.
const BUG_SEEDS: u64 = 1_000;

#[test]
fn the_correct_store_keeps_every_acknowledged_put() {
    let started = Instant::now();
    let explored = scenario::explore(Bug::None, 0..CORRECT_SEEDS).unwrap();
    let took = started.elapsed();
    // Informational (tests assert behaviour, not speed).
    eprintln!(
        "{} seeds, {} ops of virtual I/O, in {took:.2?} ({:.0} ops/s)",
        explored.seeds,
        explored.ops,
        explored.ops as f64 / took.as_secs_f64()
    );
    assert_eq!(explored.seeds, CORRECT_SEEDS);
}

/// Explores `bug`: it must fail within `BUG_SEEDS`, and replay the same.
/// Returns the error and the crash state it drew.
fn found(letter: char, bug: Bug) -> (String, Vec<CrashReport>) {
    let failure = scenario::explore(bug, 0..BUG_SEEDS)
        .expect_err("the planted bug must be found within 1,000 seeds");
    eprintln!(
        "planted bug ({letter}) {bug:?} found at seed {}:\n{failure}",
        failure.seed
    );
    assert!(!failure.panicked, "{failure}");
    assert_eq!(failure.crashes.len(), 1, "{failure}");
    let printed = failure.to_string();
    assert!(
        printed.contains(&format!("seed {} failed", failure.seed)),
        "{printed}"
    );
    assert!(
        printed.contains("crash at"),
        "the crash state is shown: {printed}"
    );
    let scenario = |ctx| scenario::acknowledged_puts_survive_a_crash(ctx, bug);
    for _ in 0..2 {
        let again = failure.replay(scenario).expect_err("the failure replays");
        assert_eq!(again.seed, failure.seed);
        assert_eq!(again.error, failure.error);
        assert_eq!(again.completions, failure.completions);
        assert_eq!(again.crashes, failure.crashes, "the same crash state");
    }
    (failure.error, failure.crashes)
}

#[test]
fn planted_bug_a_no_fsync_before_the_rename_is_found() {
    let (error, states) = found('a', Bug::PLANTED[0].1);
    // CURRENT's name survived its rename, its contents did not.
    assert!(error.contains("CURRENT is corrupt"), "{error}");
    let current = states[0].files.iter().find(|f| f.path.ends_with("CURRENT"));
    assert!(current.is_some_and(|f| !f.lost.is_empty()), "{states:?}");
}

#[test]
fn planted_bug_b_no_directory_fsync_after_creating_the_log_is_found() {
    let (error, states) = found('b', Bug::PLANTED[1].1);
    assert!(error.contains("acknowledged put"), "{error}");
    let mut changes = states[0].directories.iter().flat_map(|d| &d.changes);
    assert!(
        changes.any(|c| !c.kept && c.what.contains("create /db/LOG-")),
        "a log's creation was lost: {states:?}"
    );
}

#[test]
fn planted_bug_c_retrying_a_failed_fsync_is_found() {
    let (_, states) = found('c', Bug::PLANTED[2].1);
    let dropped = states[0].files.iter().any(|f| !f.dropped.is_empty());
    assert!(dropped, "data a failed fsync dropped: {states:?}");
}

#[test]
fn planted_bug_d_deleting_before_the_rename_is_durable_is_found() {
    let (_, states) = found('d', Bug::PLANTED[3].1);
    let changes: Vec<_> = states[0]
        .directories
        .iter()
        .flat_map(|d| &d.changes)
        .collect();
    let rename_lost = changes
        .iter()
        .any(|c| !c.kept && c.what.starts_with("rename"));
    let unlink_kept = changes
        .iter()
        .any(|c| c.kept && c.what.starts_with("unlink"));
    assert!(rename_lost && unlink_kept, "{states:?}");
}

/// The environment variables that make [`child_puts_until_killed`] run:
/// the store's directory, and the first put's number.
const CHILD_DIR: &str = "AIOCTX_KV_STORE_CHILD_DIR";
const CHILD_FIRST: &str = "AIOCTX_KV_STORE_CHILD_FIRST";

/// The child process of the kill test: puts keys into the store in
/// `$AIOCTX_KV_STORE_CHILD_DIR` for ever, printing `acked N` once put `N`
/// is durable. Does nothing in a normal test run.
#[test]
fn child_puts_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let first = std::env::var(CHILD_FIRST).unwrap().parse().unwrap();
    let ctx = context().expect("the parent ran, so this backend builds");
    ctx.block_on(scenario::put_until(&ctx, dir.as_ref(), first, None, |n| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "acked {n}").unwrap();
        out.flush().unwrap();
    }))
    .unwrap();
}

/// A context on the suite's backend (`AIOCTX_BACKEND`: `fallback`, `uring`
/// or `auto`, as for aioctx's own tests), or `None`, after saying why, where
/// io_uring is unavailable.
fn context() -> Option<Context> {
    let backend = match std::env::var("AIOCTX_BACKEND").as_deref() {
        Ok("fallback") => Backend::Fallback,
        Ok("uring") => Backend::Uring,
        Ok("auto") | Err(_) => Backend::Auto,
        Ok(other) => panic!("unknown AIOCTX_BACKEND {other:?}"),
    };
    match Context::builder().backend(backend).build() {
        Ok(ctx) => Some(ctx),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            eprintln!("skipping: io_uring is unavailable on this machine ({e})");
            None
        }
        Err(e) => panic!("building a context failed: {e}"),
    }
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_store_on_a_real_disk_survives_kill_9() {
    // The suite's backend (AIOCTX_BACKEND), which the child inherits.
    let Some(ctx) = context() else {
        return;
    };
    let scratch = Scratch(std::env::temp_dir().join(format!("aioctx-kv-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&scratch.0);
    std::fs::create_dir(&scratch.0).unwrap();
    // Twice: killed while it writes, then killed again while it writes on
    // the store the first run left (recovery, then more puts).
    let mut acknowledged = Vec::new();
    for round in 0..2 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_puts_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &scratch.0)
            .env(CHILD_FIRST, (round * 10_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut this_round = 0;
        // Past a few rotations and flushes (50 puts per log), then SIGKILL
        // at once, mid-run.
        while this_round < 180 + 37 * round {
            let line = lines
                .next()
                .expect("the child stopped before it was killed")
                .unwrap();
            if let Some(n) = line.strip_prefix("acked ") {
                acknowledged.push(n.parse::<u64>().unwrap());
                this_round += 1;
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed, not finished: {status:?}");
        // Whatever it printed after we stopped reading was acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("acked ") {
                acknowledged.push(n.parse().unwrap());
            }
        }
    }
    let recovered = ctx
        .block_on(store::recover(&ctx, &scratch.0))
        .unwrap()
        .expect("the store exists");
    scenario::check(&acknowledged, &recovered).unwrap();
    eprintln!(
        "{} puts acknowledged over two kills, {} recovered, on {}",
        acknowledged.len(),
        recovered.len(),
        ctx.backend()
    );
}
