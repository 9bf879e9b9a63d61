//! An actor: its files, its dice, and each step it takes (open, close,
//! set_len, one data op or a batch of them, a registered-buffer pool made or
//! dropped, a file dropped with its ops in flight, a `FileStream` session),
//! run to a fate (kept, polled once and dropped, or raced against a timer);
//! the data ops and their checks are in `ops.rs`, the registered resources
//! in `registered.rs`, the stream sessions in `stream.rs`, the steps of a
//! local actor through a `LocalRing` in `local.rs`, the step that closes a
//! worker's ring with ops in it in `worker.rs`.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use aioctx::fs::{File, OpenOptions};
use aioctx::{Context, FixedBuf, FixedBufPool};
use futures::future::{Either, join_all, select};

use crate::bufs::{BufKind, Held, check_held};
use crate::model::{Dice, FILE_SIZE, FileModel};
pub(crate) use crate::stats::{Stats, bump};
use crate::watchdog::{set_doing, status};
use crate::workers::Workers;

mod local;
mod ops;
mod registered;
mod stream;
mod worker;

/// Returned read buffers held back to catch late writes into them.
const QUARANTINE: usize = 12;
/// Steps an actor takes once shutdown has begun (each must resolve, most
/// with the shutdown error) before it stops.
const STEPS_AFTER_SHUTDOWN: u64 = 16;

/// What all actors of a round share.
pub(crate) struct Round {
    pub(crate) index: u64,
    /// Set just before the shutdown starts; errors are expected from then.
    pub(crate) shutdown_requested: AtomicBool,
    /// Set once `Context::shutdown` has returned: every op started from then
    /// must fail with the shutdown error.
    pub(crate) shutdown_complete: AtomicBool,
    /// Ops started this round, for the shutdown trigger.
    pub(crate) started: AtomicU64,
    /// Tracked buffers alive.
    pub(crate) live: Arc<AtomicUsize>,
    pub(crate) init_bufs: bool,
    pub(crate) stats: Stats,
    /// The registered-buffer pools actors still held at their end, for the
    /// round's check that every buffer came back.
    pub(crate) kept_pools: Mutex<Vec<FixedBufPool>>,
    /// The runtime actors' worker rings, in a round that has them.
    pub(crate) workers: Option<Workers>,
}

/// How an actor's ops are driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Driver {
    /// A plain thread, `Context::block_on` per op.
    Thread,
    /// `Context::spawn` onto the home thread, joined from a plain thread.
    Home,
    /// `Context::enter` from a plain thread, joined there.
    Enter,
    /// Tasks on a multi-thread Tokio runtime; in a round with worker rings,
    /// each op goes to the ring of the worker that polls it.
    Runtime,
    /// `Context::spawn_local` on the home thread (from a task that
    /// `Context::spawn` put there), joined from a plain thread; a share of
    /// its data ops go through a `LocalRing` made in the task.
    Local,
}

/// What happens to an op future.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fate {
    Keep,
    /// Polled once, dropped if still pending.
    PollOnce,
    /// Raced against a timer of this many microseconds; dropped if it loses.
    Race(u64),
}

pub(crate) struct OpenFile {
    pub(crate) model: usize,
    pub(crate) file: File,
    /// The round's worker-ring closes begun when its open began (0 off
    /// worker rings).
    pub(crate) closes_at_open: u64,
}

/// One actor: a driver, its files, its dice.
pub(crate) struct Actor {
    pub(crate) id: usize,
    pub(crate) driver: Driver,
    /// The host's context it uses (one on worker rings uses its worker's
    /// ring instead: see [`context`](Actor::context)).
    pub(crate) ctx: Context,
    pub(crate) round: Arc<Round>,
    pub(crate) dice: Dice,
    pub(crate) budget: u64,
    /// Files it may open: its private ones, then the shared one.
    pub(crate) models: Vec<Arc<Mutex<FileModel>>>,
    /// Which part of each model it may write.
    pub(crate) writable: Vec<(u64, u64)>,
    pub(crate) open: Vec<OpenFile>,
    pub(crate) held: VecDeque<Held>,
    /// Registered buffers for fixed reads and writes, when it has made some.
    pub(crate) fixed: Option<FixedBufPool>,
    /// The round's worker-ring closes begun when the current step began,
    /// and when its buffer pool was made.
    pub(crate) ring_closes_seen: u64,
    pub(crate) fixed_closes_seen: u64,
}

