//! `nbd`: this crate's `nbd-server` example against qemu-nbd and nbdkit, all serving the same
//! raw image over loopback TCP, driven by the same clients: `fio --ioengine=nbd` 4 KiB random
//! reads and writes at QD32, and `qemu-img bench` 4 KiB sequential reads and writes (QEMU's own
//! NBD client). Each server is a subprocess started for each run (the example binary built
//! with the harness's profile), in turns with the others; each run warms up with a short client
//! run first, then measures.
//!
//! In page-cache mode the example runs as is, against `qemu-nbd --cache=writeback` (the
//! baseline) and nbdkit's file plugin; in O_DIRECT mode with `--direct`, against `qemu-nbd
//! --cache=none`. `nbdkit null` (no disk at all) in the page-cache rows is a ceiling for the
//! client and loopback through a threaded server. Every row reports `server_us_per_op` (the
//! server's CPU time over the measured run, all its threads including io_uring workers, per
//! request) and `client_us_per_op` (the client's); the example's rows also `enters_per_op`
//! (`io_uring_enter` calls per op, from the counters it logs at exit). `aioctx-plain` is the
//! example with `--buffers plain`, to show what registered buffers buy.
//!
//! Each group starts from a synced image in a stated page-cache state (see [`Mode`]): dropped
//! for O_DIRECT, read back in single pages for page cache, and, for one extra randwrite group,
//! read back in the large folios sequential readahead makes, where every server is bound by
//! the kernel's cost of a small write into a large folio.

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::config::Config;
use super::group::{Candidate, Group, RunError, RunResult, run_group};
use super::measure::Window;
use super::peers::nbd_clients::{self, ClientRun, Direction};
use super::peers::nbd_servers::{self, QemuCache, ServerSpec};
use super::report::{Outcome, RatioOf, Row};
use super::testfile::{TestFile, cache_dir};

/// fio's queue depth.
pub const DEPTH: usize = 32;
/// What qemu-img bench is asked for (its client sends at most 16 at a time).
const QEMU_IMG_DEPTH: usize = 32;
/// qemu-img bench requests per measured second asked for: about a second's worth here.
const QEMU_IMG_OPS_PER_SECOND: f64 = 60_000.0;

/// How the image is served, and the page cache's state at the start of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `--direct` / `--cache=none`; the image's pages dropped from the page cache.
    Direct,
    /// The page cache, holding the whole image in single pages (read through with readahead
    /// off), as a server's own random reads leave it.
    PageCache,
    /// The page cache, holding the whole image in the large folios that sequential readahead
    /// makes (as after a copy or a boot): a 4 KiB write into one costs the kernel time in
    /// proportion to the folio's size.
    LargeFolios,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "O_DIRECT",
            Mode::PageCache => "page cache",
            Mode::LargeFolios => "page cache, large folios",
        }
    }
}

/// Which client drives the servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Fio,
    QemuImgBench,
}

/// The groups, in the order they run.
const GROUPS: [(Mode, Client, Direction); 9] = [
    (Mode::Direct, Client::Fio, Direction::Read),
    (Mode::Direct, Client::Fio, Direction::Write),
    (Mode::Direct, Client::QemuImgBench, Direction::Read),
    (Mode::Direct, Client::QemuImgBench, Direction::Write),
    (Mode::PageCache, Client::Fio, Direction::Read),
    (Mode::PageCache, Client::Fio, Direction::Write),
    (Mode::PageCache, Client::QemuImgBench, Direction::Read),
    (Mode::PageCache, Client::QemuImgBench, Direction::Write),
    (Mode::LargeFolios, Client::Fio, Direction::Write),
];

/// The parameter of an `nbd` row, as `benches/targets.json` names it: `randread QD32 page
/// cache`, `qemu-img bench write O_DIRECT`, ...
fn parameter(client: Client, direction: Direction, cache: Mode) -> String {
    let cache = cache.name();
    match (client, direction) {
        (Client::Fio, Direction::Read) => format!("randread QD{DEPTH} {cache}"),
        (Client::Fio, Direction::Write) => format!("randwrite QD{DEPTH} {cache}"),
        (Client::QemuImgBench, Direction::Read) => format!("qemu-img bench read {cache}"),
        (Client::QemuImgBench, Direction::Write) => format!("qemu-img bench write {cache}"),
    }
}

