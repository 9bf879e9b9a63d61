//! The io_uring backend: one ring, driven by its home thread.
//!
//! ```text
//!  any thread                                   home thread
//!  ──────────                                   ───────────
//!  start ──push──► inbox ──kick (if parked)───► DriverTask (task.rs)
//!                                                 └─ Core::turn (turn.rs)
//!  start on the home thread ──straight to SQ──►      drain → SQ → enter → reap
//! ```
//!
//! Only the home thread ever reaches the [`Core`] (and so the ring): ops
//! created there go straight into the submission queue through a
//! [`HomeOnly`] cell; ops from any other thread go through the inbox, whose
//! push wakes the driver if it sleeps (see `inbox.rs`). Files: `shared.rs`
//! what every thread shares, `turn.rs` the driver's state and turn,
//! `task.rs` the Tokio task that turns it, `slots.rs` the ops in the kernel,
//! `policy.rs` when local pushes enter.
//!
//! Ops the ring has no SQE for run as blocking calls on the home runtime's
//! blocking pool, through a [`Fallback`] the ring keeps for them: a
//! directory listing (io_uring has no opcode for it), and the namespace ops
//! whose opcode the kernel's probe did not find (`RENAMEAT` and `UNLINKAT`
//! came in 5.11, `MKDIRAT`, `SYMLINKAT` and `LINKAT` in 5.15). A missing
//! namespace opcode is never an error and never a reason to fall back:
//! [`RingFlags::namespace_blocking`] and `Metrics::ops_blocking` say so.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::backend::common::{Common, Placement};
use crate::backend::fallback::Fallback;
use crate::error::{Cqe, shutdown_error};
use crate::home_thread::{HomeOnly, HomeThread};
use crate::inbox::{Inbox, Kick};
use crate::lifecycle::Canceller;
use crate::metrics::{Counters, RingFlags};
use crate::ops::{OPCODES, OPTIONAL_OPCODES, OnRing, OpRef, Opcode};
use crate::ring::{Ring, RingConfig, Sqe, op};

mod policy;
mod registry;
mod shared;
mod slots;
mod task;
mod turn;

use shared::Shared;
use task::DriverTask;
use turn::{Core, Request, Submission};

/// The driver's own opcode: cancels for dropped ops.
const ASYNC_CANCEL: Opcode = (op::AsyncCancel::CODE, "ASYNC_CANCEL");

/// A ring backend: cheap to clone, shared by every thread.
#[derive(Clone)]
pub(crate) struct Uring {
    shared: Arc<Shared>,
    blocking: Arc<Blocking>,
}

/// The ops the ring runs as blocking calls, and which of its optional
/// opcodes the kernel lacks.
struct Blocking {
    pool: Fallback,
    /// Bit `code` set: the kernel lacks optional opcode `code` (each below
    /// 64, checked where `OPTIONAL_OPCODES` is declared).
    lacking: AtomicU64,
}

/// The names of the optional opcodes whose bits `lacking` sets.
fn names_of(lacking: u64) -> Vec<&'static str> {
    OPTIONAL_OPCODES
        .iter()
        .filter(|(code, _)| lacking & 1 << code != 0)
        .map(|(_, name)| *name)
        .collect()
}

