//! Running futures against a context from any thread: [`Context::enter`]
//! (QEMU's `aio_co_enter`), [`Context::spawn`] and [`Context::block_on`], and
//! the [`JoinHandle`] they return.
//!
//! `enter` polls the future once, inline, on the calling thread, with the
//! context bound, so the ops it starts are queued from that thread exactly as
//! a vCPU thread queues block I/O while it handles an MMIO exit. If that poll
//! returns `Pending`, the future is parked in an [`Entered`] cell whose waker,
//! the first time it fires, spawns the future onto the home thread; every
//! later poll runs there. Until then no cross-thread traffic is spent on the
//! future at all: the op's own push (and its kick) is the only message, and
//! its completion wakes the hand-off on the home thread, where spawning is a
//! same-thread queue push.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};

use futures::FutureExt;
use tokio::sync::oneshot;

use crate::context::bind::with_context;
use crate::context::handle::Context;
use crate::home_thread::HomeThread;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs `future` inline on the calling thread until it first returns
/// `Pending`, then on `ctx`'s home thread; see [`Context::enter`].
pub(crate) fn enter<F>(ctx: &Context, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let mut future: BoxFuture<F::Output> = Box::pin(future);
    let entered = Arc::new(Entered {
        runtime: ctx.state().runtime().clone(),
        state: Mutex::new(EnteredState::Polling { woken: false }),
    });
    let waker = Waker::from(entered.clone());
    let first = with_context(ctx, || {
        future.as_mut().poll(&mut TaskContext::from_waker(&waker))
    });
    match first {
        Poll::Ready(output) => handle(ctx, Inner::Ready(Some(output))),
        Poll::Pending => {
            let output = Output {
                tx: Some(tx),
                finished: finished.clone(),
            };
            entered.park(future, output);
            handle(ctx, Inner::Entered { rx, finished })
        }
    }
}

/// The handle of a task spawned onto `ctx`'s home runtime.
pub(crate) fn task_handle<T>(ctx: &Context, task: tokio::task::JoinHandle<T>) -> JoinHandle<T> {
    handle(ctx, Inner::Task(task))
}

fn handle<T>(ctx: &Context, inner: Inner<T>) -> JoinHandle<T> {
    JoinHandle {
        inner,
        runtime: ctx.state().runtime().clone(),
        home: ctx.state().home(),
    }
}

/// A future between its inline poll and its first poll on the home thread.
///
/// It holds the home runtime's handle, not a [`Context`]: a future waiting
/// for an op must not keep the context from shutting down.
struct Entered<T> {
    runtime: tokio::runtime::Handle,
    state: Mutex<EnteredState<T>>,
}

enum EnteredState<T> {
    /// The inline poll is running; `woken` records a wake during it.
    Polling { woken: bool },
    /// The inline poll returned `Pending`; waiting for the first wake.
    Parked {
        future: BoxFuture<T>,
        output: Output<T>,
    },
    /// Spawned onto the home thread; later wakes belong to that task.
    Spawned,
}

/// Where an entered future's output goes. Dropped (with or without sending)
/// once the future is done or can never run: its drop marks the handle
/// finished either way.
struct Output<T> {
    tx: Option<oneshot::Sender<std::thread::Result<T>>>,
    finished: Arc<AtomicBool>,
}

impl<T> Output<T> {
    fn send(mut self, result: std::thread::Result<T>) {
        if let Some(tx) = self.tx.take() {
            // Refused only when the handle is gone: nobody waits for the
            // output, which drops here.
            let _ = tx.send(result);
        }
    }
}

impl<T> Drop for Output<T> {
    fn drop(&mut self) {
        // Release: pairs with the Acquire in `is_finished`, after the send.
        self.finished.store(true, Ordering::Release);
    }
}

impl<T: Send + 'static> Entered<T> {
    /// Stores the future after an inline `Pending`; spawns it at once if it
    /// was woken during the inline poll.
    fn park(self: &Arc<Self>, future: BoxFuture<T>, output: Output<T>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let woken = matches!(*state, EnteredState::Polling { woken: true });
        if woken {
            *state = EnteredState::Spawned;
            drop(state);
            self.spawn(future, output);
        } else {
            *state = EnteredState::Parked { future, output };
        }
    }

    fn spawn(&self, future: BoxFuture<T>, output: Output<T>) {
        // If the runtime has shut down the task is dropped unpolled, with
        // `output`: the handle then reports cancellation.
        self.runtime.spawn(async move {
            let result = AssertUnwindSafe(future).catch_unwind().await;
            output.send(result);
        });
    }
}

