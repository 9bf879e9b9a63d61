//! Randomized stress over every way in: foreign threads blocking on ops,
//! tasks on the home thread, tasks on a multi-thread Tokio runtime, and
//! futures `enter`ed from plain threads, all running every op kind (open,
//! close, reads, writes, vectored, fsync, fallocate, set_len, metadata,
//! timeout, nop), some kept, some polled once and dropped, some raced against
//! a short timer and dropped when it wins; some rounds shut the context down
//! midway.
//!
//! What it checks:
//! - every kept future resolves (a watchdog ends the process, printing the
//!   seed and what each actor was doing, if nothing progresses for
//!   `AIOCTX_STRESS_STALL_SECS`, default 120);
//! - written data reads back: every write writes the byte
//!   `pattern(file, position)`, so overlapping and dropped writes agree, and a
//!   file byte is either 0 (hole, truncated) or its pattern, and is its
//!   pattern wherever a kept write reported it written (and no kept truncate
//!   came after). Each actor owns its private files and a slice of a shared
//!   one; checked on every read and, at the end of a round, through `std::fs`;
//! - buffers come back intact: same allocation, a write's data unchanged, a
//!   read's bytes past its count untouched, and nothing written into a
//!   returned buffer later (returned read buffers are held a while and
//!   checksummed again); every buffer an op took is dropped by the end;
//! - after shutdown every op fails fast with the shutdown error;
//! - `/proc/self/fd` is back to its starting count after each round.
//!
//! Reproducing: the seed is printed on failure (and with `--nocapture`);
//! `AIOCTX_STRESS_SEED=<seed>` replays every actor's schedule of choices (the
//! interleaving of threads is the machine's). `AIOCTX_STRESS_OPS` sets the op
//! count, `AIOCTX_STRESS_ROUNDS` the rounds it is spread over,
//! `AIOCTX_STRESS_INIT_BUFS=1` pre-fills every read buffer (memcheck cannot
//! see the kernel's writes into an uninitialised one), and `AIOCTX_BACKEND`
//! picks the backend as for the rest of the suite.
//!
//! The test is alone in its file: it counts the process's fds, which tests
//! running beside it in the same binary would disturb.

mod support;

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use aioctx::buf::{AlignedBuf, IoBuf, IoBufMut};
use aioctx::fs::{File, OpenOptions};
use aioctx::{Context, JoinError};
use futures::future::{Either, join_all, select};

/// Default op count: a few seconds in a debug build.
const DEFAULT_OPS: u64 = 12_000;
/// Size of each actor's private files, and of each actor's slice of the
/// shared file.
const FILE_SIZE: u64 = 64 * 1024;
const SLICE: u64 = 16 * 1024;
/// What a read buffer is pre-filled with, to see what the kernel touched.
const CANARY: u8 = 0xA5;
/// Returned read buffers held back to catch late writes into them.
const QUARANTINE: usize = 12;
/// Steps an actor takes once shutdown has begun (each must resolve, most
/// with the shutdown error) before it stops.
const STEPS_AFTER_SHUTDOWN: u64 = 16;

// ---------------------------------------------------------------------------
// Configuration, seed reporting, the watchdog.

#[derive(Clone, Debug)]
struct Config {
    seed: u64,
    ops: u64,
    rounds: u64,
    init_bufs: bool,
    stall: Duration,
}

impl Config {
    fn from_env() -> Config {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let seed = var("AIOCTX_STRESS_SEED")
            .map(|s| parse_u64(&s).expect("AIOCTX_STRESS_SEED: a number (decimal or 0x hex)"))
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                nanos ^ u64::from(std::process::id()).rotate_left(32)
            });
        let ops = var("AIOCTX_STRESS_OPS")
            .map(|s| parse_u64(&s).expect("AIOCTX_STRESS_OPS: a number"))
            .unwrap_or(DEFAULT_OPS);
        let rounds = var("AIOCTX_STRESS_ROUNDS")
            .map(|s| parse_u64(&s).expect("AIOCTX_STRESS_ROUNDS: a number"))
            .unwrap_or_else(|| (ops / 2_000).clamp(3, 16))
            .max(1);
        let init_bufs = var("AIOCTX_STRESS_INIT_BUFS").is_some_and(|v| v != "0");
        let stall = var("AIOCTX_STRESS_STALL_SECS")
            .map(|s| parse_u64(&s).expect("AIOCTX_STRESS_STALL_SECS: a number"))
            .unwrap_or(120);
        Config {
            seed,
            ops,
            rounds,
            init_bufs,
            stall: Duration::from_secs(stall),
        }
    }

    fn replay_line(&self) -> String {
        format!(
            "AIOCTX_STRESS_SEED={:#x} AIOCTX_STRESS_OPS={} AIOCTX_STRESS_ROUNDS={} AIOCTX_BACKEND={}",
            self.seed,
            self.ops,
            self.rounds,
            std::env::var("AIOCTX_BACKEND").unwrap_or_else(|_| "auto".into()),
        )
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Written straight to fd 2, past the test harness's capture: the watchdog
/// ends the process, so captured output would be lost.
fn say(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

/// What every actor is doing, for the watchdog's report.
struct Status {
    progress: AtomicU64,
    doing: Mutex<Vec<String>>,
}

fn status() -> &'static Status {
    static STATUS: OnceLock<Status> = OnceLock::new();
    STATUS.get_or_init(|| Status {
        progress: AtomicU64::new(0),
        doing: Mutex::new(Vec::new()),
    })
}

fn set_doing(actor: usize, what: String) {
    let mut doing = status().doing.lock().unwrap_or_else(|p| p.into_inner());
    if doing.len() <= actor {
        doing.resize(actor + 1, String::new());
    }
    doing[actor] = what;
}

/// Ends the process if no op completes for `config.stall`: a kept future that
/// never resolves would otherwise hang the suite without saying where.
fn start_watchdog(config: &Config) {
    let config = config.clone();
    std::thread::spawn(move || {
        let mut last = status().progress.load(SeqCst);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = status().progress.load(SeqCst);
            if now != last {
                last = now;
                since = Instant::now();
                continue;
            }
            if since.elapsed() >= config.stall {
                say(&format!(
                    "stress: no progress for {:?}: a future never resolved.\nreplay: {}",
                    config.stall,
                    config.replay_line()
                ));
                let doing = status().doing.lock().unwrap_or_else(|p| p.into_inner());
                for (actor, what) in doing.iter().enumerate() {
                    say(&format!("  actor {actor}: {what}"));
                }
                std::process::exit(101);
            }
        }
    });
}

