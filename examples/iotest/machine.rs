//! The emulated modes (`kick`, `no-kick`, `no-kick-busy`): a machine whose main loop is an aioctx
//! [`Context`], and a disk controller whose doorbell is an MMIO exit handled inline on the vCPU
//! thread, as QEMU's AHCI emulation handles it.
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
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use aioctx::Context;
use aioctx::buf::AlignedBuf;
use aioctx::fs::{File, OpenOptions};
use io_uring::{opcode, types};

use super::{Config, Disk, Error, GuestRun, Mode, Workload};

/// How often the busy mode's unrelated traffic wakes the main loop (plus the sleep's slack).
const CHATTER_PERIOD: Duration = Duration::from_micros(100);

/// The main context's metrics over one run, as the report shows them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ContextStats {
    /// Reads queued from a thread other than the home thread: every read, in these modes.
    pub(crate) foreign_ops: u64,
    /// Foreign pushes that woke the sleeping main loop.
    pub(crate) kicks_sent: u64,
    /// Foreign pushes that needed no wake: the loop was awake or already woken.
    pub(crate) kicks_coalesced: u64,
    /// Wakes the no-kick modes skipped: each is a doorbell left waiting for another reason to turn.
    pub(crate) kicks_suppressed: u64,
    /// How long the reads' SQEs waited between push and `io_uring_enter`: 50th percentile (the
    /// context times foreign pushes only, so the timer's and the chatter's own ops do not count).
    pub(crate) dwell_p50: Duration,
    pub(crate) dwell_p99: Duration,
    pub(crate) dwell_max: Duration,
    /// Housekeeping timer ticks during the run.
    pub(crate) timer_ticks: u64,
}

/// Runs the guest once against a fresh machine in `mode` and returns what the guest measured and
/// what the main context saw.
pub(crate) fn run(
    mode: Mode,
    config: &Config,
    workload: &Workload,
    image: &Path,
) -> Result<(GuestRun, ContextStats), Error> {
    let (machine, interrupts) = Machine::start(mode, config, image)?;
    let before = machine.main_context.metrics();
    let ticks_before = machine.timer_ticks.load(Ordering::Relaxed);
    let guest = super::on_vcpu_thread(|| {
        let mut disk = EmulatedDisk {
            machine: &machine,
            interrupts,
            free_buffers: (0..workload.batch)
                .map(|_| AlignedBuf::with_capacity(workload.chunk))
                .collect(),
            chunk: workload.chunk,
            // Even without the kick a read waits at most one timer period; past a few, the
            // main loop is not turning at all.
            interrupt_deadline: config.timer * 4 + Duration::from_secs(10),
        };
        super::run_guest(workload, &mut disk)
    })?;
    let after = machine.main_context.metrics();
    // Relaxed: a statistic read after the run, not ordered with anything else.
    let timer_ticks = machine.timer_ticks.load(Ordering::Relaxed) - ticks_before;
    // The context is new for this run, so its dwell histogram holds exactly this run's reads.
    let stats = ContextStats {
        foreign_ops: after.ops_foreign - before.ops_foreign,
        kicks_sent: after.kicks_sent - before.kicks_sent,
        kicks_coalesced: after.kicks_coalesced - before.kicks_coalesced,
        kicks_suppressed: after.kicks_suppressed - before.kicks_suppressed,
        dwell_p50: after.dwell.p50,
        dwell_p99: after.dwell.p99,
        dwell_max: after.dwell.max,
        timer_ticks,
    };
    Ok((guest, stats))
}

/// The emulated machine: the main context, the big lock and the disk controller.
///
/// Fields drop in order: the chatter stops before the main context shuts down.
#[derive(Debug)]
struct Machine {
    /// Present in `no-kick-busy` only; stops its writer thread when dropped.
    _chatter: Option<SocketChatter>,
    /// QEMU's main AioContext; dropping the machine shuts it down and joins its home thread.
    main_context: Context,
    /// The BQL analogue: held by a vCPU thread for a whole MMIO exit and by the main loop while
    /// it raises an interrupt, so device emulation never runs on two threads at once.
    bql: Arc<Mutex<()>>,
    controller: DiskController,
    /// Counted by the housekeeping timer task.
    timer_ticks: Arc<AtomicU64>,
}

impl Machine {
    /// Starts the main loop, its housekeeping timer and (for `no-kick-busy`) the chatter, and
    /// opens the image on the home thread. Returns the receiving end of the interrupt line.
    fn start(
        mode: Mode,
        config: &Config,
        image: &Path,
    ) -> Result<(Self, Receiver<Interrupt>), Error> {
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
        let bql = Arc::new(Mutex::new(()));
        let (to_vcpu, interrupts) = mpsc::channel();
        let machine = Machine {
            main_context,
            controller: DiskController {
                image: Arc::new(image),
                interrupt_line: InterruptLine {
                    bql: Arc::clone(&bql),
                    to_vcpu,
                },
            },
            bql,
            timer_ticks,
            _chatter: chatter,
        };
        Ok((machine, interrupts))
    }