/// A data op on an open file, planned before it runs so several can run at
/// once from shared state.
#[derive(Debug)]
pub(crate) enum Plan {
    /// `prefill`: the buffer starts filled with the canary rather than
    /// uninitialised.
    Read {
        file: usize,
        offset: u64,
        len: usize,
        exact: bool,
        buf: BufKind,
        prefill: bool,
    },
    Write {
        file: usize,
        offset: u64,
        len: usize,
        all: bool,
        buf: BufKind,
    },
    Readv {
        file: usize,
        offset: u64,
        lens: Vec<usize>,
        tracked: bool,
        prefill: bool,
    },
    Writev {
        file: usize,
        offset: u64,
        lens: Vec<usize>,
        tracked: bool,
    },
    Sync {
        file: usize,
        data_only: bool,
    },
    Fallocate {
        file: usize,
        offset: u64,
        len: u64,
        keep_size: bool,
    },
    Metadata {
        file: usize,
    },
    Timeout {
        micros: u64,
    },
    Nop,
    /// `read_fixed_at` into a buffer of the actor's pool, pre-filled with
    /// the canary; `hold`: held after it returns, to catch late writes.
    ReadFixed {
        file: usize,
        offset: u64,
        buf: FixedBuf,
        hold: bool,
    },
    /// `write_fixed_at` of a buffer holding the pattern at `offset`.
    WriteFixed {
        file: usize,
        offset: u64,
        buf: FixedBuf,
    },
    /// `read_batch` (or, `write`, `write_batch` of the pattern) of
    /// `ranges`: several reads or writes of the file as one op.
    Batch {
        file: usize,
        write: bool,
        ranges: Vec<(u64, usize)>,
    },
}

impl Plan {
    /// The open file the op is on, if any.
    pub(crate) fn file(&self) -> Option<usize> {
        match *self {
            Plan::Read { file, .. }
            | Plan::Write { file, .. }
            | Plan::Readv { file, .. }
            | Plan::Writev { file, .. }
            | Plan::Sync { file, .. }
            | Plan::Fallocate { file, .. }
            | Plan::Metadata { file }
            | Plan::ReadFixed { file, .. }
            | Plan::WriteFixed { file, .. }
            | Plan::Batch { file, .. } => Some(file),
            Plan::Timeout { .. } | Plan::Nop => None,
        }
    }
}

/// What a finished op leaves for the actor.
#[derive(Default)]
pub(crate) struct Done {
    pub(crate) held: Vec<Held>,
}

impl Actor {
    pub(crate) fn lock(&self, model: usize) -> std::sync::MutexGuard<'_, FileModel> {
        self.models[model].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn what(&self, plan: &dyn std::fmt::Debug) -> String {
        format!(
            "round {} actor {} ({:?}): {plan:?}",
            self.round.index, self.id, self.driver
        )
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.round.shutdown_requested.load(SeqCst)
    }

    /// The round's worker rings, if this actor's ops go to them.
    pub(crate) fn worker_rings(&self) -> Option<&Workers> {
        self.round
            .workers
            .as_ref()
            .filter(|_| self.driver == Driver::Runtime)
    }

    /// Where its opens, nops, timeouts and buffer pools go: the ring of the
    /// worker running it (made on first use, or anew after its last one
    /// closed) on worker rings, the host's context otherwise.
    pub(crate) fn context(&self) -> Context {
        match self.worker_rings() {
            Some(_) => aioctx::current().expect("a runtime worker has its ring"),
            None => self.ctx.clone(),
        }
    }

