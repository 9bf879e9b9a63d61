//! Helpers shared by the integration tests: building contexts and pools, counting open
//! fds, and skipping (with a printed reason) where the machine lacks io_uring; [`trace`]
//! records what the crate logs, for the `tracing_*` tests.
//!
//! Each test declares this module `pub mod support;`: its items are then the test crate's
//! public items, as a helper library's would be, so a test that uses only some of them is not
//! told the others are dead code. (A helper crate would say the same, but the aioctx package's
//! tests must build from the published package, which carries no path dependencies.)

pub mod trace;

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use aioctx::fs::{File, OpenOptions};
use aioctx::{Backend, Builder, Context, Pool};

/// A context with the default configuration, or `None` (after printing why)
/// when this machine cannot set up io_uring at all.
pub fn context() -> Option<Context> {
    build(Context::builder())
}

/// The backend the suite runs on: `AIOCTX_BACKEND=fallback` forces the
/// thread-pool fallback, `uring` forbids it; unset means `Auto`.
pub fn backend() -> Backend {
    match std::env::var("AIOCTX_BACKEND").as_deref() {
        Ok("fallback") => Backend::Fallback,
        Ok("uring") => Backend::Uring,
        Ok("auto") | Err(_) => Backend::Auto,
        Ok(other) => panic!("unknown AIOCTX_BACKEND {other:?}"),
    }
}

/// Whether `ctx` runs on io_uring; tests of ring mechanics (kicks, SQ
/// backlog, cancel SQEs) print why and skip otherwise.
pub fn on_ring(ctx: &Context) -> bool {
    let on_ring = ctx.backend() == "io_uring";
    if !on_ring {
        eprintln!(
            "skipping: tests ring mechanics, context runs on {}",
            ctx.backend()
        );
    }
    on_ring
}

/// Builds `builder` on the suite's backend, skipping the test when io_uring
/// is unavailable here.
pub fn build(builder: Builder) -> Option<Context> {
    match builder.backend(backend()).build() {
        Ok(ctx) => Some(ctx),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            eprintln!("skipping: io_uring is unavailable on this machine ({e})");
            None
        }
        Err(e) => panic!("building a context failed: {e}"),
    }
}

/// A pool of `members` on the suite's backend, skipping the test when
/// io_uring is unavailable here.
pub fn pool(members: usize) -> Option<Pool> {
    match Pool::builder()
        .contexts(members)
        .context_builder(Context::builder().backend(backend()))
        .build()
    {
        Ok(pool) => Some(pool),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            eprintln!("skipping: io_uring is unavailable on this machine ({e})");
            None
        }
        Err(e) => panic!("building a pool failed: {e}"),
    }
}

/// Builds `builder` on the suite's backend with the calling thread as home,
/// skipping the test when io_uring is unavailable here.
pub fn build_local(builder: Builder) -> Option<aioctx::LocalContext> {
    match builder.backend(backend()).build_local() {
        Ok(local) => Some(local),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            eprintln!("skipping: io_uring is unavailable on this machine ({e})");
            None
        }
        Err(e) => panic!("building a local context failed: {e}"),
    }
}

/// Opens (creating it) `path` on `ctx` for reading and writing.
///
/// # Panics
///
/// If the open fails.
pub async fn open_rw(ctx: &Context, path: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open(ctx, path)
        .await
        .unwrap()
}

/// Number of fds open in this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Polls `condition` until it holds; panics with `what` after a generous
/// bound. A liveness guard against hangs, not a timing assertion.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("never happened: {what}");
}

/// Yields to the runtime (up to 1,000 times) until `condition` holds, for a
/// task that shares its thread with a driver; returns whether it held. A
/// bound against hangs, counted in turns, not time.
pub async fn yields_until(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if condition() {
            return true;
        }
        tokio::task::yield_now().await;
    }
    condition()
}

/// A pipe: its read end as an fd, its write end as a file to write into.
pub fn pipe() -> (OwnedFd, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fresh fds into the array on success.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh and owned by nobody else.
    unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// `future`'s output; panics, saying `what`, if it has not come within a
/// generous bound (a liveness guard against a lost op, not a timing
/// assertion).
pub async fn resolves<F: std::future::Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} never completed"))
}

/// A unique path under the temp dir, removed when dropped.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    pub fn new(tag: &str) -> TempPath {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempPath(std::env::temp_dir().join(format!("aioctx-test-{}-{tag}-{n}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// The next number of the stream.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

/// A buffer that records when it is freed: what a test of invariant 4 (the
/// kernel never writes freed memory) lends an op, to see when the op gives
/// it back.
pub struct Tracked {
    inner: Vec<u8>,
    freed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Tracked {
    /// An empty buffer of `capacity` bytes, and the flag its drop sets.
    pub fn new(capacity: usize) -> (Tracked, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let freed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let buf = Tracked {
            inner: Vec::with_capacity(capacity),
            freed: freed.clone(),
        };
        (buf, freed)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.freed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

// SAFETY: delegates to Vec<u8>, whose heap block is stable.
unsafe impl aioctx::buf::IoBuf for Tracked {
    fn stable_ptr(&self) -> *const u8 {
        self.inner.stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.inner.bytes_init()
    }
    fn bytes_total(&self) -> usize {
        self.inner.bytes_total()
    }
}

// SAFETY: delegates to Vec<u8>.
unsafe impl aioctx::buf::IoBufMut for Tracked {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.inner.stable_mut_ptr()
    }
    unsafe fn set_init(&mut self, pos: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.inner.set_init(pos) }
    }
}
