//! `iotest`: the workload of QEMU commit 2ae361ef1d, its bug and its fix side by side.
//!
//! A guest on a vCPU thread reads a disk image with O_DIRECT in batches, with 1 ms sleeps. In
//! `kick`, `no-kick` and `no-kick-busy` every doorbell is an MMIO exit that queues the reads into
//! the main context from the vCPU thread, as QEMU's AHCI emulation does; `direct` submits to a
//! private ring and is the floor. This file parses the flags and prints the table or JSON lines;
//! the scenario itself is in `scenario.rs`.
//!
//! ```text
//! cargo run --release --example iotest                      # every mode, ~45 s
//! cargo run --release --example iotest -- --quick --mode kick,direct
//! cargo run --release --example iotest -- --path /dev/sdb --json
//! ```

mod scenario;

use std::process::ExitCode;
use std::time::Duration;

use scenario::{Config, MIB, Mode, ModeReport, QUICK_SIZE, RunRecord};

const USAGE: &str = "\
usage: iotest [options]

Reads a disk image the way the guest of QEMU commit 2ae361ef1d does, once per mode:
  direct        the vCPU thread submits to a private io_uring ring: the floor
  kick          MMIO exits queue reads into the main context, which is woken at once
  no-kick       as kick, without the wake: reads wait for the main loop's timer (the bug)
  no-kick-busy  as no-kick, with unrelated socket traffic keeping the main loop awake

options:
  --mode LIST       comma-separated modes to run (default: all)
  --repeat N        runs per mode, median reported (default: 3, and 1 for no-kick)
  --quick           read 8 MiB instead of 128 MiB
  --size BYTES      bytes to read (suffixes K, M, G; default 128M)
  --chunk BYTES     bytes per read (default 128K)
  --batch N         reads per submit (default 16)
  --delay-us N      guest sleep before each submit and after each completion (default 1000)
  --timer-ms N      period of the main loop's housekeeping timer (default 499)
  --buffered        read through the page cache instead of O_DIRECT
  --path PATH       read an existing file or block device (read-only) instead of a temp file
  --json            print one JSON object per mode instead of the table
  --help            print this";

/// What the command line asks for.
#[derive(Debug)]
struct Invocation {
    config: Config,
    json: bool,
}

fn main() -> ExitCode {
    let invocation = match parse_args(std::env::args().skip(1)) {
        Ok(Some(invocation)) => invocation,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("iotest: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = scenario::run(&invocation.config, &mut |run| print_progress(run));
    match result {
        Ok(reports) if invocation.json => {
            for report in &reports {
                println!("{}", report.to_json());
            }
            exit_code(&reports)
        }
        Ok(reports) => {
            print_table(&invocation.config, &reports);
            exit_code(&reports)
        }
        Err(err) => {
            eprintln!("iotest: error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A run whose data was wrong fails the command, so scripts notice.
fn exit_code(reports: &[ModeReport]) -> ExitCode {
    if reports.iter().all(|report| report.checksum_ok) {
        ExitCode::SUCCESS
    } else {
        eprintln!("iotest: error: a mode read wrong data (checksum_ok is false)");
        ExitCode::FAILURE
    }
}

/// Parses the flags; `Ok(None)` means `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Invocation>, String> {
    let mut config = Config::default();
    let mut json = false;
    while let Some(arg) = args.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--json" => json = true,
            "--quick" => config.size = Some(QUICK_SIZE),
            "--buffered" => config.direct_io = false,
            "--mode" => {
                config.modes = value()?
                    .split(',')
                    .map(|name| name.trim().parse::<Mode>().map_err(|err| err.to_string()))
                    .collect::<Result<_, _>>()?;
            }
            "--repeat" => config.repeat = Some(parse_number(&flag, &value()?)?),
            "--size" => config.size = Some(parse_bytes(&flag, &value()?)?),
            "--chunk" => {
                config.chunk = usize::try_from(parse_bytes(&flag, &value()?)?)
                    .map_err(|_| format!("{flag} is too large"))?;
            }
            "--batch" => config.batch = parse_number(&flag, &value()?)?,
            "--delay-us" => {
                config.delay = Duration::from_micros(parse_number(&flag, &value()?)?);
            }
            "--timer-ms" => {
                config.timer = Duration::from_millis(parse_number(&flag, &value()?)?);
            }
            "--path" => config.path = Some(value()?.into()),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Some(Invocation { config, json }))
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag} wants a whole number, not {value:?}"))
}

/// Parses `128M`, `128MiB`, `4096`, `1G`: binary units, case-insensitive.
fn parse_bytes(flag: &str, value: &str) -> Result<u64, String> {
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
        .ok_or_else(|| format!("{flag} wants a size like 4096, 128K or 8M, not {value:?}"))
}

fn print_progress(run: &RunRecord) {
    eprintln!(
        "iotest: {:<12} run {}: {:>9.1} ms{}",
        run.mode.to_string(),
        run.round + 1,
        ms(run.guest.wall),
        if run.checksum_ok {
            ""
        } else {
            "  CHECKSUM MISMATCH"
        },
    );
}

fn print_table(config: &Config, reports: &[ModeReport]) {
    let Some(first) = reports.first() else {
        return;
    };
    println!(
        "\n{} MiB in {} KiB {} reads, {} per batch, {} us sleeps; main-loop timer {} ms",
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
    println!("\n{}", explanation(config, reports));
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
