//! Runs `compare --quick` through the harness's own entry point and checks what it prints: the
//! table, and the JSON lines it writes with `--json-out`, where every row and target has its
//! fields with the right types, measured rows carry numbers, skipped rows carry a reason. No
//! timing thresholds: tests assert behaviour, benchmarks measure speed.

use std::ffi::OsString;
use std::path::Path;

use bench_harness::JsonLine;
use bench_harness::report::Status;
use bench_harness::targets::TargetStatus;
use serde_json::Value;

/// The fields of every row object, whatever its status: the names scripts read.
const ROW_FIELDS: &[&str] = &[
    "kind",
    "benchmark",
    "implementation",
    "parameter",
    "status",
    "ops_per_sec",
    "p50_us",
    "p99_us",
    "samples",
    "repeats",
    "ratio_of",
    "baseline",
    "ratio",
    "reason",
    "note",
];

/// The fields of every target object.
const TARGET_FIELDS: &[&str] = &[
    "kind",
    "name",
    "benchmark",
    "parameter",
    "implementation",
    "description",
    "value",
    "bound",
    "status",
    "reason",
];

fn io_uring_available() -> bool {
    io_uring::IoUring::new(8).is_ok()
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
}

#[test]
fn compare_quick_prints_every_json_field() {
    let json_out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compare-quick.jsonl");
    let args = ["compare", "--quick", "--no-progress", "--json-out"]
        .map(OsString::from)
        .into_iter()
        .chain([json_out.clone().into_os_string()]);
    let mut table = Vec::new();
    bench_harness::main(args, &mut table).expect("compare --quick runs");
    let table = String::from_utf8(table).expect("the table is UTF-8");
    assert!(table.contains("benchmark   implementation"), "{table}");
    assert!(table.contains("targets"), "{table}");

    let lines = std::fs::read_to_string(&json_out).expect("--json-out wrote its file");
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for line in lines.lines() {
        let object: Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        let parsed = serde_json::from_value(object.clone())
            .unwrap_or_else(|error| panic!("not a row or target ({error}): {line}"));
        let fields = match &parsed {
            JsonLine::Row(_) => ROW_FIELDS,
            JsonLine::Target(_) => TARGET_FIELDS,
        };
        for field in fields {
            assert!(object.get(field).is_some(), "no `{field}` in {line}");
        }
        match parsed {
            JsonLine::Row(row) => {
                match row.status {
                    Status::Measured => {
                        assert!(row.ops_per_sec.is_some_and(|ops| ops > 0.0), "{line}");
                        assert!(row.samples.is_some_and(|samples| samples > 0), "{line}");
                        assert_eq!(row.p50_us.is_some(), row.p99_us.is_some(), "{line}");
                        if let (Some(p50), Some(p99)) = (row.p50_us, row.p99_us) {
                            assert!(p50 > 0.0 && p50 <= p99, "{line}");
                        }
                        assert_eq!(row.baseline.is_some(), row.ratio.is_some(), "{line}");
                        assert_eq!(row.reason, None, "{line}");
                    }
                    Status::Skipped => {
                        assert!(row.reason.as_ref().is_some_and(|r| !r.is_empty()), "{line}");
                    }
                    Status::Failed => panic!("a row failed: {line}"),
                }
                rows.push(row);
            }
            JsonLine::Target(target) => {
                let pending = target.status == TargetStatus::Pending;
                assert_eq!(target.value.is_none(), pending, "{line}");
                assert_eq!(target.reason.is_some(), pending, "{line}");
                targets.push(target);
            }
        }
    }

    for (benchmark, _) in bench_harness::BENCHMARKS {
        assert!(
            rows.iter().any(|row| row.benchmark == *benchmark),
            "no `{benchmark}` row"
        );
    }
    // Each target names a row of the run (a typo in benches/targets.json would leave it pending
    // for good), unless its benchmark could not start here.
    assert!(!targets.is_empty(), "no targets checked");
    for target in &targets {
        let of_benchmark = || rows.iter().filter(|row| row.benchmark == target.benchmark);
        if of_benchmark().any(|row| row.implementation == "(setup)") {
            continue;
        }
        assert!(
            of_benchmark().any(|row| row.parameter == target.parameter
                && row.implementation == target.implementation),
            "target `{}` names no row of the run",
            target.name
        );
    }
    let was_measured = |benchmark: &str, implementation: &str| {
        rows.iter().any(|row| {
            row.status == Status::Measured
                && row.benchmark == benchmark
                && row.implementation == implementation
        })
    };
    assert!(
        was_measured("wake", "eventfd"),
        "the eventfd baseline needs nothing and must run"
    );
    assert!(
        was_measured("cached", "spawn_blocking"),
        "spawn_blocking needs nothing and must run"
    );
    // Every single-thread row reports its CPU time per op, the number the per-op budget and
    // the registered buffers are judged by.
    for row in &rows {
        let single_thread = ["nop", "cached", "randread"].contains(&row.benchmark.as_str());
        if single_thread && row.status == Status::Measured && row.implementation != "fio" {
            assert!(
                row.counter("cpu_s_per_mop").is_some_and(|cpu| cpu > 0.0),
                "no CPU time per op: {row:?}"
            );
        }
    }
    if io_uring_available() {
        assert!(
            was_measured("nop", "io-uring"),
            "io_uring is available, so the raw NOP row must run"
        );
        // The ring features each have their row; only SQPOLL may be refused by a kernel.
        for (benchmark, implementation) in [
            ("cached", "aioctx-registered"),
            ("randread", "aioctx-fixed"),
            ("nop", "aioctx-sqpoll"),
        ] {
            let skipped_setup = rows
                .iter()
                .any(|row| row.benchmark == benchmark && row.implementation == "(setup)");
            assert!(
                skipped_setup
                    || was_measured(benchmark, implementation)
                    || implementation.ends_with("sqpoll"),
                "no measured {benchmark} {implementation} row"
            );
        }
        let fixed = rows
            .iter()
            .filter(|row| row.implementation == "aioctx-fixed" && row.status == Status::Measured);
        for row in fixed {
            assert_eq!(
                row.counter("fixed_share"),
                Some(1.0),
                "reads went unregistered: {row:?}"
            );
        }
    } else {
        eprintln!("skipping io_uring row checks: io_uring is unavailable here");
    }
    // The NBD servers run as subprocesses; with their tools installed every row must run.
    let nbd_tools = ["fio", "qemu-img", "qemu-nbd", "nbdkit"];
    if io_uring_available() && nbd_tools.iter().all(|tool| on_path(tool)) {
        for implementation in [
            "aioctx",
            "aioctx-plain",
            "qemu-nbd",
            "nbdkit",
            "nbdkit-null",
        ] {
            assert!(
                was_measured("nbd", implementation),
                "the nbd tools are installed, so the {implementation} rows must run"
            );
        }
        let nbd_rows = rows.iter().filter(|row| row.benchmark == "nbd");
        assert!(
            nbd_rows.clone().all(|row| row.status == Status::Measured),
            "an nbd row did not run"
        );
        assert!(
            nbd_rows
                .filter(|row| row.implementation == "aioctx")
                .all(|row| {
                    row.counter("server_us_per_op").is_some_and(|us| us >= 0.0)
                        && row.counter("enters_per_op").is_some()
                }),
            "the nbd-server rows carry the server's CPU time and ring counters"
        );
    } else {
        eprintln!("skipping nbd row checks: one of {nbd_tools:?} or io_uring is missing");
    }
    check_mt_rows(&rows);
}

