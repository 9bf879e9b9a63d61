//! Deterministic tests of storage code: in-memory files, every op completing
//! in Tokio virtual time, seeded, with fault injection, crashes, and seed
//! exploration. The public face of the simulated backend (`backend/sim/`)
//! and of `explore`; this file holds their story and re-exports them, and
//! no logic.
//!
//! Build a context with [`Backend::Sim`](crate::Backend::Sim) and use it as
//! any other: the ops, [`fs::File`](crate::fs::File), `enter`, `block_on` and
//! metrics all work. [`Context::sim`](crate::Context::sim) returns the
//! controls ([`SimHandle`]): crashes, the completion log, file contents.
//!
//! # Time: an op completes at its deadline, however the clock is stepped
//!
//! An op's deadline is the instant it was submitted (its first poll) plus its
//! latency ([`Latency`]), on the Tokio clock of the runtime the simulator
//! runs on, fixed at submission. The op completes, and its future is woken,
//! exactly when a `tokio::time::sleep_until(deadline)` made at submission
//! would fire: with the clock paused, at the first step of
//! `tokio::time::advance` that reaches the deadline, whatever the size of the
//! steps, whoever polls when, and whether or not any other task ran in
//! between. (Tokio's timers tick in whole milliseconds, so a deadline inside
//! a millisecond is reached at that millisecond's end, as for any Tokio
//! timer.) [`Completion::at`] is the deadline.
//!
//! Built inside a current-thread runtime (which `#[tokio::test]` is), the
//! simulator runs as a task on that runtime and shares its clock; under
//! `#[tokio::test(start_paused = true)]` a test of storage code runs in no
//! real time, the clock jumping to the next deadline whenever the test
//! waits. Elsewhere it gets a home thread like the other backends.
//!
//! Ops are numbered as they are submitted. Ops due at the same instant
//! complete in an order drawn by a generator seeded with
//! [`SimConfig::seed`], which also draws random latencies in submission
//! order. Same seed, same program: same completion order, same times, same
//! faults and crashes, on every run and every machine.
//!
//! # Testing step by step with `tokio-test`
//!
//! [`tokio_test::task::spawn`](https://docs.rs/tokio-test/latest/tokio_test/task/fn.spawn.html)
//! polls a future by hand and records its wakes; with the clock paused, a
//! test walks storage code through its ops one at a time:
//!
//! ```
//! use std::time::Duration;
//!
//! use aioctx::fs::{File, OpenOptions};
//! use aioctx::sim::{Latency, SimConfig};
//! use aioctx::{Backend, Context};
//! use tokio::time::advance;
//! use tokio_test::{assert_pending, assert_ready, task};
//!
//! /// The storage code under test: a record is saved once written and synced.
//! async fn save(file: &File, record: &[u8]) -> std::io::Result<()> {
//!     file.write_at(record.to_vec(), 0).await.0?;
//!     file.sync_data().await
//! }
//!
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() {
//!     let ms = Duration::from_millis(1);
//!     let ctx = Context::builder()
//!         .backend(Backend::Sim(SimConfig::new().latency(Latency::Fixed(5 * ms))))
//!         .build()
//!         .unwrap();
//!     let sim = ctx.sim().unwrap();
//!     let file = OpenOptions::new().write(true).create(true).open(&ctx, "/rec").await.unwrap();
//!
//!     let mut saving = task::spawn(save(&file, b"v1"));
//!     assert_pending!(saving.poll()); // the write is submitted at t = 0
//!     advance(4 * ms).await;
//!     assert!(!saving.is_woken()); // not before its deadline,
//!     advance(ms).await;
//!     assert!(saving.is_woken()); // exactly at it
//!     assert_pending!(saving.poll()); // written; the fsync is submitted at t = 5 ms
//!     assert_eq!(sim.contents("/rec").unwrap(), b"v1");
//!
//!     advance(5 * ms).await;
//!     assert!(saving.is_woken());
//!     assert_ready!(saving.poll()).unwrap(); // saved at t = 10 ms
//!     sim.crash();
//!     assert_eq!(sim.contents("/rec").unwrap(), b"v1", "synced data survives");
//! }
//! ```
//!
//! `tests/sim_tokio_test.rs` does the same for reads, faults, a crash
//! between two polls, and two tasks whose completion order the seed decides.
//!
//! # Faults
//!
//! [`SimConfig::fault`] fails the *n*th op matching an [`OpFilter`] with an
//! errno, or cuts a read or write short. [`SimConfig::random_fault`] is a
//! seeded fault plan: each matching op is hit with a given probability, and
//! the seed decides which. A failed op has no effect.
//!
//! # Crashes
//!
//! [`SimHandle::crash`] simulates a power loss at once;
//! [`SimConfig::crash_at_random`] plans one at an instant the seed draws,
//! and [`SimHandle::crashed`] resolves when it has happened. Each op takes
//! effect when it completes, and by default a crash drops every byte written
//! since each file's last `fsync` (a file created and never fsynced comes
//! back empty, but still exists); open files stay open, and ops in flight
//! complete afterwards as if nothing had happened. That is the contract
//! POSIX gives a program: data not fsynced may be lost; the simulator loses
//! all of it.
//!
//! Two options make a crash more like a real machine's:
//!
//! - [`SimConfig::torn_writes`]: a disk makes writes atomic only per sector
//!   (512 bytes or 4 KiB; NVMe's atomic write unit is often one block), so a
//!   multi-sector write cut by a power loss can persist in part. With this,
//!   every write in flight at the crash persists a prefix of the whole
//!   sectors it covers (none, some or all, drawn by the seed) and never a
//!   partial sector, and every op in flight at the crash then fails with
//!   `EIO`: the machine went down under it.
//! - [`SimConfig::reorder_unsynced_writes`]: the page cache writes each
//!   file's dirty data back on its own schedule, and a disk's volatile cache
//!   reorders what it was given, so after a crash a later unsynced write to
//!   one file may be there while an earlier one to another file is not.
//!   With this, each file keeps a prefix, drawn by the seed, of the changes
//!   (writes, truncations, hole punches) made to it since its last fsync,
//!   independently of every other file.
//!
//! What real machines do that the simulator does not model:
//!
//! - Reordering within one file: a disk may persist any subset of a file's
//!   unsynced sectors; the simulator keeps a prefix of its changes in the
//!   order they were made, and a torn write tears at one point.
//! - Metadata as its own thing: creating a file, its size, and directory
//!   entries need an fsync of the directory on a real filesystem; here a
//!   created file always survives (empty), and a size survives with the data
//!   that set it. No delayed allocation (ext4's zero-length files after a
//!   crash), no zeroed tails, no renames, unlinks or directories at all.
//! - What Linux does after a failed fsync: it may drop the dirty pages and
//!   report the error once; an injected fsync error here leaves them dirty,
//!   and a later fsync persists them.
//! - Corruption: bit rot, misdirected or lost writes a disk acknowledged,
//!   firmware lying about flushes.
//! - Device timing: latency does not depend on size, queue depth, bandwidth
//!   or the page cache; ops never contend.
//! - A crash does not end the program: fds stay open and (without torn
//!   writes) ops in flight complete. A scenario that models a process dying
//!   with the power stops its own tasks, as `examples/sim_wal.rs` does.
//!
//! # Seed exploration
//!
//! `sim::explore` (with the crate's `test-util` feature) runs one async
//! scenario under many seeds, each on a fresh simulated context on its own
//! paused runtime, and stops at the first seed whose run returns an `Err` or
//! panics. The `Failure` says which seed, what failed, the completion log
//! up to there, and how to replay exactly that run:
//! `AIOCTX_SIM_SEED='<test>=<seed>'` narrows that test's exploration to the
//! seed (a bare `AIOCTX_SIM_SEED=<seed>` narrows every exploration in the
//! process, which fails a test that expects a bug to be found under a seed
//! that does not show it: see `SEED_VAR`), and `Failure::replay` runs it
//! again in one call. This is FoundationDB-style
//! simulation testing for Tokio storage code: `examples/sim_wal.rs` plants a
//! log that acknowledges records before their fsync completes, which most
//! runs do not notice, and exploration finds a seed where a crash loses an
//! acknowledged record within the first few seeds; the correct log passes
//! 1,000 seeds in well under a second of a release build.
#![cfg_attr(
    feature = "test-util",
    doc = "\nThe API: [`explore`], [`Explore`], [`Failure`], [`Run`], [`SEED_VAR`]."
)]
//!
//! # What the kernel would say
//!
//! Files are sparse, held in 4 KiB pages, so an offset costs no memory; a
//! write past [`SimConfig::memory_budget`] fails with `ENOSPC`. Ranges past
//! `i64::MAX` fail with `EINVAL` (reads and writes) or `EFBIG` (allocation,
//! truncation), as the kernel answers. A file opened with `O_DIRECT` refuses
//! offsets, lengths and buffer addresses that are not multiples of 512 with
//! `EINVAL`, as the ring would. `fallocate` supports mode 0, `KEEP_SIZE`,
//! `PUNCH_HOLE | KEEP_SIZE` and `ZERO_RANGE` (with or without `KEEP_SIZE`),
//! and refuses the rest with `EOPNOTSUPP`. [`submit_raw`](crate::Context::submit_raw)
//! fails with `Unsupported`.

pub use crate::backend::sim::{
    Completion, Fault, FaultAction, Latency, OpFilter, SimConfig, SimHandle, SimOp,
};
#[cfg(feature = "test-util")]
pub use crate::explore::{Explore, Explored, Failure, Run, SEED_VAR, explore};
