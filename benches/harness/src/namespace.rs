//! `namespace`: a loop over N files of create (and close), rename and unlink, in a directory
//! of its own under the benchmark cache directory: the namespace ops a storage service's
//! write-then-rename protocol is made of. `std::fs` on one blocking thread is the baseline (what
//! a service does today from `spawn_blocking`); `tokio::fs` runs the same loop from a task, each
//! op one `spawn_blocking`; `aioctx` runs it from a task on the home thread, each op on the ring
//! (`openat`, `close`, `renameat`, `unlinkat`), and `aioctx-32` splits the files between 32 such
//! tasks, so the ring has up to 32 ops in flight. A row's ops are files: one create, close,
//! rename and unlink each. Full runs loop over 10,000 files, `--quick` over 500.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aioctx::fs::{self as afs, OpenOptions};
use aioctx::{Backend, Context};

use super::config::Config;
use super::group::{Candidate, Group, RunError, RunResult, run_group, uring_setup_error};
use super::measure::{Measurement, process_cpu_time};
use super::report::{RatioOf, Row};
use super::testfile::cache_dir;

/// The parameter of the `namespace` rows (the same in full and quick runs, so that
/// `benches/targets.json` names them both).
pub const PARAMETER: &str = "create+rename+unlink";

/// Runs the `namespace` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let files = if config.quick { 500 } else { 10_000 };
    let group = Group {
        benchmark: "namespace",
        parameter: PARAMETER.to_owned(),
        ratio_of: RatioOf::OpsPerSec,
        baselines: &["std::fs"],
    };
    let candidates = vec![
        Candidate::new("std::fs", move || timed(files, "std", std_fs)).note(format!(
            "{files} files; one loop on a plain thread: File::create, rename, remove_file"
        )),
        Candidate::new("tokio::fs", move || timed(files, "tokio", tokio_fs))
            .note("one task; each op a spawn_blocking"),
        Candidate::new("aioctx", move || {
            timed(files, "aioctx", |dir, files| on_ring(dir, files, 1))
        })
        .note("one task on the home thread; OPENAT, CLOSE, RENAMEAT, UNLINKAT"),
        Candidate::new("aioctx-32", move || {
            timed(files, "aioctx-32", |dir, files| on_ring(dir, files, 32))
        })
        .note("32 tasks on the home thread, the files split between them"),
    ];
    run_group(config, &group, candidates)
}

/// Runs `workload` over `files` files in a fresh directory, and measures files per second and
/// the process's CPU time per file. The workload returns the time its loop took.
fn timed(
    files: u64,
    name: &str,
    workload: impl FnOnce(&Path, u64) -> Result<Duration, RunError>,
) -> RunResult {
    let dir = cache_dir().join(format!("namespace-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cpu = process_cpu_time();
    let result = workload(&dir, files);
    let cpu = process_cpu_time().saturating_sub(cpu);
    let leftover = std::fs::read_dir(&dir).map(|entries| entries.count());
    let _ = std::fs::remove_dir_all(&dir);
    let elapsed = result?;
    if leftover? != 0 {
        return Err(RunError::Fail("the loop left files behind".to_owned()));
    }
    Ok(Measurement::throughput(files, elapsed).with_cpu(cpu))
}

/// The `i`th file's name, and its name once renamed.
fn names(dir: &Path, i: u64) -> (PathBuf, PathBuf) {
    (dir.join(format!("f{i}")), dir.join(format!("f{i}.renamed")))
}

fn std_fs(dir: &Path, files: u64) -> Result<Duration, RunError> {
    let dir = dir.to_owned();
    let thread = std::thread::spawn(move || -> io::Result<Duration> {
        let started = Instant::now();
        for i in 0..files {
            let (path, renamed) = names(&dir, i);
            drop(std::fs::File::create(&path)?);
            std::fs::rename(&path, &renamed)?;
            std::fs::remove_file(&renamed)?;
        }
        Ok(started.elapsed())
    });
    Ok(thread
        .join()
        .map_err(|_| RunError::Fail("the loop panicked".to_owned()))??)
}

fn tokio_fs(dir: &Path, files: u64) -> Result<Duration, RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let elapsed = runtime.block_on(async {
        let started = Instant::now();
        for i in 0..files {
            let (path, renamed) = names(dir, i);
            drop(tokio::fs::File::create(&path).await?);
            tokio::fs::rename(&path, &renamed).await?;
            tokio::fs::remove_file(&renamed).await?;
        }
        io::Result::Ok(started.elapsed())
    })?;
    Ok(elapsed)
}

fn on_ring(dir: &Path, files: u64, tasks: u64) -> Result<Duration, RunError> {
    let ctx = Context::builder()
        .backend(Backend::Uring)
        .build()
        .map_err(uring_setup_error)?;
    let (dir, inner) = (dir.to_owned(), ctx.clone());
    let elapsed = ctx
        .spawn(async move {
            let started = Instant::now();
            let loops: Vec<_> = (0..tasks)
                .map(|task| {
                    let (ctx, dir) = (inner.clone(), dir.clone());
                    // Files task, task + tasks, ...: each task its share.
                    tokio::spawn(async move {
                        for i in (task..files).step_by(tasks as usize) {
                            let (path, renamed) = names(&dir, i);
                            let file = OpenOptions::new()
                                .write(true)
                                .create(true)
                                .truncate(true)
                                .open(&ctx, &path)
                                .await?;
                            file.close().await?;
                            afs::rename(&ctx, &path, &renamed).await?;
                            afs::remove_file(&ctx, &renamed).await?;
                        }
                        io::Result::Ok(())
                    })
                })
                .collect();
            for task in loops {
                task.await.map_err(io::Error::other)??;
            }
            io::Result::Ok(started.elapsed())
        })
        .join()
        .map_err(|_| RunError::Fail("the context shut down".to_owned()))??;
    let metrics = ctx.metrics();
    if metrics.ring_flags.opcodes_blocking {
        return Err(RunError::Skip(
            "the kernel lacks an optional opcode: its ops would run as blocking calls".to_owned(),
        ));
    }
    Ok(elapsed)
}
