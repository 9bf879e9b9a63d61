//! The emulated machine of the `kick`, `no-kick` and `no-kick-busy` modes, for either guest: a
//! main loop that is an aioctx [`Context`] with QEMU's housekeeping timer, the big lock, and the
//! disk image opened on the main loop. A guest's disk controller runs its doorbell through
//! [`Machine::mmio_exit`], inline on the vCPU thread, as QEMU's AHCI emulation does.
//!
//! ```text
//!  vCPU thread (the guest)                    main loop (the context's home thread)
//!  ───────────────────────                    ─────────────────────────────────────
//!  sleep; ring the doorbell = MMIO exit:      housekeeping timer: a ring op every --timer-ms
//!    lock the BQL, bind to the main context   [no-kick-busy: socket readiness CQEs, ~100 us]
//!    per read: current().enter(read_at) ─push─► inbox ─kick, or the next turn─► io_uring_enter
//!    unlock the BQL                            CQE ─► the read's future resumes here:
//!  wait for the interrupt ◄───────────────────── lock the BQL, raise the interrupt
//!  checksum; sleep
//! ```
//!
//! Without the kick the driver submits only when it turns for a reason of its own (a completion,
//! a home-thread op), so every doorbell waits for the next timer tick: the seed's 20x slowdown.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use aioctx::fs::{File, OpenOptions};
use aioctx::{Context, Metrics};
use io_uring::{opcode, types};

use super::{Config, Error, Mode};

/// How often the busy mode's unrelated traffic wakes the main loop (plus the sleep's slack).
const CHATTER_PERIOD: Duration = Duration::from_micros(100);

/// The main context's metrics over one run, as the report shows them.
#[derive(Clone, Copy, Debug)]
pub struct ContextStats {
    /// Reads queued from a thread other than the home thread: every read, in these modes.
    pub foreign_ops: u64,
    /// Foreign pushes that woke the sleeping main loop.
    pub kicks_sent: u64,
    /// Foreign pushes that needed no wake: the loop was awake or already woken.
    pub kicks_coalesced: u64,
    /// Wakes the no-kick modes skipped: each is a doorbell left waiting for another reason to turn.
    pub kicks_suppressed: u64,
    /// How long the reads' SQEs waited between push and `io_uring_enter`: 50th percentile (the
    /// context times foreign pushes only, so the timer's and the chatter's own ops do not count).
    pub dwell_p50: Duration,
    pub dwell_p99: Duration,
    pub dwell_max: Duration,
    /// Housekeeping timer ticks during the run.
    pub timer_ticks: u64,
}

/// The emulated machine: the main context, the big lock and the disk image.
///
/// Fields drop in order: the chatter stops before the main context shuts down.
#[derive(Debug)]
pub struct Machine {
    /// Present in `no-kick-busy` only; stops its writer thread when dropped.
    _chatter: Option<SocketChatter>,
    /// QEMU's main AioContext; dropping the machine shuts it down and joins its home thread,
    /// after cancelling and draining every read still in flight.
    pub main_context: Context,
    /// The BQL analogue: held by a vCPU thread for a whole MMIO exit and by the main loop while
    /// it raises an interrupt, so device emulation never runs on two threads at once.
    pub bql: Arc<Mutex<()>>,
    /// The disk image, opened on the main loop.
    pub image: Arc<File>,
    /// Counted by the housekeeping timer task.
    timer_ticks: Arc<AtomicU64>,
}

/// The main context's counters when a run started.
#[derive(Clone, Debug)]
pub struct Baseline {
    metrics: Metrics,
    timer_ticks: u64,
}

