//! [`Pool`]: several contexts, one home thread and ring each (QEMU's
//! iothreads), for services on many cores. The pool's room: this file builds,
//! hands out and shuts down the members; `membership.rs` decides which member
//! each thread submits to, and `placement.rs` where each op goes (a pool
//! file's op follows the thread that submits it).
//!
//! ```text
//!   Pool ── member 0: home thread 0 · ring 0      tasks spawned onto the pool
//!        ── member 1: home thread 1 · ring 1      run on a member's home thread
//!        ── ...                                    and submit to its ring
//!   any other thread ──sticky member──► that member's inbox
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::context::Context;
use crate::context::bind::bind_weakly;
use crate::enter::JoinHandle;
use crate::home::Builder;
use crate::metrics::Metrics;

pub(crate) mod membership;
pub(crate) mod placement;

use membership::Membership;

/// A pool of contexts, each with its own home thread and ring.
///
/// Build one with [`Pool::builder`]: N members (default: the available
/// parallelism) made from one [`Builder`], optionally one pinned per CPU.
/// Cheap to clone; clones share the members.
///
/// # Where work goes
///
/// - [`spawn`](Pool::spawn) places a task on the members round-robin. The
///   task runs on its member's home thread, so its ops go straight into that
///   member's ring, and [`current`](crate::current) inside it returns its
///   member.
/// - Any other thread has a sticky member of its own ([`thread_member`](Pool::thread_member)):
///   a member's home thread has its own; every other thread gets one
///   round-robin the first time it asks, so the workers of a multi-thread
///   runtime (`#[tokio::main]`'s too: binding them is not needed for this)
///   spread over the rings (no member gets more than
///   `ceil(threads / members)` of them) instead of queuing at one inbox.
///   [`bind_thread`](Pool::bind_thread) (or, for every thread of a Tokio
///   runtime, [`thread_binder`](Pool::thread_binder) in its builder's
///   `on_thread_start`) makes [`current`](crate::current) return it.
/// - A [`File`](crate::fs::File) opened on a member may be used from any
///   thread: each op goes to the ring of the thread that submits it (its
///   first poll), and the fd is shared. An op whose task then moves to
///   another thread completes on the ring it went to; nothing else happens.
///   On the simulator each member has its own in-memory files, so a file's
///   ops stay on the member that opened it.
///
/// # Shutdown
///
/// [`shutdown`](Pool::shutdown) shuts every member down at once and waits
/// for all of them; dropping the last handle does the same, blocking (inside
/// a Tokio runtime, before `shutdown().await`, it logs a warning saying so).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    members: Vec<Context>,
    membership: Arc<Membership>,
    /// Round-robin cursor for [`Pool::spawn`].
    next_task: AtomicUsize,
}

/// Configures and starts a [`Pool`].
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    template: Builder,
    members: Option<usize>,
    pin_to_cpus: bool,
}

