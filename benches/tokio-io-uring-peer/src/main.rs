//! Tokio's own io_uring file I/O (Tokio 1.54, `--cfg tokio_unstable`, feature `io-uring`), run
//! by the `mt` benchmark as a subprocess the way it runs fio: `tasks` tasks on a Tokio runtime
//! (multi-thread with `workers` workers, or current-thread), each with its own
//! `tokio::fs::File`, reading 4 KiB blocks at random offsets of `file` with a seek and a
//! `read_exact` per block, for a warm-up and a measured window. Prints one JSON line:
//!
//! ```text
//! {"ops":N,"elapsed_s":S,"p50_ns":N|null,"p99_ns":N|null,"cpu_s":S,"ops_total":N,"ring_cqes":N}
//! {"skip":"why this peer cannot run here"}
//! ```
//!
//! `cpu_s` is this process's CPU time (all threads, `getrusage`) over the measured window;
//! `ops_total` counts every read of the run, warm-up included, and `ring_cqes` the completions
//! Tokio's ring posted over the run (from `/proc/self/fdinfo`), so the harness can check that
//! the reads really went through io_uring: Tokio falls back to its blocking pool without it.
//!
//! ```text
//! tokio-io-uring-peer --flavor multi|current --workers N --tasks N --file PATH --len BYTES
//!     [--direct] --warmup-ms MS --measure-ms MS --latency-every K
//! ```

#[cfg(not(tokio_unstable))]
compile_error!("Tokio's io_uring needs RUSTFLAGS=\"--cfg tokio_unstable\"");

use std::io::{self, SeekFrom};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

