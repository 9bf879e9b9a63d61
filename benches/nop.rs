//! The `nop` benchmark on its own; see `benches/common/nop.rs` for what it measures. Run with
//! `cargo bench --bench nop` (add `-- --quick` for a short run, `-- --json` for JSON lines).

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    common::main(&["nop"]);
}
