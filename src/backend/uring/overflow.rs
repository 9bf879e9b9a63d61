//! Backlog overflow episodes: when ops start and stop waiting in the
//! driver's backlog because the SQ or the in-flight limit is full, reported
//! once per episode instead of once per op. A record kept by the core, and
//! the core's per-turn look at it.
//!
//! An episode opens at the first turn that, having put into the SQ all that
//! fits, still leaves ops in the backlog: one `warn` event, with how many
//! wait, how many are in flight, and which limit holds them. It closes at
//! the first turn whose flush empties the backlog: one `debug` event with
//! how many ops waited during the episode, the most at once, and the turns
//! it lasted. Ops backlogged and flushed within one turn (a burst an enter
//! makes room for at once) open none. The look is per turn and costs one
//! length check when there is no backlog; nothing here runs per op.

use std::sync::atomic::Ordering::Relaxed;

use crate::backend::common::Common;

use super::core::Core;

/// The backlog's current overflow episode, if one is open.
#[derive(Debug, Default)]
pub(super) struct Overflow {
    episode: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    /// The `backlogged` counter before the episode's ops went in.
    backlogged_before: u64,
    /// The most ops waiting at once.
    peak: usize,
    /// Turns the episode has lasted.
    turns: u64,
}

impl Core {
    /// The turn's look at the backlog, after the flush: opens, extends or
    /// closes the overflow episode.
    pub(super) fn watch_backlog(&mut self, common: &Common) {
        let waiting = self.backlog.len();
        if waiting == 0 && self.overflow.episode.is_none() {
            return;
        }
        // Relaxed: written only on this thread.
        let backlogged = common.counters.backlogged.load(Relaxed);
        match (&mut self.overflow.episode, waiting) {
            (None, _) => {
                let cause = if self.ring.has_room() {
                    "the in-flight limit (the completion queue's size) is reached"
                } else {
                    "the submission queue is full"
                };
                tracing::warn!(
                    waiting,
                    in_flight = self.slots.len(),
                    cq_entries = self.ring.cq_capacity(),
                    cause,
                    "aioctx ops wait in the backlog for room in the ring; \
                     `Builder::entries` sets its size"
                );
                self.overflow.episode = Some(Episode {
                    backlogged_before: backlogged - waiting as u64,
                    peak: waiting,
                    turns: 1,
                });
            }
            (Some(episode), 0) => {
                tracing::debug!(
                    waited = backlogged - episode.backlogged_before,
                    peak = episode.peak,
                    turns = episode.turns,
                    "aioctx backlog drained"
                );
                self.overflow.episode = None;
            }
            (Some(episode), waiting) => {
                episode.peak = episode.peak.max(waiting);
                episode.turns += 1;
            }
        }
    }
}