/// Prints the replay line with any panic, on whichever thread it happens.
fn report_seed_on_panic(config: &Config) {
    let replay = config.replay_line();
    let default = std::panic::take_hook();
    let said = AtomicBool::new(false);
    std::panic::set_hook(Box::new(move |info| {
        if !said.swap(true, SeqCst) {
            say(&format!("stress failed; replay: {replay}"));
        }
        default(info);
    }));
}

// ---------------------------------------------------------------------------
// Randomness.

/// The support crate's xorshift with the draws this test needs.
struct Dice(support::Rng);

impl Dice {
    fn new(seed: u64) -> Dice {
        // Spread nearby seeds apart (splitmix64), so actor n and n+1 differ.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Dice(support::Rng::new(z ^ (z >> 31)))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Index into `weights`, drawn in proportion to them.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut pick = self.below(weights.iter().sum());
        for (i, &w) in weights.iter().enumerate() {
            if pick < w {
                return i;
            }
            pick -= w;
        }
        unreachable!("pick below the sum")
    }
    /// A transfer length: mostly small, sometimes a page or several.
    fn len(&mut self) -> usize {
        match self.below(4) {
            0 => self.range(1, 64) as usize,
            1 => self.range(1, 4096) as usize,
            2 => 4096 * self.range(1, 2) as usize,
            _ => self.range(1, 12 * 1024) as usize,
        }
    }
}

/// The byte every write puts at `pos` of file `file`: never 0, so a hole is
/// told apart from data, and the same for every writer, so writes that race
/// (or were dropped and land late) cannot disagree.
fn pattern(file: u64, pos: u64) -> u8 {
    let x = ((file << 40) ^ pos).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 56) % 255) as u8 + 1
}

fn pattern_bytes(file: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(file, offset + i)).collect()
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// Buffers.

/// A buffer that counts itself alive, to check that every buffer an op took
/// (a dropped op's included) is dropped by the end of the round.
struct TrackedBuf {
    data: Vec<u8>,
    live: Arc<AtomicUsize>,
}

impl TrackedBuf {
    fn new(data: Vec<u8>, live: &Arc<AtomicUsize>) -> TrackedBuf {
        live.fetch_add(1, SeqCst);
        TrackedBuf {
            data,
            live: live.clone(),
        }
    }
}

impl Drop for TrackedBuf {
    fn drop(&mut self) {
        self.live.fetch_sub(1, SeqCst);
    }
}

// SAFETY: delegates to the Vec, whose heap block does not move with it.
unsafe impl IoBuf for TrackedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.data.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.data.bytes_init()
    }
    fn bytes_total(&self) -> usize {
        self.data.bytes_total()
    }
}

// SAFETY: delegates to the Vec.
unsafe impl IoBufMut for TrackedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.data.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.data.set_init(pos) }
    }
}

/// The initialised bytes of a buffer.
fn init_bytes<B: IoBuf>(buf: &B) -> &[u8] {
    // SAFETY: IoBuf promises `bytes_init` initialised bytes at `stable_ptr`.
    unsafe { std::slice::from_raw_parts(buf.stable_ptr(), buf.bytes_init()) }
}

/// All of a buffer's bytes.
///
/// # Safety
///
/// All `bytes_total` bytes must be initialised: only for buffers this test
/// pre-filled.
unsafe fn all_bytes<B: IoBuf>(buf: &B) -> &[u8] {
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts(buf.stable_ptr(), buf.bytes_total()) }
}

#[derive(Clone, Copy, Debug)]
enum BufKind {
    Vec,
    Bytes,
    Boxed,
    Aligned,
    Tracked,
}

impl BufKind {
    fn draw(dice: &mut Dice) -> BufKind {
        [
            BufKind::Vec,
            BufKind::Bytes,
            BufKind::Boxed,
            BufKind::Aligned,
            BufKind::Tracked,
        ][dice.below(5) as usize]
    }
}

/// A read target of `len` bytes, pre-filled with the canary or not.
trait ReadTarget: IoBufMut + Sync + Sized {
    /// Whether `bytes_init` says how much was read (a boxed slice is all
    /// initialised from the start).
    const TRACKS_INIT: bool = true;
    fn target(len: usize, prefill: bool, live: &Arc<AtomicUsize>) -> Self;
}

fn vec_target(len: usize, prefill: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    if prefill {
        v.resize(v.capacity(), CANARY);
        v.clear();
    }
    v
}

impl ReadTarget for Vec<u8> {
    fn target(len: usize, prefill: bool, _: &Arc<AtomicUsize>) -> Self {
        vec_target(len, prefill)
    }
}

impl ReadTarget for bytes::BytesMut {
    fn target(len: usize, prefill: bool, _: &Arc<AtomicUsize>) -> Self {
        let mut b = bytes::BytesMut::with_capacity(len);
        if prefill {
            b.resize(b.capacity(), CANARY);
            b.clear();
        }
        b
    }
}

impl ReadTarget for Box<[u8]> {
    const TRACKS_INIT: bool = false;
    fn target(len: usize, _: bool, _: &Arc<AtomicUsize>) -> Self {
        // Always initialised: a boxed slice's every byte is its data.
        vec![CANARY; len].into_boxed_slice()
    }
}

impl ReadTarget for AlignedBuf {
    fn target(len: usize, _: bool, _: &Arc<AtomicUsize>) -> Self {
        // Zeroed by its allocator; filled with the canary like the others.
        let mut a = AlignedBuf::with_capacity(len);
        a.set_len(len);
        a.fill(CANARY);
        a.clear();
        a
    }
}

