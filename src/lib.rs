//! io_uring AioContexts for Tokio: any thread can queue I/O into a reactor's
//! ring, and the reactor picks it up at once, never at its next timer tick.
//!
//! # Concepts
//!
//! - A [`Context`] is one io_uring ring plus the thread that drives it, its
//!   *home thread*, which runs a Tokio current-thread runtime. Handles are
//!   cheap to clone and `Send + Sync`.
//! - Only the home thread ever calls `io_uring_enter`. Ops created there go
//!   straight into the submission queue; ops from any other thread go through
//!   the context's *inbox*, and the push wakes the driver if it sleeps.
//! - The *driver* runs in turns: drain the inbox, submit everything queued with
//!   one `io_uring_enter`, reap completions and wake their futures, park.
//! - [`Context::enter`] runs a future inline on the calling thread until it
//!   first returns `Pending`; later polls run on the home thread (QEMU's
//!   `aio_co_enter`). [`Context::block_on`] serves blocking callers.
//! - [`Context::bind`] binds a thread to a context for a scope, so code deep in
//!   a device model finds it with [`current`].
//! - Ops own their buffers and hand them back with the result ([`buf`]):
//!   `Vec<u8>`, [`buf::AlignedBuf`] for `O_DIRECT`, or [`buf::ExternalBuf`]
//!   over memory the caller owns (guest RAM, an mmap), which the kernel reads
//!   into directly; its release callback says when the region is free again.
//! - Registered resources, safe because one thread at a time updates a ring's
//!   tables (its home thread, or whoever holds a worker ring's lock):
//!   [`Context::register_buffers`] for buffers the kernel does not pin
//!   per op, [`fs::OpenOptions::register`] for files it does not look up per
//!   op; [`Builder::sqpoll`] for a kernel thread that polls the ring. (The
//!   rings of [`runtime::WorkerRings`] register the files their ops use on
//!   their own, each in its own table, under its lock.)
//! - The namespace is I/O too: [`fs::rename`], [`fs::remove_file`],
//!   [`fs::create_dir`], [`fs::hard_link`], [`fs::symlink`] and the directory
//!   fsync that makes them durable ([`fs::Dir::sync_all`]) are ops on every
//!   backend; the simulator models what survives a crash of them.
//! - A [`Pool`] runs several contexts for services on many cores (below).
//!
//! ```text
//!  any thread                                   home thread (Tokio current_thread)
//!  ──────────                                   ──────────────────────────────────
//!  op future ──push──► inbox ──kick (if asleep)─► driver turn
//!                                                  1 drain inbox → SQ (backlog if full)
//!  op future on home thread ──straight to SQ────►  2 io_uring_enter (all, once)
//!                                                  3 reap CQ → wake futures
//!                                                  4 park: eventfd | kick | local push
//! ```
//!
//! # The wake protocol, in short
//!
//! A pusher appends to the inbox, then sets a `NOTIFIED` bit with one
//! read-modify-write; if the driver's `PARKED` bit was set and nobody had
//! notified it yet, this pusher wakes it. The driver clears both bits when a
//! turn begins and sets `PARKED` before sleeping, turning again instead if
//! `NOTIFIED` was set meanwhile. So no push is ever left unseen while the
//! driver sleeps, and each sleep costs at most one wake. The full statement,
//! with the argument, is in the `inbox` module; a loom model checks it.
//!
//! # Example
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! let ctx = aioctx::Context::new()?;
//! // A plain thread blocks on an op; the op is queued into the home thread's
//! // ring and the driver is woken at once.
//! ctx.block_on(ctx.nop())?;
//!
//! // Inline entry: polled here first, then on the home thread.
//! let inner = ctx.clone();
//! let handle = ctx.enter(async move { inner.nop().await });
//! handle.join().expect("not cancelled")?;
//! assert_eq!(ctx.metrics().ops_foreign, 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Pools, for services on many cores
//!
//! A [`Pool`] runs several contexts, one home thread and ring each. A
//! [`File`](fs::File) opened on a member is usable from every thread, and
//! each op goes to the ring of the thread that submits it: the workers of a
//! multi-thread runtime, `#[tokio::main]`'s included, each take a sticky
//! member the first time they submit, so they spread over the rings instead
//! of queuing at one inbox.
//!
//! ```
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let path = std::env::temp_dir().join(format!("aioctx-doc-{}", std::process::id()));
//!     std::fs::write(&path, b"hello, pool")?;
//!     let pool = aioctx::Pool::builder().contexts(2).build()?;
//!     let file = aioctx::fs::File::open(pool.thread_member(), &path).await?;
//!     let tasks: Vec<_> = (0..4)
//!         .map(|_| {
//!             let file = file.clone();
//!             tokio::spawn(async move { file.read_at(Vec::with_capacity(16), 0).await.0 })
//!         })
//!         .collect();
//!     let mut total = 0;
//!     for task in tasks {
//!         total += task.await.expect("the task ran")?;
//!     }
//!     assert_eq!(total, 4 * 11);
//!     pool.shutdown().await; // drained: dropping the pool will not block
//!     std::fs::remove_file(&path)
//! }
//! ```
//!
//! Then, to tune: [`Pool::spawn`] runs a task on a member's home thread,
//! where its ops go straight into the ring with no inbox hop;
//! [`Pool::thread_binder`] binds a hand-built runtime's workers so that
//! [`current`] finds their member; [`PoolBuilder::pin_to_cpus`] pins the
//! home threads.
//!
//! # Which path an op takes
//!
//! | where the task runs | what to use | what an op costs |
//! |---|---|---|
//! | any thread, no runtime of ours (a vCPU, `main`, a blocking pool) | [`Context::enter`], [`Context::block_on`], [`Op`] | an inbox push, and a kick if the driver sleeps |
//! | a task on a context's home thread ([`Context::spawn`], [`Pool::spawn`]) | [`Op`] | straight into the SQ; atomic op state, so the future may move |
//! | a `!Send` task on the home thread ([`Context::spawn_local`], [`LocalContext`]) | [`local::LocalRing`] | straight into the SQ; plain op state, counted by an `Rc`; turned inside the `LocalSet`, so no wake goes through the runtime |
//! | tasks on Tokio's multi-thread runtime | [`runtime::WorkerRings`] | the worker's own ring, one enter per round of its tasks |
//! | tasks on a runtime bound to a pool ([`Pool::thread_binder`]) | [`Op`] | an inbox push to the thread's member, a wake back |
//!
//! Every path keeps the same guarantees: buffers the kernel uses are never
//! freed under it, a dropped op is cancelled, shutdown resolves every op.
//!
//! # How the crate is laid out
//!
//! Every import points one way, down this list; no file imports one above it,
//! and no two files import each other.
//!
//! ```text
//! surface     runtime (WorkerRings: a ring per thread of a multi-thread
//!             runtime) · pool/mod.rs (Pool) · fs · explore (seed
//!             exploration) · sim
//!             (the simulator's public face) · local (LocalRing, the home
//!             path) · context/mod.rs (every method
//!             of Context) · home/{mod, start, settings} (Builder, the
//!             home thread, LocalContext; the builder's settings)
//!             · enter (entry, spawning, JoinHandle) · fixed (registered
//!             buffers) · op (the future) · pool/placement (an op's anchor,
//!             where it goes) · file (a file's fd, slot, and views per
//!             member or per worker ring, with the ring's slot)
//!             · context/bind (current) · context/handle (Context, Owner)
//!             · pool/membership (which member a thread uses)
//!             · context/state (what ops and files hold)
//! backends    backend/mod.rs: the Reactor trait, the public choice, the
//!             only match over backends · backend/uring/{state, task, core,
//!             submit, cancel, complete, drain, slots, tables, dwell,
//!             overflow, policy} · backend/worker/{mod, core} (a ring submitted and
//!             reaped by whichever thread holds it) · backend/fallback ·
//!             backend/sim/{config, rng, report, contents, data, namespace,
//!             files, paths, crash, schedule} · backend/common
//! ops         ops/mod.rs: the sealed public OpKind (its output) and a
//!             crate-private trait per backend · ops/* one file per op
//! protocols   park (the driver's wake sources and the shutdown signal) ·
//!             inbox (queue, wake protocol, the kick) · lifecycle (op cell)
//!             · ring (the only file that talks to io_uring)
//! leaves      sync (std/loom switch) · error · metrics · buf · home_thread ·
//!             slot_record (a file view's slot in a worker ring's table) ·
//!             cell_cache (op cells' memory, per thread) · fault (test-only) ·
//!             trace (the context span, which op errors are logged)
//! ```
//!
//! # Backends
//!
//! [`Builder::backend`] picks what runs the ops, behind the same API:
//! io_uring; a thread-pool [`Backend::Fallback`] where io_uring is missing or
//! forbidden (chosen automatically by [`Backend::Auto`]); and
//! [`Backend::Sim`], in-memory files on Tokio's virtual clock, for
//! deterministic tests of storage code:
//!
//! ```
//! use aioctx::fs::OpenOptions;
//! use aioctx::sim::SimConfig;
//! use aioctx::{Backend, Context};
//!
//! #[tokio::main(flavor = "current_thread", start_paused = true)]
//! async fn main() -> std::io::Result<()> {
//!     let ctx = Context::builder()
//!         .backend(Backend::Sim(SimConfig::new().seed(1)))
//!         .build()?;
//!     let log = OpenOptions::new()
//!         .write(true)
//!         .create(true)
//!         .open(&ctx, "/log")
//!         .await?;
//!     aioctx::fs::sync_dir(&ctx, "/").await?; // the name "/log" is durable
//!     log.write_at(b"acked".to_vec(), 0).await.0?;
//!     log.sync_data().await?; // durable from here on
//!     log.write_at(b"+lost".to_vec(), 5).await.0?;
//!
//!     let sim = ctx.sim().expect("a sim context");
//!     sim.crash(); // power loss: what was not fsynced may be gone
//!     assert!(sim.contents("/log").unwrap().starts_with(b"acked"));
//!     Ok(())
//! }
//! ```
//!
//! # Tracing
//!
//! The crate logs through [`tracing`](https://docs.rs/tracing), on its slow
//! paths only: an op that succeeds logs nothing and pays nothing for the
//! events below, and the paths that may log (an op's error, a backlog, a
//! late SQE) ask whether anyone listens before they do any work for it.
//!
//! Every context has a span named `aioctx.context`, so that a service with
//! many rings can tell which one logged what. Its level is `ERROR`, the most
//! severe, so that it is enabled whenever any of the crate's events is: a
//! warning always says which ring it comes from.
//!
//! | span field | value |
//! |---|---|
//! | `id` | [`Context::id`]: a small integer, unique in the process, in order of creation |
//! | `member` | the context's index in its [`Pool`] ([`Pool::members`]); absent otherwise |
//! | `backend` | `"io_uring"`, `"fallback"` or `"sim"`, once chosen |
//!
//! A home thread the crate spawns enters the span for its whole life, so
//! everything logged there (the driver's events, and those of tasks on the
//! home runtime) carries it; a [`LocalContext`] enters it while its
//! `block_on` runs, and while it shuts down; a simulator on the caller's
//! runtime runs its task and its alarm in it; the fallback's pool threads
//! enter it for their events.
//!
//! Events (target `aioctx::…`), all inside the span unless said otherwise:
//!
//! | level | message starts with | fields | when |
//! |---|---|---|---|
//! | `info` | `aioctx context ready` | on io_uring: `entries`, and the setup flags the ring got ([`Context::ring_flags`]): `single_issuer`, `defer_taskrun`, `coop_taskrun`, `sqpoll`, `registered_ring_fd` | once per context, when it is set up (at `debug` on the simulator, of which an exploration makes one per seed) |
//! | `warn` | `io_uring unavailable; using the thread-pool fallback`, or `using the thread-pool fallback` | `error` | [`Backend::Auto`] fell back (setup refused, or an opcode missing) |
//! | `warn` | `aioctx ops wait in the backlog` | `waiting` (ops in the backlog), `in_flight`, `cq_entries` (the in-flight limit), `cause` (`the submission queue is full`, or the in-flight limit) | io_uring: once per backlog overflow episode, at the first turn that leaves ops waiting after putting in all that fits |
//! | `debug` | `aioctx backlog drained` | `waited` (ops that went through the backlog in the episode), `peak`, `turns` | the episode's end |
//! | `warn` | `aioctx ops from other threads waited long for the kernel` | `late` (how many), `max_dwell`, `threshold` | io_uring: an `io_uring_enter` handed the kernel SQEs of foreign ops whose dwell exceeded [`Builder::dwell_warning`] (default 10 ms) |
//! | `debug` | `aioctx op failed` | `op` (its type, `ReadAt`, ...), `errno`, `error` | an op failed with an error its caller does not expect (below) |
//! | `debug` | `io_uring setup refused these flags`, `io_uring refused ...` | `flags`, `error` | ring setup: each refused attempt before the flags it got, a refused sparse table or ring-fd registration |
//! | `debug` | `aioctx ring shutting down`, `fallback shutdown resolves pending ops` | `in_flight`, `pending` | shutdown begins with ops outstanding |
//! | `debug` | `sim: injecting ...`, `sim: crash`, `sim: write torn by a crash` | the op, path, offsets | the simulator's faults and crashes |
//! | `warn` | `the last aioctx::Context (Pool) was dropped inside a Tokio runtime` | | on the dropping thread, not in the span: the drop blocks a runtime thread until the drain ends |
//! | `error` | `io_uring_enter failed`, `CQE for an unknown slot`, `... panicked ...; the panic was contained`, `... ended before shutdown`, `... leaking ...` | `error` | the driver's own failures; none is expected |
//!
//! Which op errors are expected, and so not logged: `ECANCELED` (the op was
//! cancelled: its future dropped, the context shut down), `ETIME` (a
//! timeout's normal end), `EAGAIN` (a non-blocking fd with nothing ready),
//! and any error of an op whose future was dropped (nobody waits for it; a
//! cancel may also end it with `EINTR`). Every other errno is logged (`EIO`,
//! `ENOSPC`, `EBADF`, `ENOENT`, `EINVAL`, an `EINTR` of an op still awaited,
//! ...). The crate's own errors (the context has shut down, input refused
//! before any backend saw it) go to the caller only, and a read that returns
//! 0 at end of file is a result, not an error.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(docsrs, doc(auto_cfg(hide(aioctx_loom))))]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

