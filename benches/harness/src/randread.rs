//! `randread`: 4 KiB random O_DIRECT reads of a 1 GiB file at queue depths 1, 32 and 128: the
//! device-bound case, where an implementation can only lose IOPS by how it submits. fio is the
//! baseline when installed (else raw io-uring). Raw io-uring runs both submit policies, because
//! on this machine's virtio disk one enter per replacement beats batching replacements by ~15%.

use super::aioctx_rows::{self, Flavor};
use super::config::Config;
use super::group::{Candidate, Group, run_group};
use super::peers::raw_uring::SubmitPolicy;
use super::peers::{blocking_pread, fio, raw_uring, tokio_uring};
use super::report::{Outcome, RatioOf, Row};
use super::testfile::{ReadMode, TestFile};

/// The parameter of the `randread` row at queue depth `depth`.
pub fn parameter(depth: usize) -> String {
    format!("QD{depth}")
}

/// The O_DIRECT file, prepared (written once, then reused) for the configured size, or why
/// there is none. A filesystem without O_DIRECT (tmpfs) skips the benchmark.
pub fn prepare_file(config: &Config) -> Result<TestFile, Outcome> {
    let file = TestFile::prepare("randread", config.randread_file_len)
        .map_err(|error| Outcome::Failed(format!("cannot prepare the test file: {error}")))?;
    match file.open(ReadMode::Direct) {
        Ok(_) => Ok(file),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => Err(Outcome::Skipped(format!(
            "{} does not support O_DIRECT; point AIOCTX_BENCH_DIR at a disk filesystem",
            file.path.display()
        ))),
        Err(error) => Err(Outcome::Failed(format!(
            "cannot open the test file: {error}"
        ))),
    }
}

/// Runs the `randread` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let file = match prepare_file(config) {
        Ok(file) => file,
        Err(outcome) => return vec![Row::setup("randread", outcome)],
    };
    let fio = fio::version();
    let window = config.window;
    let note = format!("{} MiB file", file.len >> 20);
    let backend = aioctx_rows::backend_note();
    let mut rows = Vec::new();
    for &depth in &config.queue_depths {
        let group = Group {
            benchmark: "randread",
            parameter: parameter(depth),
            ratio_of: RatioOf::OpsPerSec,
            baselines: &["fio", "io-uring"],
        };
        let file = &file;
        let mut candidates = vec![match &fio {
            Ok(version) => Candidate::new("fio", move || fio::random_reads(file, depth, window))
                .note(version.clone()),
            Err(reason) => Candidate::skipped("fio", reason.clone()),
        }];
        candidates.push(
            Candidate::new("io-uring", move || {
                raw_uring::random_reads(
                    file,
                    ReadMode::Direct,
                    depth,
                    SubmitPolicy::PerReplacement,
                    window,
                )
            })
            .note(format!("one enter per replacement; {note}")),
        );
        if depth > 1 {
            candidates.push(
                Candidate::new("io-uring-batched", move || {
                    raw_uring::random_reads(
                        file,
                        ReadMode::Direct,
                        depth,
                        SubmitPolicy::PerReap,
                        window,
                    )
                })
                .note("reap all, push all, one enter"),
            );
        }
        candidates.push(
            Candidate::new("spawn_blocking", move || {
                blocking_pread::random_reads(file, ReadMode::Direct, depth, window)
            })
            .note("pread in spawn_blocking, one task per slot"),
        );
        candidates.push(
            Candidate::new("tokio-uring", move || {
                tokio_uring::random_reads(file, ReadMode::Direct, depth, window)
            })
            .note("custom_flags(O_DIRECT), page-aligned buffer"),
        );
        let aioctx = |flavor| {
            move || aioctx_rows::random_reads(file, ReadMode::Direct, depth, window, flavor)
        };
        candidates.push(
            Candidate::new("aioctx", aioctx(Flavor::Plain)).note(format!(
                "File::read_at into AlignedBuf from tasks on the context; {backend}"
            )),
        );
        candidates.push(
            Candidate::new("aioctx-fixed", aioctx(Flavor::FixedBuffers))
                .note("File::read_fixed_at into buffers from Context::register_buffers"),
        );
        candidates.push(
            Candidate::new("aioctx-sqpoll", aioctx(Flavor::Sqpoll)).note(
                "as aioctx, with Builder::sqpoll(10 ms): the kernel poller's CPU time counts",
            ),
        );
        rows.extend(run_group(config, &group, candidates));
    }
    rows
}
