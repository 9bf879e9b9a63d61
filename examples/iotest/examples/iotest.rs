//! `iotest`: the workload of QEMU commit 2ae361ef1d, its bug and its fix side by side.
//!
//! A guest reads a disk image with O_DIRECT in batches, with 1 ms of processing before each
//! submit and after each completion. The guest is x86-64 code on a KVM vCPU where `/dev/kvm`
//! works, else a plain thread (`--guest`). In `kick`, `no-kick` and `no-kick-busy` every doorbell
//! is an MMIO exit that queues the reads into the main context from the vCPU thread, as QEMU's
//! AHCI emulation does; `direct` submits to a private ring and is the floor. This file parses
//! the flags and prints the table, JSON lines or the plot; the scenario itself is the
//! `iotest` library (`src/`).
//!
//! ```text
//! cargo run --release --example iotest                      # every mode, ~75 s
//! cargo run --release --example iotest -- --quick --mode kick,direct
//! cargo run --release --example iotest -- --json --plot iotest.svg
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use iotest::{Config, Guest, Inject, MIB, Mode, ModeReport, QUICK_SIZE, RunRecord, plot};

const MODES_HELP: &str = "\
Modes, each a path from the guest's doorbell to the kernel:
  direct        the vCPU thread submits to a private io_uring ring: the floor
  kick          MMIO exits queue reads into the main context, which is woken at once
  no-kick       as kick, without the wake: reads wait for the main loop's timer (the bug)
  no-kick-busy  as no-kick, with unrelated socket traffic keeping the main loop awake";

// clap's derive turns this struct into the parser and the help text (its doc comments), so
// this file keeps only what the flags mean.
/// Reads a disk image the way the guest of QEMU commit 2ae361ef1d does, once per mode.
#[derive(Debug, Parser)]
#[command(name = "iotest", after_help = MODES_HELP)]
struct Args {
    /// Comma-separated modes to run [default: all]
    #[arg(long, value_delimiter = ',', value_parser = parse_mode)]
    mode: Vec<Mode>,
    /// What runs the guest: kvm, thread, or auto (KVM where /dev/kvm works)
    #[arg(long, default_value = "auto", value_parser = parse_guest)]
    guest: Guest,
    /// Runs per mode, median reported [default: 3, and 1 for no-kick]
    #[arg(long)]
    repeat: Option<usize>,
    /// Read 8 MiB instead of 128 MiB
    #[arg(long)]
    quick: bool,
    /// Bytes to read (suffixes K, M, G) [default: 128M]
    #[arg(long, value_parser = parse_bytes)]
    size: Option<u64>,
    /// Bytes per read
    #[arg(long, default_value = "128K", value_parser = parse_bytes)]
    chunk: u64,
    /// Reads per submit
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Guest processing before each submit and after each completion, in microseconds
    #[arg(long, default_value_t = 1000)]
    delay_us: u64,
    /// Period of the main loop's housekeeping timer, in milliseconds
    #[arg(long, default_value_t = 499)]
    timer_ms: u64,
    /// Read through the page cache instead of O_DIRECT
    #[arg(long)]
    buffered: bool,
    /// Read an existing file or block device (read-only) instead of a temp file
    #[arg(long)]
    path: Option<PathBuf>,
    /// Print one JSON object per mode instead of the table
    #[arg(long)]
    json: bool,
    /// Also draw each batch's doorbell-to-completion latency, one panel per mode, as SVG
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Plant a fault to see the error paths: guest-fault, or corrupt-chunk=N (KVM guest only)
    #[arg(long, value_parser = parse_inject)]
    inject: Option<Inject>,
}

