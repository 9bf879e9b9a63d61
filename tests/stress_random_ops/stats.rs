//! What a run did, counted: ops by fate, by way in and by surface (SQPOLL
//! rings, pools, registered files and buffers, files dropped with ops in
//! flight, `FileStream`, batch ops, the home-thread path, worker rings), per
//! round and summed over the run, and the summary printed at its end.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

/// Counters of one round, or of the whole run.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) ops: AtomicU64,
    pub(crate) kept: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) raced_won: AtomicU64,
    pub(crate) shutdown_errors: AtomicU64,
    pub(crate) after_shutdown: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) opens: AtomicU64,
    pub(crate) closes: AtomicU64,
    pub(crate) enters: AtomicU64,
    pub(crate) spawns: AtomicU64,
    /// Opens that asked for a registered file, and those that got one.
    pub(crate) register_asked: AtomicU64,
    pub(crate) registered_opens: AtomicU64,
    /// Data ops on registered files.
    pub(crate) registered_ops: AtomicU64,
    /// `register_buffers` calls, pool handles dropped, fixed reads and
    /// writes.
    pub(crate) fixed_pools: AtomicU64,
    pub(crate) fixed_pools_dropped: AtomicU64,
    pub(crate) fixed_ops: AtomicU64,
    /// Files whose last handle was dropped with ops on them in flight, and
    /// those ops.
    pub(crate) in_flight_drops: AtomicU64,
    pub(crate) in_flight_ops: AtomicU64,
    /// `FileStream` sessions, their reads, writes, seeks and flushes, and
    /// streams dropped with a write unflushed or a read in flight.
    pub(crate) stream_sessions: AtomicU64,
    pub(crate) stream_ops: AtomicU64,
    pub(crate) stream_drops: AtomicU64,
    pub(crate) stream_flushed_bytes: AtomicU64,
    /// Pool members shut down.
    pub(crate) member_shutdowns: AtomicU64,
    /// Batch ops (`read_batch`, `write_batch`) and their members.
    pub(crate) batches: AtomicU64,
    pub(crate) batch_members: AtomicU64,
    /// Local tasks on a home thread; the ops their `LocalRing`s made, those
    /// of them that took the home path, and the files given up to a
    /// `LocalFile` with ops on it.
    pub(crate) local_tasks: AtomicU64,
    pub(crate) local_ops: AtomicU64,
    pub(crate) local_home_ops: AtomicU64,
    pub(crate) local_given_up: AtomicU64,
    /// Ops the worker rings ran, by their own counters, and those of them
    /// submitted on the ring's own thread; rings closed by actors' steps
    /// with ops in them; runtimes with worker rings shut down midway.
    pub(crate) worker_ring_ops: AtomicU64,
    pub(crate) worker_ring_own_thread: AtomicU64,
    pub(crate) ring_closes: AtomicU64,
    pub(crate) runtime_shutdowns: AtomicU64,
}

impl Stats {
    pub(crate) fn add(&self, other: &Stats) {
        let pairs = [
            (&self.ops, &other.ops),
            (&self.kept, &other.kept),
            (&self.dropped, &other.dropped),
            (&self.raced_won, &other.raced_won),
            (&self.shutdown_errors, &other.shutdown_errors),
            (&self.after_shutdown, &other.after_shutdown),
            (&self.bytes_written, &other.bytes_written),
            (&self.bytes_read, &other.bytes_read),
            (&self.opens, &other.opens),
            (&self.closes, &other.closes),
            (&self.enters, &other.enters),
            (&self.spawns, &other.spawns),
            (&self.register_asked, &other.register_asked),
            (&self.registered_opens, &other.registered_opens),
            (&self.registered_ops, &other.registered_ops),
            (&self.fixed_pools, &other.fixed_pools),
            (&self.fixed_pools_dropped, &other.fixed_pools_dropped),
            (&self.fixed_ops, &other.fixed_ops),
            (&self.in_flight_drops, &other.in_flight_drops),
            (&self.in_flight_ops, &other.in_flight_ops),
            (&self.stream_sessions, &other.stream_sessions),
            (&self.stream_ops, &other.stream_ops),
            (&self.stream_drops, &other.stream_drops),
            (&self.stream_flushed_bytes, &other.stream_flushed_bytes),
            (&self.member_shutdowns, &other.member_shutdowns),
            (&self.batches, &other.batches),
            (&self.batch_members, &other.batch_members),
            (&self.local_tasks, &other.local_tasks),
            (&self.local_ops, &other.local_ops),
            (&self.local_home_ops, &other.local_home_ops),
            (&self.local_given_up, &other.local_given_up),
            (&self.worker_ring_ops, &other.worker_ring_ops),
            (&self.worker_ring_own_thread, &other.worker_ring_own_thread),
            (&self.ring_closes, &other.ring_closes),
            (&self.runtime_shutdowns, &other.runtime_shutdowns),
        ];
        for (mine, theirs) in pairs {
            mine.fetch_add(theirs.load(SeqCst), SeqCst);
        }
    }
}