// The harness's own definitions (`benches/measure`), so that this peer reads the same offsets
// and times the same way as the in-process rows.
use bench_measure::measure::{Latencies, Phase, Sampler, Span, Window, process_cpu_time};
use bench_measure::testfile::{BLOCK_LEN, BlockOffsets, ReadMode, TestFile};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The command line.
struct Args {
    multi_thread: bool,
    workers: usize,
    tasks: usize,
    file: TestFile,
    mode: ReadMode,
    window: Window,
    latency_every: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut flavor, mut workers, mut tasks, mut path, mut len) = (None, 1, 64, None, None);
    let (mut direct, mut warmup, mut measure, mut latency_every) = (false, 300, 2000, 0);
    let number = |value: Option<String>, name: &str| -> Result<u64, String> {
        value
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|error| format!("{name}: {error}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--flavor" => flavor = args.next(),
            "--workers" => workers = number(args.next(), &arg)? as usize,
            "--tasks" => tasks = number(args.next(), &arg)? as usize,
            "--file" => path = args.next().map(PathBuf::from),
            "--len" => len = Some(number(args.next(), &arg)?),
            "--direct" => direct = true,
            "--warmup-ms" => warmup = number(args.next(), &arg)?,
            "--measure-ms" => measure = number(args.next(), &arg)?,
            "--latency-every" => latency_every = number(args.next(), &arg)? as u32,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let multi_thread = match flavor.as_deref() {
        Some("multi") => true,
        Some("current") => false,
        _ => return Err("--flavor multi|current is required".into()),
    };
    let len = len.ok_or("--len is required")?;
    if len < BLOCK_LEN as u64 || tasks == 0 || workers == 0 {
        return Err("--len, --tasks and --workers must be positive".into());
    }
    Ok(Args {
        multi_thread,
        workers,
        tasks,
        file: TestFile {
            path: path.ok_or("--file is required")?,
            len: len - len % BLOCK_LEN as u64,
        },
        mode: if direct {
            ReadMode::Direct
        } else {
            ReadMode::Cached
        },
        window: Window {
            warmup: Duration::from_millis(warmup),
            measure: Duration::from_millis(measure),
        },
        latency_every,
    })
}

/// What one reader task did.
struct Reads {
    measured: u64,
    total: u64,
    latencies: Latencies,
}

/// One reader: its own handle, a seek and a `read_exact` per block.
async fn reader(
    file: TestFile,
    mode: ReadMode,
    mut offsets: BlockOffsets,
    phase: Arc<Phase>,
    mut sampler: Sampler,
) -> io::Result<Reads> {
    let mut handle = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(mode.open_flags())
        .open(&file.path)
        .await?;
    let mut buffer = vec![0u8; BLOCK_LEN];
    let mut reads = Reads {
        measured: 0,
        total: 0,
        latencies: Latencies::default(),
    };
    while !phase.is_stopped() {
        let started = sampler.start();
        handle.seek(SeekFrom::Start(offsets.next_offset())).await?;
        handle.read_exact(&mut buffer).await?;
        reads.total += 1;
        if phase.is_measuring() {
            reads.measured += 1;
            reads.latencies.record_sampled(started);
        }
    }
    Ok(reads)
}

/// The warm-up, then the measured window, timed in wall and CPU time.
async fn measured_window(phase: &Phase, window: Window) -> Span {
    tokio::time::sleep(window.warmup).await;
    let cpu = process_cpu_time();
    phase.start_measuring();
    let start = std::time::Instant::now();
    tokio::time::sleep(window.measure).await;
    phase.stop();
    Span {
        elapsed: start.elapsed(),
        cpu: process_cpu_time() - cpu,
    }
}

/// Completions posted by every io_uring instance of this process, from `/proc/self/fdinfo`
/// (`CqTail`), or `None` if the process has no ring.
fn ring_cqes() -> io::Result<Option<u64>> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:[io_uring]" {
            continue;
        }
        let info =
            std::fs::read_to_string(PathBuf::from("/proc/self/fdinfo").join(entry.file_name()))?;
        let tail = info
            .lines()
            .find_map(|line| line.strip_prefix("CqTail:"))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or_else(|| io::Error::other("no CqTail in the ring's fdinfo"))?;
        *total.get_or_insert(0) += tail;
    }
    Ok(total)
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn run(args: Args) -> io::Result<String> {
    let runtime = if args.multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    let phase = Arc::new(Phase::new());
    runtime.block_on(async {
        let readers: Vec<_> = (0..args.tasks)
            .map(|task| {
                tokio::spawn(reader(
                    args.file.clone(),
                    args.mode,
                    BlockOffsets::new(&args.file, task as u64),
                    Arc::clone(&phase),
                    Sampler::every(args.latency_every),
                ))
            })
            .collect();
        let span = measured_window(&phase, args.window).await;
        let mut all = Latencies::default();
        let (mut measured, mut total) = (0, 0);
        for reader in readers {
            match reader.await? {
                Ok(reads) => {
                    measured += reads.measured;
                    total += reads.total;
                    all.absorb(reads.latencies);
                }
                Err(error)
                    if args.mode == ReadMode::Direct
                        && error.raw_os_error() == Some(libc::EINVAL) =>
                {
                    return Ok(format!(
                        "{{\"skip\":{}}}",
                        json_string(&format!(
                            "O_DIRECT reads fail ({error}): tokio::fs::File reads into a Vec of \
                             its own, not block-aligned"
                        ))
                    ));
                }
                Err(error) => return Err(error),
            }
        }
        let Some(cqes) = ring_cqes()? else {
            return Ok(format!(
                "{{\"skip\":{}}}",
                json_string("Tokio set up no io_uring ring: its file I/O ran on the blocking pool")
            ));
        };
        let mut nanos = |quantile| {
            all.quantile(quantile)
                .map_or("null".to_owned(), |d| d.as_nanos().to_string())
        };
        Ok(format!(
            "{{\"ops\":{measured},\"elapsed_s\":{},\"p50_ns\":{},\"p99_ns\":{},\"cpu_s\":{},\
             \"ops_total\":{total},\"ring_cqes\":{cqes}}}",
            span.elapsed.as_secs_f64(),
            nanos(0.5),
            nanos(0.99),
            span.cpu.as_secs_f64(),
        ))
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("tokio-io-uring-peer: {error}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tokio-io-uring-peer: {error}");
            ExitCode::FAILURE
        }
    }
}