impl<T: Send + 'static> Wake for Entered<T> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *state, EnteredState::Spawned) {
            EnteredState::Polling { .. } => *state = EnteredState::Polling { woken: true },
            EnteredState::Parked { future, output } => {
                drop(state);
                self.spawn(future, output);
            }
            EnteredState::Spawned => {}
        }
    }
}

/// An owned permission to wait for a future started by [`Context::enter`] or
/// [`Context::spawn`].
///
/// Await it, or [`join`](JoinHandle::join) it from a blocking thread.
/// Dropping it detaches the future, which keeps running.
pub struct JoinHandle<T> {
    inner: Inner<T>,
    /// The home runtime, whose handle blocks in `join`.
    runtime: tokio::runtime::Handle,
    home: HomeThread,
}

enum Inner<T> {
    /// Finished during the inline poll.
    Ready(Option<T>),
    /// Handed to the home thread by `enter`.
    Entered {
        rx: oneshot::Receiver<std::thread::Result<T>>,
        finished: Arc<AtomicBool>,
    },
    /// Spawned onto the home runtime.
    Task(tokio::task::JoinHandle<T>),
}

// The output is never pinned: it is moved out as soon as it exists.
impl<T> Unpin for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    /// Blocks the calling thread until the future finishes.
    ///
    /// # Panics
    ///
    /// On the context's home thread, where blocking would stop the thread
    /// that runs the future; and on a thread that drives a Tokio runtime (a
    /// worker, or inside a `block_on`), where blocking would stall that
    /// runtime (Tokio's own check and message). A thread of a runtime's
    /// blocking pool may join.
    pub fn join(self) -> Result<T, JoinError> {
        if let Inner::Ready(output) = self.inner {
            return Ok(output.expect("JoinHandle joined after completion"));
        }
        assert!(
            !self.home.is_current(),
            "JoinHandle::join called on the context's own home thread: it would deadlock"
        );
        let runtime = self.runtime.clone();
        runtime.block_on(self)
    }

    /// Whether the future has finished, or was dropped by shutdown (its
    /// output, or the cancellation, may still be unread).
    pub fn is_finished(&self) -> bool {
        match &self.inner {
            Inner::Ready(_) => true,
            // Acquire: pairs with the Release in `Output::drop`.
            Inner::Entered { finished, .. } => finished.load(Ordering::Acquire),
            Inner::Task(task) => task.is_finished(),
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().inner {
            Inner::Ready(output) => Poll::Ready(Ok(output
                .take()
                .expect("JoinHandle polled after completion"))),
            Inner::Entered { rx, .. } => Pin::new(rx).poll(cx).map(|received| match received {
                Ok(Ok(output)) => Ok(output),
                Ok(Err(payload)) => Err(JoinError::Panicked(payload)),
                Err(_) => Err(JoinError::Cancelled),
            }),
            Inner::Task(task) => Pin::new(task).poll(cx).map(|joined| {
                joined.map_err(|e| match e.try_into_panic() {
                    Ok(payload) => JoinError::Panicked(payload),
                    Err(_) => JoinError::Cancelled,
                })
            }),
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a [`JoinHandle`] has no output.
pub enum JoinError {
    /// The context shut down before the future finished; it was dropped.
    Cancelled,
    /// The future panicked on the home thread; this is the panic's payload.
    Panicked(Box<dyn Any + Send + 'static>),
}

impl JoinError {
    /// Whether the future was dropped by shutdown.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// Whether the future panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// Resumes the future's panic on the calling thread; returns a
    /// cancellation unchanged.
    pub fn resume_panic(self) -> JoinError {
        match self {
            JoinError::Panicked(payload) => panic::resume_unwind(payload),
            cancelled => cancelled,
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("JoinError::Cancelled"),
            JoinError::Panicked(_) => f.write_str("JoinError::Panicked(..)"),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("task cancelled by context shutdown"),
            JoinError::Panicked(_) => f.write_str("task panicked"),
        }
    }
}

impl std::error::Error for JoinError {}