/// Adds `n` to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, SeqCst);
}

impl Stats {
    /// Prints the run's totals: by fate and way in, then ops per surface.
    /// `hosts`: (name, ops, rounds) of the rounds run on each kind of host.
    pub(crate) fn report(&self, elapsed: Duration, rounds: u64, hosts: &[(&str, u64, u64)]) {
        let n = |c: &AtomicU64| c.load(SeqCst);
        eprintln!(
            "stress: {} ops in {elapsed:.1?} over {rounds} rounds: {} kept, {} dropped ({} races won \
             by the op), {} opens, {} closes, {} enters, {} spawns, {} shutdown errors ({} of ops \
             started after it), {} KiB written, {} KiB read",
            n(&self.ops),
            n(&self.kept),
            n(&self.dropped),
            n(&self.raced_won),
            n(&self.opens),
            n(&self.closes),
            n(&self.enters),
            n(&self.spawns),
            n(&self.shutdown_errors),
            n(&self.after_shutdown),
            n(&self.bytes_written) / 1024,
            n(&self.bytes_read) / 1024,
        );
        for (name, ops, rounds) in hosts {
            eprintln!("stress surface {name}: {ops} ops in {rounds} rounds");
        }
        eprintln!(
            "stress surface pool shutdowns: {} members shut down midway, alone or together",
            n(&self.member_shutdowns)
        );
        eprintln!(
            "stress surface registered files: {} opens registered ({} asked), {} ops on them",
            n(&self.registered_opens),
            n(&self.register_asked),
            n(&self.registered_ops),
        );
        eprintln!(
            "stress surface fixed buffers: {} registrations, {} pools dropped, {} fixed reads and writes",
            n(&self.fixed_pools),
            n(&self.fixed_pools_dropped),
            n(&self.fixed_ops),
        );
        eprintln!(
            "stress surface files dropped in flight: {} files, {} ops in flight on them",
            n(&self.in_flight_drops),
            n(&self.in_flight_ops),
        );
        eprintln!(
            "stress surface FileStream: {} sessions, {} calls, {} dropped with writes unflushed, {} KiB flushed",
            n(&self.stream_sessions),
            n(&self.stream_ops),
            n(&self.stream_drops),
            n(&self.stream_flushed_bytes) / 1024,
        );
        eprintln!(
            "stress surface batch ops: {} batches, {} reads and writes in them",
            n(&self.batches),
            n(&self.batch_members),
        );
        eprintln!(
            "stress surface home-thread path: {} local tasks, {} local ops ({} on the home path), {} files given up to a LocalFile",
            n(&self.local_tasks),
            n(&self.local_ops),
            n(&self.local_home_ops),
            n(&self.local_given_up),
        );
        eprintln!(
            "stress surface worker rings: {} ops counted by the rings ({} submitted on the ring's own thread), {} rings closed with ops in them, {} runtimes shut down midway",
            n(&self.worker_ring_ops),
            n(&self.worker_ring_own_thread),
            n(&self.ring_closes),
            n(&self.runtime_shutdowns),
        );
    }
}
