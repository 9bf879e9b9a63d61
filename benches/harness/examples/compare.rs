//! Runs every benchmark of this crate against its peers and the machine's limits, and prints one
//! table: benchmark, implementation, parameter, ops/s, p50, p99, and the ratio to the row's
//! baseline measured in the same run, followed by where the targets stand. The harness is this
//! package's library (`benches/harness/src/`); results and how to read them are in `BENCHMARKS.md`.
//!
//! ```text
//! cargo run --release --example compare                 # full run: 2 s per row, medians of 3
//! cargo run --release --example compare -- --quick      # a few seconds, to check it all works
//! cargo run --release --example compare -- --json       # one JSON object per row and target
//! cargo run --release --example compare -- --only randread,cached --depths 32
//! cargo run --release --example compare -- --help       # every option
//! ```
//!
//! fio rows need `fio` on the PATH (`apt-get install fio`) and are skipped without it. Test
//! files are cached under `target/aioctx-bench` (or `$AIOCTX_BENCH_DIR`, which must support
//! O_DIRECT).

fn main() -> std::io::Result<()> {
    bench_harness::main(std::env::args_os(), &mut std::io::stdout().lock())
}
