//! What the store is tested with: a writer that puts numbered keys and
//! notes which puts were acknowledged, a crash where the simulator's seed
//! says (or a `kill -9` on a real disk), and a recovery that must find every
//! acknowledged put.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aioctx::Context;
use aioctx::sim::{self, FaultAction, Latency, OpFilter, SimConfig, SimOp};

use crate::store::{self, Bug, Options, Store};

/// Where the store lives in the simulator.
pub const SIM_DIR: &str = "/db";

/// The `n`th put's key and value: the value's length varies, so records
/// cross sector boundaries at every offset.
pub fn entry(n: u64) -> (Vec<u8>, Vec<u8>) {
    let key = format!("key-{n:05}").into_bytes();
    let value = format!("value {n} {}", "#".repeat((n * 37 % 300) as usize)).into_bytes();
    (key, value)
}

/// The store's settings under exploration: small logs, so a run rotates,
/// flushes and retires files several times before the crash.
pub fn options(bug: Bug) -> Options {
    Options {
        bug,
        rotate_every: 5,
        flush_after: 2,
        killed: None,
    }
}

/// The simulator the store is explored on: the weakest file system (names
/// durable only by a directory fsync, unsynced changes surviving in any
/// combination), unsynced sectors reordered, writes in flight torn at 512
/// bytes, one fsync in 40 failing with `EIO`, latencies from 20 µs to 1 ms,
/// and one crash in the first 120 ms.
pub fn exploration_config() -> SimConfig {
    SimConfig::new()
        .latency(Latency::Uniform {
            min: Duration::from_micros(20),
            max: Duration::from_millis(1),
        })
        .crash_at_random(Duration::ZERO..Duration::from_millis(120))
        .torn_writes(512)
        .reorder_unsynced_writes(true)
        .random_fault(
            OpFilter::op(SimOp::Fsync),
            40,
            FaultAction::Errno(libc::EIO),
        )
}

/// The exploration's scenario: the store is created in a durable empty
/// directory; a writer puts keys until the crash (or until the store stops
/// on a failed fsync), noting each acknowledged one; after the crash the
/// store is recovered, and every acknowledged put must be there, with its
/// value.
pub async fn acknowledged_puts_survive_a_crash(ctx: Context, bug: Bug) -> Result<(), String> {
    let sim = ctx.sim().expect("a sim context");
    // The directory exists, durably, before the run (the store ignores
    // names that are not its own).
    sim.insert_file(format!("{SIM_DIR}/.created"), Vec::new());
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = tokio::spawn({
        let (ctx, sim, acknowledged) = (ctx.clone(), sim.clone(), acknowledged.clone());
        async move {
            let dead = sim.clone();
            let options = Options {
                // The process dies with the power: nothing after the crash.
                killed: Some(Arc::new(move || !dead.crashes().is_empty())),
                ..options(bug)
            };
            let mut store = Store::open(&ctx, SIM_DIR, options).await?;
            for n in 0u64.. {
                let (key, value) = entry(n);
                store.put(&key, &value).await?;
                if sim.crashes().is_empty() {
                    acknowledged.lock().unwrap().push(n);
                }
            }
            io::Result::Ok(())
        }
    });
    sim.crashed().await;
    writer.abort();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let recovered = store::recover(&ctx, SIM_DIR).await.map_err(|e| {
        format!(
            "recovery failed: {e} ({} puts acknowledged)",
            acknowledged.len()
        )
    })?;
    check(&acknowledged, &recovered.unwrap_or_default())
}

/// Every acknowledged put is in `recovered`, with its value; nothing there
/// was never written.
pub fn check(acknowledged: &[u64], recovered: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), String> {
    for &n in acknowledged {
        let (key, value) = entry(n);
        match recovered.get(&key) {
            Some(found) if *found == value => {}
            Some(_) => return Err(format!("acknowledged put {n} came back with another value")),
            None => {
                return Err(format!(
                    "acknowledged put {n} lost ({} acknowledged, {} recovered)",
                    acknowledged.len(),
                    recovered.len()
                ));
            }
        }
    }
    for (key, value) in recovered {
        let n: u64 = std::str::from_utf8(key)
            .ok()
            .and_then(|key| key.strip_prefix("key-")?.parse().ok())
            .ok_or_else(|| format!("recovered a key never written: {key:?}"))?;
        if entry(n).1 != *value {
            return Err(format!("put {n} recovered with a value never written"));
        }
    }
    Ok(())
}

/// Explores `bug` over `seeds`: the first failing seed, or how many passed.
pub fn explore(bug: Bug, seeds: std::ops::Range<u64>) -> Result<sim::Explored, sim::Failure> {
    sim::explore(seeds)
        .config(exploration_config())
        .run(move |ctx| acknowledged_puts_survive_a_crash(ctx, bug))
}

/// Puts keys `first..` into the store in `path` on a real disk (opening or
/// creating it) until `last` (or for ever), calling `acknowledged` with
/// each put's number once it is durable.
pub async fn put_until(
    ctx: &Context,
    path: &std::path::Path,
    first: u64,
    last: Option<u64>,
    mut acknowledged: impl FnMut(u64),
) -> io::Result<()> {
    let options = Options {
        rotate_every: 50,
        flush_after: 10,
        ..Options::default()
    };
    let mut store = Store::open(ctx, path, options).await?;
    for n in first..last.unwrap_or(u64::MAX) {
        let (key, value) = entry(n);
        store.put(&key, &value).await?;
        acknowledged(n);
    }
    Ok(())
}