impl ReadTarget for TrackedBuf {
    fn target(len: usize, prefill: bool, live: &Arc<AtomicUsize>) -> Self {
        TrackedBuf::new(vec_target(len, prefill), live)
    }
}

/// Whether `target(.., prefill)` leaves every byte initialised.
fn fully_initialised(kind: BufKind, prefill: bool) -> bool {
    prefill || matches!(kind, BufKind::Boxed | BufKind::Aligned)
}

/// A write source holding `data`.
trait WriteSource: IoBuf + Sync + Sized {
    fn source(data: &[u8], live: &Arc<AtomicUsize>) -> Self;
}

impl WriteSource for Vec<u8> {
    fn source(data: &[u8], _: &Arc<AtomicUsize>) -> Self {
        data.to_vec()
    }
}

impl WriteSource for bytes::BytesMut {
    fn source(data: &[u8], _: &Arc<AtomicUsize>) -> Self {
        bytes::BytesMut::from(data)
    }
}

impl WriteSource for Box<[u8]> {
    fn source(data: &[u8], _: &Arc<AtomicUsize>) -> Self {
        data.to_vec().into_boxed_slice()
    }
}

impl WriteSource for AlignedBuf {
    fn source(data: &[u8], _: &Arc<AtomicUsize>) -> Self {
        let mut a = AlignedBuf::with_capacity(data.len());
        a.extend_from_slice(data);
        a
    }
}

impl WriteSource for TrackedBuf {
    fn source(data: &[u8], live: &Arc<AtomicUsize>) -> Self {
        TrackedBuf::new(data.to_vec(), live)
    }
}

/// A returned buffer held back; its checksum must not change.
struct Held {
    bytes: Box<dyn Fn() -> u64 + Send + Sync>,
    sum: u64,
    what: String,
}

/// Holds a fully initialised buffer for a later re-check.
fn hold<B: IoBuf + Sync>(buf: B, what: String) -> Held {
    // SAFETY: only called for fully initialised buffers.
    let sum = checksum(unsafe { all_bytes(&buf) });
    Held {
        // SAFETY: as above; the closure owns the buffer.
        bytes: Box::new(move || checksum(unsafe { all_bytes(&buf) })),
        sum,
        what,
    }
}

// ---------------------------------------------------------------------------
// The files and what is known of their contents.

/// One file and which of its bytes must hold their pattern.
struct FileModel {
    id: u64,
    path: PathBuf,
    /// `must[pos]`: a kept write reported `pos` written and no kept truncate
    /// below `pos` came after.
    must: Vec<bool>,
    /// One past the last `must` byte: the file is at least this long.
    extent: u64,
}

impl FileModel {
    fn new(id: u64, path: PathBuf, size: u64) -> FileModel {
        FileModel {
            id,
            path,
            must: vec![false; size as usize],
            extent: 0,
        }
    }

    fn written(&mut self, offset: u64, n: usize) {
        let end = (offset as usize + n).min(self.must.len());
        self.must[offset as usize..end].fill(true);
        self.extent = self.extent.max(end as u64);
    }

    fn truncated(&mut self, len: u64) {
        let from = (len as usize).min(self.must.len());
        self.must[from..].fill(false);
        self.extent = self
            .must
            .iter()
            .rposition(|&m| m)
            .map_or(0, |p| p as u64 + 1);
    }

    /// What is known of `offset..offset + len` now: a read issued now must
    /// see at least this.
    fn snapshot(&self, offset: u64, len: usize) -> Snapshot {
        let start = (offset as usize).min(self.must.len());
        let end = (offset as usize + len).min(self.must.len());
        Snapshot {
            file: self.id,
            offset,
            must: self.must[start..end].to_vec(),
            extent: self.extent,
        }
    }
}

struct Snapshot {
    file: u64,
    offset: u64,
    must: Vec<bool>,
    extent: u64,
}

impl Snapshot {
    /// Checks bytes read at `self.offset`: each 0 or its pattern, and its
    /// pattern where known written.
    fn check(&self, data: &[u8], what: &str) {
        for (i, &b) in data.iter().enumerate() {
            let pos = self.offset + i as u64;
            let want = pattern(self.file, pos);
            let must = self.must.get(i).copied().unwrap_or(false);
            assert!(
                b == want || (b == 0 && !must),
                "{what}: file {} byte {pos} is {b:#04x}, expected {want:#04x}{}",
                self.file,
                if must { "" } else { " or 0" },
            );
        }
    }

    /// A read that stopped at `end` must not stop before known data.
    fn check_eof(&self, end: u64, what: &str) {
        assert!(
            end >= self.extent,
            "{what}: file {} ended at {end}, but bytes up to {} were written",
            self.file,
            self.extent
        );
    }
}

// ---------------------------------------------------------------------------
// One round: a context, its actors, and its files.

/// What all actors of a round share.
struct Round {
    index: u64,
    /// Set just before the shutdown starts; errors are expected from then.
    shutdown_requested: AtomicBool,
    /// Set once `Context::shutdown` has returned: every op started from then
    /// must fail with the shutdown error.
    shutdown_complete: AtomicBool,
    /// Ops started this round, for the shutdown trigger.
    started: AtomicU64,
    /// Tracked buffers alive.
    live: Arc<AtomicUsize>,
    init_bufs: bool,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    ops: AtomicU64,
    kept: AtomicU64,
    dropped: AtomicU64,
    raced_won: AtomicU64,
    shutdown_errors: AtomicU64,
    after_shutdown: AtomicU64,
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
    opens: AtomicU64,
    closes: AtomicU64,
    enters: AtomicU64,
    spawns: AtomicU64,
}

