//! The only file that talks to io_uring: ring setup and probing, pushing SQEs,
//! the one `io_uring_enter` per turn, reaping CQEs, and the ring's registered
//! resources (its own fd, the sparse buffer and file tables). A protocol
//! module: it imports only `metrics` (for the flags it reports).
//!
//! A [`Ring`] is `!Send`: it is created on the home thread and never leaves it,
//! so no other thread can reach `io_uring_enter` (invariant 3). [`Ring::enter`]
//! also checks this at run time, so a mistake in the crate fails loudly.
//!
//! Completions are announced through an eventfd registered with the ring: the
//! driver sleeps on that eventfd (through Tokio's reactor). Polling the ring fd
//! itself does not work with `IORING_SETUP_DEFER_TASKRUN` — deferred
//! completions never make it readable — while the registered eventfd fires for
//! both kinds of ring.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread::{self, ThreadId};
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};

use crate::metrics::RingFlags;

/// `user_data` of SQEs whose CQEs the driver ignores (cancel requests).
pub(crate) const IGNORED_USER_DATA: u64 = u64::MAX;

/// One io_uring instance, owned by the home thread.
pub(crate) struct Ring {
    uring: IoUring,
    /// Registered with the ring; the kernel signals it when CQEs are posted.
    eventfd: OwnedFd,
    flags: RingFlags,
    /// The index of the ring's registered fd, passed to `io_uring_enter`
    /// instead of the fd itself.
    ring_index: Option<u32>,
    /// Slots in the sparse buffer and file tables registered at setup (0
    /// where the kernel refused the table).
    buffer_slots: u32,
    file_slots: u32,
    /// The one thread that may enter, or `None` for a shared ring (entered
    /// by any thread under its owner's lock; see [`SharedRing`]).
    home: Option<ThreadId>,
    /// Makes `Ring` `!Send` and `!Sync`: only the home thread may touch it.
    _home_only: PhantomData<*const ()>,
}

/// A ring set up with [`RingConfig::shared`], which any thread may enter:
/// the one kind of [`Ring`] that may move between threads. Its owner keeps it
/// under a lock, so one thread at a time pushes, enters and reaps.
pub(crate) struct SharedRing(Ring);

// SAFETY: a shared ring has no home thread (`Ring::home` is `None`), was set
// up without the flags that tie it to one thread (SINGLE_ISSUER,
// DEFER_TASKRUN, COOP_TASKRUN) and without a registered ring fd (a per-thread
// registration), so the kernel accepts its enters from any thread; its owner
// serialises every use behind a lock (`&mut` access only).
unsafe impl Send for SharedRing {}

impl SharedRing {
    /// Sets up a shared ring.
    pub(crate) fn new(mut config: RingConfig) -> io::Result<SharedRing> {
        config.shared = true;
        config.single_issuer = false;
        config.sqpoll_idle = None;
        Ring::new(config).map(SharedRing)
    }
}

impl std::ops::Deref for SharedRing {
    type Target = Ring;
    fn deref(&self) -> &Ring {
        &self.0
    }
}

impl std::ops::DerefMut for SharedRing {
    fn deref_mut(&mut self) -> &mut Ring {
        &mut self.0
    }
}

/// What [`Ring::new`] is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingConfig {
    pub(crate) entries: u32,
    /// Try `SINGLE_ISSUER` (with `COOP_TASKRUN`) first.
    pub(crate) single_issuer: bool,
    /// Try `SINGLE_ISSUER | DEFER_TASKRUN` before that (see
    /// [`Builder::defer_taskrun`](crate::Builder::defer_taskrun)).
    pub(crate) defer_taskrun: bool,
    /// `Some(idle)`: try `SQPOLL` first, the kernel thread going idle after
    /// `idle` without work.
    pub(crate) sqpoll_idle: Option<Duration>,
    /// Slots of the sparse buffer table (for registered buffers).
    pub(crate) buffer_slots: u32,
    /// Slots of the sparse file table (for registered files).
    pub(crate) file_slots: u32,
    /// A ring any thread enters, under its owner's lock (a runtime worker's
    /// ring): no `SINGLE_ISSUER`, `DEFER_TASKRUN` or `COOP_TASKRUN` (each
    /// would tie completions to one thread, which may be parked), no
    /// registered ring fd (registered per thread).
    pub(crate) shared: bool,
}

