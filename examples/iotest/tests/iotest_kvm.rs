//! `examples/iotest` with the KVM guest on the `--quick` workload: every mode reads every byte
//! into guest memory with the right per-chunk checksums, the exit counts are exactly what the
//! guest program makes, each JSON line carries the documented keys, and `no-kick` is slower
//! than `kick` because every batch waits for the main loop's timer. A planted corrupt chunk is
//! named, and a faulting guest is reported with its registers. Each test prints why and skips
//! where `/dev/kvm` is missing or refuses a VM, or io_uring is unavailable.

use std::collections::BTreeMap;
use std::time::Duration;

use iotest::{Config, Error, Guest, Inject, Mode, ModeReport, QUICK_SIZE, RunRecord};
use serde_json::Value;

/// The main loop's timer in these tests. `no-kick` submits a batch only on a tick, so its run
/// lasts at least `(batches - 1)` periods: 600 ms for the quick run's four batches, against
/// ~25 ms for `kick` with the short guest delay below. The comparison has a margin of >20x.
const TIMER: Duration = Duration::from_millis(200);

/// The `--quick` workload on the KVM guest, one run per mode, with 100 us of guest processing
/// per step so the run is short.
fn quick_config() -> Config {
    Config {
        size: Some(QUICK_SIZE),
        timer: TIMER,
        delay: Duration::from_micros(100),
        repeat: Some(1),
        guest: Guest::Kvm,
        ..Config::default()
    }
}

/// What a run returns: one report per mode, and every run the progress callback saw.
type Outcome = Result<(Vec<ModeReport>, Vec<RunRecord>), Error>;

/// Runs `config`; `None` (after printing why) where this machine cannot run the test.
fn run_or_skip(mut config: Config) -> Option<Outcome> {
    if let Err(Error::KvmUnavailable(why)) = Guest::Kvm.resolve() {
        eprintln!("skipped: the KVM guest cannot run here: {why}");
        return None;
    }
    loop {
        let mut runs = Vec::new();
        match iotest::run(&config, &mut |run| runs.push(run.clone())) {
            Err(Error::DirectIoUnsupported { path }) if config.direct_io => {
                eprintln!(
                    "O_DIRECT unsupported under {}: testing buffered reads instead",
                    path.display()
                );
                config.direct_io = false;
            }
            Err(Error::RingUnavailable(err)) => {
                eprintln!("skipped: io_uring is unavailable on this machine: {err}");
                return None;
            }
            Err(Error::KvmUnavailable(why)) => {
                eprintln!("skipped: the KVM guest cannot run here: {why}");
                return None;
            }
            result => return Some(result.map(|reports| (reports, runs))),
        }
    }
}

