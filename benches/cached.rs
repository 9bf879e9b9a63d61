//! The `cached` benchmark on its own; see `benches/common/cached.rs` for what it measures. Run with
//! `cargo bench --bench cached` (add `-- --quick` for a short run, `-- --json` for JSON lines).

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    common::main(&["cached"]);
}