/// The `mt` benchmark's rows: every implementation has a row in each group, the ones that need
/// nothing (or only io_uring) ran, and every measured row reports its CPU time per read.
fn check_mt_rows(rows: &[bench_harness::report::Row]) {
    use bench_harness::mt;
    let mt_rows: Vec<_> = rows.iter().filter(|row| row.benchmark == "mt").collect();
    let find = |parameter: &str, implementation: &str| {
        mt_rows
            .iter()
            .find(|row| row.parameter == parameter && row.implementation == implementation)
            .copied()
    };
    let measured = |parameter: &str, implementation: &str| {
        find(parameter, implementation).is_some_and(|row| row.status == Status::Measured)
    };
    for row in &mt_rows {
        if row.status == Status::Measured && row.implementation != "(setup)" {
            assert!(
                row.counter("cpu_s_per_mop").is_some_and(|cpu| cpu > 0.0),
                "no CPU time per read: {row:?}"
            );
        }
    }
    // Tokio's own io_uring may skip (it is built on first use), but its rows exist, and a
    // measured one put its reads on Tokio's ring.
    for implementation in ["tokio-io-uring-mt", "tokio-io-uring-ct"] {
        let row = find(mt::CACHED, implementation).expect("a Tokio io_uring row");
        match row.status {
            Status::Measured => assert!(
                row.counter("ring_cqes_per_op")
                    .is_some_and(|per_op| per_op >= 0.5),
                "{row:?}"
            ),
            _ => eprintln!("{implementation} skipped: {:?}", row.reason),
        }
    }
    for implementation in ["spawn_blocking", "tokio::fs"] {
        assert!(
            measured(mt::CACHED, implementation),
            "{implementation} needs nothing and must run"
        );
    }
    if !io_uring_available() {
        eprintln!("skipping mt io_uring row checks: io_uring is unavailable here");
        return;
    }
    let aioctx = ["aioctx-context", "aioctx-pool-rt", "aioctx-pool-spawn"];
    for implementation in aioctx.iter().chain(&["tokio-uring-per-cpu"]) {
        assert!(
            measured(mt::CACHED, implementation),
            "{implementation} must run on the page-cached file"
        );
    }
    // Pool rows spread their reads over the members.
    for implementation in ["aioctx-pool-rt", "aioctx-pool-spawn"] {
        let row = find(mt::CACHED, implementation).unwrap();
        if mt::cpus() > 1 {
            assert!(row.counter("busiest_member").is_some(), "{row:?}");
        }
    }
    for members in 1..=mt::cpus() {
        assert!(
            measured(mt::SCALING, &mt::scaling_row(members)),
            "no measured scaling row for {members} member(s)"
        );
    }
    if mt_rows.iter().any(|row| row.implementation == "(setup)") {
        eprintln!("skipping mt O_DIRECT row checks: the test file could not be opened O_DIRECT");
        return;
    }
    for implementation in aioctx.iter().chain(&["io-uring", "spawn_blocking"]) {
        assert!(
            measured(mt::DIRECT, implementation),
            "{implementation} must run with O_DIRECT"
        );
    }
    assert_eq!(
        find(mt::DIRECT, "tokio::fs").map(|row| row.status),
        Some(Status::Skipped),
        "tokio::fs cannot read O_DIRECT and says so"
    );
}
