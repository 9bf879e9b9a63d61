//! Dropping the last `Context` (or `Pool`) inside a Tokio runtime warns only
//! when the drop really blocks that runtime's thread: before the context has
//! shut down. Before the fix every clean exit warned, even right after
//! `shutdown().await` had returned, because the drop checked whether a home
//! thread was left to join rather than whether the context had drained.

pub mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Everything logged at `warn` or above on this thread while `f` runs.
fn warnings_during(f: impl FnOnce()) -> String {
    let log = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer({
            let log = log.clone();
            move || Log(log.clone())
        })
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(log.lock().unwrap().clone()).unwrap()
}

struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const DROPPED: &str = "dropped inside a Tokio runtime";

#[test]
fn context_dropped_after_shutdown_does_not_warn() {
    let Some(ctx) = support::context() else {
        return;
    };
    let log = warnings_during(|| {
        runtime().block_on(async move {
            ctx.nop().await.unwrap();
            ctx.shutdown().await;
            drop(ctx);
        });
    });
    assert!(!log.contains(DROPPED), "a clean exit warned:\n{log}");
}

#[test]
fn context_dropped_without_shutdown_warns_once() {
    let Some(ctx) = support::context() else {
        return;
    };
    let log = warnings_during(|| {
        runtime().block_on(async move {
            ctx.nop().await.unwrap();
            drop(ctx);
        });
    });
    assert_eq!(log.matches(DROPPED).count(), 1, "{log}");
    assert!(log.contains("ctx.shutdown().await"), "{log}");
}

#[test]
fn context_dropped_outside_a_runtime_does_not_warn() {
    let Some(ctx) = support::context() else {
        return;
    };
    let log = warnings_during(|| {
        ctx.block_on(ctx.nop()).unwrap();
        drop(ctx);
    });
    assert!(!log.contains(DROPPED), "{log}");
}

#[test]
fn pool_dropped_after_shutdown_does_not_warn() {
    let Some(pool) = support::pool(3) else {
        return;
    };
    let log = warnings_during(|| {
        runtime().block_on(async move {
            pool.spawn(async {
                aioctx::current().unwrap().nop().await.unwrap();
            })
            .await
            .unwrap();
            pool.shutdown().await;
            drop(pool);
        });
    });
    assert!(!log.contains(DROPPED), "a clean exit warned:\n{log}");
}

#[test]
fn pool_dropped_without_shutdown_warns_once_for_all_members() {
    let Some(pool) = support::pool(3) else {
        return;
    };
    let log = warnings_during(|| {
        runtime().block_on(async move {
            pool.thread_member().nop().await.unwrap();
            drop(pool);
        });
    });
    assert_eq!(log.matches(DROPPED).count(), 1, "{log}");
    assert!(log.contains("pool.shutdown().await"), "{log}");
}