    /// Whether, on worker rings, a ring has begun to close since the round's
    /// count of closes was `closes`.
    fn ring_closed_since(&self, closes: u64) -> bool {
        self.worker_rings()
            .is_some_and(|w| w.closes.load(SeqCst) > closes)
    }

    /// Whether an op of the current step may have been cut short: once the
    /// round's shutdown has begun, or, on worker rings, once a ring has
    /// begun to close since the step began. Closing cancels what the kernel
    /// is running, and a read it had begun (waiting in an io-wq worker for a
    /// page a write holds, say) reports what it had read: short of the end
    /// of the file, which is then no longer checked.
    pub(crate) fn may_be_cut_short(&self) -> bool {
        self.shutting_down() || self.ring_closed_since(self.ring_closes_seen)
    }

    /// Checks an error: allowed only once shutdown has begun (or, on worker
    /// rings, once a ring has begun to close since the current step began:
    /// an op in it, or whose task was in it, resolves as at shutdown), and
    /// then only the shutdown error or the kernel's answer to a cancel; an
    /// op started after shutdown finished must get the shutdown error
    /// itself.
    pub(crate) fn expect_shutdown_error(&self, e: &io::Error, started_after: bool, what: &str) {
        let is_shutdown = aioctx::is_shutdown(e);
        if started_after {
            bump(&self.round.stats.after_shutdown, 1);
            assert!(
                is_shutdown,
                "{what}: started after shutdown, failed with {e:?}"
            );
        }
        let ring_closed = self.ring_closed_since(self.ring_closes_seen);
        assert!(
            (self.shutting_down() || ring_closed)
                && (is_shutdown || matches!(e.raw_os_error(), Some(libc::ECANCELED | libc::EINTR))),
            "{what}: unexpected error {e:?} (shutdown requested: {}, a worker ring closed since the step began: {ring_closed})",
            self.shutting_down(),
        );
        bump(&self.round.stats.shutdown_errors, 1);
    }

    /// [`expect_shutdown_error`](Actor::expect_shutdown_error) for an op
    /// that goes to one ring whichever worker polls it (a file's close, to
    /// the ring the file was opened on; a fixed op, to the ring its buffer's
    /// pool was made on): on worker rings it fails with the shutdown error,
    /// too, if any ring has closed since that ring was picked, when the
    /// round's count of closes was `closes`.
    pub(crate) fn expect_pinned_error(
        &self,
        e: &io::Error,
        closes: u64,
        started_after: bool,
        what: &str,
    ) {
        if self.ring_closed_since(closes) && aioctx::is_shutdown(e) {
            bump(&self.round.stats.shutdown_errors, 1);
            return;
        }
        self.expect_shutdown_error(e, started_after, what);
    }

    /// An op that succeeded although it started after shutdown finished.
    pub(crate) fn expect_not_after_shutdown(&self, started_after: bool, what: &str) {
        assert!(
            !started_after,
            "{what}: succeeded though started after shutdown"
        );
    }

    /// Runs `future` to its fate: `Some(output)` if it resolved.
    pub(crate) async fn fate<F: Future>(&self, fate: Fate, future: F) -> Option<F::Output> {
        let mut future = pin!(future);
        let out = match fate {
            Fate::Keep => Some(future.await),
            Fate::PollOnce => match futures::poll!(future.as_mut()) {
                Poll::Ready(out) => Some(out),
                Poll::Pending => None,
            },
            Fate::Race(micros) => {
                let timer = self.timer(micros);
                match select(future, timer).await {
                    Either::Left((out, _)) => {
                        bump(&self.round.stats.raced_won, 1);
                        Some(out)
                    }
                    Either::Right(_) => None,
                }
            }
        };
        let stats = &self.round.stats;
        bump(
            if out.is_some() {
                &stats.kept
            } else {
                &stats.dropped
            },
            1,
        );
        out
    }

