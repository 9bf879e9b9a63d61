//! Helpers for the `nbd_*` tests, one file per job:
//!
//! | file | owns |
//! |---|---|
//! | `server.rs` | the `nbd-server` example started as a child process, killed when its guard drops |
//! | `scratch.rs` | scratch images under the target dir (never tmpfs, so O_DIRECT works) and their bytes |
//! | `commands.rs` | client tools found on PATH or skipped with a printed reason, commands bounded in time |
//! | `wire.rs` | the protocol's numbers, written out again from the protocol text |
//! | `client.rs` | a small raw-socket NBD client, independent of the server's own code |
//!
//! Each test declares this module `pub mod support;`: its items are then
//! the test crate's public items, as a helper library's would be, so a test
//! that uses only some of them is not told the others are dead code.

mod client;
mod commands;
mod scratch;
mod server;
pub mod wire;

pub use client::Client;
pub use commands::{have_tools, run_bounded, run_ok};
pub use scratch::{Scratch, assert_same_bytes, random_bytes};
pub use server::Server;