/// Runs the `nbd` rows.
pub fn run(config: &Config) -> Vec<Row> {
    let file = match TestFile::prepare("nbd", config.randread_file_len) {
        Ok(file) => file,
        Err(error) => {
            let outcome = Outcome::Failed(format!("cannot prepare the image: {error}"));
            return vec![Row::setup("nbd", outcome)];
        }
    };
    let fio = nbd_servers::version("fio", "fio");
    let qemu_img = nbd_servers::version("qemu-img", "qemu-utils");
    let servers = Servers::new(&file, config);
    let file = &file;
    let mut rows = Vec::new();
    for (cache, client, direction) in GROUPS {
        let tool = match client {
            Client::Fio => &fio,
            Client::QemuImgBench => &qemu_img,
        };
        // Each group starts from a synced image in its cache state, so that no group inherits
        // another's writeback or folios.
        let prepared = settle(file, cache);
        let group = Group {
            benchmark: "nbd",
            parameter: parameter(client, direction, cache),
            ratio_of: RatioOf::OpsPerSec,
            baselines: &["qemu-nbd", "nbdkit"],
        };
        let candidates = servers
            .candidates(cache, client)
            .into_iter()
            .map(|(name, spec, note)| {
                let blocked = prepared.clone().err().or(tool.clone().err());
                match (spec, blocked) {
                    (Ok(spec), None) => Candidate::new(name, move || {
                        measure(&spec, client, direction, config.window, file)
                    })
                    .note(note),
                    (Err(reason), _) | (_, Some(reason)) => Candidate::skipped(name, reason),
                }
            })
            .collect();
        rows.extend(run_group(config, &group, candidates));
    }
    rows
}

/// The servers of the benchmark, or why each cannot run here.
struct Servers {
    example: Result<PathBuf, String>,
    qemu_nbd: Result<String, String>,
    nbdkit: Result<String, String>,
    image: PathBuf,
    image_len: u64,
    logs: PathBuf,
}

/// A row's implementation name, how to start its server (or why not), and its note.
type Entry = (&'static str, Result<ServerSpec, String>, String);

impl Servers {
    fn new(file: &TestFile, config: &Config) -> Servers {
        Servers {
            example: example_binary(config),
            qemu_nbd: nbd_servers::version("qemu-nbd", "qemu-utils").and_then(|version| {
                // Its rows run it with --aio=io_uring.
                match io_uring::IoUring::new(2) {
                    Ok(_) => Ok(version),
                    Err(error) => Err(format!("qemu-nbd --aio=io_uring needs io_uring: {error}")),
                }
            }),
            nbdkit: nbd_servers::version("nbdkit", "nbdkit"),
            image: file.path.clone(),
            image_len: file.len,
            logs: cache_dir(),
        }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("nbd-{name}.log"))
    }

    /// The rows of one group.
    fn candidates(&self, cache: Mode, client: Client) -> Vec<Entry> {
        let image = self.image.to_string_lossy().into_owned();
        let len = format!("{} MiB image", self.image_len >> 20);
        let example = |extra: &[&str], log: &str| {
            self.example.clone().map(|binary| {
                let mut args = vec!["--port", "{port}"];
                if cache == Mode::Direct {
                    args.push("--direct");
                }
                args.extend_from_slice(extra);
                args.push(&image);
                // Info from the server's own modules: its shutdown line carries the rings'
                // counters.
                ServerSpec::new(binary, &args, &self.log(log))
                    .env("RUST_LOG", "warn,nbd_server=info")
            })
        };
        let mut entries: Vec<Entry> = vec![(
            "aioctx",
            example(&[], "aioctx"),
            format!("examples/nbd-server, pool of contexts, registered buffers; {len}"),
        )];
        if client == Client::Fio && cache != Mode::LargeFolios {
            entries.push((
                "aioctx-plain",
                example(&["--buffers", "plain"], "aioctx-plain"),
                "examples/nbd-server --buffers plain".to_owned(),
            ));
        }
        let qemu_cache = match cache {
            Mode::Direct => QemuCache::None,
            Mode::PageCache | Mode::LargeFolios => QemuCache::Writeback,
        };
        entries.push((
            "qemu-nbd",
            self.qemu_nbd
                .clone()
                .map(|_| ServerSpec::qemu_nbd(&self.image, qemu_cache, &self.log("qemu-nbd"))),
            match (&self.qemu_nbd, qemu_cache) {
                (Ok(version), QemuCache::Writeback) => {
                    format!("--aio=io_uring --cache=writeback; {version}")
                }
                (Ok(version), QemuCache::None) => format!("--aio=io_uring --cache=none; {version}"),
                (Err(_), _) => String::new(),
            },
        ));
        if cache != Mode::Direct {
            entries.push((
                "nbdkit",
                self.nbdkit
                    .clone()
                    .map(|_| ServerSpec::nbdkit(&["file", &image], &self.log("nbdkit"))),
                format!("file plugin; {}", self.nbdkit.clone().unwrap_or_default()),
            ));
            if client == Client::Fio && cache == Mode::PageCache {
                let size = self.image_len.to_string();
                entries.push((
                    "nbdkit-null",
                    self.nbdkit
                        .clone()
                        .map(|_| ServerSpec::nbdkit(&["null", &size], &self.log("nbdkit-null"))),
                    "null plugin, no disk: the client's ceiling through a threaded server"
                        .to_owned(),
                ));
            }
        }
        entries
    }
}

