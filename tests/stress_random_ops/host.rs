//! The round's host: one context, or a pool of two or three whose members
//! the actors share out; built from the run's choice of ring (plain, or
//! SQPOLL with 1, 2 or the default number of entries) with small registered
//! tables, so that a slot never given back shows; shut down midway (the
//! context, the whole pool, or the pool's members one at a time while files
//! opened on them are in use from other members' threads); and checked at
//! the end: every slot of every table free again. In some rounds the
//! runtime actors' ops go to worker rings instead (see `workers.rs`), built
//! from the same choice of ring.

use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use aioctx::fs::OpenOptions;
use aioctx::{Builder, Context, Metrics, Pool};

use crate::actor::{Round, bump};
use crate::model::Dice;
use crate::support;

/// Rounds past the second whose runtime actors run on worker rings, in
/// percent.
const WORKER_ROUNDS: u64 = 40;

/// What a round runs on.
#[derive(Debug)]
pub(crate) struct HostPlan {
    /// `Some(n)`: a pool of `n` members; `None`: one context.
    pub(crate) members: Option<usize>,
    /// Ring entries; `None`: the builder's default.
    pub(crate) entries: Option<u32>,
    pub(crate) sqpoll_idle: Option<Duration>,
    pub(crate) file_slots: u32,
    pub(crate) buffer_slots: u32,
    /// The runtime actors' runtime has `WorkerRings`, and their ops go to
    /// its threads' rings rather than to the host.
    pub(crate) workers: bool,
}

impl HostPlan {
    /// Draws a round's host: the first round always one context, later ones
    /// a pool at times; SQPOLL rings of 1, 2 or the default entries when
    /// `sqpoll`, plain rings of 4 to 256 otherwise; worker rings for the
    /// runtime actors in the second round (so that every run of more than
    /// one round has some) and at times later.
    pub(crate) fn draw(dice: &mut Dice, index: u64, sqpoll: bool) -> HostPlan {
        let (entries, sqpoll_idle) = if sqpoll {
            let entries = [Some(1), Some(2), None][dice.below(3) as usize];
            let idle = Duration::from_millis([1, 20][dice.below(2) as usize]);
            (entries, Some(idle))
        } else {
            (Some([4, 8, 32, 256][dice.below(4) as usize]), None)
        };
        let members = (index > 0 && dice.chance(30)).then(|| dice.range(2, 3) as usize);
        HostPlan {
            members,
            entries,
            sqpoll_idle,
            file_slots: [4, 16, 64][dice.below(3) as usize],
            buffer_slots: [8, 32][dice.below(2) as usize],
            workers: index == 1 || (index > 1 && dice.chance(WORKER_ROUNDS)),
        }
    }

    /// A context builder for this plan's rings, on the suite's backend.
    pub(crate) fn builder(&self) -> Builder {
        let mut builder = Context::builder()
            .backend(support::backend())
            .registered_file_slots(self.file_slots)
            .registered_buffer_slots(self.buffer_slots);
        if let Some(entries) = self.entries {
            builder = builder.entries(entries);
        }
        if let Some(idle) = self.sqpoll_idle {
            builder = builder.sqpoll(idle);
        }
        builder
    }
}

/// One context, or a pool.
pub(crate) enum Host {
    Context(Context),
    Pool(Pool),
}

impl Host {
    /// Builds `plan` on the suite's backend; `None` (after saying why) where
    /// the machine has no io_uring.
    pub(crate) fn build(plan: &HostPlan) -> Option<Host> {
        let builder = plan.builder();
        let Some(members) = plan.members else {
            return support::build(builder).map(Host::Context);
        };
        match Pool::builder()
            .contexts(members)
            .context_builder(builder)
            .build()
        {
            Ok(pool) => Some(Host::Pool(pool)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                eprintln!("skipping: io_uring is unavailable on this machine ({e})");
                None
            }
            Err(e) => panic!("building a pool failed: {e}"),
        }
    }

