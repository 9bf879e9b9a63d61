//! The benchmark harness behind `cargo run --release --example compare` (see BENCHMARKS.md).
//! `examples/compare.rs` runs it and `tests/compare_quick.rs` checks a quick run of it; both
//! call [`main`], so every part of it serves both.
//!
//! Every number is a ratio against a baseline measured in the same run. One file per benchmark
//! (`wake`, `nop`, `randread`, `cached`, `submitters`, `seed`, `mt`, `namespace`) builds its row groups from
//! the peers in `peers/` (raw io-uring, eventfd, fio, tokio::fs, spawn_blocking, tokio-uring,
//! Tokio's own io_uring) and from `aioctx_rows` (the crate under test, measured the same way);
//! `group` runs each group's implementations in turns and takes medians; `report` prints the
//! table or JSON lines; `targets` checks the targets of `benches/targets.json`.
//!
//! ```text
//! main(args) ── run(config, --only) ──► wake::run, nop::run, ...   (BENCHMARKS)
//!                                       └─ run_group(config, group, candidates)
//!                                            └─ peers::*::<fn>(window), aioctx_rows::<fn>(window)
//! ```
//!
//! To add a row to a group: write the function that runs one timed window of it and returns a
//! `RunResult` (in `peers/` for another implementation, in `aioctx_rows` for this crate), and
//! push a `Candidate::new("name", move || ..).note(..)` in the group's file; the group runs it
//! in turns with the others and takes its ratio to the group's baseline. A peer that is a program
//! of its own (fio; a small cargo project of its own under `benches/`, built on first use, as
//! `peers/tokio_io_uring.rs` does for `benches/tokio-io-uring-peer/`) runs as a subprocess and
//! parses the child's report into a `Measurement`, as `peers/fio.rs` does, returning
//! `RunError::Skip` with the reason when it cannot run here. To add a benchmark: a file here
//! with `pub fn run(&Config) -> Vec<Row>` that builds its `Group`s and calls `run_group`, its
//! `mod` line and an entry in [`BENCHMARKS`] (which makes it selectable with `--only`), then a
//! row in BENCHMARKS.md's table. A target for a row is an object in `benches/targets.json`.

pub mod affinity;
pub mod aioctx_rows;
pub mod cached;
pub mod config;
pub mod group;
pub mod mt;
pub mod namespace;
pub mod nbd;
pub mod nop;
pub mod page_buf;
pub mod peers;
pub mod randread;
pub mod report;
pub mod seed;
pub mod submitters;
pub mod targets;
pub mod wake;

// Shared with the peers that run as programs of their own: `bench-measure` (benches/measure).
pub use bench_measure::{measure, testfile};

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;

use config::{Cli, Config};
use report::Row;
use serde::{Deserialize, Serialize};
use targets::CheckedTarget;

/// What runs one benchmark: its row groups, measured under a config.
pub type RunBenchmark = fn(&Config) -> Vec<Row>;

/// Every benchmark, in the order they run: the name `--only` selects it by, and its runner.
pub const BENCHMARKS: &[(&str, RunBenchmark)] = &[
    ("wake", wake::run),
    ("nop", nop::run),
    ("randread", randread::run),
    ("cached", cached::run),
    ("submitters", submitters::run),
    ("seed", seed::run),
    ("mt", mt::run),
    ("nbd", nbd::run),
    ("namespace", namespace::run),
];

/// One line of `--json` output, tagged by `kind`: a row, or a target checked against the rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JsonLine {
    /// A row of the table.
    Row(Row),
    /// A target and where this run leaves it.
    Target(CheckedTarget),
}

/// The repository's root, where the workspace's `Cargo.toml` and `target/` are (this package is
/// `benches/harness` under it).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("benches/harness has two parents")
}

/// Runs the benchmarks `selects` picks, in order, and returns their rows.
pub fn run(config: &Config, selects: impl Fn(&str) -> bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, run) in BENCHMARKS.iter().filter(|(name, _)| selects(name)) {
        if config.progress {
            eprintln!("{name}:");
        }
        rows.extend(run(config));
    }
    rows
}

/// `compare`'s main: parses `args` (the program name first), runs the selected benchmarks, and
/// writes the table (or, with `--json`, the JSON lines) to `out`; with `--json-out FILE`, also
/// writes the JSON lines to FILE. A bad command line prints the usage and exits.
pub fn main(args: impl IntoIterator<Item = OsString>, out: &mut impl Write) -> io::Result<()> {
    let cli = Cli::parse_with(args, BENCHMARKS.iter().map(|(name, _)| *name));
    let config = cli.config();
    let rows = run(&config, |name| cli.selects(name));
    let checked = targets::check(&rows);
    let json_lines: String = rows
        .iter()
        .cloned()
        .map(JsonLine::Row)
        .chain(checked.iter().cloned().map(JsonLine::Target))
        .map(|line| serde_json::to_string(&line).expect("a JSON line has string keys only") + "\n")
        .collect();
    if let Some(path) = &cli.json_out {
        std::fs::write(path, &json_lines).map_err(|error| {
            let message = format!("cannot write {}: {error}", path.display());
            io::Error::new(error.kind(), message)
        })?;
    }
    if cli.json {
        return out.write_all(json_lines.as_bytes());
    }
    writeln!(
        out,
        "{} repeat(s), {:.1} s measured per run after {:.1} s warm-up, {} CPUs\n",
        config.repeats,
        config.window.measure.as_secs_f64(),
        config.window.warmup.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from)
    )?;
    write!(out, "{}", report::render_table(&rows))?;
    if !checked.is_empty() {
        write!(out, "\n{}", targets::render(&checked))?;
    }
    Ok(())
}
