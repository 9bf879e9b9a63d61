//! A worker-ring actor's own step: the ring of the worker running it closed
//! while ops are in it. One to three data ops start, each polled once, so
//! that its SQE waits in the worker's ring for the reaper's flush; the task
//! yields a drawn zero to two times (so that at times the reaper has
//! entered, and the kernel has them, or the task has moved to the other
//! worker, whose ring then closes instead); then the ring closes. What never
//! went in fails with the shutdown error, what the kernel has is cancelled
//! and drained, and the ops of other tasks in that ring resolve the same
//! way, wherever those tasks run now. Each op then meets its fate and the
//! checks of its kind, against the same model (the round's count of closes
//! lets the shutdown error through); the worker's next op makes it a new
//! ring.

use std::pin::pin;
use std::task::Poll;

use futures::future::join_all;

use super::{Actor, Fate, Plan, bump};
use crate::watchdog::set_doing;

impl Actor {
    /// Closes the ring of the worker running this step with ops in it.
    pub(super) async fn close_ring_in_flight(&mut self) {
        let count = self.dice.range(1, 3);
        let plans: Vec<(Plan, Fate)> = (0..count)
            .map(|_| {
                let plan = self.plan();
                (plan, self.draw_fate())
            })
            .collect();
        let yields = self.dice.below(3);
        self.spend(count);
        set_doing(
            self.id,
            self.what(&("close the worker's ring with ops in it", yields, &plans)),
        );
        let done = {
            let this = &*self;
            let workers = this.worker_rings().expect("an actor on worker rings");
            let mut runs = pin!(join_all(
                plans
                    .into_iter()
                    .map(|(plan, fate)| this.run(plan, fate, false)),
            ));
            let first = futures::poll!(runs.as_mut());
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            if workers.close_this_threads_ring() {
                bump(&this.round.stats.ring_closes, 1);
            }
            match first {
                Poll::Ready(done) => done,
                Poll::Pending => runs.await,
            }
        };
        for done in done {
            self.keep(done);
        }
    }
}