impl Machine {
    /// Starts the main loop, its housekeeping timer and (for `no-kick-busy`) the chatter, and
    /// opens the image on the home thread.
    pub fn start(mode: Mode, config: &Config, image: &Path) -> Result<Self, Error> {
        let main_context = Context::builder()
            .entries(256)
            .thread_name("iotest-main-loop")
            .kick_foreign_pushes(mode == Mode::Kick)
            .build()
            .map_err(|source| match source.raw_os_error() {
                Some(libc::ENOSYS | libc::EPERM) => Error::RingUnavailable(source),
                _ => Error::Io {
                    context: "cannot start the main context".to_owned(),
                    source,
                },
            })?;
        let timer_ticks = Arc::new(AtomicU64::new(0));
        let ticks = Arc::clone(&timer_ticks);
        let period = config.timer;
        // Detached: it ends when the context shuts down with the machine.
        drop(main_context.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                // Each tick's housekeeping is a ring op, so the driver turns and takes whatever
                // the inbox holds: without the kick, that is when the vCPU's reads go in, as
                // QEMU's main loop submits only in the iteration its timer wakes.
                let Some(context) = aioctx::current() else {
                    return;
                };
                let housekeeping = context.nop();
                drop(context);
                if housekeeping.await.is_err() {
                    return;
                }
                // Relaxed: a statistic, read after the run.
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        }));
        let chatter = match mode {
            Mode::NoKickBusy => Some(SocketChatter::start(&main_context)?),
            _ => None,
        };
        let image = open_image(&main_context, image, config.direct_io)?;
        Ok(Machine {
            main_context,
            bql: Arc::new(Mutex::new(())),
            image: Arc::new(image),
            timer_ticks,
            _chatter: chatter,
        })
    }

    /// The counters now, to subtract at the end of a run.
    pub fn baseline(&self) -> Baseline {
        Baseline {
            metrics: self.main_context.metrics(),
            // Relaxed: a statistic read between runs, not ordered with anything else.
            timer_ticks: self.timer_ticks.load(Ordering::Relaxed),
        }
    }

    /// The main context's view of the run since `before`.
    pub fn stats_since(&self, before: &Baseline) -> ContextStats {
        let after = self.main_context.metrics();
        let before_metrics = &before.metrics;
        // The context is new for each run, so its dwell histogram holds exactly this run's
        // reads.
        ContextStats {
            foreign_ops: after.ops_foreign - before_metrics.ops_foreign,
            kicks_sent: after.kicks_sent - before_metrics.kicks_sent,
            kicks_coalesced: after.kicks_coalesced - before_metrics.kicks_coalesced,
            kicks_suppressed: after.kicks_suppressed - before_metrics.kicks_suppressed,
            dwell_p50: after.dwell.p50,
            dwell_p99: after.dwell.p99,
            dwell_max: after.dwell.max,
            // Relaxed: as in `baseline`.
            timer_ticks: self.timer_ticks.load(Ordering::Relaxed) - before.timer_ticks,
        }
    }

    /// What a vCPU thread does when the guest writes the doorbell register: `handle` runs
    /// inline, under the BQL, with the thread bound to the main context (QEMU's
    /// `qemu_get_current_aio_context()` returns the main context while the BQL is held).
    pub fn mmio_exit<T>(&self, handle: impl FnOnce() -> T) -> T {
        let _bql = self.bql.lock().unwrap_or_else(PoisonError::into_inner);
        let _bound = self.main_context.bind();
        handle()
    }
}

/// Opens the image from the home thread, so the open is a local op that needs no kick in the
/// no-kick modes.
fn open_image(context: &Context, image: &Path, direct_io: bool) -> Result<File, Error> {
    let opener = context.clone();
    let path = image.to_owned();
    let open_error = |source| Error::Io {
        context: format!("cannot open {} on the main context", image.display()),
        source,
    };
    context
        .spawn(async move {
            let mut options = OpenOptions::new();
            options.read(true).direct(direct_io);
            options.open(&opener, &path).await
        })
        .join()
        .map_err(|join_error| open_error(io::Error::other(join_error.to_string())))?
        .map_err(open_error)
}

/// Unrelated I/O that keeps the main loop awake, like the seed's busy ssh session: a side thread
/// writes a byte to a socket every [`CHATTER_PERIOD`], and a task on the home thread watches the
/// socket through the ring (`IORING_OP_POLL_ADD`, as QEMU's fdmon-io_uring watches its fds).
/// Every readiness CQE makes the driver turn, which submits whatever the vCPU queued.
#[derive(Debug)]
struct SocketChatter {
    stop: Arc<AtomicBool>,
    writer: Option<thread::JoinHandle<()>>,
}

impl SocketChatter {
    fn start(context: &Context) -> Result<Self, Error> {
        let socket_error = |source| Error::Io {
            context: "cannot set up the busy mode's socket".to_owned(),
            source,
        };
        let (writer_end, reader_end) = UnixStream::pair().map_err(socket_error)?;
        reader_end.set_nonblocking(true).map_err(socket_error)?;
        // Non-blocking, so a main loop that stops reading cannot wedge the writer's shutdown.
        writer_end.set_nonblocking(true).map_err(socket_error)?;
        // Detached: it ends when the writer hangs up, or with the context.
        drop(context.spawn(async move {
            let socket = Arc::new(reader_end);
            let mut sink = [0u8; 256];
            loop {
                let Some(context) = aioctx::current() else {
                    return;
                };
                let poll_in =
                    opcode::PollAdd::new(types::Fd(socket.as_raw_fd()), libc::POLLIN as u32)
                        .build();
                // SAFETY: the SQE names only the socket's fd, and the socket travels with the op
                // as its resource until the CQE arrives.
                let readable = unsafe { context.submit_raw(poll_in, Arc::clone(&socket)) };
                drop(context);
                if readable.await.result.is_err() {
                    return;
                }
                loop {
                    match (&*socket).read(&mut sink) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return,
                    }
                }
            }
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let writer = thread::Builder::new()
            .name("iotest-chatter".to_owned())
            .spawn(move || {
                let mut writer_end = writer_end;
                // Relaxed: the flag carries no data; the writer only has to see it eventually.
                while !stopped.load(Ordering::Relaxed) {
                    match io::Write::write(&mut writer_end, &[1]) {
                        Err(err) if err.kind() != io::ErrorKind::WouldBlock => return,
                        _ => thread::sleep(CHATTER_PERIOD),
                    }
                }
            })
            .map_err(socket_error)?;
        Ok(Self {
            stop,
            writer: Some(writer),
        })
    }
}

impl Drop for SocketChatter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}