    pub(crate) fn members(&self) -> &[Context] {
        match self {
            Host::Context(ctx) => std::slice::from_ref(ctx),
            Host::Pool(pool) => pool.members(),
        }
    }

    pub(crate) fn metrics(&self) -> Metrics {
        match self {
            Host::Context(ctx) => ctx.metrics(),
            Host::Pool(pool) => pool.total_metrics(),
        }
    }

    /// Whether the ring is an SQPOLL one (where asked for, the kernel may
    /// have refused it).
    pub(crate) fn sqpoll(&self) -> bool {
        self.members()[0].ring_flags().sqpoll
    }

    /// For the round's line: one context or a pool, and its ring.
    pub(crate) fn describe(&self, plan: &HostPlan) -> String {
        let ctx = &self.members()[0];
        let host = match self {
            Host::Context(_) => "one context".to_owned(),
            Host::Pool(pool) => format!("a pool of {}", pool.members().len()),
        };
        let entries = plan
            .entries
            .map_or_else(|| "default".to_owned(), |e| e.to_string());
        let ring = if self.sqpoll() { "SQPOLL ring" } else { "ring" };
        let workers = match plan.workers {
            true => ", runtime actors on worker rings",
            false => "",
        };
        format!(
            "{host}, {} ({ring} of {entries} entries), tables of {} files and {} buffers{workers}",
            ctx.backend(),
            plan.file_slots,
            plan.buffer_slots
        )
    }

    /// Shuts the host down, from a thread of its own: the context, or the
    /// whole pool at once, or its members one at a time in a drawn order,
    /// each after the actors have started a few more ops (or a few
    /// milliseconds have passed), so that files opened on a member that is
    /// gone are still used through the others.
    pub(crate) fn shut_down(&self, round: &Round, dice: &mut Dice) {
        let members = match self {
            Host::Pool(pool) if dice.chance(30) => {
                futures::executor::block_on(pool.shutdown());
                bump(&round.stats.member_shutdowns, pool.members().len() as u64);
                return;
            }
            Host::Pool(pool) => pool.members(),
            Host::Context(ctx) => {
                futures::executor::block_on(ctx.shutdown());
                return;
            }
        };
        let mut order: Vec<usize> = (0..members.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, dice.below(i as u64 + 1) as usize);
        }
        for (n, &i) in order.iter().enumerate() {
            if n > 0 {
                let from = round.started.load(SeqCst);
                let since = Instant::now();
                while round.started.load(SeqCst) < from + 8
                    && since.elapsed() < Duration::from_millis(20)
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            futures::executor::block_on(members[i].shutdown());
            bump(&round.stats.member_shutdowns, 1);
        }
    }

    /// Every slot of every member's tables is free again: as many
    /// registered files as the file table holds open at once, all
    /// registered, then a buffer pool as large as the buffer table,
    /// registered. A registered file or buffer pool whose release was lost
    /// keeps its slot, and one of these comes back unregistered.
    pub(crate) fn check_tables_free(&self, plan: &HostPlan, dir: &Path, what: &str) {
        for (i, member) in self.members().iter().enumerate() {
            if member.backend() != "io_uring" {
                continue;
            }
            member.block_on(async {
                let mut files = Vec::new();
                for k in 0..plan.file_slots {
                    let path = dir.join(format!("slot-check-{i}-{k}"));
                    let file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .register(true)
                        .open(member, &path)
                        .await
                        .unwrap_or_else(|e| panic!("{what}: opening {path:?}: {e}"));
                    assert!(
                        file.is_registered(),
                        "{what}: member {i}: file slot {k} of {} was never given back",
                        plan.file_slots
                    );
                    files.push(file);
                }
                for file in files {
                    file.close().await.unwrap();
                }
                let pool = member
                    .register_buffers(plan.buffer_slots as usize, 4096)
                    .await
                    .unwrap();
                assert!(
                    pool.is_registered(),
                    "{what}: member {i}: some of the buffer table's {} slots were never given back",
                    plan.buffer_slots
                );
            });
        }
    }
}
