//! Instructions per op on the home thread, counted by callgrind: the hot
//! path's regression gate. Times are noisy on shared machines; user-space
//! instruction counts of a fixed workload are not (the same binary and input
//! give the same count, whatever else the machine does).
//!
//! ```text
//! cargo run --release --example instructions              # the table (needs valgrind)
//! cargo run --release --example instructions -- --check   # fails past the budget
//! ```
//!
//! Each workload runs 32 tasks on one thread, the context's home (a
//! `build_local` context, so no other thread runs), each awaiting its ops in
//! turn: NOPs, or page-cached 4 KiB reads of a 1 MiB file, through the
//! ordinary (`Send`) ops and through a `LocalRing` (the home path); and one
//! task reading the same blocks 32 at a time, each 32 one batch op (counted
//! per read). Each runs twice, with N and 2N ops, under
//! `valgrind --tool=callgrind`; the count per op is the difference over N,
//! so setup and teardown cancel out. tokio-uring runs the same workloads in
//! the same way, for reference. `--check` compares every aioctx count with
//! its budget in `benches/instructions.json` and fails when one exceeds it
//! by more than the file's tolerance (3%).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

const TASKS: usize = 32;
const FILE_LEN: u64 = 1 << 20;
const BLOCK: usize = 4096;
/// Ops of the shorter run; the longer runs twice as many.
const OPS: usize = 16_384;

/// What a workload does, on aioctx or on tokio-uring.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    Nop,
    Read,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run(&args[1], args[2].parse().expect("an op count")),
        Some("--check") => report(true),
        None => report(false),
        Some(other) => {
            eprintln!("unknown argument {other:?}; usage: instructions [--check]");
            std::process::exit(2);
        }
    }
}

/// The workloads, by name: (name, in the budget).
const WORKLOADS: &[(&str, bool)] = &[
    ("aioctx nop", true),
    ("aioctx read", true),
    ("aioctx local nop", true),
    ("aioctx local read", true),
    ("aioctx batch read", true),
    ("tokio-uring nop", false),
    ("tokio-uring read", false),
];

fn report(check: bool) {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("skipping: valgrind is not installed (apt-get install valgrind)");
        if check {
            std::process::exit(1);
        }
        return;
    }
    let budget_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/instructions.json");
    let budget: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&budget_path).expect("the budget file"))
            .expect("the budget file is JSON");
    let tolerance = budget["tolerance"].as_f64().expect("a tolerance");
    let mut over = Vec::new();
    println!(
        "{:<22} {:>10} {:>10}  status",
        "workload", "instr/op", "budget"
    );
    for &(name, budgeted) in WORKLOADS {
        let per_op = per_op(name);
        let limit = budget["budgets"][name].as_f64();
        let status = match (budgeted, limit) {
            (true, Some(limit)) if per_op > limit * (1.0 + tolerance) => {
                over.push(format!(
                    "{name}: {per_op:.0} > {limit:.0} + {:.0}%",
                    tolerance * 100.0
                ));
                "OVER BUDGET"
            }
            (true, Some(_)) => "ok",
            (true, None) => "no budget",
            (false, _) => "reference",
        };
        let limit = limit.map_or("-".to_owned(), |l| format!("{l:.0}"));
        println!("{name:<22} {per_op:>10.0} {limit:>10}  {status}");
    }
    if check && !over.is_empty() {
        eprintln!("instruction budget exceeded ({}):", budget_path.display());
        for line in over {
            eprintln!("  {line}");
        }
        std::process::exit(1);
    }
}

/// User-space instructions per op of workload `name`, from two callgrind
/// runs.
fn per_op(name: &str) -> f64 {
    let short = collected(name, OPS);
    let long = collected(name, 2 * OPS);
    (long - short) as f64 / OPS as f64
}

/// Instructions callgrind counts for one run of `ops` ops.
fn collected(name: &str, ops: usize) -> u64 {
    let exe = std::env::current_exe().expect("this program's path");
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["run", name, &ops.to_string()])
        .output()
        .expect("valgrind runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed under valgrind:\n{stderr}"
    );
    stderr
        .lines()
        .find_map(|line| line.split("Collected :").nth(1))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no instruction count from callgrind:\n{stderr}"))
}

/// A 1 MiB file of known bytes, read through the page cache.
fn test_file() -> PathBuf {
    let path = std::env::temp_dir().join(format!("aioctx-instructions-{}.dat", std::process::id()));
    std::fs::write(&path, vec![7u8; FILE_LEN as usize]).expect("the test file");
    path
}

/// Where task `task`'s `i`-th read goes: every task walks the file.
fn offset(task: usize, i: usize, per_task: usize) -> u64 {
    ((task * per_task + i) as u64 * BLOCK as u64) % FILE_LEN
}