// Everything but the modelled protocols (`inbox`, `lifecycle`, `park`, and
// the `sync` switch under them) is left out of the loom build, which
// model-checks those.

// Leaves.
#[cfg(not(aioctx_loom))]
pub mod buf;
#[cfg(not(aioctx_loom))]
mod cell_cache;
#[cfg(not(aioctx_loom))]
mod error;
#[cfg(all(not(aioctx_loom), feature = "fault-injection"))]
pub mod fault;
#[cfg(not(aioctx_loom))]
mod home_thread;
#[cfg(not(aioctx_loom))]
mod metrics;
#[cfg(not(aioctx_loom))]
mod slot_record;
mod sync;
#[cfg(not(aioctx_loom))]
mod trace;

// Protocols. In the loom build nothing but the model's tests calls them, so
// most of their API has no caller there: that build alone allows dead code in
// them; every other build reports it.
#[cfg_attr(aioctx_loom, allow(dead_code))]
mod inbox;
#[cfg_attr(aioctx_loom, allow(dead_code))]
mod lifecycle;
#[cfg_attr(aioctx_loom, allow(dead_code))]
mod park;
#[cfg(not(aioctx_loom))]
mod ring;

// Ops, backends, surface.
#[cfg(not(aioctx_loom))]
mod backend;
#[cfg(not(aioctx_loom))]
mod context;
#[cfg(not(aioctx_loom))]
mod enter;
#[cfg(all(not(aioctx_loom), feature = "test-util"))]
mod explore;
#[cfg(not(aioctx_loom))]
mod file;
#[cfg(not(aioctx_loom))]
mod fixed;
#[cfg(not(aioctx_loom))]
pub mod fs;
#[cfg(not(aioctx_loom))]
mod home;
#[cfg(not(aioctx_loom))]
pub mod local;
#[cfg(not(aioctx_loom))]
mod op;
#[cfg(not(aioctx_loom))]
pub mod ops;
#[cfg(not(aioctx_loom))]
mod pool;
#[cfg(not(aioctx_loom))]
pub mod runtime;
#[cfg(not(aioctx_loom))]
pub mod sim;

#[cfg(not(aioctx_loom))]
pub use crate::{
    backend::Backend,
    context::{BindGuard, Context, current},
    enter::{JoinError, JoinHandle},
    error::is_shutdown,
    fixed::{FixedBuf, FixedBufPool},
    home::{Builder, LocalContext},
    metrics::{Dwell, Metrics, RingFlags},
    op::Op,
    pool::{Pool, PoolBuilder},
};

/// The README's code blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
