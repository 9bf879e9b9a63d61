//! The ring's driver as a Tokio task on the home runtime: when it turns, and
//! how it parks.
//!
//! The task sleeps on three wake sources: the ring's eventfd (completions,
//! through Tokio's reactor), the inbox's kick (foreign pushes), and local
//! pushes (ops created on the home thread go straight into the SQ and
//! schedule a turn with a same-thread wake, which costs no syscall). Shutdown
//! wakes it through a signal of its own. Whatever was queued while other
//! tasks ran goes to the kernel in the next turn's single `io_uring_enter`.
//!
//! Home-path ops (`LocalOp`s, whose tasks live in the home `LocalSet`) have
//! their turns run by a helper task in that `LocalSet` ([`LocalTurns`]): the
//! same submit and reap, less the inbox, so that their completions wake
//! their tasks inside the `LocalSet` rather than through the runtime.
//!
//! If the task ends any other way than by a drained shutdown (the runtime is
//! dropped under it, or a bug panics inside it), its `Drop` shuts the ring
//! down in order: the inbox closed, every op in the kernel cancelled and
//! drained, every future resolved (invariants 4, 7 and 9).

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use crate::park::{Park, Readiness, park};

use super::core::TurnOutcome;
use super::state::UringState;

/// Turns per poll before the driver yields to other tasks.
const TURNS_PER_POLL: usize = 8;

/// How long the driver of an SQPOLL ring keeps polling its CQ, with ops in
/// the kernel and no completion seen, before it sleeps on the eventfd.
const SQPOLL_CQ_POLL: Duration = Duration::from_micros(50);

pub(super) struct DriverTask {
    shared: Arc<UringState>,
    completions: AsyncFd<EventFd>,
    /// Set when the task has shut the ring down and dropped its core.
    finished: bool,
    /// On an SQPOLL ring: since when the driver has polled the CQ without
    /// seeing a completion.
    polling_since: Option<Instant>,
}

/// The ring's eventfd as a wake source of the park protocol.
struct CompletionSignal<'a>(&'a AsyncFd<EventFd>);

impl Readiness for CompletionSignal<'_> {
    /// Clears the eventfd's readiness if it fired. Called *before* reaping,
    /// so a completion posted after this point sets readiness anew and is
    /// never lost; when it returns `false` the task's waker is registered
    /// with the reactor.
    fn take(&mut self, waker: &Waker) -> bool {
        match self.0.poll_read_ready(&mut TaskContext::from_waker(waker)) {
            Poll::Ready(Ok(mut guard)) => {
                guard.clear_ready();
                true
            }
            Poll::Ready(Err(e)) => {
                tracing::error!(error = %e, "polling the ring's eventfd failed");
                true
            }
            Poll::Pending => false,
        }
    }
}

