//! The home-thread path under stress: a `Driver::Local` actor's steps, run
//! in a local task on its context's home thread with a `LocalRing` made
//! there, which takes the home path on io_uring and makes ordinary ops on
//! the fallback. A share of its steps send their reads, writes, syncs and
//! nops through the ring and a `LocalFile` (one op, or a few at once); some
//! give the file up first, its last `File` handle dropped so that the
//! `LocalFile` and its ops hold it alone, and a dropped op's cell the last
//! count while the kernel has the op. Each op meets a fate as every other
//! op does, and reads and writes are checked by `ops.rs`'s code, against
//! the same model. The other steps are the actor's ordinary ones.

use std::sync::atomic::Ordering::SeqCst;

use aioctx::buf::AlignedBuf;
use aioctx::local::{LocalFile, LocalRing};
use futures::future::join_all;

use super::{Actor, Done, Fate, OpenFile, STEPS_AFTER_SHUTDOWN, bump};
use crate::bufs::{BufKind, ReadTarget, TrackedBuf, WriteSource, fully_initialised};
use crate::model::pattern_bytes;
use crate::watchdog::set_doing;

/// Steps, in percent, that go through the `LocalRing` (once a file is
/// open).
const LOCAL_SHARE: u64 = 60;
/// Local steps, in percent, that give their file up first.
const GIVE_UP_SHARE: u64 = 10;

/// A data op that a `LocalRing` or a `LocalFile` makes.
#[derive(Debug)]
enum LocalPlan {
    /// `prefill`: the buffer starts filled with the canary.
    Read {
        offset: u64,
        len: usize,
        buf: BufKind,
        prefill: bool,
    },
    Write {
        offset: u64,
        len: usize,
        buf: BufKind,
    },
    Sync {
        data_only: bool,
    },
    Nop,
}

impl Actor {
    /// One step of a local actor, in a task on its context's home thread:
    /// through `ring` for a share of steps, an ordinary step otherwise.
    pub(crate) async fn step_local(&mut self, ring: &LocalRing) {
        if self.open.is_empty() || !self.dice.chance(LOCAL_SHARE) {
            return self.step().await;
        }
        let started_after = self.round.shutdown_complete.load(SeqCst);
        if self.shutting_down() {
            self.budget = self.budget.min(STEPS_AFTER_SHUTDOWN);
        }
        let at = self.dice.below(self.open.len() as u64) as usize;
        let given_up = self.dice.chance(GIVE_UP_SHARE);
        let (m, registered, file) = if given_up {
            // The last handle goes: the `LocalFile` keeps the file open.
            let OpenFile { model, file, .. } = self.open.swap_remove(at);
            (model, file.is_registered(), ring.file(&file))
        } else {
            let open = &self.open[at];
            (open.model, open.file.is_registered(), ring.file(&open.file))
        };
        assert_eq!(
            file.is_home_path(),
            ring.is_home_path(),
            "{}: a file of the ring's own context",
            self.what(&("local file", m))
        );
        let count = if self.dice.chance(60) {
            1
        } else {
            self.dice.range(2, 3)
        };
        let plans: Vec<(LocalPlan, Fate)> = (0..count)
            .map(|_| {
                let plan = self.local_plan(m);
                (plan, self.draw_fate())
            })
            .collect();
        self.spend(count);
        let stats = &self.round.stats;
        bump(&stats.local_ops, count);
        if ring.is_home_path() {
            bump(&stats.local_home_ops, count);
        }
        if given_up {
            bump(&stats.local_given_up, 1);
        }
        if registered {
            bump(&stats.registered_ops, count);
        }
        set_doing(self.id, self.what(&("local", m, given_up, &plans)));
        let this = &*self;
        let done = join_all(
            plans
                .into_iter()
                .map(|(plan, fate)| this.run_local(plan, fate, m, &file, ring, started_after)),
        )
        .await;
        // A given-up file closes here, or when the kernel is done with the
        // last of its dropped ops.
        drop(file);
        for done in done {
            self.keep(done);
        }
    }

    /// A read or write on model `m`'s file, a sync, or a nop.
    fn local_plan(&mut self, m: usize) -> LocalPlan {
        match self.dice.weighted(&[8, 8, 2, 2]) {
            0 => {
                let len = self.dice.len();
                let (offset, len) = self.read_range(m, len);
                LocalPlan::Read {
                    offset,
                    len,
                    buf: BufKind::draw(&mut self.dice),
                    prefill: self.dice.chance(50),
                }
            }
            1 => {
                let len = self.dice.len();
                let (offset, len) = self.write_range(m, len);
                LocalPlan::Write {
                    offset,
                    len,
                    buf: BufKind::draw(&mut self.dice),
                }
            }
            2 => LocalPlan::Sync {
                data_only: self.dice.chance(50),
            },
            _ => LocalPlan::Nop,
        }
    }

    /// Runs `plan` on `file` (model `m`'s) or `ring` to its fate, with the
    /// checks of the ordinary op of its kind.
    async fn run_local(
        &self,
        plan: LocalPlan,
        fate: Fate,
        m: usize,
        file: &LocalFile,
        ring: &LocalRing,
        started_after: bool,
    ) -> Done {
        let what = self.what(&("local", &plan, fate));
        let live = &self.round.live;
        match plan {
            LocalPlan::Read {
                offset,
                len,
                buf,
                prefill,
            } => {
                let prefill = prefill || self.round.init_bufs;
                let held_ok = fully_initialised(buf, prefill);
                macro_rules! read {
                    ($t:ty) => {
                        self.read(
                            m,
                            offset,
                            <$t>::target(len, prefill, live),
                            false,
                            fate,
                            held_ok,
                            started_after,
                            &what,
                            |buf| file.read_at(buf, offset),
                        )
                        .await
                    };
                }
                match buf {
                    BufKind::Vec => read!(Vec<u8>),
                    BufKind::Bytes => read!(bytes::BytesMut),
                    BufKind::Boxed => read!(Box<[u8]>),
                    BufKind::Aligned => read!(AlignedBuf),
                    BufKind::Tracked => read!(TrackedBuf),
                }
            }
            LocalPlan::Write { offset, len, buf } => {
                let data = pattern_bytes(self.lock(m).id, offset, len);
                macro_rules! write {
                    ($t:ty) => {
                        self.write(
                            m,
                            offset,
                            <$t>::source(&data, live),
                            &data,
                            fate,
                            started_after,
                            &what,
                            |buf| file.write_at(buf, offset),
                        )
                        .await
                    };
                }
                match buf {
                    BufKind::Vec => write!(Vec<u8>),
                    BufKind::Bytes => write!(bytes::BytesMut),
                    BufKind::Boxed => write!(Box<[u8]>),
                    BufKind::Aligned => write!(AlignedBuf),
                    BufKind::Tracked => write!(TrackedBuf),
                }
            }
            LocalPlan::Sync { data_only } => {
                let op = if data_only {
                    file.sync_data()
                } else {
                    file.sync_all()
                };
                self.unit(self.fate(fate, op).await, started_after, &what);
                Done::default()
            }
            LocalPlan::Nop => {
                self.unit(self.fate(fate, ring.nop()).await, started_after, &what);
                Done::default()
            }
        }
    }
}
