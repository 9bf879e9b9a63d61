//! `examples/iotest` in every mode on the `--quick` workload: each mode reads every byte with the
//! right checksum, each JSON line carries the documented keys, and the kick counters tell the
//! modes apart. No wall-clock thresholds: how fast each mode is belongs to the example's table,
//! not to a test on a shared machine.

use std::collections::BTreeMap;
use std::time::Duration;

use iotest::{Config, Error, Guest, Mode, ModeReport, QUICK_SIZE, RunRecord};

/// The `--quick` workload on the thread guest (`tests/iotest_kvm.rs` runs the KVM guest) with
/// a 50 ms timer, so `no-kick` waits 50 ms per batch, not 499.
fn quick_config() -> Config {
    Config {
        size: Some(QUICK_SIZE),
        timer: Duration::from_millis(50),
        repeat: Some(1),
        guest: Guest::Thread,
        ..Config::default()
    }
}

/// Runs `config`, collecting every run the progress callback sees.
fn run_collecting(config: &Config) -> Result<(Vec<ModeReport>, Vec<RunRecord>), Error> {
    let mut runs = Vec::new();
    let reports = iotest::run(config, &mut |run| runs.push(run.clone()))?;
    Ok((reports, runs))
}

#[test]
fn iotest_every_mode_reads_every_byte_and_reports_its_metrics() {
    let mut config = quick_config();
    let result = match run_collecting(&config) {
        Err(Error::DirectIoUnsupported { path }) => {
            eprintln!(
                "O_DIRECT unsupported under {}: testing buffered reads instead",
                path.display()
            );
            config.direct_io = false;
            run_collecting(&config)
        }
        Err(Error::RingUnavailable(err)) => {
            eprintln!("skipped: io_uring is unavailable on this machine: {err}");
            return;
        }
        other => other,
    };
    let (reports, runs) = result.unwrap_or_else(|err| panic!("iotest failed: {err}"));

    assert_eq!(
        runs.iter()
            .map(|run| (run.mode, run.round))
            .collect::<Vec<_>>(),
        Mode::ALL.map(|mode| (mode, 0)),
        "one run per mode, in the canonical order"
    );
    let batches = QUICK_SIZE / (config.chunk * config.batch) as u64;
    for run in &runs {
        assert!(run.checksum_ok, "{} read wrong data", run.mode);
        assert_eq!(run.guest.bytes, QUICK_SIZE, "{} read every byte", run.mode);
        assert_eq!(run.guest.bad_chunk, None, "{}", run.mode);
        assert_eq!(run.guest_kind, Guest::Thread, "{}", run.mode);
        assert!(run.kvm.is_none(), "{}: no vCPU figures", run.mode);
        assert_eq!(
            run.guest.batches.len() as u64,
            batches,
            "{}: one latency per doorbell",
            run.mode
        );
        assert!(
            run.guest
                .batches
                .windows(2)
                .all(|pair| pair[0].at < pair[1].at),
            "{}: batches in doorbell order",
            run.mode
        );
    }

    let chunks = QUICK_SIZE / config.chunk as u64;
    let lines: BTreeMap<String, BTreeMap<String, Json>> = reports
        .iter()
        .map(|report| {
            let line = report.to_json();
            assert!(!line.contains('\n'), "one JSON object per line: {line}");
            (report.mode.to_string(), parse_object(&line))
        })
        .collect();
    assert_eq!(lines.len(), Mode::ALL.len(), "one line per mode");
    for mode in Mode::ALL {
        let name = mode.to_string();
        let json = &lines[&name];
        let number = |key: &str| match json.get(key) {
            Some(Json::Number(value)) => *value,
            other => panic!("{name}: {key} should be a number, is {other:?}"),
        };
        assert_eq!(json["mode"], Json::String(name.clone()));
        assert_eq!(json["guest"], Json::String("thread".to_owned()), "{name}");
        assert_eq!(
            json["exits"],
            Json::Null,
            "{name}: the thread guest has no exits"
        );
        assert_eq!(json["checksum_ok"], Json::Bool(true), "{name}");
        assert_eq!(number("bytes"), QUICK_SIZE as f64, "{name}");
        assert!(number("wall_ms") > 0.0, "{name}");
        assert!(number("sleep_floor_ms") > 0.0, "{name}");
        assert!(number("completion_wait_ms") >= 0.0, "{name}");
        assert!(number("ratio_to_direct") > 0.0, "{name}");
        match &json["wall_ms_runs"] {
            Json::Array(runs) => assert_eq!(runs, &[Json::Number(number("wall_ms"))]),
            other => panic!("{name}: wall_ms_runs should be an array, is {other:?}"),
        }
        let context_keys = [
            "dwell_p50_us",
            "dwell_p99_us",
            "dwell_max_us",
            "kicks_sent",
            "kicks_coalesced",
            "kicks_suppressed",
            "foreign_ops",
            "timer_ticks",
        ];
        if mode == Mode::Direct {
            assert_eq!(number("ratio_to_direct"), 1.0);
            for key in context_keys {
                assert_eq!(json[key], Json::Null, "direct has no context: {key}");
            }
            continue;
        }
        for key in context_keys {
            number(key);
        }
        assert_eq!(
            number("foreign_ops"),
            chunks as f64,
            "{name}: every read is queued from the vCPU thread"
        );
        assert!(number("dwell_p50_us") <= number("dwell_p99_us"), "{name}");
        assert!(number("dwell_p99_us") <= number("dwell_max_us"), "{name}");
        if mode == Mode::Kick {
            assert!(
                number("kicks_sent") > 0.0,
                "kick: the sleeping main loop is woken"
            );
        } else {
            assert_eq!(
                number("kicks_sent"),
                0.0,
                "{name}: the kick is switched off"
            );
        }
    }
}

