//! The `randread` benchmark on its own; see `benches/common/randread.rs` for what it measures. Run with
//! `cargo bench --bench randread` (add `-- --quick` for a short run, `-- --json` for JSON lines).

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    common::main(&["randread"]);
}
