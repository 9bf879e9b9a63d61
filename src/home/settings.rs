//! [`Builder`]'s settings: their defaults, the setters that change them,
//! and the [`Setup`] they make for a backend. Starting a context from them
//! is the parent module's job.

use std::time::Duration;

use crate::backend::{Backend, Setup};
use crate::home_thread::HomeThread;
use crate::ring::RingConfig;
use crate::trace;

use super::Builder;

impl Default for Builder {
    fn default() -> Self {
        Builder {
            entries: 256,
            thread_name: "aioctx-home".to_owned(),
            single_issuer: true,
            defer_taskrun: false,
            kick_foreign: true,
            backend: Backend::Auto,
            fallback_threads: 16,
            cpu: None,
            sqpoll_idle: None,
            buffer_slots: 1024,
            file_slots: 1024,
            dwell_warning: Some(trace::DEFAULT_DWELL_WARNING),
            member: None,
            #[cfg(feature = "test-util")]
            start_paused: false,
        }
    }
}

impl Builder {
    /// Submission queue entries (rounded up to a power of two by the kernel).
    /// The completion queue gets twice as many. Default 256.
    ///
    /// More ops than this may be in flight at once: the excess waits in a
    /// backlog and enters the ring as room frees.
    pub fn entries(mut self, entries: u32) -> Self {
        self.entries = entries.max(1);
        self
    }

