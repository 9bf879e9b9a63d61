//! Runs `compare --quick` through the harness's own entry point and checks what it prints: the
//! table, and the JSON lines it writes with `--json-out`, where every row and target has its
//! fields with the right types, measured rows carry numbers, skipped rows carry a reason. No
//! timing thresholds: tests assert behaviour, benchmarks measure speed.

#[path = "../benches/harness/mod.rs"]
mod harness;

use harness::json::Json;

fn string_field<'a>(object: &'a Json, key: &str, line: &str) -> &'a str {
    object
        .get(key)
        .and_then(Json::as_str)
        .unwrap_or_else(|| panic!("`{key}` is not a string in {line}"))
}

fn number_or_null(object: &Json, key: &str, line: &str) -> Option<f64> {
    match object.get(key) {
        Some(Json::Number(number)) => Some(*number),
        Some(Json::Null) => None,
        other => panic!("`{key}` is {other:?}, not a number or null, in {line}"),
    }
}

fn io_uring_available() -> bool {
    io_uring::IoUring::new(8).is_ok()
}

#[test]
fn compare_quick_prints_every_json_field() {
    let json_out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("compare-quick.jsonl");
    let args = ["compare", "--quick", "--no-progress", "--json-out"]
        .map(std::ffi::OsString::from)
        .into_iter()
        .chain([json_out.clone().into_os_string()]);
    let mut table = Vec::new();
    harness::main(args, &mut table).expect("compare --quick runs");
    let table = String::from_utf8(table).expect("the table is UTF-8");
    assert!(table.contains("benchmark   implementation"), "{table}");
    assert!(table.contains("targets"), "{table}");
    let lines = std::fs::read_to_string(&json_out).expect("--json-out wrote its file");
    let lines: Vec<&str> = lines.lines().collect();

    let mut measured = Vec::new();
    let mut benchmarks = Vec::new();
    for line in lines {
        let object = Json::parse(line).unwrap_or_else(|error| panic!("bad JSON ({error}): {line}"));
        match string_field(&object, "kind", line) {
            "row" => {
                let benchmark = string_field(&object, "benchmark", line).to_owned();
                benchmarks.push(benchmark.clone());
                let implementation = string_field(&object, "implementation", line).to_owned();
                string_field(&object, "parameter", line);
                string_field(&object, "note", line);
                let ratio_of = string_field(&object, "ratio_of", line);
                assert!(["ops_per_sec", "p50"].contains(&ratio_of), "{line}");
                assert!(number_or_null(&object, "repeats", line).is_some(), "{line}");
                let ops_per_sec = number_or_null(&object, "ops_per_sec", line);
                let samples = number_or_null(&object, "samples", line);
                let p50 = number_or_null(&object, "p50_us", line);
                let p99 = number_or_null(&object, "p99_us", line);
                let ratio = number_or_null(&object, "ratio", line);
                let baseline = object.get("baseline").expect("baseline field");
                let reason = object.get("reason").expect("reason field");
                match string_field(&object, "status", line) {
                    "measured" => {
                        assert!(ops_per_sec.is_some_and(|ops| ops > 0.0), "{line}");
                        assert!(samples.is_some_and(|samples| samples > 0.0), "{line}");
                        assert_eq!(p50.is_some(), p99.is_some(), "{line}");
                        if let (Some(p50), Some(p99)) = (p50, p99) {
                            assert!(p50 > 0.0 && p50 <= p99, "{line}");
                        }
                        assert_eq!(baseline.as_str().is_some(), ratio.is_some(), "{line}");
                        assert_eq!(reason, &Json::Null, "{line}");
                        measured.push((benchmark, implementation));
                    }
                    "skipped" => assert!(reason.as_str().is_some_and(|r| !r.is_empty()), "{line}"),
                    "failed" => panic!("a row failed: {line}"),
                    other => panic!("unknown status `{other}` in {line}"),
                }
            }
            "target" => {
                for key in [
                    "benchmark",
                    "parameter",
                    "implementation",
                    "description",
                    "bound",
                ] {
                    string_field(&object, key, line);
                }
                number_or_null(&object, "value", line);
                let status = string_field(&object, "status", line);
                assert!(["met", "missed", "pending"].contains(&status), "{line}");
            }
            other => panic!("unknown kind `{other}` in {line}"),
        }
    }

    for (benchmark, _) in harness::BENCHMARKS {
        assert!(
            benchmarks.iter().any(|b| b == benchmark),
            "no `{benchmark}` row"
        );
    }
    let was_measured = |benchmark: &str, implementation: &str| {
        measured
            .iter()
            .any(|(b, i)| b == benchmark && i == implementation)
    };
    assert!(
        was_measured("wake", "eventfd"),
        "the eventfd baseline needs nothing and must run"
    );
    assert!(
        was_measured("cached", "spawn_blocking"),
        "spawn_blocking needs nothing and must run"
    );
    if io_uring_available() {
        assert!(
            was_measured("nop", "io-uring"),
            "io_uring is available, so the raw NOP row must run"
        );
    } else {
        eprintln!("skipping io_uring row checks: io_uring is unavailable here");
    }
}