    /// What a vCPU thread does when the guest writes the doorbell register: the exit runs
    /// inline, under the BQL, with the thread bound to the main context (QEMU's
    /// `qemu_get_current_aio_context()` returns the main context while the BQL is held).
    fn mmio_exit(&self, requests: Vec<ReadRequest>) {
        let _bql = self.bql.lock().unwrap_or_else(PoisonError::into_inner);
        let _bound = self.main_context.bind();
        self.controller.handle_doorbell(requests);
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

/// One read the guest asked for, with the buffer the device reads into.
#[derive(Debug)]
struct ReadRequest {
    offset: u64,
    buf: AlignedBuf,
}

/// A completion, as the interrupt hands it to the guest.
#[derive(Debug)]
struct Interrupt {
    offset: u64,
    result: io::Result<usize>,
    buf: AlignedBuf,
}

/// The device model: it owns the image and raises an interrupt per finished read.
#[derive(Debug)]
struct DiskController {
    image: Arc<File>,
    interrupt_line: InterruptLine,
}

impl DiskController {
    /// The doorbell handler, deep in the device model: it finds the context through
    /// [`aioctx::current`], as QEMU's block layer does, and enters one read per request. Each
    /// read's SQE is pushed from this (the vCPU) thread; its completion runs on the home thread.
    fn handle_doorbell(&self, requests: Vec<ReadRequest>) {
        let context =
            aioctx::current().expect("an MMIO exit runs with the vCPU bound to the main context");
        for ReadRequest { offset, buf } in requests {
            let image = Arc::clone(&self.image);
            let interrupt_line = self.interrupt_line.clone();
            // Detached: the interrupt, not the handle, reports the completion.
            drop(context.enter(async move {
                let (result, buf) = image.read_at(buf, offset).await;
                interrupt_line.raise(Interrupt {
                    offset,
                    result,
                    buf,
                });
            }));
        }
    }
}

/// The wire from the controller to the vCPU: completions are raised under the BQL, as QEMU's
/// completion callbacks run with it held.
#[derive(Clone, Debug)]
struct InterruptLine {
    bql: Arc<Mutex<()>>,
    to_vcpu: Sender<Interrupt>,
}

impl InterruptLine {
    fn raise(&self, interrupt: Interrupt) {
        let _bql = self.bql.lock().unwrap_or_else(PoisonError::into_inner);
        // The guest stops listening only when its run has failed; nothing is left to tell.
        let _ = self.to_vcpu.send(interrupt);
    }
}

/// The disk as the guest on the vCPU thread sees it.
struct EmulatedDisk<'machine> {
    machine: &'machine Machine,
    interrupts: Receiver<Interrupt>,
    /// The guest's DMA buffers not lent to the device.
    free_buffers: Vec<AlignedBuf>,
    chunk: usize,
    /// How long to wait for one interrupt before declaring the main loop stuck.
    interrupt_deadline: Duration,
}

impl Disk for EmulatedDisk<'_> {
    fn submit(&mut self, offsets: &[u64]) -> Result<(), Error> {
        let requests = offsets
            .iter()
            .map(|&offset| ReadRequest {
                offset,
                buf: self
                    .free_buffers
                    .pop()
                    .expect("the guest never has more than one batch in flight"),
            })
            .collect();
        self.machine.mmio_exit(requests);
        Ok(())
    }

    fn complete_one(&mut self, consume: impl FnOnce(u64, &[u8])) -> Result<(), Error> {
        let Interrupt {
            offset,
            result,
            buf,
        } = self
            .interrupts
            .recv_timeout(self.interrupt_deadline)
            .map_err(|err| Error::Io {
                context: "waiting for the disk's interrupt".to_owned(),
                source: match err {
                    RecvTimeoutError::Timeout => io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no completion within {:?}: the main loop never submitted the read",
                            self.interrupt_deadline
                        ),
                    ),
                    RecvTimeoutError::Disconnected => {
                        io::Error::other("the main loop dropped the read")
                    }
                },
            })?;
        let outcome = match result {
            Ok(read) if read == self.chunk => {
                consume(offset, &buf[..read]);
                Ok(())
            }
            Ok(read) => Err(Error::short_read(offset, read, self.chunk)),
            Err(source) => Err(Error::Io {
                context: format!("reading at offset {offset}"),
                source,
            }),
        };
        self.free_buffers.push(buf);
        outcome
    }
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