#[test]
fn iotest_no_kick_runs_once_by_default_so_the_whole_run_stays_short() {
    let config = Config::default();
    assert_eq!(config.repeats(Mode::NoKick), 1);
    for mode in [Mode::Direct, Mode::Kick, Mode::NoKickBusy] {
        assert_eq!(config.repeats(mode), 3, "{mode}");
    }
}

/// A JSON value of the kinds the report uses.
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
}

/// Parses one flat JSON object (no nested objects, no string escapes), panicking on anything
/// else: the report promises exactly that shape.
fn parse_object(line: &str) -> BTreeMap<String, Json> {
    let mut parser = Parser {
        rest: line.trim(),
        line,
    };
    parser.expect('{');
    let mut object = BTreeMap::new();
    loop {
        let key = parser.string();
        parser.expect(':');
        let value = parser.value();
        assert!(
            object.insert(key.clone(), value).is_none(),
            "duplicate key {key} in {line}"
        );
        match parser.next_char() {
            ',' => continue,
            '}' => break,
            other => panic!("expected , or }} but found {other:?} in {line}"),
        }
    }
    assert!(parser.rest.is_empty(), "trailing text in {line}");
    object
}

struct Parser<'a> {
    rest: &'a str,
    line: &'a str,
}

impl Parser<'_> {
    fn next_char(&mut self) -> char {
        let next = self
            .rest
            .chars()
            .next()
            .unwrap_or_else(|| panic!("unexpected end of {}", self.line));
        self.rest = &self.rest[next.len_utf8()..];
        next
    }

    fn expect(&mut self, wanted: char) {
        let found = self.next_char();
        assert_eq!(found, wanted, "in {}", self.line);
    }

    fn string(&mut self) -> String {
        self.expect('"');
        let end = self
            .rest
            .find('"')
            .unwrap_or_else(|| panic!("unterminated string in {}", self.line));
        let text = &self.rest[..end];
        assert!(!text.contains('\\'), "no escapes expected in {}", self.line);
        self.rest = &self.rest[end + 1..];
        text.to_owned()
    }

    fn value(&mut self) -> Json {
        for (literal, value) in [
            ("null", Json::Null),
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
        ] {
            if let Some(rest) = self.rest.strip_prefix(literal) {
                self.rest = rest;
                return value;
            }
        }
        if self.rest.starts_with('"') {
            return Json::String(self.string());
        }
        if self.rest.starts_with('[') {
            self.expect('[');
            let mut items = Vec::new();
            if let Some(rest) = self.rest.strip_prefix(']') {
                self.rest = rest;
                return Json::Array(items);
            }
            loop {
                items.push(self.value());
                match self.next_char() {
                    ',' => continue,
                    ']' => return Json::Array(items),
                    other => panic!("expected , or ] but found {other:?} in {}", self.line),
                }
            }
        }
        let end = self.rest.find([',', '}', ']']).unwrap_or(self.rest.len());
        let number = self.rest[..end]
            .parse()
            .unwrap_or_else(|_| panic!("bad value {:?} in {}", &self.rest[..end], self.line));
        self.rest = &self.rest[end..];
        Json::Number(number)
    }
}
