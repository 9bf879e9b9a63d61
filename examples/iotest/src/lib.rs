//! The workload of QEMU commit 2ae361ef1d as plain functions: a guest on a vCPU thread reads a
//! disk image in batches of chunk-sized reads, sleeping before each batch submit and after each
//! completion, and checksums what it read. The guest is real x86 code under KVM
//! (`kvm_run.rs`), or a Rust function on a plain thread where KVM is missing
//! (`thread_guest.rs`); see [`Guest`]. Each [`Mode`] is a different path from the guest's
//! doorbell to the kernel. [`run`] runs the chosen modes, interleaved round by round, and
//! returns one [`ModeReport`] per mode with the median run.
//!
//! The program, `examples/iotest.rs`, only parses flags and prints the table (each mode's JSON
//! line is `report.rs`'s, the SVG [`plot`]'s); this package's tests and the benchmark harness's
//! `seed` rows call [`run`] as it does, so everything a run needs is reachable from it.

mod backing;
mod blockdev;
mod direct;
mod dma;
mod kvm_guest;
mod kvm_run;
mod kvm_vm;
mod machine;
pub mod plot;
mod report;
mod thread_guest;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::thread;
use std::time::Duration;

pub use self::kvm_run::KvmStats;
pub use self::machine::ContextStats;
pub use self::report::{ModeReport, RunRecord};

/// One MiB, the unit of the sizes below.
pub const MIB: u64 = 1 << 20;
/// Bytes a run reads by default: the seed's 128 MB.
pub const DEFAULT_SIZE: u64 = 128 * MIB;
/// Bytes a `--quick` run reads.
pub const QUICK_SIZE: u64 = 8 * MIB;

/// A path from the guest's doorbell to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The vCPU thread submits to a private ring and waits on it: the floor.
    Direct,
    /// The MMIO exit queues the read into the main context, which is kicked awake: the fix.
    Kick,
    /// As `Kick` with the foreign-push kick disabled: the read waits for the next timer tick.
    NoKick,
    /// As `NoKick`, with unrelated socket traffic keeping the main loop awake: the bug hidden.
    NoKickBusy,
}

impl Mode {
    /// Every mode, in the order runs and reports use.
    pub const ALL: [Mode; 4] = [Mode::Direct, Mode::Kick, Mode::NoKick, Mode::NoKickBusy];

    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Kick => "kick",
            Mode::NoKick => "no-kick",
            Mode::NoKickBusy => "no-kick-busy",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.name() == name)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "unknown mode {name:?}: expected kick, no-kick, no-kick-busy or direct"
                ))
            })
    }
}

/// What runs the guest program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// KVM when `/dev/kvm` opens and a VM can be created, else the thread guest.
    Auto,
    /// x86-64 code on one KVM vCPU; its doorbell is a real MMIO exit.
    Kvm,
    /// A Rust function on a plain std thread standing in for the vCPU.
    Thread,
}

impl Guest {
    /// The name the JSON and the flags use.
    pub fn name(self) -> &'static str {
        match self {
            Guest::Auto => "auto",
            Guest::Kvm => "kvm",
            Guest::Thread => "thread",
        }
    }

    /// Picks a concrete guest: `Auto` becomes `Kvm` if this machine can run a VM, else
    /// `Thread`. Returns the choice and why, in words.
    ///
    /// # Errors
    ///
    /// [`Error::KvmUnavailable`] when `Kvm` was asked for and cannot run.
    pub fn resolve(self) -> Result<(Guest, String), Error> {
        match self {
            Guest::Thread => Ok((Guest::Thread, "asked for with --guest thread".to_owned())),
            Guest::Kvm => {
                kvm_vm::probe()?;
                Ok((Guest::Kvm, "asked for with --guest kvm".to_owned()))
            }
            Guest::Auto => match kvm_vm::probe() {
                Ok(()) => Ok((
                    Guest::Kvm,
                    "/dev/kvm opened and a VM was created".to_owned(),
                )),
                Err(Error::KvmUnavailable(why)) => Ok((Guest::Thread, why)),
                Err(other) => Err(other),
            },
        }
    }
}

impl FromStr for Guest {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        [Guest::Auto, Guest::Kvm, Guest::Thread]
            .into_iter()
            .find(|guest| guest.name() == name)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "unknown guest {name:?}: expected kvm, thread or auto"
                ))
            })
    }
}

impl fmt::Display for Guest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault planted on purpose, to see the error paths work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// The KVM guest's device flips a bit in this chunk's data after reading it: the guest's
    /// checksum of the chunk no longer matches the image's.
    CorruptChunk(u64),
    /// The KVM guest executes an undefined instruction at boot: a triple fault.
    GuestFault,
}

impl FromStr for Inject {
    type Err = Error;

