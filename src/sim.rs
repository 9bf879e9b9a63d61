//! Deterministic tests of storage code: in-memory files, every op completing
//! in Tokio virtual time, seeded, with fault injection, crashes, and seed
//! exploration. The public face of the simulated backend (`backend/sim/`)
//! and of `explore`; this file holds their story and re-exports them, and
//! no logic.
//!
//! Build a context with [`Backend::Sim`](crate::Backend::Sim) and use it as
//! any other: the ops, [`fs::File`](crate::fs::File), the namespace
//! ([`fs::rename`](crate::fs::rename), [`fs::Dir`](crate::fs::Dir), ...),
//! `enter`, `block_on` and metrics all work. Files live in an in-memory
//! directory tree whose root is `/` (and the current directory). [`Context::sim`](crate::Context::sim) returns the
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
//!     aioctx::fs::sync_dir(&ctx, "/").await.unwrap(); // its name is durable
//!
//!     let mut saving = task::spawn(save(&file, b"v1"));
//!     assert_pending!(saving.poll()); // the write is submitted: call this t = 0
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
//! the seed decides which. A failed op has no effect, but for an fsync of a
//! file: as on Linux, it drops the data it failed to write (see the table
//! below).
//!
//! # Crashes
//!
//! [`SimHandle::crash`] simulates a power loss at once;
//! [`SimConfig::crash_at_random`] plans one at an instant the seed draws,
//! and [`SimHandle::crashed`] resolves when it has happened. Each op takes
//! effect when it completes; a crash then keeps of what was not yet durable
//! only what the persistence model allows, drawn by the seed, and reports
//! what it drew ([`SimHandle::crash_reports`], a [`CrashReport`] per crash:
//! which changes of names survived, per directory, and which unsynced
//! sectors, per file). Open files stay open, and ops in flight complete
//! afterwards as if nothing had happened (unless writes tear, below).
//!
//! The default model is the weakest file system POSIX and Linux allow
//! ([`FsModel::Weakest`]): what storage code may rely on everywhere, and so
//! what finds the crash bugs it really has (Pillai et al., "All File
//! Systems Are Not Created Equal", OSDI 2014, found most of theirs in
//! exactly these rules). [`SimConfig::fs_model`] picks ext4 with
//! `data=ordered` ([`FsModel::Ext4Ordered`]) instead, for code that relies
//! on it knowingly.
//!
//! | What was done | Lost at a crash unless | Without it, a crash keeps (weakest) | ... on ext4 `data=ordered` |
//! |---|---|---|---|
//! | data written: `write_at`, `set_len`, `fallocate`, `O_TRUNC` | the file is fsynced (`sync_all`, `sync_data`) | each sector (512 bytes, or the torn-write sector) or not as the seed draws, and one of the lengths the file had since, reading zeros where data did not make it; nothing of it with [`reorder_unsynced_writes(false)`](SimConfig::reorder_unsynced_writes) | the same, but a surviving length covers the appended data that reached the disk |
//! | a name created, renamed, linked or removed: `OpenOptions::create`, [`fs::rename`](crate::fs::rename), [`fs::hard_link`](crate::fs::hard_link), [`fs::symlink`](crate::fs::symlink), [`fs::create_dir`](crate::fs::create_dir), [`fs::remove_file`](crate::fs::remove_file), [`fs::remove_dir`](crate::fs::remove_dir) | its directory is fsynced ([`Dir::sync_all`](crate::fs::Dir::sync_all), [`fs::sync_dir`](crate::fs::sync_dir)); for a rename between two directories, either | each change or not, as the seed draws, in any combination: a later change may survive an earlier one (a removal without the rename before it); a rename is atomic, the name leads to the old file or the new, never neither | a prefix of the changes, in the order they were made; any fsync, of a file or a directory, makes every change before it durable |
//! | a new file, fsynced but not its directory | its directory is fsynced | its data, under no name: the file is gone | the file: the fsync committed its name |
//! | data, then a rename of the file over an old name, then the directory fsynced, without an fsync of the file before the rename | the file is fsynced before the rename | the new name, on an empty (or partly written) file: the "zero-length file after a crash" | the data too: a rename over a file writes the renamed file back first (`auto_da_alloc`) |
//! | an fsync that failed ([`SimConfig::fault`] or [`SimConfig::random_fault`] on [`SimOp::Fsync`] with an errno) | — | nothing of the data it failed to write: Linux drops it (clean, not written; reads still see it until the crash); the error is reported once to each fd open on the file then, and a retried fsync returns success without writing it | the same |
//! | a write in flight at the crash | — | (with [`torn_writes`](SimConfig::torn_writes)) a seed-drawn prefix of its whole sectors, and it fails with `EIO`, as every op in flight does; without, it completes after the crash | the same |
//!
//! A file created by [`SimHandle::insert_file`] is durable, name and data,
//! as is every directory it creates above it.
//!
//! What real machines do that the simulator does not model:
//!
//! - Intermediate values: a sector written twice since its file's last
//!   fsync comes back as last written or as on disk, never as first
//!   written; a name changed twice comes back with one of the values its
//!   changes gave it, never one a kernel's background writeback might have
//!   caught in between.
//! - Background writeback: nothing reaches the disk without an fsync but
//!   what a crash draws, so no writeback error is ever found outside an
//!   fsync (Linux would report one to the next fsync of every fd, even fds
//!   opened after it); a failed fsync of a directory persists nothing and
//!   reports its error, but drops no names.
//! - Other metadata: permissions (no umask either), timestamps, extended
//!   attributes, space allocation; link counts after a crash follow from
//!   the names that survived (no orphan list, no `lost+found`).
//! - Of ext4, only the above: not `auto_da_alloc` for a file truncated and
//!   rewritten, not `data=journal` or `data=writeback`, not an `fdatasync`
//!   that skips the journal commit (here every fsync commits names). Of
//!   other file systems (XFS, btrfs), nothing beyond what the weakest model
//!   allows them.
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
//! paused runtime, and stops at the first seed whose run returns an `Err`,
//! panics, hangs (still waiting at its time limit of virtual time) or is
//! busy (a loop that never lets the runtime idle, which stops virtual time:
//! bounded by a poll count and a real-time limit at one virtual instant).
//! The `Failure` says which seed, what failed (`FailureKind`), the completion log
//! up to there, the crash state it drew (which changes of names and which
//! unsynced sectors survived, per directory and per file: why recovery
//! broke), and how to replay exactly that run:
//! `AIOCTX_SIM_SEED='<test>=<seed>'` narrows that test's exploration to the
//! seed (a bare `AIOCTX_SIM_SEED=<seed>` narrows every exploration in the
//! process, which fails a test that expects a bug to be found under a seed
//! that does not show it: see `SEED_VAR`), and `Failure::replay` runs it
//! again in one call, drawing the same crash state. This is
//! FoundationDB-style simulation testing for Tokio storage code:
//! `examples/sim_wal.rs` plants a log that acknowledges records before
//! their fsync completes, which most runs do not notice, and exploration
//! finds a seed where a crash loses an acknowledged record within the first
//! few seeds; `examples/kv_store` is a small LevelDB-shaped store (log,
//! table, manifest switched by a rename) with four crash bugs planted the
//! way real storage code has them, each found within ten seeds, while the
//! correct store passes 10,000.
#![cfg_attr(
    feature = "test-util",
    doc = "\nThe API: [`explore`], [`Explore`], [`Failure`], [`FailureKind`], [`Run`], [`SEED_VAR`]."
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
    Completion, CrashReport, DirectoryCrash, Fault, FaultAction, FileCrash, FsModel, Latency,
    NameChange, OpFilter, SimConfig, SimHandle, SimOp,
};
#[cfg(feature = "test-util")]
pub use crate::explore::{Explore, Explored, Failure, FailureKind, Run, SEED_VAR, explore};