/// Runs one workload: what callgrind counts.
fn run(name: &str, ops: usize) {
    let path = test_file();
    let per_task = ops / TASKS;
    match name {
        "aioctx nop" => aioctx_tasks(&path, Work::Nop, per_task),
        "aioctx read" => aioctx_tasks(&path, Work::Read, per_task),
        "aioctx local nop" => aioctx_local_tasks(&path, Work::Nop, per_task),
        "aioctx local read" => aioctx_local_tasks(&path, Work::Read, per_task),
        "aioctx batch read" => aioctx_batches(&path, ops),
        "tokio-uring nop" => tokio_uring_tasks(&path, Work::Nop, per_task),
        "tokio-uring read" => tokio_uring_tasks(&path, Work::Read, per_task),
        other => panic!("unknown workload {other:?}"),
    }
    std::fs::remove_file(&path).expect("the test file goes");
}

fn aioctx_tasks(path: &Path, work: Work, per_task: usize) {
    let local = aioctx::Builder::default()
        .build_local()
        .expect("an io_uring context (the budget counts the ring's path)");
    assert_eq!(
        local.context().backend(),
        "io_uring",
        "the budget counts the ring's path"
    );
    let ctx = local.context().clone();
    local.block_on(async move {
        let file = Rc::new(
            aioctx::fs::File::open(&ctx, path)
                .await
                .expect("the file opens"),
        );
        each_task(|task| {
            let (ctx, file) = (ctx.clone(), file.clone());
            async move {
                let mut buf = vec![0u8; BLOCK];
                for i in 0..per_task {
                    match work {
                        Work::Nop => ctx.nop().await.expect("a NOP"),
                        Work::Read => {
                            let (n, back) = file.read_at(buf, offset(task, i, per_task)).await;
                            assert_eq!(n.expect("a read"), BLOCK);
                            buf = back;
                        }
                    }
                }
            }
        })
        .await;
    });
}

/// The same tasks through a `LocalRing`: the home path.
fn aioctx_local_tasks(path: &Path, work: Work, per_task: usize) {
    let local = aioctx::Builder::default()
        .build_local()
        .expect("an io_uring context (the budget counts the ring's path)");
    let ctx = local.context().clone();
    local.block_on(async move {
        let ring = aioctx::local::LocalRing::new(&ctx);
        assert!(ring.is_home_path(), "the budget counts the home path");
        let file = aioctx::fs::File::open(&ctx, path)
            .await
            .expect("the file opens");
        let file = ring.file(&file);
        each_task(|task| {
            let (ring, file) = (ring.clone(), file.clone());
            async move {
                let mut buf = vec![0u8; BLOCK];
                for i in 0..per_task {
                    match work {
                        Work::Nop => ring.nop().await.expect("a NOP"),
                        Work::Read => {
                            let (n, back) = file.read_at(buf, offset(task, i, per_task)).await;
                            assert_eq!(n.expect("a read"), BLOCK);
                            buf = back;
                        }
                    }
                }
            }
        })
        .await;
    });
}

/// Runs `TASKS` local tasks, task `i` being `task(i)`, to their end.
async fn each_task<F: std::future::Future<Output = ()> + 'static>(task: impl Fn(usize) -> F) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| tokio::task::spawn_local(task(i)))
        .collect();
    for task in tasks {
        task.await.expect("the task ran");
    }
}

/// One task reading `ops` blocks, 32 at a time, each 32 one batch op.
fn aioctx_batches(path: &Path, ops: usize) {
    let local = aioctx::Builder::default()
        .build_local()
        .expect("an io_uring context (the budget counts the ring's path)");
    assert_eq!(
        local.context().backend(),
        "io_uring",
        "the budget counts the ring's path"
    );
    let ctx = local.context().clone();
    local.block_on(async move {
        let file = aioctx::fs::File::open(&ctx, path)
            .await
            .expect("the file opens");
        let mut bufs: Vec<Vec<u8>> = (0..TASKS).map(|_| vec![0u8; BLOCK]).collect();
        for round in 0..ops / TASKS {
            let reads = bufs
                .drain(..)
                .enumerate()
                .map(|(task, buf)| (buf, offset(task, round, ops / TASKS)));
            for (n, buf) in file.read_batch(reads).await {
                assert_eq!(n.expect("a read"), BLOCK);
                bufs.push(buf);
            }
        }
    });
}

fn tokio_uring_tasks(path: &Path, work: Work, per_task: usize) {
    tokio_uring::start(async move {
        let file = Rc::new(
            tokio_uring::fs::File::open(path)
                .await
                .expect("the file opens"),
        );
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let file = file.clone();
                tokio_uring::spawn(async move {
                    let mut buf = vec![0u8; BLOCK];
                    for i in 0..per_task {
                        match work {
                            Work::Nop => tokio_uring::no_op().await.expect("a NOP"),
                            Work::Read => {
                                let (n, back) = file.read_at(buf, offset(task, i, per_task)).await;
                                assert_eq!(n.expect("a read"), BLOCK);
                                buf = back;
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("the task ran");
        }
    });
}