impl RingConfig {
    /// A ring of `entries` with `SINGLE_ISSUER` and no tables, for tests.
    #[cfg(test)]
    pub(crate) fn for_test(entries: u32) -> RingConfig {
        RingConfig {
            entries,
            single_issuer: true,
            defer_taskrun: false,
            sqpoll_idle: None,
            buffer_slots: 0,
            file_slots: 0,
            shared: false,
        }
    }
}

impl Ring {
    /// Sets up a ring on the calling thread, which becomes its home thread.
    ///
    /// With `sqpoll_idle`, tries `SQPOLL | SINGLE_ISSUER`, then `SQPOLL`
    /// (`DEFER_TASKRUN` excludes `SQPOLL`); then, or without it, tries
    /// `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG` (only when asked for),
    /// `SINGLE_ISSUER | COOP_TASKRUN | TASKRUN_FLAG`,
    /// `COOP_TASKRUN | TASKRUN_FLAG`, then no flags, keeping the first the
    /// kernel accepts. Errors from the last attempt (`ENOSYS`, `EPERM` when
    /// io_uring is disabled or filtered) are returned as they are. Then
    /// registers the ring's own fd and the sparse tables, each where the
    /// kernel allows.
    pub(crate) fn new(config: RingConfig) -> io::Result<Ring> {
        let flags = |sqpoll, single_issuer, defer_taskrun, coop_taskrun| RingFlags {
            single_issuer,
            defer_taskrun,
            coop_taskrun,
            sqpoll,
            registered_ring_fd: false,
            opcodes_blocking: false,
        };
        let attempts = [
            flags(true, true, false, false),
            flags(true, false, false, false),
            flags(false, true, true, false),
            flags(false, true, false, true),
            flags(false, false, false, true),
            flags(false, false, false, false),
        ];
        let mut last_error = None;
        for flags in attempts
            .iter()
            .filter(|f| config.sqpoll_idle.is_some() || !f.sqpoll)
            .filter(|f| config.single_issuer || !f.single_issuer)
            .filter(|f| config.defer_taskrun || !f.defer_taskrun)
            .filter(|f| !config.shared || !(f.single_issuer || f.coop_taskrun || f.sqpoll))
        {
            let mut builder = IoUring::builder();
            if let Some(idle) = config.sqpoll_idle.filter(|_| flags.sqpoll) {
                builder.setup_sqpoll(idle.as_millis().clamp(1, u128::from(u32::MAX)) as u32);
            }
            if flags.single_issuer {
                builder.setup_single_issuer();
            }
            if flags.defer_taskrun {
                builder.setup_defer_taskrun().setup_taskrun_flag();
            }
            if flags.coop_taskrun {
                builder.setup_coop_taskrun().setup_taskrun_flag();
            }
            // A CQ twice the SQ, as liburing does; the driver caps in-flight
            // ops at the CQ size so the CQ never overflows in normal running.
            builder.setup_cqsize(config.entries.saturating_mul(2));
            match builder.build(config.entries) {
                Ok(uring) => return Ring::with_uring(uring, *flags, config),
                Err(e) => {
                    tracing::debug!(?flags, error = %e, "io_uring setup refused these flags");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("at least one setup attempt"))
    }

    fn with_uring(uring: IoUring, mut flags: RingFlags, config: RingConfig) -> io::Result<Ring> {
        // SAFETY: eventfd(2) with valid flags; a non-negative return is a new
        // fd that nothing else owns.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd from eventfd(2) above, owned by nobody else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
        uring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let ring_index = match config.shared {
            true => None,
            false => register_ring_fd(uring.as_raw_fd()),
        };
        flags.registered_ring_fd = ring_index.is_some();
        let table = |what: &str, slots: u32, result: io::Result<()>| match result {
            Ok(()) => slots,
            Err(e) => {
                tracing::debug!(error = %e, "io_uring refused a sparse {what} table");
                0
            }
        };
        let submitter = uring.submitter();
        let buffer_slots = match config.buffer_slots {
            0 => 0,
            n => table("buffer", n, submitter.register_buffers_sparse(n)),
        };
        let file_slots = match config.file_slots {
            0 => 0,
            n => table("file", n, submitter.register_files_sparse(n)),
        };
        Ok(Ring {
            uring,
            eventfd,
            flags,
            ring_index,
            buffer_slots,
            file_slots,
            home: (!config.shared).then(|| thread::current().id()),
            _home_only: PhantomData,
        })
    }

    /// Which of `needed` (opcode, name) this kernel's probe says it lacks.
    /// Empty when all are there; an error when the probe itself fails.
    pub(crate) fn missing_opcodes(
        &self,
        needed: &[(u8, &'static str)],
    ) -> io::Result<Vec<&'static str>> {
        let mut probe = io_uring::Probe::new();
        self.uring.submitter().register_probe(&mut probe)?;
        Ok(needed
            .iter()
            .filter(|(code, _)| !probe.is_supported(*code))
            .map(|(_, name)| *name)
            .collect())
    }

    pub(crate) fn flags(&self) -> RingFlags {
        self.flags
    }

    /// A new fd for the eventfd the kernel signals when completions are posted.
    pub(crate) fn eventfd(&self) -> io::Result<OwnedFd> {
        self.eventfd.try_clone()
    }

    /// Slots of the sparse buffer table (0: the kernel refused one).
    pub(crate) fn buffer_slots(&self) -> u32 {
        self.buffer_slots
    }

    /// Slots of the sparse file table (0: the kernel refused one).
    pub(crate) fn file_slots(&self) -> u32 {
        self.file_slots
    }

    /// Points buffer-table slots `first..first + iovecs.len()` at `iovecs`.
    ///
    /// # Safety
    ///
    /// Each iovec's memory must stay valid, and not be used for anything the
    /// kernel's fixed ops must not see, until its slot is cleared with
    /// [`clear_buffers`](Ring::clear_buffers) or the ring is closed.
    pub(crate) unsafe fn update_buffers(
        &mut self,
        first: u16,
        iovecs: &[libc::iovec],
    ) -> io::Result<()> {
        self.assert_home();
        // SAFETY: the caller vouches for the memory.
        unsafe {
            self.uring
                .submitter()
                .register_buffers_update(u32::from(first), iovecs, None)
        }
        .map(drop)
    }

    /// Empties buffer-table slots `first..first + count`. The kernel keeps
    /// the old buffers until the ops using them complete.
    pub(crate) fn clear_buffers(&mut self, first: u16, count: u16) -> io::Result<()> {
        let empty = vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            usize::from(count)
        ];
        // SAFETY: empty iovecs point at no memory.
        unsafe { self.update_buffers(first, &empty) }
    }

    /// Sets file-table slots from `first` to `fds` (`-1` empties a slot).
    pub(crate) fn update_files(&mut self, first: u32, fds: &[RawFd]) -> io::Result<()> {
        self.assert_home();
        self.uring
            .submitter()
            .register_files_update(first, fds)
            .map(drop)
    }

    /// Completion queue size: the driver's limit on ops in flight.
    pub(crate) fn cq_capacity(&self) -> usize {
        self.uring.params().cq_entries() as usize
    }

    /// Queues one SQE. Returns `false` when the SQ is full.
    ///
    /// # Safety
    ///
    /// Every buffer, fd and struct the entry points at must stay valid (and
    /// unmoved) until its CQE is reaped.
    pub(crate) unsafe fn push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: the caller guarantees the entry's pointers outlive its CQE.
        unsafe { self.uring.submission().push(entry).is_ok() }
    }

    /// Queues the SQE `entry` builds, if the SQ has room: `entry` runs only
    /// then. Returns whether it was queued.
    ///
    /// # Safety
    ///
    /// As [`push`](Ring::push), for the entry `entry` returns.
    #[inline]
    pub(crate) unsafe fn push_with(&mut self, entry: impl FnOnce() -> squeue::Entry) -> bool {
        let mut sq = self.uring.submission();
        if sq.is_full() {
            return false;
        }
        // SAFETY: the caller guarantees the entry's pointers outlive its CQE;
        // the queue has room, so the push cannot fail.
        unsafe { sq.push(&entry()).is_ok() }
    }

    /// SQEs queued and not yet taken by the kernel.
    pub(crate) fn queued(&mut self) -> usize {
        self.uring.submission().len()
    }

    /// Whether the SQ has room for another entry.
    pub(crate) fn has_room(&mut self) -> bool {
        !self.uring.submission().is_full()
    }

    /// Whether the kernel holds completions back because the CQ was full
    /// (`IORING_SQ_CQ_OVERFLOW`); the driver's in-flight limit keeps this
    /// from happening outside shutdown.
    #[cfg(test)]
    pub(crate) fn cq_overflowed(&mut self) -> bool {
        self.uring.submission().cq_overflow()
    }

    /// Whether this turn needs an `io_uring_enter`: SQEs to submit (on an
    /// SQPOLL ring, only when its kernel thread has gone idle and must be
    /// woken), deferred task work to run (the kernel sets
    /// `IORING_SQ_TASKRUN`), or CQEs that overflowed into the kernel's
    /// backlog.
    pub(crate) fn needs_enter(&mut self) -> bool {
        let sqpoll = self.flags.sqpoll;
        let sq = self.uring.submission();
        let to_submit = !sq.is_empty() && (!sqpoll || sq.need_wakeup());
        to_submit || sq.taskrun() || sq.cq_overflow()
    }

    /// Submits everything queued and runs pending task work, without waiting:
    /// the one syscall of a turn. Returns how many SQEs left the queue (on
    /// an SQPOLL ring, every queued one: its kernel thread takes them).
    ///
    /// # Panics
    ///
    /// If called off the home thread: that would break invariant 3, and with
    /// `SINGLE_ISSUER` the kernel would refuse it anyway.
    pub(crate) fn enter(&mut self) -> io::Result<usize> {
        self.assert_home();
        let to_submit = self.queued() as u32;
        let mut flags = IORING_ENTER_GETEVENTS;
        if self.flags.sqpoll && self.uring.submission().need_wakeup() {
            flags |= IORING_ENTER_SQ_WAKEUP;
        }
        loop {
            match self.enter_raw(to_submit, flags) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY/EAGAIN: the kernel could not take more work right now
                // (CQ overflow backlog, memory). The SQEs stay queued and go
                // in on a later turn, after this one reaps.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    tracing::debug!(error = %e, "io_uring_enter deferred submission");
                    return Ok(to_submit as usize - self.queued());
                }
                Err(e) => return Err(e),
                Ok(_) if self.flags.sqpoll => return Ok(to_submit as usize),
                Ok(submitted) => return Ok(submitted),
            }
        }
    }

    /// Makes room in a full SQ: an enter submits what is queued; on an SQPOLL
    /// ring, whose kernel thread takes SQEs on its own, waits
    /// (`IORING_ENTER_SQ_WAIT`, waking the thread if it sleeps) until it has
    /// taken at least one. Returns how many SQEs left the queue.
    ///
    /// # Panics
    ///
    /// Off the home thread, as [`enter`](Ring::enter).
    pub(crate) fn make_room(&mut self) -> io::Result<usize> {
        if !self.flags.sqpoll {
            return self.enter();
        }
        self.assert_home();
        let before = self.queued();
        let mut flags = IORING_ENTER_SQ_WAIT;
        if self.uring.submission().need_wakeup() {
            flags |= IORING_ENTER_SQ_WAKEUP;
        }
        loop {
            match self.enter_raw(0, flags) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(_) => return Ok(before.saturating_sub(self.queued())),
            }
        }
    }

    /// `io_uring_enter(2)`, through the registered ring fd where there is one.
    fn enter_raw(&self, to_submit: u32, flags: u32) -> io::Result<usize> {
        let (fd, flags) = match self.ring_index {
            Some(index) => (index as libc::c_int, flags | IORING_ENTER_REGISTERED_RING),
            None => (self.uring.as_raw_fd(), flags),
        };
        // SAFETY: io_uring_enter(2) on our own ring (its fd, or its registered
        // index with the flag that says so), no signal mask; every queued SQE
        // satisfied `push`'s contract.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                to_submit,
                0u32,
                flags,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ret as usize)
    }

    /// Submits what is queued and blocks until `want` CQEs are ready or
    /// `timeout` passes. Used only by shutdown, to drain what is in flight.
    pub(crate) fn enter_and_wait_timeout(
        &mut self,
        want: usize,
        timeout: Duration,
    ) -> io::Result<()> {
        self.assert_home();
        let timespec = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&timespec);
        match self.uring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn assert_home(&self) {
        if let Some(home) = self.home {
            assert_eq!(
                thread::current().id(),
                home,
                "io_uring_enter called off the ring's home thread"
            );
        }
    }

    /// Calls `f(user_data, result, flags)` for every CQE ready now.
    pub(crate) fn reap(&mut self, mut f: impl FnMut(u64, i32, u32)) -> usize {
        let mut count = 0;
        let mut cq = self.uring.completion();
        loop {
            cq.sync();
            if cq.is_empty() {
                break;
            }
            for cqe in &mut cq {
                count += 1;
                f(cqe.user_data(), cqe.result(), cqe.flags());
            }
        }
        count
    }

    /// Builds an `IORING_OP_ASYNC_CANCEL` for the op with `user_data`.
    pub(crate) fn cancel_entry(user_data: u64) -> squeue::Entry {
        opcode::AsyncCancel::new(user_data)
            .build()
            .user_data(IGNORED_USER_DATA)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // Unregistering is best effort: closing the ring fd right after
        // releases the registration anyway.
        let _ = self.uring.submitter().unregister_eventfd();
    }
}