impl Pool {
    /// Starts configuring a pool.
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            template: Builder::default(),
            members: None,
            pin_to_cpus: false,
        }
    }

    /// A pool with the default configuration: one member per available CPU.
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`].
    pub fn new() -> io::Result<Pool> {
        Pool::builder().build()
    }

    /// The members, in order.
    pub fn members(&self) -> &[Context] {
        &self.inner.members
    }

    /// The calling thread's member: its own on a member's home thread,
    /// otherwise a sticky choice made the first time this thread asks.
    pub fn thread_member(&self) -> &Context {
        &self.inner.members[self.inner.membership.pick()]
    }

    /// The members, in order.
    #[deprecated(note = "renamed `Pool::members`: one letter from `Pool::context` was too close")]
    pub fn contexts(&self) -> &[Context] {
        self.members()
    }

    /// The calling thread's member.
    #[deprecated(note = "renamed `Pool::thread_member`: the calling thread's sticky member")]
    pub fn context(&self) -> &Context {
        self.thread_member()
    }

    /// Spawns `future` onto a member's home thread, round-robin.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Relaxed: the cursor only spreads tasks; any order will do.
        let next = self.inner.next_task.fetch_add(1, Ordering::Relaxed);
        self.inner.members[next % self.inner.members.len()].spawn(future)
    }

    /// Binds the calling thread to its member for good (weakly: the binding
    /// lapses when the pool is gone), so [`current`](crate::current) returns
    /// that member on this thread.
    pub fn bind_thread(&self) {
        bind_weakly(&self.thread_member().owner);
    }

    /// A function that binds the thread it runs on, for
    /// `tokio::runtime::Builder::on_thread_start`: every worker (and blocking
    /// thread) of that runtime then finds its member with
    /// [`current`](crate::current).
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// let pool = aioctx::Pool::new()?;
    /// let runtime = tokio::runtime::Builder::new_multi_thread()
    ///     .on_thread_start(pool.thread_binder())
    ///     .build()?;
    /// runtime.block_on(runtime.spawn(async {
    ///     let ctx = aioctx::current().expect("every worker has a member");
    ///     ctx.nop().await
    /// }))??;
    /// # Ok(())
    /// # }
    /// ```
    pub fn thread_binder(&self) -> impl Fn() + Send + Sync + 'static {
        let pool = self.clone();
        move || pool.bind_thread()
    }

    /// Each member's counters, in order.
    pub fn metrics(&self) -> Vec<Metrics> {
        self.inner.members.iter().map(Context::metrics).collect()
    }

    /// The members' counters summed (see [`Metrics::sum`]).
    pub fn total_metrics(&self) -> Metrics {
        Metrics::sum(&self.metrics())
    }

    /// Shuts every member down at once and waits until all have drained.
    ///
    /// Called from a task running on one of the pool's members (one from
    /// [`spawn`](Pool::spawn), say), it shuts that member down too, and the
    /// member's runtime drops its tasks: the calling task is cancelled,
    /// usually before this returns, so the code after the `.await` may never
    /// run and the task's [`JoinHandle`] reports it cancelled. To act after
    /// the drain, await this from outside the pool (a task of another
    /// runtime, `main`), as [`Context::shutdown`] called on its own home
    /// thread only requests the shutdown.
    pub async fn shutdown(&self) {
        futures::future::join_all(self.inner.members.iter().map(Context::shutdown)).await;
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("members", &self.inner.members.len())
            .field("backend", &self.inner.members[0].backend())
            .finish()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ask all first, so the members drain together; then join the home
        // threads of the members whose last handle this is, with one warning
        // for the pool (a member someone still holds is joined by the drop
        // of its own last handle).
        let drained: Vec<bool> = self
            .members
            .iter()
            .map(|m| m.state().has_drained())
            .collect();
        for member in &self.members {
            member.state().backend.shut_down();
        }
        let mut warned = false;
        for (member, drained) in self.members.iter().zip(drained) {
            if Arc::strong_count(&member.owner) == 1 {
                member.owner.join_home_thread(drained, || {
                    if !std::mem::replace(&mut warned, true) {
                        tracing::warn!(
                            "the last aioctx::Pool was dropped inside a Tokio runtime before it \
                             had shut down: the drop blocks this thread until every member has \
                             drained; `pool.shutdown().await` first avoids that"
                        );
                    }
                });
            }
        }
    }
}

impl PoolBuilder {
    /// How many members. Default: the available parallelism.
    pub fn contexts(mut self, members: usize) -> Self {
        self.members = Some(members.max(1));
        self
    }

    /// The options every member is built with; thread names get the
    /// member's index appended (`aioctx-home-0`, ...). Default:
    /// [`Builder::default`].
    pub fn context_builder(mut self, builder: Builder) -> Self {
        self.template = builder;
        self
    }

    /// Pins member *i*'s home thread to the *i*-th CPU this process may run
    /// on (wrapping around). Default `false`.
    pub fn pin_to_cpus(mut self, pin: bool) -> Self {
        self.pin_to_cpus = pin;
        self
    }

    /// Starts every member.
    ///
    /// # Errors
    ///
    /// The first member's setup error (see [`Builder::build`]); members
    /// already started are shut down.
    pub fn build(self) -> io::Result<Pool> {
        let count = match self.members {
            Some(count) => count,
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let cpus = if self.pin_to_cpus {
            allowed_cpus()?
        } else {
            Vec::new()
        };
        let mut members = Vec::with_capacity(count);
        for index in 0..count {
            let mut builder = self
                .template
                .clone()
                .thread_name(format!("{}-{index}", self.template.name()))
                .member(index);
            if !cpus.is_empty() {
                builder = builder.pin_to_cpu(cpus[index % cpus.len()]);
            }
            members.push(builder.build()?);
        }
        let states: Vec<_> = members.iter().map(|m| m.state().clone()).collect();
        let membership = Arc::new(Membership::new(&states));
        for member in &members {
            // A member just built belongs to no pool yet: this cannot fail.
            let _ = member.owner.pool.set(membership.clone());
        }
        Ok(Pool {
            inner: Arc::new(Inner {
                members,
                membership,
                next_task: AtomicUsize::new(0),
            }),
        })
    }
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity(2) of this thread into a set of the size it
    // is told.
    let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu < CPU_SETSIZE`: inside the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}