    fn from_str(what: &str) -> Result<Self, Error> {
        match what.split_once('=') {
            None if what == "guest-fault" => Ok(Inject::GuestFault),
            Some(("corrupt-chunk", chunk)) => {
                chunk.parse().map(Inject::CorruptChunk).map_err(|_| {
                    Error::InvalidConfig(format!(
                        "corrupt-chunk wants a chunk number, not {chunk:?}"
                    ))
                })
            }
            _ => Err(Error::InvalidConfig(format!(
                "unknown fault {what:?}: expected guest-fault or corrupt-chunk=N"
            ))),
        }
    }
}

/// Everything one invocation runs: the modes, the workload and where the image lives.
#[derive(Clone, Debug)]
pub struct Config {
    /// The modes to run; each runs once per round, in [`Mode::ALL`] order.
    pub modes: Vec<Mode>,
    /// Runs per mode; `None` means 3, except 1 for the slow `no-kick`.
    pub repeat: Option<usize>,
    /// Bytes each run reads; `None` means [`DEFAULT_SIZE`], or all of a smaller `--path`.
    pub size: Option<u64>,
    /// Bytes per read: a multiple of 4096 so it suits O_DIRECT on any device.
    pub chunk: usize,
    /// Reads per doorbell write.
    pub batch: usize,
    /// The guest's sleep before each batch submit and after each completion.
    pub delay: Duration,
    /// Period of the main loop's housekeeping timer (QEMU's is up to 499 ms).
    pub timer: Duration,
    /// Read with O_DIRECT (the default) rather than through the page cache.
    pub direct_io: bool,
    /// An existing file or block device to read instead of a temporary image.
    pub path: Option<PathBuf>,
    /// What runs the guest program.
    pub guest: Guest,
    /// A fault to plant (KVM guest only).
    pub inject: Option<Inject>,
}

impl Default for Config {
    /// The seed's workload: 128 MB in 128 KiB O_DIRECT reads, 16 per batch, 1 ms sleeps, a
    /// 499 ms timer, every mode, on KVM where it runs.
    fn default() -> Self {
        Self {
            modes: Mode::ALL.to_vec(),
            repeat: None,
            size: None,
            chunk: 128 * 1024,
            batch: 16,
            delay: Duration::from_millis(1),
            timer: Duration::from_millis(499),
            direct_io: true,
            path: None,
            guest: Guest::Auto,
            inject: None,
        }
    }
}

impl Config {
    /// How many runs `mode` gets.
    pub fn repeats(&self, mode: Mode) -> usize {
        self.repeat
            .unwrap_or(if mode == Mode::NoKick { 1 } else { 3 })
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |message: String| Err(Error::InvalidConfig(message));
        if self.modes.is_empty() {
            return invalid("no mode to run".to_owned());
        }
        if self.repeat == Some(0) {
            return invalid("--repeat must be at least 1".to_owned());
        }
        if self.chunk == 0 || !self.chunk.is_multiple_of(4096) || self.chunk > u32::MAX as usize {
            return invalid(format!(
                "--chunk {} must be a positive multiple of 4096 below 4 GiB",
                self.chunk
            ));
        }
        if self.batch == 0 || self.batch > 1024 {
            return invalid(format!("--batch {} must be between 1 and 1024", self.batch));
        }
        if self.timer.is_zero() {
            return invalid("--timer-ms must be at least 1".to_owned());
        }
        if self.guest == Guest::Kvm {
            kvm_run::check_fits(self.batch, self.chunk).or_else(invalid)?;
        } else if self.inject.is_some() {
            return invalid("--inject plants its faults in the KVM guest only".to_owned());
        }
        match self.size {
            Some(size) if size == 0 || size % self.chunk as u64 != 0 => invalid(format!(
                "--size {size} must be a positive multiple of --chunk {}",
                self.chunk
            )),
            _ => Ok(()),
        }
    }
}

/// Why a run could not start or finish; every message says what to do about it.
#[derive(Debug)]
pub enum Error {
    /// A flag value the workload cannot use.
    InvalidConfig(String),
    /// `--path` cannot be opened or read, or is neither a regular file nor a block device.
    BadPath { path: PathBuf, reason: String },
    /// The filesystem holding the image refuses O_DIRECT (open fails with EINVAL).
    DirectIoUnsupported { path: PathBuf },
    /// The temporary directory cannot hold the image.
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    /// io_uring cannot be set up here (an old kernel, seccomp, `kernel.io_uring_disabled`).
    RingUnavailable(io::Error),
    /// The KVM guest cannot run here: no `/dev/kvm`, no permission, or KVM refused a VM; the
    /// message says which.
    KvmUnavailable(String),
    /// The KVM guest stopped in a way its program never does: a triple fault, an access to
    /// no device, a KVM internal error. `state` is the vCPU's registers at the exit.
    GuestFault { exit: String, state: String },
    /// An I/O or runtime failure during setup or a run.
    Io { context: String, source: io::Error },
}

