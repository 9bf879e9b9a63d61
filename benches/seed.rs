//! The `seed` benchmark on its own; see `benches/common/seed.rs` for what it measures. Run with
//! `cargo bench --bench seed` (add `-- --quick` for a short run, `-- --json` for JSON lines).

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    common::main(&["seed"]);
}