impl Uring {
    /// Sets up a ring on the calling thread, which becomes its home;
    /// `runtime` (the home runtime) runs the ops the ring has no SQE for.
    ///
    /// # Errors
    ///
    /// The ring's setup error, or `Unsupported` naming the opcodes the
    /// kernel lacks (of those every ring must have: not the namespace ops').
    pub(crate) fn new(
        config: RingConfig,
        home: HomeThread,
        kicks: bool,
        runtime: &tokio::runtime::Handle,
    ) -> io::Result<Uring> {
        let ring = Ring::new(config)?;
        let needed: Vec<Opcode> = OPCODES.iter().copied().chain([ASYNC_CANCEL]).collect();
        // A kernel too old to probe is also too old for the ring's other
        // requirements, which setup already checked.
        if let Ok(missing) = ring.missing_opcodes(&needed)
            && !missing.is_empty()
        {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "io_uring lacks opcodes aioctx needs: {}",
                    missing.join(", ")
                ),
            ));
        }
        let lacking = match ring.missing_opcodes(OPTIONAL_OPCODES) {
            Ok(names) => OPTIONAL_OPCODES
                .iter()
                .filter(|(_, name)| names.contains(name))
                .fold(0, |bits, (code, _)| bits | 1 << code),
            Err(_) => OPTIONAL_OPCODES
                .iter()
                .fold(0, |bits, (code, _)| bits | 1 << code),
        };
        if lacking != 0 {
            tracing::info!(
                opcodes = %names_of(lacking).join(", "),
                "io_uring lacks these namespace opcodes; their ops run as blocking calls"
            );
        }
        let flags = ring.flags();
        let file_table = ring.file_slots() > 0;
        let core = Core::new(ring);
        #[cfg(feature = "fault-injection")]
        let faults = Arc::new(crate::fault::FaultQueue::default());
        #[cfg(feature = "fault-injection")]
        let core = core.with_faults(faults.clone());
        Ok(Uring {
            shared: Arc::new(Shared {
                common: Common::new(home),
                inbox: Inbox::new(kicks),
                core: HomeOnly::new(home, core),
                flags,
                file_table,
                #[cfg(feature = "fault-injection")]
                faults,
            }),
            blocking: Arc::new(Blocking {
                pool: Fallback::new(runtime.clone(), home),
                lacking: AtomicU64::new(lacking),
            }),
        })
    }

    pub(crate) fn common(&self) -> &Common {
        &self.shared.common
    }

    pub(crate) fn flags(&self) -> RingFlags {
        RingFlags {
            namespace_blocking: self.blocking.lacking.load(Relaxed) != 0,
            ..self.shared.flags
        }
    }

    /// Whether an op the ring runs `on_ring` runs as a blocking call here:
    /// it has no opcode, or the kernel lacks its opcode. For the ops every
    /// ring has ([`OnRing::Sqe`]), a constant `false`.
    #[inline]
    pub(crate) fn runs_blocking(&self, on_ring: OnRing) -> bool {
        match on_ring {
            OnRing::Sqe => false,
            OnRing::Blocking => true,
            // Relaxed: set at setup (or by a test before its ops), read as a
            // plain flag; no other memory hangs on it.
            OnRing::IfProbed((code, _)) => self.blocking.lacking.load(Relaxed) & 1 << code != 0,
        }
    }

    /// The pool that runs the ops [`runs_blocking`](Uring::runs_blocking)
    /// picks.
    pub(crate) fn blocking_pool(&self) -> &Fallback {
        &self.blocking.pool
    }

    /// Ops run as blocking calls so far.
    pub(crate) fn blocking_ops(&self) -> u64 {
        let counters = &self.blocking.pool.common().counters;
        counters.ops_local.load(Relaxed) + counters.ops_foreign.load(Relaxed)
    }

    /// Test-only: runs the ops of the namespace opcodes named in `names` as
    /// blocking calls from now on, as on a kernel that lacks them.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn hide_opcodes(&self, names: &[&str]) -> io::Result<()> {
        let mut bits = 0;
        for name in names {
            let Some((code, _)) = OPTIONAL_OPCODES.iter().find(|(_, known)| known == name) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name} is not a namespace opcode the ring may lack"),
                ));
            };
            bits |= 1 << code;
        }
        self.blocking.lacking.fetch_or(bits, Relaxed);
        Ok(())
    }

    /// The test-only faults the driver applies to completions.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn faults(&self) -> &crate::fault::FaultQueue {
        &self.shared.faults
    }

    /// Hands an op to the driver: straight into the SQ on the home thread,
    /// through the inbox (with a kick if the driver sleeps) elsewhere. An op
    /// the driver cannot take (shut down) is completed with the error.
    pub(crate) fn start(&self, op: OpRef, sqe: Sqe) -> Placement {
        let shared = &*self.shared;
        let submission = Submission {
            op,
            sqe,
            pushed_at: None,
        };
        let mut submission = match shared.core.try_with(submission, |core, submission| {
            core.submit_local(&shared.common, submission)
        }) {
            Ok(()) => return Placement::Here,
            Err(submission) => submission,
        };
        submission.pushed_at = Some(Instant::now());
        let counters = &shared.common.counters;
        match shared.inbox.push(Request::Submit(submission)) {
            Ok(kick) => {
                Counters::add(&counters.ops_foreign, 1);
                let counter = match kick {
                    Kick::Sent => &counters.kicks_sent,
                    Kick::Coalesced => &counters.kicks_coalesced,
                    Kick::Suppressed => &counters.kicks_suppressed,
                };
                Counters::add(counter, 1);
                Placement::Queued
            }
            Err(closed) => {
                if let Request::Submit(submission) = closed.0 {
                    submission.op.complete(Cqe::not_run(shutdown_error()));
                }
                Placement::Here
            }
        }
    }

    /// Passes a dropped op's reference to the driver, which cancels the op if
    /// it is in the kernel.
    pub(crate) fn cancel(&self, canceller: Canceller) {
        let shared = &*self.shared;
        if let Err(canceller) = shared.core.try_with(canceller, |core, canceller| {
            core.cancel(&shared.common, canceller)
        }) {
            // Closed: shutdown cancels everything in flight anyway.
            let _ = shared.inbox.push(Request::Cancel(canceller));
        }
    }

    /// Spawns the driver task, and the blocking pool's. Must run on the home
    /// thread, inside the home runtime. However the ring's driver ends, the
    /// blocking pool shuts down with it.
    pub(crate) fn spawn_driver(&self) -> io::Result<tokio::task::JoinHandle<()>> {
        let driver = DriverTask::new(self.shared.clone())?;
        drop(self.blocking.pool.spawn_driver());
        let blocking = ShutDownOnDrop(self.blocking.clone());
        Ok(tokio::spawn(tokio::task::coop::unconstrained(async move {
            let _blocking = blocking;
            driver.await;
        })))
    }

    /// Registers `iovecs` in the ring's buffer table; returns the first slot.
    /// On the home thread only.
    ///
    /// # Safety
    ///
    /// As [`Core::register_buffers`].
    pub(crate) unsafe fn register_buffers(&self, iovecs: &[libc::iovec]) -> io::Result<u16> {
        self.shared
            .core
            // SAFETY: the caller's contract.
            .with(|core| unsafe { core.register_buffers(iovecs) })
            .unwrap_or_else(|| Err(off_home("registering buffers")))
    }

    /// Clears and frees buffer slots. On the home thread only; returns
    /// whether it ran.
    pub(crate) fn unregister_buffers(&self, first: u16, count: usize) -> bool {
        self.shared
            .core
            .with(|core| core.unregister_buffers(first, count))
            .is_some()
    }

    /// Registers `fd` in the ring's file table; returns its slot. On the home
    /// thread only.
    pub(crate) fn register_file(&self, fd: std::os::fd::RawFd) -> io::Result<u32> {
        self.shared
            .core
            .with(|core| core.register_file(fd))
            .unwrap_or_else(|| Err(off_home("registering a file")))
    }

    /// Takes a file out of the ring's file table. On the home thread only;
    /// returns whether it ran.
    pub(crate) fn unregister_file(&self, slot: u32) -> bool {
        self.shared
            .core
            .with(|core| core.unregister_file(slot))
            .is_some()
    }

    /// Whether the ring has a table for registered files.
    pub(crate) fn has_file_table(&self) -> bool {
        self.shared.file_table
    }

    /// Asks the driver to shut the ring down, and the blocking pool.
    pub(crate) fn shut_down(&self) {
        self.shared.common.shutdown.raise();
        self.blocking.pool.shut_down();
    }
}

/// Shuts the blocking pool down when the ring's driver task ends.
struct ShutDownOnDrop(Arc<Blocking>);

impl Drop for ShutDownOnDrop {
    fn drop(&mut self) {
        self.0.pool.shut_down();
    }
}

/// The error of a home-only request made elsewhere (or once the ring is
/// gone).
fn off_home(what: &str) -> io::Error {
    io::Error::other(format!(
        "{what} must run on the context's home thread, while it runs"
    ))
}