    /// A short timer: a Tokio timer on the multi-thread runtime, the
    /// context's own timeout op elsewhere (which, unlike a Tokio timer of the
    /// home runtime, still resolves after shutdown).
    pub(crate) fn timer(
        &self,
        micros: u64,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let duration = Duration::from_micros(micros);
        if self.driver == Driver::Runtime {
            Box::pin(tokio::time::sleep(duration))
        } else {
            Box::pin(async move {
                let _ = self.ctx.timeout(duration).await;
            })
        }
    }

    pub(crate) fn draw_fate(&mut self) -> Fate {
        match self.dice.below(10) {
            0 => Fate::PollOnce,
            1 => Fate::Race(self.dice.range(0, 300)),
            _ => Fate::Keep,
        }
    }

    /// A range of `len` (shortened to fit) that this actor may write in
    /// model `m`.
    pub(crate) fn write_range(&mut self, m: usize, len: usize) -> (u64, usize) {
        let (lo, hi) = self.writable[m];
        let len = (len as u64).min(hi - lo);
        (self.dice.range(lo, hi - len), len as usize)
    }

    /// A range to read in model `m`: anywhere, past the end too.
    pub(crate) fn read_range(&mut self, m: usize, len: usize) -> (u64, usize) {
        let size = self.lock(m).must.len() as u64;
        (self.dice.range(0, size), len)
    }

    pub(crate) fn plan(&mut self) -> Plan {
        let file = self.dice.below(self.open.len() as u64) as usize;
        let m = self.open[file].model;
        let mut kind = self
            .dice
            .weighted(&[14, 6, 14, 6, 6, 6, 3, 3, 4, 3, 6, 5, 5, 4]);
        if kind == 11 || kind == 12 {
            match self.fixed_plan(file, kind == 11) {
                Some(plan) => return plan,
                // No pool, or every buffer in use: a plain read or write.
                None => kind = if kind == 11 { 0 } else { 2 },
            }
        }
        match kind {
            0 | 1 => {
                let len = self.dice.len();
                let (offset, len) = self.read_range(m, len);
                let buf = BufKind::draw(&mut self.dice);
                Plan::Read {
                    file,
                    offset,
                    len,
                    exact: self.dice.chance(30),
                    buf,
                    prefill: self.dice.chance(50),
                }
            }
            2 | 3 => {
                let len = self.dice.len();
                let (offset, len) = self.write_range(m, len);
                let buf = BufKind::draw(&mut self.dice);
                Plan::Write {
                    file,
                    offset,
                    len,
                    all: self.dice.chance(30),
                    buf,
                }
            }
            4 => {
                let lens = (0..self.dice.range(1, 3))
                    .map(|_| self.dice.len().min(4096))
                    .collect();
                let (offset, _) = self.read_range(m, 0);
                Plan::Readv {
                    file,
                    offset,
                    lens,
                    tracked: self.dice.chance(50),
                    prefill: self.dice.chance(50),
                }
            }
            5 => {
                let lens: Vec<usize> = (0..self.dice.range(1, 3))
                    .map(|_| self.dice.len().min(4096))
                    .collect();
                let total = lens.iter().sum();
                let (offset, total) = self.write_range(m, total);
                let lens = shorten(lens, total);
                Plan::Writev {
                    file,
                    offset,
                    lens,
                    tracked: self.dice.chance(50),
                }
            }
            6 => Plan::Sync {
                file,
                data_only: self.dice.chance(50),
            },
            7 => {
                let len = self.dice.len();
                let (offset, len) = self.write_range(m, len);
                Plan::Fallocate {
                    file,
                    offset,
                    len: len as u64,
                    keep_size: self.dice.chance(50),
                }
            }
            8 => Plan::Metadata { file },
            9 => Plan::Timeout {
                micros: self.dice.range(0, 2_000),
            },
            13 => {
                let write = self.dice.chance(50);
                let ranges = (0..self.dice.range(2, 8))
                    .map(|_| {
                        let len = self.dice.len().min(8192);
                        match write {
                            true => self.write_range(m, len),
                            false => self.read_range(m, len),
                        }
                    })
                    .collect();
                Plan::Batch {
                    file,
                    write,
                    ranges,
                }
            }
            _ => Plan::Nop,
        }
    }

