//! The `wake` benchmark on its own; see `benches/common/wake.rs` for what it measures. Run with
//! `cargo bench --bench wake` (add `-- --quick` for a short run, `-- --json` for JSON lines).

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    common::main(&["wake"]);
}
