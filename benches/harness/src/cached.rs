//! `cached`: 4 KiB random buffered reads of a file held in the page cache, 32 concurrent
//! readers. No device wait, so this measures each implementation's per-op CPU cost. tokio-uring
//! is the baseline (the closest peer); raw io-uring is the limit.

use super::aioctx_rows::{self, Flavor};
use super::config::Config;
use super::group::{Candidate, Group, run_group};
use super::peers::raw_uring::SubmitPolicy;
use super::peers::{blocking_pread, raw_uring, tokio_fs, tokio_uring};
use super::report::{Outcome, RatioOf, Row};
use super::testfile::{ReadMode, TestFile};

/// Concurrent readers.
pub const TASKS: usize = 32;

/// The parameter of the `cached` rows.
pub const PARAMETER: &str = "tasks=32";

/// The page-cache file, prepared and read once so that it is resident, or why there is none.
pub fn prepare_file(config: &Config) -> Result<TestFile, Outcome> {
    let prepared = TestFile::prepare("cached", config.cached_file_len);
    prepared
        .and_then(|file| file.warm_page_cache().map(|()| file))
        .map_err(|error| Outcome::Failed(format!("cannot prepare the test file: {error}")))
}

/// Runs the `cached` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let file = match prepare_file(config) {
        Ok(file) => file,
        Err(outcome) => return vec![Row::setup("cached", outcome)],
    };
    let window = config.window;
    let file = &file;
    let group = Group {
        benchmark: "cached",
        parameter: PARAMETER.to_owned(),
        ratio_of: RatioOf::OpsPerSec,
        baselines: &["tokio-uring", "io-uring"],
    };
    let candidates = vec![
        Candidate::new("io-uring", move || {
            raw_uring::random_reads(file, ReadMode::Cached, TASKS, SubmitPolicy::PerReap, window)
        })
        .note(format!(
            "reap all, push all, one enter; {} MiB file",
            file.len >> 20
        )),
        Candidate::new("tokio-uring", move || {
            tokio_uring::random_reads(file, ReadMode::Cached, TASKS, window)
        })
        .note("read_at from 32 local tasks"),
        Candidate::new("spawn_blocking", move || {
            blocking_pread::random_reads(file, ReadMode::Cached, TASKS, window)
        })
        .note("pread in spawn_blocking"),
        Candidate::new("tokio::fs", move || {
            tokio_fs::random_reads(file, TASKS, window)
        })
        .note("seek + read_exact, a handle per task"),
        Candidate::new("aioctx", move || {
            aioctx_rows::random_reads(file, ReadMode::Cached, TASKS, window, Flavor::Plain)
        })
        .note(format!(
            "File::read_at from 32 tasks on the context; {}",
            aioctx_rows::backend_note()
        )),
        Candidate::new("aioctx-registered", move || {
            aioctx_rows::random_reads(
                file,
                ReadMode::Cached,
                TASKS,
                window,
                Flavor::RegisteredFile,
            )
        })
        .note("as aioctx, the file opened with OpenOptions::register(true)"),
        Candidate::new("aioctx-local", move || {
            aioctx_rows::random_reads(file, ReadMode::Cached, TASKS, window, Flavor::Local)
        })
        .note("read_at through a LocalRing's LocalFile from 32 local tasks: the home path"),
        Candidate::new("aioctx-batch", move || {
            aioctx_rows::batched_reads(file, TASKS, window)
        })
        .note(format!(
            "one task, the same {TASKS} reads at a time as one batch op (File::read_batch)"
        )),
    ];
    run_group(config, &group, candidates)
}