/// Re-exported for op definitions, so that they name io_uring types through
/// this module only.
pub(crate) use io_uring::opcode as op;
pub(crate) use io_uring::squeue::Entry as Sqe;
pub(crate) use io_uring::types as ty;

/// `IORING_ENTER_GETEVENTS`: run task work and report completions.
const IORING_ENTER_GETEVENTS: u32 = 1;
/// `IORING_ENTER_SQ_WAKEUP`: wake an idle SQPOLL thread.
const IORING_ENTER_SQ_WAKEUP: u32 = 2;
/// `IORING_ENTER_SQ_WAIT`: wait until the SQ has room (SQPOLL rings).
const IORING_ENTER_SQ_WAIT: u32 = 4;
/// `IORING_ENTER_REGISTERED_RING`: the fd argument is a registered index.
const IORING_ENTER_REGISTERED_RING: u32 = 16;
/// `IORING_REGISTER_RING_FDS`.
const IORING_REGISTER_RING_FDS: u32 = 20;

/// Registers the ring's fd with the ring itself, so `io_uring_enter` can
/// skip the fd lookup. Returns the registered index, or `None` where the
/// kernel does not offer it (before 5.18).
fn register_ring_fd(ring_fd: RawFd) -> Option<u32> {
    // `struct io_uring_rsrc_update`: the kernel picks the index (`offset`
    // of `u32::MAX` asks it to) and writes it back.
    #[repr(C)]
    struct RsrcUpdate {
        offset: u32,
        resv: u32,
        data: u64,
    }
    let mut update = RsrcUpdate {
        offset: u32::MAX,
        resv: 0,
        data: ring_fd as u64,
    };
    // SAFETY: io_uring_register(2) on our ring with one update struct, which
    // lives on the stack for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring_fd,
            IORING_REGISTER_RING_FDS,
            &mut update as *mut RsrcUpdate,
            1u32,
        )
    };
    if ret != 1 {
        tracing::debug!(error = %io::Error::last_os_error(), "io_uring refused to register its fd");
        return None;
    }
    Some(update.offset)
}

#[cfg(test)]
mod tests {
    use super::{Ring, RingConfig};

    /// Smuggles a `Ring` to another thread, which the type system forbids,
    /// to check that the run-time guard behind invariant 3 fires.
    struct Smuggled(Ring);
    // SAFETY: test only; the ring is used by one thread at a time (moved to
    // the spawned thread and dropped there), which is all io_uring needs.
    unsafe impl Send for Smuggled {}

    #[test]
    fn enter_off_the_home_thread_panics() {
        let ring = match Ring::new(RingConfig::for_test(8)) {
            Ok(ring) => ring,
            Err(e) => return eprintln!("skipping: io_uring is unavailable ({e})"),
        };
        let smuggled = Smuggled(ring);
        let outcome = std::thread::spawn(move || {
            let mut smuggled = smuggled;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| smuggled.0.enter())).is_err()
        })
        .join()
        .unwrap();
        assert!(outcome, "io_uring_enter off the home thread must panic");
    }
}