impl Error {
    fn short_read(offset: u64, read: usize, chunk: usize) -> Self {
        Error::Io {
            context: format!("reading at offset {offset}"),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read: {read} of {chunk} bytes"),
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig(message) => f.write_str(message),
            Error::BadPath { path, reason } => {
                write!(f, "cannot use --path {}: {reason}", path.display())
            }
            Error::DirectIoUnsupported { path } => write!(
                f,
                "the filesystem holding {} does not support O_DIRECT (open failed with EINVAL); \
                 rerun with --buffered to read through the page cache, or put the image on a \
                 disk-backed filesystem (TMPDIR or --path)",
                path.display()
            ),
            Error::NoSpace {
                dir,
                needed,
                available,
            } => write!(
                f,
                "not enough free space in {} for the {} MiB image ({} MiB free); use --quick or \
                 --size, set TMPDIR to a roomier filesystem, or read an existing file with --path",
                dir.display(),
                needed.div_ceil(MIB),
                available / MIB
            ),
            Error::RingUnavailable(err) => write!(
                f,
                "io_uring is not available here ({err}): the kernel is too old, or seccomp or \
                 kernel.io_uring_disabled forbids it"
            ),
            Error::KvmUnavailable(why) => {
                write!(f, "the KVM guest cannot run: {why}; use --guest thread")
            }
            Error::GuestFault { exit, state } => {
                write!(f, "the KVM guest faulted: {exit}\n{}", state.trim_end())
            }
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

/// The guest's side of one run, resolved from a [`Config`] and the image.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Bytes to read from offset 0: a whole number of chunks.
    pub size: u64,
    pub chunk: usize,
    pub batch: usize,
    pub delay: Duration,
}

/// A chunk whose checksum did not match the image's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadChunk {
    /// The chunk's number in the image.
    pub index: u64,
    pub offset: u64,
    /// The checksum the guest computed, and the image's.
    pub got: u64,
    pub expected: u64,
}

impl fmt::Display for BadChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chunk {} (offset {}): checksum {:#018x}, the image's is {:#018x}",
            self.index, self.offset, self.got, self.expected
        )
    }
}

/// One batch's doorbell-to-completion latency.
#[derive(Clone, Copy, Debug)]
pub struct BatchTiming {
    /// When the doorbell rang, from the start of the run.
    pub at: Duration,
    /// From the doorbell to the batch's last read completing at the device.
    pub latency: Duration,
}

/// What the guest measured in one run.
#[derive(Clone, Debug)]
pub struct GuestRun {
    /// From the first sleep to the last completion processed.
    pub wall: Duration,
    /// Time spent in the guest's own sleeps: no mode can finish sooner.
    pub sleep_floor: Duration,
    /// Time the guest spent waiting for completions (interrupts): where the modes differ.
    pub completion_wait: Duration,
    pub bytes: u64,
    pub checksum: u64,
    /// The first chunk whose checksum did not match, if one did not.
    pub bad_chunk: Option<BadChunk>,
    /// Every batch's doorbell-to-completion latency, in order.
    pub batches: Vec<BatchTiming>,
}

/// Prepares the image, runs every chosen mode `config.repeats(mode)` times (round-robin, so the
/// machine's drifting load hits every mode alike), calls `on_run` after each run, and returns one
/// report per mode.
///
/// # Errors
///
/// Any [`Error`] from setting up the image or from a run; the temporary image is removed either
/// way.
pub fn run(config: &Config, on_run: &mut dyn FnMut(&RunRecord)) -> Result<Vec<ModeReport>, Error> {
    let mut config = config.clone();
    config.guest = config.guest.resolve()?.0;
    config.validate()?;
    let backing = backing::prepare(&config)?;
    let workload = Workload {
        size: backing.size,
        chunk: config.chunk,
        batch: config.batch,
        delay: config.delay,
    };
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|mode| config.modes.contains(mode))
        .collect();
    let rounds = modes.iter().map(|&mode| config.repeats(mode)).max();
    let mut records = Vec::new();
    for round in 0..rounds.unwrap_or(0) {
        for &mode in modes.iter().filter(|&&mode| round < config.repeats(mode)) {
            let (guest, context, kvm) = match config.guest {
                Guest::Kvm => kvm_run::run(mode, &config, &workload, &backing)
                    .map(|(guest, context, kvm)| (guest, context, Some(kvm)))?,
                _ => thread_guest::run(mode, &config, &workload, &backing)
                    .map(|(guest, context)| (guest, context, None))?,
            };
            let record = RunRecord {
                mode,
                guest_kind: config.guest,
                round,
                checksum_ok: guest.bytes == workload.size
                    && guest.checksum == backing.expected_checksum
                    && guest.bad_chunk.is_none(),
                guest,
                context,
                kvm,
            };
            on_run(&record);
            records.push(record);
        }
    }
    Ok(report::summarize(&modes, &records))
}

/// Runs `guest` on a fresh thread named like QEMU's vCPU threads and returns what it returns.
fn on_vcpu_thread<T: Send>(guest: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    thread::scope(|scope| {
        let vcpu = thread::Builder::new()
            .name("vcpu0".to_owned())
            .spawn_scoped(scope, guest)
            .map_err(|source| Error::Io {
                context: "cannot start the vCPU thread".to_owned(),
                source,
            })?;
        vcpu.join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
