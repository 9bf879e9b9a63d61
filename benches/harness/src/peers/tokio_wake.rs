//! Not an I/O peer but a physical limit of the design: 32 tasks on a Tokio current-thread
//! runtime, where each "op" is one self-wake and re-poll of the task. Any crate that completes
//! an op by waking a Tokio task pays at least this per op, on top of the ring's own cost.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::group::{RunError, RunResult};
use crate::measure::{Measurement, Phase, Window};

/// A future that wakes its task and returns `Pending` once, then completes: the scheduling
/// part of an op with no I/O.
struct WakeOnce {
    woken: bool,
}

impl Future for WakeOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken {
            return Poll::Ready(());
        }
        self.woken = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Wake-and-repoll throughput of `tasks` local tasks on a current-thread runtime.
pub fn wake_tasks(window: Window, tasks: usize) -> RunResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let phase = Rc::new(Phase::new());
        let workers: Vec<_> = (0..tasks)
            .map(|_| {
                let phase = Rc::clone(&phase);
                tokio::task::spawn_local(async move {
                    let mut ops = 0u64;
                    while !phase.is_stopped() {
                        WakeOnce { woken: false }.await;
                        if phase.is_measuring() {
                            ops += 1;
                        }
                    }
                    ops
                })
            })
            .collect();
        let span = phase.run_async(window).await;
        let mut ops = 0;
        for worker in workers {
            ops += worker.await.map_err(|e| RunError::Fail(e.to_string()))?;
        }
        Ok(Measurement::throughput(ops, span.elapsed).with_cpu(span.cpu))
    })
}