/// Our own fd for the ring's eventfd, registered with Tokio's reactor.
struct EventFd(OwnedFd);

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl DriverTask {
    /// Must run on the home thread, inside the home runtime.
    pub(super) fn new(shared: Arc<UringState>) -> io::Result<DriverTask> {
        let fd = shared
            .core
            .with(|core| core.ring().eventfd())
            .expect("the ring's driver is made on its home thread")?;
        // SAFETY: `EventFd` owns the fd, so it stays open and unchanged for
        // the life of the registration.
        let completions =
            unsafe { AsyncFd::register_with_interest(EventFd(fd), tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
        Ok(DriverTask {
            shared,
            completions,
            finished: false,
            polling_since: None,
        })
    }

    /// Ends the driver: the ring is closed with its core.
    fn finish(&mut self) {
        self.finished = true;
        drop(self.shared.core.take());
    }
}

/// Whether the driver should poll the CQ again instead of sleeping: on an
/// SQPOLL ring whose kernel thread has ops, for up to [`SQPOLL_CQ_POLL`]
/// after the last turn that reaped something (`polling_since` tracks it).
/// That thread's completions reach the CQ without a syscall of ours, so
/// sleeping on the eventfd between them costs a wake per few ops where
/// polling costs none.
fn polls_cq(shared: &UringState, polling_since: &mut Option<Instant>, reaped: bool) -> bool {
    let awaiting = shared.core.with(|core| core.awaits_sqpoll_completions());
    if awaiting != Some(true) {
        *polling_since = None;
        return false;
    }
    let now = Instant::now();
    if reaped {
        *polling_since = Some(now);
    }
    let since = *polling_since.get_or_insert(now);
    now.duration_since(since) < SQPOLL_CQ_POLL
}

impl Future for DriverTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        let shared = &*this.shared;
        for _ in 0..TURNS_PER_POLL {
            CompletionSignal(&this.completions).take(cx.waker());
            let reaped_before = shared.common.counters.cqes_reaped.load(Relaxed);
            let outcome = shared.core.with(|core| {
                core.set_waker(cx.waker());
                core.turn(&shared.inbox, &shared.common)
            });
            match outcome {
                Some(TurnOutcome::Idle) => {}
                Some(TurnOutcome::MoreWork) => continue,
                Some(TurnOutcome::ShutDown) | None => {
                    this.finish();
                    return Poll::Ready(());
                }
            }
            // Relaxed: the counter is written only on this thread, by the
            // turn above.
            let reaped = shared.common.counters.cqes_reaped.load(Relaxed) != reaped_before;
            if polls_cq(shared, &mut this.polling_since, reaped) {
                // Not parked: pushes land in the inbox without a kick and
                // are drained on the next turn, which comes after the tasks
                // this turn woke have run.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Park: register with every wake source, in the protocol's
            // order (park.rs), turning again if any has something.
            let mut completions = CompletionSignal(&this.completions);
            let parked = park(
                cx.waker(),
                &shared.common.shutdown,
                Some(&shared.inbox),
                Some(&mut completions),
            );
            if parked == Park::Sleep {
                return Poll::Pending;
            }
        }
        // Busy: let the tasks this driver woke run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The driver's helper in the home `LocalSet`: runs the turns one-thread
/// ops (`LocalOp`s, whose tasks live in that `LocalSet`) schedule. The
/// driver task is a task of the home runtime, so a completion it delivers to
/// a `LocalSet` task wakes the `LocalSet` through the runtime (an unpark,
/// then a park that returns at once: two syscalls per wake at one op in
/// flight); a turn run from inside the `LocalSet` wakes its tasks there, and
/// is woken by them there, for free. The inbox, parking on the eventfd and
/// shutdown stay the driver task's. Ends once the driver has dropped the
/// core.
pub(super) struct LocalTurns {
    shared: Arc<UringState>,
}

impl LocalTurns {
    pub(super) fn new(shared: Arc<UringState>) -> LocalTurns {
        LocalTurns { shared }
    }
}

impl Future for LocalTurns {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let shared = &*self.shared;
        let turned = shared.core.with(|core| {
            core.set_local_waker(cx.waker());
            if core.turn_scheduled {
                core.local_turn(&shared.common);
            }
        });
        match turned {
            Some(()) => Poll::Pending,
            // The core is gone: the driver has shut the ring down.
            None if shared.core.is_taken() => Poll::Ready(()),
            // Lent (polled from inside a completion): again after it.
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl Drop for DriverTask {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        tracing::error!("the aioctx ring driver ended before shutdown; shutting the ring down");
        let shared = &*self.shared;
        shared
            .core
            .with(|core| core.shut_down(&shared.inbox, &shared.common));
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::task::Waker;
    use std::time::Duration;

    use crate::backend::Reactor;
    use crate::backend::common::Placement;
    use crate::backend::uring::Uring;
    use crate::home_thread::HomeThread;
    use crate::lifecycle::Fresh;
    use crate::ops::{FileFd, Operation, ReadAt, UringOp, erase};
    use crate::ring::RingConfig;

    /// A driver task that ends without a shutdown (here: its runtime is
    /// dropped under it, as when a bug panics inside it) still cancels and
    /// drains what is in the kernel before the ring closes: the read in
    /// flight resolves with the kernel's own answer to the cancel, and
    /// nothing is written into its buffer afterwards.
    #[test]
    fn driver_dropped_mid_flight_drains_the_ring() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = RingConfig::for_test(8);
        let uring = match Uring::new(config, HomeThread::current(), true, runtime.handle(), None) {
            Ok(uring) => uring,
            Err(e) => return eprintln!("skipping: io_uring is unavailable ({e})"),
        };
        let driver = {
            let _runtime = runtime.enter();
            uring.spawn_driver().unwrap()
        };
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fresh fds on success.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are fresh and owned by nobody else.
        let (reader, mut writer) = unsafe {
            (
                OwnedFd::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        let read = ReadAt::new(
            FileFd::new(reader.as_raw_fd()),
            Vec::with_capacity(64),
            0,
            0,
        );
        let mut fresh = Fresh::new(read, ());
        let sqe = fresh.with_kind(|kind| kind.sqe());
        let (half, op) = fresh.share(Waker::noop().clone());
        assert_eq!(uring.submit(erase(op), &sqe, false), Placement::Here);
        // Let the driver submit the read; it stays in the kernel.
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        let submitted = &uring.common().counters.sqes_submitted;
        assert_eq!(submitted.load(std::sync::atomic::Ordering::Relaxed), 1);

        drop(driver);
        drop(runtime);

        assert!(
            uring.common().shutdown.is_raised(),
            "the context is shut down"
        );
        let Ok((read, cqe)) = half.poll(Waker::noop()) else {
            panic!("the drain resolved the read");
        };
        let error = cqe.result.as_ref().expect_err("the read was cancelled");
        assert!(
            !crate::error::is_shutdown(error),
            "resolved before the kernel answered"
        );
        assert!(matches!(
            error.raw_os_error(),
            Some(libc::ECANCELED | libc::EINTR)
        ));
        writer.write_all(b"late").unwrap();
        let (_, buf) = read.complete(cqe);
        assert!(buf.is_empty(), "nothing landed in the buffer");
    }
}
