//! `mt`: what a storage service on Tokio's multi-thread runtime gets from each way of reading a
//! file. 64 tasks read 4 KiB blocks at random offsets, on a runtime with one worker per CPU
//! (or, for the thread-per-core designs, on one runtime or pool member per CPU):
//!
//! - `A cached`: a page-cached file (`cached`'s, 64 MiB): no device wait, so this measures what
//!   each implementation costs per read in CPU and how well it spreads over the cores.
//!   Baseline: tokio-uring, one runtime per CPU.
//! - `B direct`: O_DIRECT reads of `randread`'s 1 GiB file, where the implementation can
//!   (tokio::fs cannot): the device-bound case. Baseline: raw io-uring at the same depth (64)
//!   on one thread, submitting each replacement at once as fio does.
//! - `A scaling`: a pool of N members, N = 1 up to the CPUs present, the tasks spawned onto it,
//!   on the page-cached file: the ratio of N members to one is the scaling; the same for worker
//!   rings on a runtime of N workers.
//!
//! The aioctx rows ([`Placement`]): `aioctx-context` (one context, the tasks on the runtime,
//! every read pushed through its inbox), `aioctx-pool-rt` (a pool of one member per CPU, the
//! tasks on the runtime bound with `Pool::thread_binder`, the file shared, each read to its
//! worker's member), `aioctx-pool-spawn` (the tasks spawned onto that pool: every read local),
//! `aioctx-worker-rings` (the tasks on a runtime whose workers drive rings of their own,
//! `aioctx::runtime::WorkerRings`: every read into the ring of the worker that polls it).
//! Peers: `tokio::fs` (seek + read per task), `spawn_blocking(pread)`, Tokio's own io_uring on
//! a multi-thread and a current-thread runtime (a subprocess, `peers::tokio_io_uring`), and
//! tokio-uring runtimes per CPU. Every row reports `cpu_s_per_mop`, the CPU seconds its process
//! spent per million reads over the measured window (a subprocess's own).
//!
//! Latency is timed on one read in 8 in A (two clock reads per read would cost ~5% of a
//! page-cache read here) and on every read in B.

use super::aioctx_rows::{self, Placement};
use super::cached;
use super::config::Config;
use super::group::{Candidate, Group, run_group};
use super::peers::raw_uring::{self, SubmitPolicy};
use super::peers::tokio_io_uring::{self, Flavor};
use super::peers::{blocking_pread, fio, tokio_fs, tokio_uring};
use super::randread;
use super::report::{RatioOf, Row};
use super::testfile::{ReadMode, TestFile};

/// Reader tasks in every row.
pub const TASKS: usize = 64;

/// The parameter of the page-cache rows.
pub const CACHED: &str = "A cached";

/// The parameter of the O_DIRECT rows.
pub const DIRECT: &str = "B direct";

/// The parameter of the scaling rows.
pub const SCALING: &str = "A scaling";

/// The implementation name of the scaling row with `members` members.
pub fn scaling_row(members: usize) -> String {
    format!("pool-spawn-{members}")
}

/// The implementation name of the worker-ring rows.
pub const WORKER_RINGS: &str = "aioctx-worker-rings";

/// The implementation name of the scaling row of worker rings on `workers` workers.
pub fn worker_scaling_row(workers: usize) -> String {
    format!("worker-rings-{workers}")
}

/// One read in this many has its latency timed, by mode.
fn latency_every(mode: ReadMode) -> u32 {
    match mode {
        ReadMode::Cached => 8,
        ReadMode::Direct => 1,
    }
}

/// The CPUs this process may run on: the runtime's workers, pool members and runtimes per CPU.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Runs the `mt` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    match cached::prepare_file(config) {
        Ok(file) => {
            rows.extend(run_mode(config, &file, ReadMode::Cached));
            rows.extend(run_scaling(config, &file));
        }
        Err(outcome) => rows.push(Row::setup("mt", outcome)),
    }
    match randread::prepare_file(config) {
        Ok(file) => rows.extend(run_mode(config, &file, ReadMode::Direct)),
        Err(outcome) => rows.push(Row::setup("mt", outcome)),
    }
    rows
}