    /// One step: an open, a close, a truncate, one data op, a few data ops
    /// at once, a registered-buffer pool made or dropped, a file dropped with
    /// ops in flight, a stream session, or (on worker rings) the worker's
    /// ring closed with ops in it.
    pub(crate) async fn step(&mut self) {
        let closes = self.worker_rings().map(|w| w.closes.load(SeqCst));
        // On worker rings, nothing fails fast after the shutdown: a step
        // either runs on a worker whose ring is open (made anew if its last
        // one closed) or never runs (its task dropped with the runtime).
        let started_after = closes.is_none() && self.round.shutdown_complete.load(SeqCst);
        self.ring_closes_seen = closes.unwrap_or(0);
        // Only worker-ring actors close their worker's ring.
        let close_ring = if closes.is_some() { 2 } else { 0 };
        if self.shutting_down() {
            self.budget = self.budget.min(STEPS_AFTER_SHUTDOWN);
        }
        if self.open.is_empty() {
            self.open_one(started_after).await;
            return;
        }
        match self.dice.weighted(&[6, 5, 2, 70, 10, 2, 4, 4, close_ring]) {
            0 if self.open.len() < 4 => self.open_one(started_after).await,
            1 => self.close_one(started_after).await,
            2 => self.set_len(started_after).await,
            5 => self.fixed_pool(started_after).await,
            6 => self.drop_in_flight(started_after).await,
            7 => self.stream_session(started_after).await,
            8 => self.close_ring_in_flight().await,
            4 => {
                let plans: Vec<(Plan, Fate)> = (0..self.dice.range(2, 4))
                    .map(|_| {
                        let plan = self.plan();
                        (plan, self.draw_fate())
                    })
                    .collect();
                self.spend(plans.len() as u64);
                set_doing(self.id, self.what(&plans));
                let this = &*self;
                let done = join_all(
                    plans
                        .into_iter()
                        .map(|(plan, fate)| this.run(plan, fate, started_after)),
                )
                .await;
                for done in done {
                    self.keep(done);
                }
            }
            _ => {
                let plan = self.plan();
                let fate = self.draw_fate();
                self.spend(1);
                set_doing(self.id, self.what(&(&plan, fate)));
                let done = self.run(plan, fate, started_after).await;
                self.keep(done);
            }
        }
    }

    pub(crate) fn spend(&mut self, n: u64) {
        self.budget = self.budget.saturating_sub(n);
        bump(&self.round.stats.ops, n);
        self.round.started.fetch_add(n, SeqCst);
        status().progress.fetch_add(1, SeqCst);
    }

    /// Holds returned buffers; re-checks the oldest as newer ones arrive.
    pub(crate) fn keep(&mut self, done: Done) {
        for held in done.held {
            if self.held.len() == QUARANTINE {
                let old = self.held.pop_front().unwrap();
                check_held(&old);
            }
            self.held.push_back(held);
        }
        status().progress.fetch_add(1, SeqCst);
    }

    pub(crate) async fn open_one(&mut self, started_after: bool) {
        let m = self.dice.below(self.models.len() as u64) as usize;
        let fate = self.draw_fate();
        self.spend(1);
        let what = self.what(&("open", m, fate));
        set_doing(self.id, what.clone());
        bump(&self.round.stats.opens, 1);
        let path = self.lock(m).path.clone();
        let register = self.dice.chance(35);
        if register {
            bump(&self.round.stats.register_asked, 1);
        }
        let closes_at_open = self.worker_rings().map_or(0, |w| w.closes.load(SeqCst));
        let ctx = self.context();
        let open = async {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .register(register)
                .open(&ctx, &path)
                .await
        };
        match self.fate(fate, open).await {
            Some(Ok(file)) => {
                self.expect_not_after_shutdown(started_after, &what);
                if file.is_registered() {
                    bump(&self.round.stats.registered_opens, 1);
                }
                self.open.push(OpenFile {
                    model: m,
                    file,
                    closes_at_open,
                });
            }
            Some(Err(e)) => self.expect_shutdown_error(&e, started_after, &what),
            None => {}
        }
    }

