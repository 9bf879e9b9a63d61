//! The `submitters` benchmark on its own; see `benches/common/submitters.rs` for what it
//! measures. Run with `cargo bench --bench submitters` (add `-- --quick` for a short run,
//! `-- --json` for JSON lines).

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    common::main(&["submitters"]);
}
