//! A key-value store on aioctx in the shape of LevelDB (a write-ahead log,
//! tables written by compaction, a manifest switched in by an atomic rename
//! of `CURRENT`), and the crash bugs storage code really has, found by the
//! simulator.
//!
//! ```text
//! cargo run --release --example kv_store                    # explore the correct store and each planted bug
//! cargo run --release --example kv_store -- explore --bug c --seeds 1000
//! cargo run --release --example kv_store -- run DIR [PUTS]  # on a real disk: prints "acked N" per durable put
//! cargo run --release --example kv_store -- check DIR       # recovers the store in DIR and prints what it holds
//! ```
//!
//! The store is this package's library: `src/store.rs` the store and its
//! protocol, `src/scenario.rs` what it is tested with;
//! `tests/kv_store_crash_safety.rs` is its test. The planted bugs
//! ([`Bug`]): (a) `CURRENT` not fsynced before the rename that installs it,
//! (b) no directory fsync after a new log is created, (c) a failed fsync
//! retried and the put acknowledged, (d) the old table and log deleted
//! before the rename retiring them is durable.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use kv_store::scenario;
use kv_store::store::{self, Bug};

fn usage() -> ! {
    eprintln!(
        "usage: kv_store [explore [--bug none|a|b|c|d] [--seeds N] | run DIR [PUTS] | check DIR]"
    );
    std::process::exit(2)
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("explore") => explore(&args[args.len().min(1)..]),
        Some("run") => {
            let dir = PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
            let last = args.get(2).map(|n| n.parse().unwrap_or_else(|_| usage()));
            std::fs::create_dir_all(&dir)?;
            let ctx = aioctx::Context::new()?;
            let mut out = std::io::stdout().lock();
            ctx.block_on(scenario::put_until(&ctx, &dir, 0, last, |n| {
                // Flushed per line: a parent that kills us knows what was
                // acknowledged.
                let _ = writeln!(out, "acked {n}").and_then(|()| out.flush());
            }))
        }
        Some("check") => {
            let dir = PathBuf::from(args.get(1).unwrap_or_else(|| usage()));
            let ctx = aioctx::Context::new()?;
            let data = ctx
                .block_on(store::recover(&ctx, &dir))?
                .unwrap_or_default();
            println!("{} keys recovered from {}", data.len(), dir.display());
            Ok(())
        }
        Some(_) => usage(),
    }
}

fn explore(args: &[String]) -> std::io::Result<()> {
    let mut bugs: Vec<(char, Bug)> = std::iter::once(('-', Bug::None))
        .chain(Bug::PLANTED)
        .collect();
    let mut seeds = 1000;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--bug", Some(bug)) => {
                bugs = match bug.as_str() {
                    "none" => vec![('-', Bug::None)],
                    letter => Bug::PLANTED
                        .into_iter()
                        .filter(|(l, _)| l.to_string() == letter)
                        .collect(),
                };
                if bugs.is_empty() {
                    usage();
                }
            }
            ("--seeds", Some(n)) => seeds = n.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    for (letter, bug) in bugs {
        let started = Instant::now();
        let outcome = scenario::explore(bug, 0..seeds);
        let took = started.elapsed();
        match outcome {
            Ok(explored) => println!(
                "{bug:?}: {} seeds passed, {} ops of virtual I/O, in {took:.2?} ({:.0} ops/s)",
                explored.seeds,
                explored.ops,
                explored.ops as f64 / took.as_secs_f64()
            ),
            Err(failure) => println!("({letter}) {bug:?}: found in {took:.2?}\n{failure}\n"),
        }
    }
    Ok(())
}