    /// Name of the home thread. Default `aioctx-home`.
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.thread_name = name.into();
        self
    }

    /// Whether to try `IORING_SETUP_SINGLE_ISSUER` (only the home thread
    /// submits, which it is anyway), with `COOP_TASKRUN` (default `true`).
    /// Where the kernel refuses it the ring falls back to `COOP_TASKRUN`
    /// alone, then to no flags; [`Context::ring_flags`](crate::Context::ring_flags) tells which.
    pub fn single_issuer(mut self, enabled: bool) -> Self {
        self.single_issuer = enabled;
        self
    }

    /// Whether to try `IORING_SETUP_DEFER_TASKRUN` (with `SINGLE_ISSUER`)
    /// first; default `false`.
    ///
    /// Under `DEFER_TASKRUN` the kernel posts completions that need task
    /// work (a read of a pipe or socket, a poll, a device read) only when
    /// the home thread enters the ring, and tells a sleeping home thread
    /// about them through the ring's eventfd, which it may signal late:
    /// measured here (Linux 6.18 on a 2-vCPU VM), a pipe read completed
    /// 14 ms (p50) after the write that made it ready, against 0.1 ms
    /// without it, so a main loop parked on such ops slept through them
    /// (BENCHMARKS.md, "DEFER_TASKRUN and the eventfd"). It pays for rings
    /// whose home thread is always busy entering, and costs nothing for ops
    /// that complete inside their submitting enter (page-cache reads,
    /// NOPs). Ignored with [`sqpoll`](Builder::sqpoll), which excludes it.
    pub fn defer_taskrun(mut self, enabled: bool) -> Self {
        self.defer_taskrun = enabled;
        self
    }

    /// **Diagnostic only: reproduces the bug this crate exists to prevent.**
    ///
    /// With `false`, a push from a thread other than the home thread does not
    /// wake a sleeping driver: the op waits until the driver turns for some
    /// other reason (a completion, or a task on the home thread using the
    /// ring, as QEMU's timers do in its main loop), exactly like QEMU before
    /// commit 2ae361ef1d. It exists so a harness can show that bug beside the fix
    /// (`examples/iotest`); never turn it off in real code. Default `true`.
    pub fn kick_foreign_pushes(mut self, enabled: bool) -> Self {
        self.kick_foreign = enabled;
        self
    }

    /// Which backend runs the ops; default [`Backend::Auto`] (io_uring, or
    /// the thread-pool fallback where io_uring is unavailable).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// The most pool threads the fallback backend runs blocking syscalls on
    /// at once (the home runtime's `max_blocking_threads`); more ops wait in
    /// its queue. Default 16.
    pub fn fallback_threads(mut self, threads: usize) -> Self {
        self.fallback_threads = threads.max(1);
        self
    }

    /// Asks for `IORING_SETUP_SQPOLL`: a kernel thread polls the submission
    /// queue, so submitting costs no `io_uring_enter`; it sleeps after `idle`
    /// without work, and the driver wakes it when it next submits. The
    /// thread keeps a CPU busy while it polls, and while ops are in the
    /// kernel the driver polls the completion queue too (up to 50 µs after
    /// the last completion) instead of sleeping on its eventfd: two cores
    /// spent to take every syscall and wake off the op's path. It pays for
    /// latency (a QD1 O_DIRECT read: 1.4x the IOPS of the plain ring on a
    /// 2-CPU machine, at three times its CPU per read), not for throughput
    /// of ops that complete at once (NOPs: fewer than without); see
    /// BENCHMARKS.md. `SQPOLL` excludes
    /// `DEFER_TASKRUN`: the ring tries `SQPOLL | SINGLE_ISSUER`, then `SQPOLL`,
    /// then the flags it would use without this option;
    /// [`Context::ring_flags`](crate::Context::ring_flags) tells which it got. Default: off.
    pub fn sqpoll(mut self, idle: std::time::Duration) -> Self {
        self.sqpoll_idle = Some(idle);
        self
    }

    /// Slots of the ring's table of registered buffers
    /// ([`Context::register_buffers`](crate::Context::register_buffers)); 0 turns registration off. At most
    /// 65536. Default 1024.
    pub fn registered_buffer_slots(mut self, slots: u32) -> Self {
        self.buffer_slots = slots.min(1 << 16);
        self
    }

    /// Slots of the ring's table of registered files
    /// ([`OpenOptions::register`](crate::fs::OpenOptions::register)); 0 turns
    /// registration off. Default 1024. For
    /// [`WorkerRings`](crate::runtime::WorkerRings), each ring's table, which
    /// holds the files its ops have used (see there).
    pub fn registered_file_slots(mut self, slots: u32) -> Self {
        self.file_slots = slots;
        self
    }

    /// Pins the home thread to CPU `cpu` (`sched_setaffinity`): with
    /// [`build_local`](Builder::build_local), the calling thread. Default: no
    /// pinning. A [`Pool`](crate::Pool) can pin one member per CPU.
    ///
    /// Building fails with `EINVAL` if the CPU is not one this process may
    /// run on.
    pub fn pin_to_cpu(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// Logs a warning when an op pushed from another thread waited longer
    /// than `threshold` between its push and the kernel taking its SQE (its
    /// *dwell*, [`Metrics::dwell`](crate::Metrics::dwell)): the symptom of
    /// a home thread that was not woken, or was kept busy by its own tasks.
    /// One `warn` event per `io_uring_enter` that hands over such SQEs, with
    /// how many and the longest dwell (see [Tracing](crate#tracing)). `None`
    /// or a zero duration turns it off. Default 10 ms.
    ///
    /// io_uring only: the fallback's and the simulator's queues are timed in
    /// their metrics, not warned about. Costs nothing per op when no
    /// subscriber listens at `warn`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let quiet = aioctx::Context::builder().dwell_warning(None);
    /// let strict = aioctx::Context::builder().dwell_warning(Duration::from_millis(1));
    /// # let _ = (quiet, strict);
    /// ```
    pub fn dwell_warning(mut self, threshold: impl Into<Option<Duration>>) -> Self {
        self.dwell_warning = threshold.into().filter(|t| !t.is_zero());
        self
    }

    /// Marks the context as member `index` of a pool, for its span.
    pub(crate) fn member(mut self, index: usize) -> Self {
        self.member = Some(index);
        self
    }

    /// Starts the home runtime with Tokio's clock paused, for tests on
    /// virtual time (see `tokio::time::pause`). Default `false`.
    ///
    /// Only with the crate's `test-util` feature (which turns on Tokio's):
    /// without it this method does not exist ("no method named
    /// `start_paused`"). Add `aioctx = { version = "…", features =
    /// ["test-util"] }` to `[dev-dependencies]`.
    #[cfg(feature = "test-util")]
    pub fn start_paused(mut self, paused: bool) -> Self {
        self.start_paused = paused;
        self
    }

    /// The backend this builder asks for.
    pub(crate) fn backend_choice(&self) -> &Backend {
        &self.backend
    }

    /// The home thread's name.
    pub(crate) fn name(&self) -> &str {
        &self.thread_name
    }

    pub(super) fn setup<'a>(
        &self,
        choice: &'a Backend,
        runtime: &'a tokio::runtime::Handle,
        home: HomeThread,
    ) -> Setup<'a> {
        Setup {
            choice,
            ring: RingConfig {
                entries: self.entries,
                single_issuer: self.single_issuer,
                defer_taskrun: self.defer_taskrun,
                sqpoll_idle: self.sqpoll_idle,
                buffer_slots: self.buffer_slots,
                file_slots: self.file_slots,
                shared: false,
            },
            kicks: self.kick_foreign,
            dwell_warning: self.dwell_warning,
            runtime,
            home,
            worker: false,
        }
    }
}
