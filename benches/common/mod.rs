//! The benchmark harness shared by every bench binary, by `examples/compare.rs` and by
//! `tests/compare_quick.rs` (each includes it with
//! `#[path = "../benches/common/mod.rs"] mod common;`).
//!
//! Every number is a ratio against a baseline measured in the same run: one module per
//! benchmark (`wake`, `nop`, `randread`, `cached`, `submitters`, `seed`) builds its row groups from the peers in
//! `peers/` (raw io-uring, eventfd, fio, tokio::fs, spawn_blocking, tokio-uring) and from
//! `aioctx_rows` (the crate under test, measured the same way), `group` runs
//! each group's implementations in turns and takes medians, `report` prints the table or JSON
//! lines, and `targets` checks the targets of issue 5.
//!
//! ```text
//! bench binary / compare ── main(names) ── run(config, names) ──► wake::run, nop::run, ...
//!                                                                  └─ run_group(candidates)
//!                                                                       └─ peers::*::<fn>(window)
//! ```
//!
//! Each includer uses a different part of this module, hence the `dead_code` allowance.

#![allow(dead_code)]

pub mod affinity;
pub mod aioctx_rows;
pub mod cached;
pub mod config;
pub mod group;
pub mod json;
pub mod measure;
pub mod nop;
pub mod page_buf;
pub mod peers;
pub mod randread;
pub mod report;
pub mod seed;
pub mod submitters;
pub mod targets;
pub mod testfile;
pub mod wake;

use config::{Cli, Config};
use report::Row;

/// Every benchmark, in the order `compare` runs them.
pub const BENCHMARKS: &[&str] = &["wake", "nop", "randread", "cached", "submitters", "seed"];

/// Runs the named benchmarks and returns their rows.
///
/// # Panics
///
/// Panics on a name not in [`BENCHMARKS`].
pub fn run(config: &Config, benchmarks: &[&str]) -> Vec<Row> {
    let mut rows = Vec::new();
    for &benchmark in benchmarks {
        if config.progress {
            eprintln!("{benchmark}:");
        }
        rows.extend(match benchmark {
            "wake" => wake::run(config),
            "nop" => nop::run(config),
            "randread" => randread::run(config),
            "cached" => cached::run(config),
            "submitters" => submitters::run(config),
            "seed" => seed::run(config),
            other => panic!("no benchmark named `{other}`"),
        });
    }
    rows
}

/// The rows and checked targets as JSON lines: one object per row, then one per target.
pub fn json_lines(rows: &[Row]) -> Vec<String> {
    let checked = targets::check(rows);
    rows.iter()
        .map(Row::to_json)
        .chain(checked.iter().map(targets::Checked::to_json))
        .collect()
}

/// Entry point of the bench binaries and `compare`: parses the command line, runs `benchmarks`
/// (those of them `--only` selects), and prints a table or JSON lines.
pub fn main(benchmarks: &[&str]) {
    let cli = match Cli::parse(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let selected: Vec<&str> = benchmarks
        .iter()
        .copied()
        .filter(|name| cli.selects(name))
        .collect();
    let rows = run(&cli.config, &selected);
    if let Some(path) = &cli.json_out {
        let mut text = json_lines(&rows).join("\n");
        text.push('\n');
        if let Err(error) = std::fs::write(path, text) {
            eprintln!("cannot write {}: {error}", path.display());
            std::process::exit(1);
        }
    }
    if cli.json {
        for line in json_lines(&rows) {
            println!("{line}");
        }
    } else {
        let config = &cli.config;
        println!(
            "{} repeat(s), {:.1} s measured per run after {:.1} s warm-up, {} CPUs\n",
            config.repeats,
            config.window.measure.as_secs_f64(),
            config.window.warmup.as_secs_f64(),
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        print!("{}", report::render_table(&rows));
        let checked = targets::check(&rows);
        if !checked.is_empty() {
            print!("\n{}", targets::render(&checked));
        }
    }
}