#[test]
fn iotest_kvm_every_mode_reads_every_byte_into_guest_memory() {
    let config = quick_config();
    let Some(result) = run_or_skip(config.clone()) else {
        return;
    };
    let (reports, runs) = result.unwrap_or_else(|err| panic!("iotest failed: {err}"));
    let chunks = QUICK_SIZE / config.chunk as u64;
    let batches = chunks / config.batch as u64;

    assert_eq!(
        runs.iter()
            .map(|run| (run.mode, run.round))
            .collect::<Vec<_>>(),
        Mode::ALL.map(|mode| (mode, 0)),
        "one run per mode, in the canonical order"
    );
    for run in &runs {
        let mode = run.mode;
        assert_eq!(run.guest_kind, Guest::Kvm, "{mode}");
        assert!(
            run.checksum_ok,
            "{mode} read wrong data: {:?}",
            run.guest.bad_chunk
        );
        assert_eq!(run.guest.bad_chunk, None, "{mode}");
        assert_eq!(run.guest.bytes, QUICK_SIZE, "{mode} read every byte");
        assert_eq!(run.guest.batches.len() as u64, batches, "{mode}");
        assert!(
            run.guest
                .batches
                .windows(2)
                .all(|pair| pair[0].at < pair[1].at),
            "{mode}: batches in doorbell order"
        );
        let kvm = run.kvm.as_ref().expect("the KVM guest reports its exits");
        let exits = kvm.exits;
        // Exactly what the guest program makes: TABLE once and a DOORBELL per batch; a STATUS
        // read per batch; a SLEEP per batch, a REPORT and a SLEEP per chunk, and DONE.
        assert_eq!(exits.mmio_write, 1 + batches, "{mode}");
        assert_eq!(exits.mmio_read, batches, "{mode}");
        assert_eq!(exits.io_out, batches + 2 * chunks + 1, "{mode}");
        assert!(
            exits.wait >= 1,
            "{mode}: the guest waits at least for the first read"
        );
        assert_eq!(
            exits.total,
            exits.mmio_write + exits.mmio_read + exits.io_out + exits.wait + exits.intr,
            "{mode}: every exit counted once"
        );
        assert!(kvm.delivery_p50 <= kvm.delivery_p99, "{mode}");
        assert!(kvm.delivery_p99 <= kvm.delivery_max, "{mode}");
        assert_eq!(kvm.submit_p50.is_some(), mode == Mode::Direct, "{mode}");
    }

    let lines: BTreeMap<String, Value> = reports
        .iter()
        .map(|report| {
            let line = report.to_json();
            assert!(!line.contains('\n'), "one JSON object per line: {line}");
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            (report.mode.to_string(), value)
        })
        .collect();
    assert_eq!(lines.len(), Mode::ALL.len(), "one line per mode");
    for mode in Mode::ALL {
        let name = mode.to_string();
        let json = &lines[&name];
        let number = |key: &str| {
            json[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: {key} should be a number, is {}", json[key]))
        };
        assert_eq!(json["mode"], name.as_str());
        assert_eq!(json["guest"], "kvm", "{name}");
        assert_eq!(json["checksum_ok"], true, "{name}");
        assert_eq!(json["bad_chunk"], Value::Null, "{name}");
        assert_eq!(number("bytes"), QUICK_SIZE as f64, "{name}");
        assert_eq!(number("batches"), batches as f64, "{name}");
        for key in [
            "wall_ms",
            "sleep_floor_ms",
            "exits",
            "exits_per_s",
            "batch_latency_p50_us",
        ] {
            assert!(number(key) > 0.0, "{name}: {key}");
        }
        for key in [
            "exits_mmio_write",
            "exits_mmio_read",
            "exits_io_out",
            "exits_wait",
            "exits_intr",
            "delivery_p50_us",
            "delivery_p99_us",
            "delivery_max_us",
            "completion_wait_ms",
        ] {
            assert!(number(key) >= 0.0, "{name}: {key}");
        }
        assert!(number("batch_latency_p50_us") <= number("batch_latency_max_us"));
        if mode == Mode::Direct {
            assert_eq!(number("ratio_to_direct"), 1.0);
            assert!(number("submit_p50_us") <= number("submit_max_us"));
            assert_eq!(json["foreign_ops"], Value::Null, "direct has no context");
            continue;
        }
        assert_eq!(json["submit_p50_us"], Value::Null, "{name}");
        assert_eq!(
            number("foreign_ops"),
            chunks as f64,
            "{name}: every read is queued from the vCPU thread"
        );
        assert!(number("dwell_p50_us") <= number("dwell_p99_us"), "{name}");
        if mode == Mode::Kick {
            assert!(number("kicks_sent") > 0.0, "kick: the main loop is woken");
        } else {
            assert_eq!(number("kicks_sent"), 0.0, "{name}: the kick is off");
            assert!(number("kicks_suppressed") > 0.0, "{name}");
        }
    }

    // The bug, by construction: without the kick a batch's reads enter the kernel only on a
    // timer tick, one tick per batch at least, so the run spans `batches - 1` periods.
    let report = |mode: Mode| reports.iter().find(|report| report.mode == mode).unwrap();
    let no_kick = report(Mode::NoKick);
    let kick = report(Mode::Kick);
    let ticks = no_kick.context.expect("no-kick runs a context").timer_ticks;
    assert!(
        ticks >= batches,
        "no-kick: {ticks} ticks for {batches} batches"
    );
    assert!(
        no_kick.median.wall >= TIMER * (batches as u32 - 1),
        "no-kick: {:?} for {batches} batches of one tick each",
        no_kick.median.wall
    );
    assert!(
        no_kick.median.wall > kick.median.wall,
        "no-kick ({:?}) is slower than kick ({:?})",
        no_kick.median.wall,
        kick.median.wall
    );
}

#[test]
fn iotest_kvm_names_the_chunk_a_corrupted_read_landed_in() {
    let config = Config {
        modes: vec![Mode::Kick, Mode::Direct],
        inject: Some(Inject::CorruptChunk(5)),
        ..quick_config()
    };
    let Some(result) = run_or_skip(config.clone()) else {
        return;
    };
    let (reports, _) = result.unwrap_or_else(|err| panic!("iotest failed: {err}"));
    for report in &reports {
        assert!(
            !report.checksum_ok,
            "{}: the corruption is seen",
            report.mode
        );
        let bad = report.bad_chunk.expect("the bad chunk is named");
        assert_eq!(bad.index, 5, "{}", report.mode);
        assert_eq!(bad.offset, 5 * config.chunk as u64, "{}", report.mode);
        assert_ne!(bad.got, bad.expected);
        assert_eq!(report.median.bytes, QUICK_SIZE, "every other chunk is read");
        let json: Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["bad_chunk"], 5);
        assert_eq!(json["checksum_ok"], false);
    }
}

#[test]
fn iotest_kvm_reports_a_faulting_guest_with_its_registers() {
    let config = Config {
        modes: vec![Mode::Kick],
        inject: Some(Inject::GuestFault),
        ..quick_config()
    };
    let Some(result) = run_or_skip(config) else {
        return;
    };
    match result {
        Err(Error::GuestFault { exit, state }) => {
            assert!(exit.contains("KVM_EXIT_SHUTDOWN"), "{exit}");
            assert!(state.contains("rip 0x0000000000010000"), "{state}");
            assert!(state.contains("ud2"), "the faulting instruction: {state}");
            assert!(state.contains("cr3 0x1000"), "{state}");
        }
        Err(other) => panic!("expected a guest fault, got: {other}"),
        Ok(_) => panic!("a guest that executes ud2 at boot cannot finish"),
    }
}