    pub(crate) async fn close_one(&mut self, started_after: bool) {
        let at = self.dice.below(self.open.len() as u64) as usize;
        let OpenFile {
            file,
            model,
            closes_at_open,
        } = self.open.swap_remove(at);
        let how = self.dice.below(4);
        let fate = if how == 0 {
            Fate::Keep
        } else {
            self.draw_fate()
        };
        self.spend(1);
        let what = self.what(&("close", model, how, fate));
        set_doing(self.id, what.clone());
        bump(&self.round.stats.closes, 1);
        if how == 3 {
            // The synchronous close of `Drop`.
            drop(file);
            return;
        }
        if let Some(Err(e)) = self.fate(fate, file.close()).await {
            // A close that ran tells the kernel's verdict: it must be Ok.
            // (It goes to the calling thread's ring; the tolerance below is
            // for a shared context's close racing its shutdown.)
            self.expect_pinned_error(&e, closes_at_open, started_after, &what);
        }
    }

    /// Truncates or extends a private file; always kept, never raced with
    /// this actor's other ops on it, so the model stays exact (one whose
    /// task a shutdown drops counts as failed: see `TruncateInFlight`).
    pub(crate) async fn set_len(&mut self, started_after: bool) {
        let private: Vec<usize> = (0..self.open.len())
            .filter(|&i| self.open[i].model + 1 < self.models.len())
            .collect();
        if private.is_empty() {
            return;
        }
        let at = private[self.dice.below(private.len() as u64) as usize];
        let m = self.open[at].model;
        let len = self.dice.range(0, FILE_SIZE);
        self.spend(1);
        let what = self.what(&("set_len", m, len));
        set_doing(self.id, what.clone());
        let in_flight = TruncateInFlight {
            model: &self.models[m],
            len,
        };
        let result = self.fate(Fate::Keep, self.open[at].file.set_len(len)).await;
        in_flight.resolved();
        // Whether it ran or not, nothing at or past `len` is known anymore.
        match result.expect("kept") {
            Ok(()) => {
                self.lock(m).truncated(len);
                self.expect_not_after_shutdown(started_after, &what);
            }
            Err(e) => {
                self.lock(m).truncate_failed(len);
                self.expect_shutdown_error(&e, started_after, &what);
            }
        }
    }

    /// Ends the actor: re-checks the held buffers, drops its files, hands
    /// its buffer pool to the round's final check.
    pub(crate) fn finish(mut self) {
        for held in self.held.drain(..) {
            check_held(&held);
        }
        if let Some(pool) = self.fixed.take() {
            self.round
                .kept_pools
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(pool);
        }
        set_doing(
            self.id,
            format!("round {} actor {}: done", self.round.index, self.id),
        );
    }
}

/// A truncate on its way: if its future is dropped before it resolves (its
/// task dropped by a shutdown, whose drain may have completed the op
/// unseen, or left the fallback's syscall running), it may have run or run
/// later, and the model is told so.
struct TruncateInFlight<'a> {
    model: &'a Mutex<FileModel>,
    len: u64,
}

impl TruncateInFlight<'_> {
    /// The truncate resolved: the caller tells the model what it did.
    fn resolved(self) {
        std::mem::forget(self);
    }
}

impl Drop for TruncateInFlight<'_> {
    fn drop(&mut self) {
        self.model
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .truncate_failed(self.len);
    }
}

/// Cuts `lens` to add up to `total` (at least one non-empty part).
pub(crate) fn shorten(mut lens: Vec<usize>, total: usize) -> Vec<usize> {
    let mut left = total;
    for l in &mut lens {
        *l = (*l).min(left);
        left -= *l;
    }
    lens.retain(|&l| l > 0);
    if lens.is_empty() {
        lens.push(total.max(1));
    }
    lens
}
