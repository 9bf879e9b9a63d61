//! How long and how often each row runs, and on what files: [`Config`], with the full and quick
//! presets, and the command line every bench binary and `compare` share ([`Cli::parse`]).

use std::time::Duration;

use super::measure::Window;

/// Run settings shared by every benchmark.
#[derive(Clone, Debug)]
pub struct Config {
    /// Warm-up and measured time of one run of one row.
    pub window: Window,
    /// Runs of every row; rows report the median. Implementations of a row take turns, so drift
    /// on a shared machine hits all of them alike.
    pub repeats: usize,
    /// Length of the O_DIRECT `randread` file.
    pub randread_file_len: u64,
    /// Length of the page-cache `cached` file.
    pub cached_file_len: u64,
    /// Queue depths of the `randread` rows.
    pub queue_depths: Vec<usize>,
    /// Whether this is the `--quick` preset (some workloads shrink too).
    pub quick: bool,
    /// Whether to print a progress line to stderr per run.
    pub progress: bool,
    /// Implementations to run (by name); `None` runs all. For profiling one implementation.
    pub implementations: Option<Vec<String>>,
}

const MIB: u64 = 1 << 20;

impl Config {
    /// Full runs: 2 s measured per row after 300 ms of warm-up, medians of 3.
    pub fn full() -> Config {
        Config {
            window: Window {
                warmup: Duration::from_millis(300),
                measure: Duration::from_secs(2),
            },
            repeats: 3,
            randread_file_len: 1024 * MIB,
            cached_file_len: 64 * MIB,
            queue_depths: vec![1, 32, 128],
            quick: false,
            progress: true,
            implementations: None,
        }
    }

    /// Quick runs, to check that everything works: 100 ms per row, once, on smaller files.
    pub fn quick() -> Config {
        Config {
            window: Window {
                warmup: Duration::from_millis(20),
                measure: Duration::from_millis(100),
            },
            repeats: 1,
            randread_file_len: 64 * MIB,
            cached_file_len: 16 * MIB,
            quick: true,
            ..Config::full()
        }
    }
}

impl Config {
    /// Whether `implementation` is selected by `--impls` (all are, without it).
    pub fn selects_implementation(&self, implementation: &str) -> bool {
        self.implementations
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == implementation))
    }
}

/// The parsed command line.
#[derive(Clone, Debug)]
pub struct Cli {
    /// Run settings.
    pub config: Config,
    /// Print one JSON object per line instead of a table.
    pub json: bool,
    /// Also write the JSON lines to this file (with the table on stdout).
    pub json_out: Option<std::path::PathBuf>,
    /// Benchmarks to run (by name); `None` runs all that the binary offers.
    pub only: Option<Vec<String>>,
}

/// Usage text for `--help` and argument errors.
pub const USAGE: &str = "\
options:
  --quick          very short runs (100 ms per row, one repeat, small files)
  --json           one JSON object per row instead of a table
  --json-out FILE  also write the JSON lines to FILE
  --repeats N      runs per row; rows report the median (default 3)
  --seconds S      measured seconds per run of a row (default 2)
  --depths 1,32    queue depths of the randread rows (default 1,32,128)
  --only A,B       only these benchmarks (wake, nop, randread, cached, submitters, seed)
  --impls A,B      only these implementations (aioctx, io-uring, fio, ...), e.g. to profile one
  --no-progress    no progress lines on stderr";

impl Cli {
    /// Parses `args` (without the program name). `--bench`, which `cargo bench` passes to every
    /// bench binary, is accepted and ignored.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, String> {
        let args: Vec<String> = args.into_iter().collect();
        let mut config = if args.iter().any(|arg| arg == "--quick") {
            Config::quick()
        } else {
            Config::full()
        };
        let mut json = false;
        let mut json_out = None;
        let mut only = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--quick" | "--bench" => {}
                "--json" => json = true,
                "--json-out" => json_out = Some(value("--json-out")?.into()),
                "--no-progress" => config.progress = false,
                "--repeats" => {
                    config.repeats = value("--repeats")?
                        .parse()
                        .map_err(|e| format!("--repeats: {e}"))?;
                    if config.repeats == 0 {
                        return Err("--repeats must be at least 1".to_owned());
                    }
                }
                "--seconds" => {
                    let seconds: f64 = value("--seconds")?
                        .parse()
                        .map_err(|e| format!("--seconds: {e}"))?;
                    config.window.measure = Duration::try_from_secs_f64(seconds)
                        .map_err(|e| format!("--seconds: {e}"))?;
                }
                "--depths" => {
                    config.queue_depths = value("--depths")?
                        .split(',')
                        .map(|depth| depth.parse().map_err(|e| format!("--depths: {e}")))
                        .collect::<Result<_, _>>()?;
                }
                "--impls" => {
                    config.implementations =
                        Some(value("--impls")?.split(',').map(str::to_owned).collect());
                }
                "--only" => {
                    only = Some(value("--only")?.split(',').map(str::to_owned).collect());
                }
                "--help" | "-h" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            }
        }
        Ok(Cli {
            config,
            json,
            json_out,
            only,
        })
    }

    /// Whether `benchmark` is selected by `--only` (all are, without it).
    pub fn selects(&self, benchmark: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|name| name == benchmark))
    }
}