/// The `A cached` or `B direct` group.
fn run_mode(config: &Config, file: &TestFile, mode: ReadMode) -> Vec<Row> {
    let window = config.window;
    let cpus = cpus();
    let every = latency_every(mode);
    let direct = mode == ReadMode::Direct;
    let group = Group {
        benchmark: "mt",
        parameter: if direct { DIRECT } else { CACHED }.to_owned(),
        ratio_of: RatioOf::OpsPerSec,
        baselines: if direct {
            &["io-uring"]
        } else {
            &["tokio-uring-per-cpu"]
        },
    };
    let backend = aioctx_rows::backend_note();
    let mut candidates = Vec::new();
    if direct {
        candidates.push(
            Candidate::new("io-uring", move || {
                raw_uring::random_reads(file, mode, TASKS, SubmitPolicy::PerReplacement, window)
            })
            .note(format!(
                "QD{TASKS} on one thread, one enter per replacement"
            )),
        );
        candidates.push(match fio::version() {
            Ok(version) => Candidate::new("fio", move || fio::random_reads(file, TASKS, window))
                .note(format!("{version}, QD{TASKS}")),
            Err(reason) => Candidate::skipped("fio", reason),
        });
    }
    candidates.push(
        Candidate::new("tokio-uring-per-cpu", move || {
            tokio_uring::random_reads_per_runtime(file, mode, TASKS, cpus, every, window)
        })
        .note(format!(
            "{cpus} tokio-uring runtimes, one thread each, {TASKS} tasks split over them; {} MiB \
             file",
            file.len >> 20
        )),
    );
    let aioctx_rows = [
        (
            "aioctx-context",
            Placement::OneContext { workers: cpus },
            format!("one context, tasks on a {cpus}-worker runtime (every read foreign)"),
        ),
        (
            "aioctx-pool-rt",
            Placement::PoolFromRuntime {
                members: cpus,
                workers: cpus,
            },
            format!(
                "pool of {cpus}, tasks on a {cpus}-worker runtime bound by thread_binder, \
                 one shared File (each read to its worker's member)"
            ),
        ),
        (
            "aioctx-pool-spawn",
            Placement::PoolSpawned { members: cpus },
            format!("pool of {cpus}, tasks spawned onto it (every read local)"),
        ),
        (
            WORKER_RINGS,
            Placement::WorkerRings { workers: cpus },
            format!("tasks on a {cpus}-worker runtime, each worker driving a ring of its own"),
        ),
    ];
    for (name, placement, note) in aioctx_rows {
        candidates.push(
            Candidate::new(name, move || {
                aioctx_rows::mt_random_reads(file, mode, TASKS, placement, every, window)
            })
            .note(format!("{note}; {backend}")),
        );
    }
    candidates.push(
        Candidate::new("spawn_blocking", move || {
            blocking_pread::random_reads_multi_thread(file, mode, TASKS, cpus, every, window)
        })
        .note(format!(
            "pread in spawn_blocking from a {cpus}-worker runtime"
        )),
    );
    candidates.push(if direct {
        Candidate::skipped("tokio::fs", tokio_fs::NO_DIRECT)
    } else {
        Candidate::new("tokio::fs", move || {
            tokio_fs::random_reads_multi_thread(file, TASKS, cpus, every, window)
        })
        .note(format!(
            "seek + read_exact, a handle per task, {cpus}-worker runtime"
        ))
    });
    for (name, flavor, shape) in [
        (
            "tokio-io-uring-mt",
            Flavor::MultiThread(cpus),
            format!("{cpus}-worker runtime"),
        ),
        (
            "tokio-io-uring-ct",
            Flavor::CurrentThread,
            "current-thread runtime".to_owned(),
        ),
    ] {
        candidates.push(
            Candidate::new(name, move || {
                tokio_io_uring::random_reads(file, mode, TASKS, flavor, every, window)
            })
            .note(format!(
                "Tokio's io_uring (tokio_unstable), seek + read_exact, a handle per task, \
                 {shape}; subprocess"
            )),
        );
    }
    run_group(config, &group, candidates)
}

/// The `A scaling` group: pools of 1 up to `cpus()` members, the tasks spawned onto them. Each
/// row adds `scaling_efficiency`: its ops/s ÷ (members × the one-member pool's). A target names
/// each N it holds to (`benches/targets.json`: N = 2 on the 2-CPU machines here).
fn run_scaling(config: &Config, file: &TestFile) -> Vec<Row> {
    let window = config.window;
    let group = Group {
        benchmark: "mt",
        parameter: SCALING.to_owned(),
        ratio_of: RatioOf::OpsPerSec,
        baselines: &["pool-spawn-1"],
    };
    let every = latency_every(ReadMode::Cached);
    let cpus = cpus();
    // Up to 2 members at least, so that the scaling target has its row; past the CPUs it is
    // skipped.
    let pools = (1..=cpus.max(2)).map(|members| {
        if members > cpus {
            return Candidate::skipped(
                scaling_row(members),
                format!("{cpus} CPU(s): no core for member {members}"),
            );
        }
        Candidate::new(scaling_row(members), move || {
            let placement = Placement::PoolSpawned { members };
            aioctx_rows::mt_random_reads(file, ReadMode::Cached, TASKS, placement, every, window)
        })
        .note(format!("pool of {members}, {TASKS} tasks spawned onto it"))
    });
    let worker_rings = (1..=cpus.max(2)).map(|workers| {
        if workers > cpus {
            return Candidate::skipped(
                worker_scaling_row(workers),
                format!("{cpus} CPU(s): no core for worker {workers}"),
            );
        }
        Candidate::new(worker_scaling_row(workers), move || {
            let placement = Placement::WorkerRings { workers };
            aioctx_rows::mt_random_reads(file, ReadMode::Cached, TASKS, placement, every, window)
        })
        .note(format!(
            "{TASKS} tasks on a {workers}-worker runtime, a ring per worker"
        ))
    });
    let candidates = pools.chain(worker_rings).collect();
    let mut rows = run_group(config, &group, candidates);
    // Each family's efficiency against its own one-thread row.
    for prefix in ["pool-spawn-", "worker-rings-"] {
        let one = rows
            .iter()
            .find(|row| row.implementation == format!("{prefix}1"))
            .and_then(|row| row.ratio);
        for row in &mut rows {
            let threads = row.implementation.strip_prefix(prefix);
            let threads = threads.and_then(|n| n.parse::<f64>().ok());
            if let (Some(ratio), Some(one), Some(threads)) = (row.ratio, one, threads) {
                row.counters
                    .push(("scaling_efficiency".to_owned(), ratio / (one * threads)));
            }
        }
    }
    rows
}