/// Syncs the image, drops it from the page cache, and for page-cache rows reads it back in:
/// with readahead off (single pages) or sequentially with readahead (large folios).
fn settle(file: &TestFile, cache: Mode) -> Result<(), String> {
    let settle = || -> std::io::Result<()> {
        let image = fs::File::open(&file.path)?;
        image.sync_all()?;
        fadvise(&image, libc::POSIX_FADV_DONTNEED)?;
        match cache {
            Mode::Direct => Ok(()),
            Mode::PageCache => {
                // FADV_RANDOM turns readahead off for this open file: each read fills single
                // pages.
                fadvise(&image, libc::POSIX_FADV_RANDOM)?;
                let mut chunk = vec![0u8; 1 << 20];
                while (&image).read(&mut chunk)? > 0 {}
                Ok(())
            }
            Mode::LargeFolios => file.warm_page_cache(),
        }
    };
    settle().map_err(|error| format!("cannot prepare the image: {error}"))
}

/// `posix_fadvise(file, 0, 0, advice)`: advice for the whole file.
fn fadvise(file: &fs::File, advice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: posix_fadvise on an fd `file` keeps open; it touches no memory of ours.
    match unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, advice) } {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// One run: start the server, warm up with a short client run, then measure a client run and
/// the server's CPU time across it.
fn measure(
    spec: &ServerSpec,
    client: Client,
    direction: Direction,
    window: Window,
    file: &TestFile,
) -> RunResult {
    let server = spec.start()?;
    let uri = server.uri();
    let run = |duration: Duration| -> Result<ClientRun, RunError> {
        match client {
            Client::Fio => nbd_clients::fio(&uri, direction, DEPTH, duration),
            Client::QemuImgBench => {
                let count = (duration.as_secs_f64() * QEMU_IMG_OPS_PER_SECOND).max(100.0) as u64;
                nbd_clients::qemu_img_bench(
                    &uri,
                    direction,
                    QEMU_IMG_DEPTH,
                    count.min(file.blocks()),
                )
            }
        }
    };
    if !window.warmup.is_zero() {
        run(window.warmup)?;
    }
    let before = server.cpu_seconds()?;
    let measured = run(window.measure)?;
    let server_seconds = server.cpu_seconds()? - before;
    let log = server.stop();
    let ops = measured.measurement.samples.max(1) as f64;
    let measurement = measured
        .measurement
        .with_extra("server_us_per_op", server_seconds / ops * 1e6)
        .with_extra("client_us_per_op", measured.cpu_seconds / ops * 1e6);
    Ok(match enters_per_op(&log) {
        Some(enters) => measurement.with_extra("enters_per_op", enters),
        None => measurement,
    })
}

/// `io_uring_enter` calls per op over the server's life (warm-up included), from the rings'
/// counters the `nbd-server` example logs when it shuts down (`ops=N enters=M`); `None` for
/// other servers.
fn enters_per_op(log: &str) -> Option<f64> {
    let line = log
        .lines()
        .find(|line| line.contains("shut down cleanly"))?;
    let field = |name: &str| -> Option<f64> {
        let key = format!(" {name}=");
        let at = line.find(&key)? + key.len();
        line[at..].split_whitespace().next()?.parse().ok()
    };
    let ops = field("ops")?;
    (ops > 0.0).then(|| field("enters").map(|enters| enters / ops))?
}

/// The `nbd-server` example built with the harness's own profile: `cargo build --example
/// nbd-server` (a no-op when it is up to date), then the binary next to this program's
/// (`target/<profile>/examples/`).
fn example_binary(config: &Config) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no current_exe: {e}"))?;
    let mut profile_dir = exe.parent().ok_or("the harness binary has no directory")?;
    if profile_dir.ends_with("examples") || profile_dir.ends_with("deps") {
        profile_dir = profile_dir
            .parent()
            .ok_or("no target/<profile> directory")?;
    }
    let binary = profile_dir.join("examples").join("nbd-server");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = crate::workspace_root().join("examples/nbd-server/Cargo.toml");
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            "--example",
            "nbd-server",
            "--manifest-path",
        ])
        .arg(&manifest);
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    if config.progress {
        eprintln!("  building examples/nbd-server if needed");
    }
    match build.status() {
        Ok(status) if status.success() && binary.exists() => Ok(binary),
        Ok(status) => Err(format!(
            "cannot build examples/nbd-server ({status}); build it with `cargo build --release \
             --example nbd-server`"
        )),
        Err(error) => Err(format!(
            "cannot run cargo to build examples/nbd-server: {error}"
        )),
    }
}