impl Stats {
    fn add(&self, other: &Stats) {
        let pairs = [
            (&self.ops, &other.ops),
            (&self.kept, &other.kept),
            (&self.dropped, &other.dropped),
            (&self.raced_won, &other.raced_won),
            (&self.shutdown_errors, &other.shutdown_errors),
            (&self.after_shutdown, &other.after_shutdown),
            (&self.bytes_written, &other.bytes_written),
            (&self.bytes_read, &other.bytes_read),
            (&self.opens, &other.opens),
            (&self.closes, &other.closes),
            (&self.enters, &other.enters),
            (&self.spawns, &other.spawns),
        ];
        for (mine, theirs) in pairs {
            mine.fetch_add(theirs.load(SeqCst), SeqCst);
        }
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, SeqCst);
}

/// How an actor's ops are driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    /// A plain thread, `Context::block_on` per op.
    Thread,
    /// `Context::spawn` onto the home thread, joined from a plain thread.
    Home,
    /// `Context::enter` from a plain thread, joined there.
    Enter,
    /// Tasks on a multi-thread Tokio runtime.
    Runtime,
}

/// What happens to an op future.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Keep,
    /// Polled once, dropped if still pending.
    PollOnce,
    /// Raced against a timer of this many microseconds; dropped if it loses.
    Race(u64),
}

struct OpenFile {
    model: usize,
    file: File,
}

/// One actor: a driver, its files, its dice.
struct Actor {
    id: usize,
    driver: Driver,
    ctx: Context,
    round: Arc<Round>,
    dice: Dice,
    budget: u64,
    /// Files it may open: its private ones, then the shared one.
    models: Vec<Arc<Mutex<FileModel>>>,
    /// Which part of each model it may write.
    writable: Vec<(u64, u64)>,
    open: Vec<OpenFile>,
    held: VecDeque<Held>,
}

/// A data op on an open file, planned before it runs so several can run at
/// once from shared state.
#[derive(Debug)]
enum Plan {
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
}

/// What a finished op leaves for the actor.
#[derive(Default)]
struct Done {
    held: Vec<Held>,
}

impl Actor {
    fn lock(&self, model: usize) -> std::sync::MutexGuard<'_, FileModel> {
        self.models[model].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn what(&self, plan: &dyn std::fmt::Debug) -> String {
        format!(
            "round {} actor {} ({:?}): {plan:?}",
            self.round.index, self.id, self.driver
        )
    }

    fn shutting_down(&self) -> bool {
        self.round.shutdown_requested.load(SeqCst)
    }

    /// Checks an error: allowed only once shutdown has begun, and then only
    /// the shutdown error or the kernel's answer to a cancel; an op started
    /// after shutdown finished must get the shutdown error itself.
    fn expect_shutdown_error(&self, e: &io::Error, started_after: bool, what: &str) {
        let is_shutdown = aioctx::is_shutdown(e);
        if started_after {
            bump(&self.round.stats.after_shutdown, 1);
            assert!(
                is_shutdown,
                "{what}: started after shutdown, failed with {e:?}"
            );
        }
        assert!(
            self.shutting_down()
                && (is_shutdown || matches!(e.raw_os_error(), Some(libc::ECANCELED | libc::EINTR))),
            "{what}: unexpected error {e:?} (shutdown requested: {})",
            self.shutting_down()
        );
        bump(&self.round.stats.shutdown_errors, 1);
    }

    /// An op that succeeded although it started after shutdown finished.
    fn expect_not_after_shutdown(&self, started_after: bool, what: &str) {
        assert!(
            !started_after,
            "{what}: succeeded though started after shutdown"
        );
    }

    /// Runs `future` to its fate: `Some(output)` if it resolved.
    async fn fate<F: Future>(&self, fate: Fate, future: F) -> Option<F::Output> {
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
    fn timer(&self, micros: u64) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let duration = Duration::from_micros(micros);
        if self.driver == Driver::Runtime {
            Box::pin(tokio::time::sleep(duration))
        } else {
            Box::pin(async move {
                let _ = self.ctx.timeout(duration).await;
            })
        }
    }

    fn draw_fate(&mut self) -> Fate {
        match self.dice.below(10) {
            0 => Fate::PollOnce,
            1 => Fate::Race(self.dice.range(0, 300)),
            _ => Fate::Keep,
        }
    }

    /// A range of `len` (shortened to fit) that this actor may write in
    /// model `m`.
    fn write_range(&mut self, m: usize, len: usize) -> (u64, usize) {
        let (lo, hi) = self.writable[m];
        let len = (len as u64).min(hi - lo);
        (self.dice.range(lo, hi - len), len as usize)
    }

    /// A range to read in model `m`: anywhere, past the end too.
    fn read_range(&mut self, m: usize, len: usize) -> (u64, usize) {
        let size = self.lock(m).must.len() as u64;
        (self.dice.range(0, size), len)
    }

    fn plan(&mut self) -> Plan {
        let file = self.dice.below(self.open.len() as u64) as usize;
        let m = self.open[file].model;
        match self.dice.weighted(&[14, 6, 14, 6, 6, 6, 3, 3, 4, 3, 6]) {
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
            _ => Plan::Nop,
        }
    }

