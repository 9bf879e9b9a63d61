//! What a simulator is built with: [`SimConfig`] and the types it is made of
//! (latencies, fault filters, the crash model). Plain data; imports nothing
//! from the crate.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long each simulated op takes, in Tokio time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Latency {
    /// Every op takes exactly this long.
    Fixed(Duration),
    /// Each op takes a duration drawn uniformly from `min..=max` by the
    /// seeded generator.
    Uniform {
        /// Shortest.
        min: Duration,
        /// Longest.
        max: Duration,
    },
}

/// The kinds of operation a fault filter can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SimOp {
    /// `read_at`, `readv_at`.
    Read,
    /// `write_at`, `writev_at`.
    Write,
    /// `sync_all`, `sync_data`.
    Fsync,
    /// `fallocate`.
    Fallocate,
    /// `set_len`.
    Ftruncate,
    /// Opening a file.
    Open,
    /// `close`.
    Close,
    /// `metadata`, by an open file or by a path.
    Statx,
    /// `rename`, `rename_with`.
    Rename,
    /// `remove_file`, `remove_dir`.
    Unlink,
    /// `create_dir`.
    Mkdir,
    /// `hard_link`.
    Link,
    /// `symlink`.
    Symlink,
    /// `read_dir`.
    ReadDir,
}

/// Which ops a [`Fault`] counts. Every field left `None` matches any op.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpFilter {
    /// The kind of op.
    pub op: Option<SimOp>,
    /// The path: for an op on an open file, the one it was opened as; for a
    /// path op, the one it names (the first, for a rename or a link). From
    /// the root, as given: `/db/LOG`, or `/db` joined with `LOG` for an op
    /// relative to the directory `/db`.
    pub path: Option<PathBuf>,
    /// Byte range the op must overlap (reads, writes, fallocate, ftruncate).
    pub offsets: Option<Range<u64>>,
}

impl OpFilter {
    /// Matches ops of kind `op` only.
    pub fn op(op: SimOp) -> OpFilter {
        OpFilter {
            op: Some(op),
            ..OpFilter::default()
        }
    }

    /// Narrows the filter to the file opened as `path`, or path ops naming
    /// it.
    pub fn path(mut self, path: impl Into<PathBuf>) -> OpFilter {
        self.path = Some(path.into());
        self
    }

    /// Narrows the filter to ops overlapping `offsets`.
    pub fn offsets(mut self, offsets: Range<u64>) -> OpFilter {
        self.offsets = Some(offsets);
        self
    }

    pub(super) fn matches(&self, op: SimOp, path: Option<&Path>, offset: u64, len: u64) -> bool {
        self.op.is_none_or(|want| want == op)
            && self.path.as_deref().is_none_or(|want| path == Some(want))
            && self.offsets.as_ref().is_none_or(|range| {
                offset < range.end && offset.saturating_add(len.max(1)) > range.start
            })
    }
}

/// What an injected fault does to the op it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Fail with this errno (`libc::EIO`, `libc::ENOSPC`, ...); the op has no
    /// effect.
    Errno(i32),
    /// Read or write at most this many bytes.
    Short(usize),
}

/// Fails the `nth` (from 1) op that matches `filter`, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Which ops count.
    pub filter: OpFilter,
    /// Which matching op is hit, counting from 1.
    pub nth: u64,
    /// What happens to it.
    pub action: FaultAction,
}

/// Hits each op matching `filter` with probability `1 / one_in`, drawn by
/// the seed: [`SimConfig::random_fault`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RandomFault {
    pub(super) filter: OpFilter,
    pub(super) one_in: u32,
    pub(super) action: FaultAction,
}

/// Which file system's persistence the simulator follows: what survives a
/// crash of what was not fsynced, and what an fsync makes durable. See the
/// `sim` module's section on crashes for the whole table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsModel {
    /// The weakest file system POSIX and Linux allow: a name created,
    /// renamed or removed is durable only once its directory is fsynced (an
    /// fsync of the file does not do it), and at a crash each change of
    /// names not yet durable survives or not as the seed decides, in any
    /// combination (a rename is atomic: the old name or the new, never
    /// neither). A file's data is durable only once the file is fsynced.
    #[default]
    Weakest,
    /// ext4 with `data=ordered` (its default): names are journaled in the
    /// order they changed, so any fsync (of a file or a directory) makes
    /// every change of names before it durable, and a crash keeps a prefix
    /// of the changes not yet durable; a rename that replaces a file writes
    /// the renamed file's data back first (`auto_da_alloc`), so the new name
    /// never comes back empty; a length that survives covers the appended
    /// data that reached the disk.
    Ext4Ordered,
}

/// What a crash keeps of what was not durable: see the `sim` module's
/// section on crashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CrashModel {
    /// Writes in flight at a crash persist a whole-sector prefix.
    pub(super) torn_sector: Option<u64>,
    /// Each file keeps a seed-drawn subset of its unsynced sectors.
    pub(super) reorder_unsynced: bool,
    /// One crash at an instant drawn from this window.
    pub(super) random_crash: Option<Range<Duration>>,
    pub(super) fs: FsModel,
}

