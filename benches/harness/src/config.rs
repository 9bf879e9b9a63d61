//! How long and how often each row runs, and on what files: [`Config`], with the full and quick
//! presets, and `compare`'s command line ([`Cli`]) that picks a preset and adjusts it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, RangedU64ValueParser};
use clap::{CommandFactory, FromArgMatches, Parser};

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
    /// Row groups to run (by parameter, such as `QD32` or `A cached`); `None` runs all.
    pub parameters: Option<Vec<String>>,
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
            parameters: None,
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

    /// Whether the group with `parameter` is selected by `--params` (all are, without it).
    pub fn selects_parameter(&self, parameter: &str) -> bool {
        self.parameters
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == parameter))
    }
}

/// `compare`'s command line.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "compare",
    about = "Runs aioctx's benchmarks against their baselines and prints one table (BENCHMARKS.md)"
)]
pub struct Cli {
    /// Very short runs (100 ms per row, one repeat, small files), to check that everything works
    #[arg(long)]
    pub quick: bool,
    /// Print one JSON object per row and target instead of the table
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON lines to FILE (with the table on stdout)
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Runs per row; rows report the median [default: 3, or 1 with --quick]
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub repeats: Option<usize>,
    /// Measured seconds per run of a row [default: 2, or 0.1 with --quick]
    #[arg(long, value_name = "S", value_parser = seconds)]
    pub seconds: Option<Duration>,
    /// Queue depths of the randread rows [default: 1,32,128]
    #[arg(long, value_name = "D,..", value_delimiter = ',',
          value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub depths: Option<Vec<usize>>,
    /// Only these benchmarks
    #[arg(long, value_name = "NAME,..", value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Only these implementations (aioctx, io-uring, fio, ...), e.g. to profile one
    #[arg(long, value_name = "NAME,..", value_delimiter = ',')]
    pub impls: Option<Vec<String>>,
    /// Only the row groups with these parameters (QD32, "A cached", ...), e.g. to profile one
    #[arg(long, value_name = "PARAM,..", value_delimiter = ',')]
    pub params: Option<Vec<String>>,
    /// No progress lines on stderr
    #[arg(long)]
    pub no_progress: bool,
}

/// Parses `--seconds`: a non-negative number of seconds, fractions allowed.
fn seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|e: std::num::ParseFloatError| e.to_string())?;
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

impl Cli {
    /// Parses `args` (the program name first), accepting only `benchmarks` for `--only`; prints
    /// the usage and exits on a bad command line, as `clap` does.
    pub fn parse_with(
        args: impl IntoIterator<Item = OsString>,
        benchmarks: impl IntoIterator<Item = &'static str>,
    ) -> Cli {
        let names = PossibleValuesParser::new(benchmarks);
        let command = Cli::command().mut_arg("only", |arg| arg.value_parser(names));
        Cli::from_arg_matches(&command.get_matches_from(args)).unwrap_or_else(|error| error.exit())
    }

    /// The run settings: the preset, adjusted by the options.
    pub fn config(&self) -> Config {
        let mut config = if self.quick {
            Config::quick()
        } else {
            Config::full()
        };
        config.repeats = self.repeats.unwrap_or(config.repeats);
        config.window.measure = self.seconds.unwrap_or(config.window.measure);
        config.queue_depths = self.depths.clone().unwrap_or(config.queue_depths);
        config.progress = !self.no_progress;
        config.implementations = self.impls.clone();
        config.parameters = self.params.clone();
        config
    }

    /// Whether `benchmark` is selected by `--only` (all are, without it).
    pub fn selects(&self, benchmark: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|name| name == benchmark))
    }
}