impl Args {
    fn config(&self) -> Result<Config, String> {
        let defaults = Config::default();
        Ok(Config {
            modes: if self.mode.is_empty() {
                defaults.modes
            } else {
                self.mode.clone()
            },
            repeat: self.repeat,
            size: self.size.or(self.quick.then_some(QUICK_SIZE)),
            chunk: usize::try_from(self.chunk).map_err(|_| "--chunk is too large".to_owned())?,
            batch: self.batch,
            delay: Duration::from_micros(self.delay_us),
            timer: Duration::from_millis(self.timer_ms),
            direct_io: !self.buffered,
            path: self.path.clone(),
            guest: self.guest,
            inject: self.inject,
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match args.config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("iotest: {message}");
            return ExitCode::from(2);
        }
    };
    match config.guest.resolve() {
        Ok((guest, why)) => {
            eprintln!("iotest: guest: {guest} ({why})");
            config.guest = guest;
        }
        Err(err) => {
            eprintln!("iotest: error: {err}");
            return ExitCode::FAILURE;
        }
    }
    let reports = match iotest::run(&config, &mut |run| print_progress(run)) {
        Ok(reports) => reports,
        Err(err) => {
            eprintln!("iotest: error: {err}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        for report in &reports {
            println!("{}", report.to_json());
        }
    } else {
        print_table(&config, &reports);
    }
    if let Some(path) = &args.plot {
        match plot::write(path, &config, &reports) {
            Ok(()) => eprintln!("iotest: plot written to {}", path.display()),
            Err(err) => {
                eprintln!("iotest: error: cannot draw {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    exit_code(&reports)
}

/// A run whose data was wrong fails the command, so scripts notice; the message names the
/// first chunk that was wrong.
fn exit_code(reports: &[ModeReport]) -> ExitCode {
    let mut ok = true;
    for report in reports.iter().filter(|report| !report.checksum_ok) {
        ok = false;
        match &report.bad_chunk {
            Some(chunk) => eprintln!("iotest: error: {} read wrong data: {chunk}", report.mode),
            None => eprintln!(
                "iotest: error: {} read wrong data: {} of the image's bytes, whole checksum off",
                report.mode, report.median.bytes
            ),
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_mode(name: &str) -> Result<Mode, String> {
    name.trim()
        .parse()
        .map_err(|err: iotest::Error| err.to_string())
}

fn parse_guest(name: &str) -> Result<Guest, String> {
    name.parse().map_err(|err: iotest::Error| err.to_string())
}

fn parse_inject(what: &str) -> Result<Inject, String> {
    what.parse().map_err(|err: iotest::Error| err.to_string())
}

/// Parses `128M`, `128MiB`, `4096`, `1G`: binary units, case-insensitive.
fn parse_bytes(value: &str) -> Result<u64, String> {
    let lower = value.to_ascii_lowercase();
    let digits = lower.trim_end_matches(['i', 'b']);
    let (number, shift) = match digits.char_indices().last() {
        Some((at, 'k')) => (&digits[..at], 10),
        Some((at, 'm')) => (&digits[..at], 20),
        Some((at, 'g')) => (&digits[..at], 30),
        _ => (digits, 0),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|number| number.checked_mul(1 << shift))
        .ok_or_else(|| format!("wants a size like 4096, 128K or 8M, not {value:?}"))
}

fn print_progress(run: &RunRecord) {
    let exits = run
        .kvm
        .as_ref()
        .map_or(String::new(), |kvm| format!("  {} exits", kvm.exits.total));
    let mismatch = match &run.guest.bad_chunk {
        Some(chunk) => format!("  CHECKSUM MISMATCH: {chunk}"),
        None if !run.checksum_ok => "  CHECKSUM MISMATCH".to_owned(),
        None => String::new(),
    };
    eprintln!(
        "iotest: {:<12} run {}: {:>9.1} ms{exits}{mismatch}",
        run.mode.to_string(),
        run.round + 1,
        ms(run.guest.wall),
    );
}

fn print_table(config: &Config, reports: &[ModeReport]) {
    let Some(first) = reports.first() else {
        return;
    };
    println!(
        "\n{} MiB in {} KiB {} reads, {} per batch, {} us sleeps; main-loop timer {} ms; {} guest",
        first.median.bytes / MIB,
        config.chunk / 1024,
        if config.direct_io {
            "O_DIRECT"
        } else {
            "buffered"
        },
        config.batch,
        config.delay.as_micros(),
        config.timer.as_millis(),
        first.guest_kind,
    );
    println!(
        "{:<13} {:>9} {:>8} {:>9} {:>9}  {:>27}  {:>20}  {:>5}  runs ms",
        "mode",
        "wall ms",
        "x direct",
        "sleeps ms",
        "irq wait",
        "SQE dwell p50 / p99 / max",
        "kicks sent/coal/supp",
        "ticks",
    );
    for report in reports {
        let runs: Vec<String> = report
            .wall_runs
            .iter()
            .map(|wall| format!("{:.0}", ms(*wall)))
            .collect();
        let (dwell, kicks, ticks) = match &report.context {
            Some(stats) => (
                format!(
                    "{} / {} / {}",
                    short(stats.dwell_p50),
                    short(stats.dwell_p99),
                    short(stats.dwell_max)
                ),
                format!(
                    "{}/{}/{}",
                    stats.kicks_sent, stats.kicks_coalesced, stats.kicks_suppressed
                ),
                stats.timer_ticks.to_string(),
            ),
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<13} {:>9.1} {:>8} {:>9.1} {:>9.1}  {:>27}  {:>20}  {:>5}  {}{}",
            report.mode.to_string(),
            ms(report.median.wall),
            report
                .ratio_to_direct
                .map_or("-".to_owned(), |ratio| format!("{ratio:.2}")),
            ms(report.median.sleep_floor),
            ms(report.median.completion_wait),
            dwell,
            kicks,
            ticks,
            runs.join(" "),
            if report.checksum_ok {
                ""
            } else {
                "  CHECKSUM MISMATCH"
            },
        );
    }
    if reports.iter().any(|report| report.kvm.is_some()) {
        print_kvm_table(reports);
    }
    println!("\n{}", explanation(config, reports));
}

/// The vCPU's side of the KVM runs: exits, and the two latencies the guest feels.
fn print_kvm_table(reports: &[ModeReport]) {
    println!(
        "\n{:<13} {:>6} {:>8} {:>20}  {:>25}  {:>21}  {:>17}",
        "KVM",
        "exits",
        "exits/s",
        "mmio w/r out wait",
        "wait->resume p50/p99/max",
        "doorbell->done p50/max",
        "direct submit p50",
    );
    for report in reports {
        let Some(kvm) = &report.kvm else { continue };
        let mut latencies: Vec<Duration> = report
            .median
            .batches
            .iter()
            .map(|batch| batch.latency)
            .collect();
        latencies.sort_unstable();
        let batch = match (
            latencies.get(latencies.len().saturating_sub(1) / 2),
            latencies.last(),
        ) {
            (Some(p50), Some(max)) => format!("{} / {}", short(*p50), short(*max)),
            _ => "-".to_owned(),
        };
        let exits = kvm.exits;
        println!(
            "{:<13} {:>6} {:>8.0} {:>20}  {:>25}  {:>21}  {:>17}",
            report.mode.to_string(),
            exits.total,
            kvm.exits_per_sec,
            format!(
                "{}/{} {} {}{}",
                exits.mmio_write,
                exits.mmio_read,
                exits.io_out,
                exits.wait,
                if exits.intr > 0 {
                    format!(" +{} intr", exits.intr)
                } else {
                    String::new()
                }
            ),
            format!(
                "{} / {} / {}",
                short(kvm.delivery_p50),
                short(kvm.delivery_p99),
                short(kvm.delivery_max)
            ),
            batch,
            kvm.submit_p50.map_or("-".to_owned(), short),
        );
    }
}

/// One sentence on what the table shows, from the numbers in it.
fn explanation(config: &Config, reports: &[ModeReport]) -> String {
    let report = |mode: Mode| reports.iter().find(|report| report.mode == mode);
    let versus_direct = |report: &ModeReport| match report.ratio_to_direct {
        Some(ratio) => format!("{ratio:.2}x direct"),
        None => format!("{:.0} ms", ms(report.median.wall)),
    };
    let dwell = |duration: Option<Duration>| duration.map_or("-".to_owned(), short);
    let mut clauses = Vec::new();
    if let Some(kick) = report(Mode::Kick) {
        clauses.push(format!(
            "kick wakes the main loop as soon as the vCPU thread queues a read (SQE dwell p99 {}), \
             so it runs at {}",
            dwell(kick.context.map(|stats| stats.dwell_p99)),
            versus_direct(kick)
        ));
    }
    if let Some(no_kick) = report(Mode::NoKick) {
        clauses.push(format!(
            "without the kick each batch waits for the main loop's next {} ms timer tick (dwell \
             p50 {}): {}, {}",
            config.timer.as_millis(),
            dwell(no_kick.context.map(|stats| stats.dwell_p50)),
            versus_direct(no_kick),
            if no_kick.ratio_to_direct.is_some_and(|ratio| ratio < 2.0) {
                "the seed's bug, muted here by a timer period close to a batch's own work"
            } else {
                "the seed's bug"
            }
        ));
    }
    if let Some(busy) = report(Mode::NoKickBusy) {
        clauses.push(format!(
            "unrelated traffic that keeps the loop awake hides the bug (no-kick-busy {})",
            versus_direct(busy)
        ));
    }
    if clauses.is_empty() {
        return "direct alone is the floor: the guest's sleeps plus the device's reads.".to_owned();
    }
    let mut sentence = clauses.join("; ");
    sentence.push('.');
    sentence
}

/// A duration in the unit that suits it: `41us`, `12.3ms`, `1.25s`.
fn short(duration: Duration) -> String {
    let us = duration.as_secs_f64() * 1e6;
    if us < 1e3 {
        format!("{us:.0}us")
    } else if us < 1e6 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