impl Default for CrashModel {
    fn default() -> Self {
        CrashModel {
            torn_sector: None,
            reorder_unsynced: true,
            random_crash: None,
            fs: FsModel::Weakest,
        }
    }
}

impl CrashModel {
    /// The unit of unsynced data a crash keeps or loses: the torn-write
    /// sector, or 512 bytes.
    pub(super) fn sector(&self) -> u64 {
        self.torn_sector.unwrap_or(512)
    }
}

/// The simulator's configuration, for [`Backend::Sim`](crate::Backend::Sim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    pub(super) seed: u64,
    pub(super) latency: Latency,
    pub(super) faults: Vec<Fault>,
    pub(super) random_faults: Vec<RandomFault>,
    pub(super) memory_budget: u64,
    pub(super) crash: CrashModel,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency: Latency::Fixed(Duration::from_micros(100)),
            faults: Vec::new(),
            random_faults: Vec::new(),
            memory_budget: 1 << 30,
            crash: CrashModel::default(),
        }
    }
}

impl SimConfig {
    /// Seed 0, a fixed latency of 100 µs, no faults, a 1 GiB memory budget,
    /// and crashes on the weakest file system: of what was not fsynced, each
    /// unsynced sector and each change of names survives or not as the seed
    /// draws.
    pub fn new() -> SimConfig {
        SimConfig::default()
    }

    /// The most file data the simulator holds in memory, in bytes (rounded
    /// down to 4 KiB pages); past it, writes and allocations fail with
    /// `ENOSPC`, as on a full disk. Holes cost nothing. Default 1 GiB.
    pub fn memory_budget(mut self, bytes: u64) -> SimConfig {
        self.memory_budget = bytes;
        self
    }

    /// The seed behind everything random: latencies drawn from
    /// [`Latency::Uniform`], the order of ops due at the same instant,
    /// [random faults](SimConfig::random_fault), the instant of a
    /// [random crash](SimConfig::crash_at_random) and what a crash keeps.
    pub fn seed(mut self, seed: u64) -> SimConfig {
        self.seed = seed;
        self
    }

    /// How long each op takes.
    pub fn latency(mut self, latency: Latency) -> SimConfig {
        self.latency = latency;
        self
    }

    /// Adds a fault: the `nth` (from 1) op matching `filter` suffers `action`.
    pub fn fault(mut self, filter: OpFilter, nth: u64, action: FaultAction) -> SimConfig {
        self.faults.push(Fault {
            filter,
            nth,
            action,
        });
        self
    }

    /// Adds a seeded fault plan: each op matching `filter` suffers `action`
    /// with probability `1 / one_in` (never for 0), drawn when it completes.
    /// Which ops are hit changes with the seed and only with the seed.
    pub fn random_fault(mut self, filter: OpFilter, one_in: u32, action: FaultAction) -> SimConfig {
        self.random_faults.push(RandomFault {
            filter,
            one_in,
            action,
        });
        self
    }

    /// Torn writes: a write in flight at a crash persists a prefix of the
    /// whole sectors (of `sector_size` bytes, aligned in the file) it
    /// covers, of a length drawn by the seed, and then fails with `EIO`.
    /// Off by default: in-flight ops complete after a crash as if it had not
    /// happened.
    ///
    /// # Panics
    ///
    /// If `sector_size` is 0.
    pub fn torn_writes(mut self, sector_size: u32) -> SimConfig {
        assert!(sector_size > 0, "a sector holds at least one byte");
        self.crash.torn_sector = Some(u64::from(sector_size));
        self
    }

    /// With `true` (the default), unsynced data reaches the disk in no
    /// particular order, within a file and across files, as the page cache
    /// and the disk's cache allow: at a crash each sector written since its
    /// file's last fsync (of 512 bytes, or the
    /// [torn-write](SimConfig::torn_writes) sector size) survives or not as
    /// the seed decides, and the file comes back with one of the lengths it
    /// had since (reading zeros where its data did not make it). With
    /// `false`, a crash drops every unsynced byte and length change, the
    /// same on every seed: the pessimistic outcome, for a test that wants
    /// one answer (names still survive as the seed draws).
    pub fn reorder_unsynced_writes(mut self, reorder: bool) -> SimConfig {
        self.crash.reorder_unsynced = reorder;
        self
    }

    /// Which file system's persistence to follow: [`FsModel::Weakest`] (the
    /// default) or [`FsModel::Ext4Ordered`].
    pub fn fs_model(mut self, model: FsModel) -> SimConfig {
        self.crash.fs = model;
        self
    }

    /// Crashes the simulator once, at an instant drawn by the seed from
    /// `window` (Tokio time since the context was built), as
    /// [`SimHandle::crash`](crate::sim::SimHandle::crash) would.
    /// [`SimHandle::crashed`](crate::sim::SimHandle::crashed) tells a
    /// scenario when it happened.
    pub fn crash_at_random(mut self, window: Range<Duration>) -> SimConfig {
        self.crash.random_crash = Some(window);
        self
    }
}