    /// One step: an open, a close, a truncate, one data op, or a few data
    /// ops at once.
    async fn step(&mut self) {
        let started_after = self.round.shutdown_complete.load(SeqCst);
        if self.shutting_down() {
            self.budget = self.budget.min(STEPS_AFTER_SHUTDOWN);
        }
        if self.open.is_empty() {
            self.open_one(started_after).await;
            return;
        }
        match self.dice.weighted(&[6, 5, 2, 70, 10]) {
            0 if self.open.len() < 4 => self.open_one(started_after).await,
            1 => self.close_one(started_after).await,
            2 => self.set_len(started_after).await,
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

    fn spend(&mut self, n: u64) {
        self.budget = self.budget.saturating_sub(n);
        bump(&self.round.stats.ops, n);
        self.round.started.fetch_add(n, SeqCst);
        status().progress.fetch_add(1, SeqCst);
    }

    /// Holds returned buffers; re-checks the oldest as newer ones arrive.
    fn keep(&mut self, done: Done) {
        for held in done.held {
            if self.held.len() == QUARANTINE {
                let old = self.held.pop_front().unwrap();
                check_held(&old);
            }
            self.held.push_back(held);
        }
        status().progress.fetch_add(1, SeqCst);
    }

    async fn open_one(&mut self, started_after: bool) {
        let m = self.dice.below(self.models.len() as u64) as usize;
        let fate = self.draw_fate();
        self.spend(1);
        let what = self.what(&("open", m, fate));
        set_doing(self.id, what.clone());
        bump(&self.round.stats.opens, 1);
        let path = self.lock(m).path.clone();
        let open = async {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .open(&self.ctx, &path)
                .await
        };
        match self.fate(fate, open).await {
            Some(Ok(file)) => {
                self.expect_not_after_shutdown(started_after, &what);
                self.open.push(OpenFile { model: m, file });
            }
            Some(Err(e)) => self.expect_shutdown_error(&e, started_after, &what),
            None => {}
        }
    }

    async fn close_one(&mut self, started_after: bool) {
        let at = self.dice.below(self.open.len() as u64) as usize;
        let OpenFile { file, model } = self.open.swap_remove(at);
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
            self.expect_shutdown_error(&e, started_after, &what);
        }
    }

    /// Truncates or extends a private file; always kept, never raced with
    /// this actor's other ops on it, so the model stays exact.
    async fn set_len(&mut self, started_after: bool) {
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
        let result = self.fate(Fate::Keep, self.open[at].file.set_len(len)).await;
        // Whether it ran or not, nothing at or past `len` is known anymore.
        self.lock(m).truncated(len);
        match result.expect("kept") {
            Ok(()) => self.expect_not_after_shutdown(started_after, &what),
            Err(e) => self.expect_shutdown_error(&e, started_after, &what),
        }
    }

    async fn run(&self, plan: Plan, fate: Fate, started_after: bool) -> Done {
        let what = self.what(&(&plan, fate));
        let live = &self.round.live;
        match plan {
            Plan::Read {
                file,
                offset,
                len,
                exact,
                buf,
                prefill,
            } => {
                let prefill = prefill || self.round.init_bufs;
                let held_ok = fully_initialised(buf, prefill);
                macro_rules! read {
                    ($t:ty) => {
                        self.read(
                            file,
                            offset,
                            <$t>::target(len, prefill, live),
                            exact,
                            fate,
                            held_ok,
                            started_after,
                            &what,
                        )
                        .await
                    };
                }
                match buf {
                    BufKind::Vec => read!(Vec<u8>),
                    BufKind::Bytes => read!(bytes::BytesMut),
                    BufKind::Boxed => read!(Box<[u8]>),
                    BufKind::Aligned => read!(AlignedBuf),
                    BufKind::Tracked => read!(TrackedBuf),
                }
            }
            Plan::Write {
                file,
                offset,
                len,
                all,
                buf,
            } => {
                let data = pattern_bytes(self.file_id(file), offset, len);
                macro_rules! write {
                    ($t:ty) => {
                        self.write(
                            file,
                            offset,
                            <$t>::source(&data, live),
                            &data,
                            all,
                            fate,
                            started_after,
                            &what,
                        )
                        .await
                    };
                }
                match buf {
                    BufKind::Vec => write!(Vec<u8>),
                    BufKind::Bytes => write!(bytes::BytesMut),
                    BufKind::Boxed => write!(Box<[u8]>),
                    BufKind::Aligned => write!(AlignedBuf),
                    BufKind::Tracked => write!(TrackedBuf),
                }
            }
            Plan::Readv {
                file,
                offset,
                lens,
                tracked,
                prefill,
            } => {
                let prefill = prefill || self.round.init_bufs;
                if tracked {
                    let bufs = lens
                        .iter()
                        .map(|&l| TrackedBuf::target(l, prefill, live))
                        .collect();
                    self.readv(file, offset, bufs, fate, prefill, started_after, &what)
                        .await
                } else {
                    let bufs = lens.iter().map(|&l| vec_target(l, prefill)).collect();
                    self.readv(file, offset, bufs, fate, prefill, started_after, &what)
                        .await
                }
            }
            Plan::Writev {
                file,
                offset,
                lens,
                tracked,
            } => {
                let id = self.file_id(file);
                let mut at = offset;
                let parts: Vec<Vec<u8>> = lens
                    .iter()
                    .map(|&l| {
                        let part = pattern_bytes(id, at, l);
                        at += l as u64;
                        part
                    })
                    .collect();
                if tracked {
                    let bufs = parts
                        .iter()
                        .map(|p| TrackedBuf::new(p.clone(), live))
                        .collect();
                    self.writev(file, offset, bufs, &parts, fate, started_after, &what)
                        .await
                } else {
                    self.writev(
                        file,
                        offset,
                        parts.clone(),
                        &parts,
                        fate,
                        started_after,
                        &what,
                    )
                    .await
                }
            }
            Plan::Sync { file, data_only } => {
                let f = &self.open[file].file;
                let op = if data_only {
                    f.sync_data()
                } else {
                    f.sync_all()
                };
                self.unit(self.fate(fate, op).await, started_after, &what);
                Done::default()
            }
            Plan::Fallocate {
                file,
                offset,
                len,
                keep_size,
            } => {
                let mode = if keep_size {
                    libc::FALLOC_FL_KEEP_SIZE
                } else {
                    0
                };
                let op = self.open[file].file.fallocate(offset, len, mode);
                self.unit(self.fate(fate, op).await, started_after, &what);
                Done::default()
            }
            Plan::Metadata { file } => {
                let extent = self.lock(self.open[file].model).extent;
                match self.fate(fate, self.open[file].file.metadata()).await {
                    Some(Ok(meta)) => {
                        self.expect_not_after_shutdown(started_after, &what);
                        assert!(meta.is_file(), "{what}: not a regular file");
                        assert!(
                            meta.len() >= extent,
                            "{what}: size {} below the {extent} bytes written",
                            meta.len()
                        );
                    }
                    Some(Err(e)) => self.expect_shutdown_error(&e, started_after, &what),
                    None => {}
                }
                Done::default()
            }
            Plan::Timeout { micros } => {
                let op = self.ctx.timeout(Duration::from_micros(micros));
                self.unit(self.fate(fate, op).await, started_after, &what);
                Done::default()
            }
            Plan::Nop => {
                self.unit(self.fate(fate, self.ctx.nop()).await, started_after, &what);
                Done::default()
            }
        }
    }

    fn file_id(&self, file: usize) -> u64 {
        self.lock(self.open[file].model).id
    }

    fn unit(&self, out: Option<io::Result<()>>, started_after: bool, what: &str) {
        match out {
            Some(Ok(())) => self.expect_not_after_shutdown(started_after, what),
            Some(Err(e)) => self.expect_shutdown_error(&e, started_after, what),
            None => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn read<B: ReadTarget>(
        &self,
        file: usize,
        offset: u64,
        buf: B,
        exact: bool,
        fate: Fate,
        held_ok: bool,
        started_after: bool,
        what: &str,
    ) -> Done {
        let m = self.open[file].model;
        // Addresses as numbers: compared, never followed, and a raw pointer
        // held across an await would make the future `!Send`.
        let (ptr, total) = (buf.stable_ptr() as usize, buf.bytes_total());
        let snapshot = self.lock(m).snapshot(offset, total);
        let f = &self.open[file].file;
        let out = if exact {
            let out = self.fate(fate, f.read_exact_at(buf, offset)).await;
            out.map(|(result, buf)| (result.map(|()| total), buf))
        } else {
            self.fate(fate, f.read_at(buf, offset)).await
        };
        let Some((result, buf)) = out else {
            return Done::default();
        };
        assert_eq!(
            buf.stable_ptr() as usize,
            ptr,
            "{what}: a different buffer came back"
        );
        assert_eq!(buf.bytes_total(), total, "{what}: the buffer changed size");
        let init = buf.bytes_init();
        // How many bytes the read put at the buffer's start, where known.
        let count = match result {
            Ok(got) => {
                self.expect_not_after_shutdown(started_after, what);
                let count = if exact { total } else { got };
                assert!(count <= total, "{what}: read {count} into {total}");
                if B::TRACKS_INIT {
                    assert_eq!(init, count, "{what}: initialised length");
                }
                if count < total {
                    snapshot.check_eof(offset + count as u64, what);
                }
                Some(count)
            }
            Err(e) if exact && e.kind() == io::ErrorKind::UnexpectedEof => {
                self.expect_not_after_shutdown(started_after, what);
                B::TRACKS_INIT.then(|| {
                    snapshot.check_eof(offset + init as u64, what);
                    init
                })
            }
            Err(e) => {
                self.expect_shutdown_error(&e, started_after, what);
                // A read_exact_at cut short keeps what it read.
                B::TRACKS_INIT.then_some(init)
            }
        };
        let Some(count) = count else {
            return Done::default();
        };
        snapshot.check(&init_bytes(&buf)[..count], what);
        bump(&self.round.stats.bytes_read, count as u64);
        if !held_ok {
            return Done::default();
        }
        // SAFETY: pre-filled, so every byte is initialised.
        let all = unsafe { all_bytes(&buf) };
        if let Some(i) = all[count..].iter().position(|&b| b != CANARY) {
            panic!(
                "{what}: byte {} past the {count} read was written",
                count + i
            );
        }
        Done {
            held: vec![hold(buf, what.to_owned())],
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write<B: WriteSource>(
        &self,
        file: usize,
        offset: u64,
        buf: B,
        data: &[u8],
        all: bool,
        fate: Fate,
        started_after: bool,
        what: &str,
    ) -> Done {
        let m = self.open[file].model;
        let ptr = buf.stable_ptr() as usize;
        let f = &self.open[file].file;
        let out = if all {
            let out = self.fate(fate, f.write_all_at(buf, offset)).await;
            out.map(|(result, buf)| (result.map(|()| data.len()), buf))
        } else {
            self.fate(fate, f.write_at(buf, offset)).await
        };
        let Some((result, buf)) = out else {
            return Done::default();
        };
        assert_eq!(
            buf.stable_ptr() as usize,
            ptr,
            "{what}: a different buffer came back"
        );
        assert!(
            init_bytes(&buf) == data,
            "{what}: the written buffer changed"
        );
        match result {
            Ok(n) => {
                self.expect_not_after_shutdown(started_after, what);
                let n = if all { data.len() } else { n };
                assert!(n <= data.len(), "{what}: wrote {n} of {}", data.len());
                self.lock(m).written(offset, n);
                bump(&self.round.stats.bytes_written, n as u64);
            }
            Err(e) => self.expect_shutdown_error(&e, started_after, what),
        }
        Done::default()
    }

    #[allow(clippy::too_many_arguments)]
    async fn readv<B: ReadTarget>(
        &self,
        file: usize,
        offset: u64,
        bufs: Vec<B>,
        fate: Fate,
        prefill: bool,
        started_after: bool,
        what: &str,
    ) -> Done {
        let m = self.open[file].model;
        let shape: Vec<(usize, usize)> = bufs
            .iter()
            .map(|b| (b.stable_ptr() as usize, b.bytes_total()))
            .collect();
        let total: usize = shape.iter().map(|s| s.1).sum();
        let snapshot = self.lock(m).snapshot(offset, total);
        let Some((result, bufs)) = self
            .fate(fate, self.open[file].file.readv_at(bufs, offset))
            .await
        else {
            return Done::default();
        };
        let got_shape: Vec<(usize, usize)> = bufs
            .iter()
            .map(|b| (b.stable_ptr() as usize, b.bytes_total()))
            .collect();
        assert_eq!(got_shape, shape, "{what}: different buffers came back");
        let data: Vec<u8> = bufs.iter().flat_map(|b| init_bytes(b).to_vec()).collect();
        match result {
            Ok(n) => {
                self.expect_not_after_shutdown(started_after, what);
                assert_eq!(data.len(), n, "{what}: initialised lengths");
                if n < total {
                    snapshot.check_eof(offset + n as u64, what);
                }
            }
            Err(e) => {
                self.expect_shutdown_error(&e, started_after, what);
                assert!(data.is_empty(), "{what}: a failed read filled its buffers");
            }
        }
        snapshot.check(&data, what);
        bump(&self.round.stats.bytes_read, data.len() as u64);
        if !prefill {
            return Done::default();
        }
        let held = bufs
            .into_iter()
            .map(|b| {
                let n = b.bytes_init();
                // SAFETY: pre-filled, so every byte is initialised.
                let all = unsafe { all_bytes(&b) };
                assert!(
                    all[n..].iter().all(|&x| x == CANARY),
                    "{what}: written past its count"
                );
                hold(b, what.to_owned())
            })
            .collect();
        Done { held }
    }

    #[allow(clippy::too_many_arguments)]
    async fn writev<B: IoBuf + Sync>(
        &self,
        file: usize,
        offset: u64,
        bufs: Vec<B>,
        parts: &[Vec<u8>],
        fate: Fate,
        started_after: bool,
        what: &str,
    ) -> Done {
        let m = self.open[file].model;
        let ptrs: Vec<usize> = bufs.iter().map(|b| b.stable_ptr() as usize).collect();
        let Some((result, bufs)) = self
            .fate(fate, self.open[file].file.writev_at(bufs, offset))
            .await
        else {
            return Done::default();
        };
        let got: Vec<usize> = bufs.iter().map(|b| b.stable_ptr() as usize).collect();
        assert_eq!(got, ptrs, "{what}: different buffers came back");
        for (buf, part) in bufs.iter().zip(parts) {
            assert!(
                init_bytes(buf) == &part[..],
                "{what}: a written buffer changed"
            );
        }
        match result {
            Ok(n) => {
                self.expect_not_after_shutdown(started_after, what);
                let total: usize = parts.iter().map(Vec::len).sum();
                assert!(n <= total, "{what}: wrote {n} of {total}");
                self.lock(m).written(offset, n);
                bump(&self.round.stats.bytes_written, n as u64);
            }
            Err(e) => self.expect_shutdown_error(&e, started_after, what),
        }
        Done::default()
    }

    /// Ends the actor: re-checks the held buffers, drops its files.
    fn finish(mut self) {
        for held in self.held.drain(..) {
            check_held(&held);
        }
        set_doing(
            self.id,
            format!("round {} actor {}: done", self.round.index, self.id),
        );
    }
}

/// Cuts `lens` to add up to `total` (at least one non-empty part).
fn shorten(mut lens: Vec<usize>, total: usize) -> Vec<usize> {
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

fn check_held(held: &Held) {
    assert_eq!(
        (held.bytes)(),
        held.sum,
        "{}: the buffer changed after it was handed back",
        held.what
    );
}

// ---------------------------------------------------------------------------
// Driving actors.

fn run_actor(actor: Actor, rt: Arc<tokio::runtime::Runtime>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("stress-actor-{}", actor.id))
        .spawn(move || drive(actor, &rt))
        .expect("spawn an actor thread")
}

/// Runs up to this many steps as one future.
const CHUNK: u64 = 24;

async fn chunk(mut actor: Actor, steps: u64) -> Actor {
    for _ in 0..steps {
        if actor.budget == 0 {
            break;
        }
        actor.step().await;
    }
    actor
}

fn drive(mut actor: Actor, rt: &tokio::runtime::Runtime) {
    let ctx = actor.ctx.clone();
    let round = actor.round.clone();
    let id = actor.id;
    while actor.budget > 0 {
        let steps = actor.dice.range(1, CHUNK);
        let joined = match actor.driver {
            Driver::Thread => {
                for _ in 0..steps {
                    if actor.budget == 0 {
                        break;
                    }
                    if round.shutdown_requested.load(SeqCst) {
                        // Plain threads outlive the home thread: let their
                        // last steps start after shutdown has finished, and
                        // check that each fails fast.
                        while !round.shutdown_complete.load(SeqCst) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    ctx.block_on(actor.step());
                }
                Ok(actor)
            }
            Driver::Home => {
                bump(&round.stats.spawns, 1);
                ctx.spawn(chunk(actor, steps)).join()
            }
            Driver::Enter => {
                bump(&round.stats.enters, 1);
                ctx.enter(chunk(actor, steps)).join()
            }
            Driver::Runtime => match rt.block_on(rt.spawn(chunk(actor, steps))) {
                Ok(actor) => Ok(actor),
                Err(e) => match e.try_into_panic() {
                    Ok(payload) => std::panic::resume_unwind(payload),
                    Err(e) => panic!("actor {id}: runtime task failed: {e}"),
                },
            },
        };
        actor = match joined {
            Ok(actor) => actor,
            Err(JoinError::Panicked(payload)) => std::panic::resume_unwind(payload),
            Err(e) => {
                // The home runtime dropped the future: only at shutdown.
                assert!(
                    round.shutdown_requested.load(SeqCst),
                    "round {} actor {id}: {e} without a shutdown",
                    round.index
                );
                set_doing(
                    id,
                    format!("round {} actor {id}: dropped by shutdown", round.index),
                );
                return;
            }
        };
    }
    actor.finish();
}

struct RoundPlan {
    index: u64,
    seed: u64,
    ops: u64,
    shutdown: bool,
}

/// One context, its actors and files, from start to the final checks.
fn run_round(plan: &RoundPlan, config: &Config, totals: &Stats) {
    let mut dice = Dice::new(plan.seed);
    let entries = [4, 8, 32, 256][dice.below(4) as usize];
    let Some(ctx) = support::build(Context::builder().entries(entries)) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "aioctx-stress-{}-{}",
        std::process::id(),
        plan.index
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let round = Arc::new(Round {
        index: plan.index,
        shutdown_requested: AtomicBool::new(false),
        shutdown_complete: AtomicBool::new(false),
        started: AtomicU64::new(0),
        live: Arc::new(AtomicUsize::new(0)),
        init_bufs: config.init_bufs,
        stats: Stats::default(),
    });
    let drivers = [
        Driver::Thread,
        Driver::Thread,
        Driver::Home,
        Driver::Home,
        Driver::Enter,
        Driver::Runtime,
        Driver::Runtime,
    ];
    let actors = drivers.len() as u64;
    let shared = Arc::new(Mutex::new(FileModel::new(
        1000 + plan.index,
        dir.join("shared"),
        SLICE * actors,
    )));
    let mut models = vec![shared.clone()];
    let mut handles = Vec::new();
    for (id, &driver) in drivers.iter().enumerate() {
        let private: Vec<Arc<Mutex<FileModel>>> = (0..2)
            .map(|k| {
                let file_id = plan.index * 100 + id as u64 * 2 + k;
                Arc::new(Mutex::new(FileModel::new(
                    file_id,
                    dir.join(format!("actor{id}-{k}")),
                    FILE_SIZE,
                )))
            })
            .collect();
        models.extend(private.iter().cloned());
        let mut actor_models = private;
        actor_models.push(shared.clone());
        let writable = vec![
            (0, FILE_SIZE),
            (0, FILE_SIZE),
            (id as u64 * SLICE, (id as u64 + 1) * SLICE),
        ];
        let actor = Actor {
            id,
            driver,
            ctx: ctx.clone(),
            round: round.clone(),
            dice: Dice::new(plan.seed ^ (id as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)),
            budget: plan.ops / actors,
            models: actor_models,
            writable,
            open: Vec::new(),
            held: VecDeque::new(),
        };
        handles.push(run_actor(actor, rt.clone()));
    }

    let stopper = plan.shutdown.then(|| {
        let at = dice.range(plan.ops / 5, plan.ops * 4 / 5);
        let (ctx, round) = (ctx.clone(), round.clone());
        std::thread::spawn(move || {
            while round.started.load(SeqCst) < at {
                std::thread::sleep(Duration::from_micros(200));
            }
            round.shutdown_requested.store(true, SeqCst);
            futures::executor::block_on(ctx.shutdown());
            round.shutdown_complete.store(true, SeqCst);
        })
    });

    for handle in handles {
        if let Err(payload) = handle.join() {
            std::panic::resume_unwind(payload);
        }
    }
    if let Some(stopper) = stopper {
        stopper.join().unwrap();
    }
    if !plan.shutdown && ctx.backend() == "io_uring" {
        // Dropped ops are still the driver's: every SQE gets its CQE.
        support::eventually("every submitted SQE's CQE is reaped", || {
            let m = ctx.metrics();
            m.cqes_reaped >= m.sqes_submitted
        });
    }
    let metrics = ctx.metrics();
    drop(ctx);
    drop(rt);
    support::eventually("every buffer an op took is dropped", || {
        round.live.load(SeqCst) == 0
    });

    // Read the files back past the crate: each byte 0 or its pattern, and
    // its pattern where a kept write said so.
    for model in &models {
        let model = model.lock().unwrap();
        let data = match std::fs::read(&model.path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("reading {:?}: {e}", model.path),
        };
        let what = format!("round {} final read of {:?}", plan.index, model.path);
        Snapshot {
            file: model.id,
            offset: 0,
            must: model.must.clone(),
            extent: model.extent,
        }
        .check(&data, &what);
        assert!(
            data.len() as u64 >= model.extent,
            "{what}: {} bytes, but {} were written",
            data.len(),
            model.extent
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "stress round {}: {} ops, entries {entries}, shutdown {}, {} dropped, {} shutdown errors, backend {} ({} submits, {} backlogged, {} cancels)",
        plan.index,
        round.stats.ops.load(SeqCst),
        plan.shutdown,
        round.stats.dropped.load(SeqCst),
        round.stats.shutdown_errors.load(SeqCst),
        metrics.backend,
        metrics.submits,
        metrics.backlogged,
        metrics.cancels_sent,
    );
    totals.add(&round.stats);
}

#[test]
fn stress_random_ops() {
    let config = Config::from_env();
    report_seed_on_panic(&config);
    eprintln!("stress: {}", config.replay_line());

    // One full lifecycle first: process-wide lazy state opens fds of its own
    // the first time (the test harness, Tokio's and std's machinery).
    let Some(ctx) = support::context() else {
        return;
    };
    drop(ctx);
    drop(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap(),
    );
    let fds_before = support::open_fds();
    start_watchdog(&config);

    let started = Instant::now();
    let mut dice = Dice::new(config.seed);
    let totals = Stats::default();
    for index in 0..config.rounds {
        // The first round runs to the end, the last shuts down midway, and
        // the others are drawn.
        let shutdown = match index {
            0 => false,
            _ if index == config.rounds - 1 => true,
            _ => dice.chance(35),
        };
        let plan = RoundPlan {
            index,
            seed: dice.0.next(),
            ops: config.ops / config.rounds,
            shutdown,
        };
        run_round(&plan, &config, &totals);
        support::eventually("the process's fd count is back where it started", || {
            support::open_fds() == fds_before
        });
    }
    let s = &totals;
    eprintln!(
        "stress: {} ops in {:.1?} over {} rounds: {} kept, {} dropped ({} races won by the op), \
         {} opens, {} closes, {} enters, {} spawns, {} shutdown errors ({} of ops started after it), \
         {} KiB written, {} KiB read",
        s.ops.load(SeqCst),
        started.elapsed(),
        config.rounds,
        s.kept.load(SeqCst),
        s.dropped.load(SeqCst),
        s.raced_won.load(SeqCst),
        s.opens.load(SeqCst),
        s.closes.load(SeqCst),
        s.enters.load(SeqCst),
        s.spawns.load(SeqCst),
        s.shutdown_errors.load(SeqCst),
        s.after_shutdown.load(SeqCst),
        s.bytes_written.load(SeqCst) / 1024,
        s.bytes_read.load(SeqCst) / 1024,
    );
}
