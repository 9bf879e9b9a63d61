//! The `nbd-server` example as a child process: the binary `cargo test`
//! built, started on a free port with the suite's backend, its log kept
//! beside the image, and killed when its guard drops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::commands::wait_timeout;

/// The example binary `cargo test` built next to this test's executable
/// (`target/<profile>/examples/nbd-server`).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join("examples").join("nbd-server");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test` builds it; with `--test NAME` run \
         `cargo build --example nbd-server` (same profile) first",
        binary.display()
    );
    warn_if_stale(&binary);
    binary
}

/// `cargo test --test NAME` does not rebuild examples: say so when the
/// binary is older than its sources, since a failure may come from that.
fn warn_if_stale(binary: &Path) {
    let built = std::fs::metadata(binary).and_then(|m| m.modified());
    let package = Path::new(env!("CARGO_MANIFEST_DIR"));
    let newest = ["src", "examples"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(package.join(dir)))
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().and_then(|m| m.modified()).ok())
        .max();
    if let (Ok(built), Some(newest)) = (built, newest)
        && newest > built
    {
        eprintln!(
            "warning: {} is older than the sources in examples/nbd-server/: rebuild it with \
                 `cargo build --example nbd-server` (plain `cargo test` does)",
            binary.display()
        );
    }
}

/// Extra server arguments the suite's environment asks for: with
/// `AIOCTX_BACKEND=fallback` the server runs on the thread-pool fallback.
fn backend_args() -> Vec<String> {
    match std::env::var("AIOCTX_BACKEND").as_deref() {
        Ok(backend @ ("fallback" | "uring" | "auto")) => vec!["--backend".into(), backend.into()],
        _ => Vec::new(),
    }
}

/// A running `nbd-server`; dropping it kills it.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts the server on `image` with `args`, on a free port.
    ///
    /// # Panics
    ///
    /// If it does not start; the message carries its log.
    pub fn start(image: &Path, args: &[&str]) -> Server {
        match Server::try_start(image, args) {
            Ok(server) => server,
            Err((status, log)) => panic!("nbd-server did not start ({status:?}):\n{log}"),
        }
    }

    /// Starts the server; on failure its exit status (if it exited) and its
    /// log.
    pub fn try_start(image: &Path, args: &[&str]) -> Result<Server, (Option<ExitStatus>, String)> {
        Server::try_start_on_port(image, args, 0)
    }

    pub fn try_start_on_port(
        image: &Path,
        args: &[&str],
        port: u16,
    ) -> Result<Server, (Option<ExitStatus>, String)> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let log = image.with_file_name(format!(
            "server-{}.log",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let log_file = std::fs::File::create(&log).expect("create the server log");
        let mut child = Command::new(server_binary())
            .args(args)
            .args(backend_args())
            .args(["--port", &port.to_string()])
            .arg(image)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("spawn nbd-server");
        // The server prints "listening on ADDR" once it accepts connections.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok());
        match port {
            Some(port) => Ok(Server {
                child: Some(child),
                port,
                log,
            }),
            None => {
                let status = wait_timeout(&mut child, Duration::from_secs(10));
                if status.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err((status, std::fs::read_to_string(&log).unwrap_or_default()))
            }
        }
    }

    pub fn uri(&self) -> String {
        format!("nbd://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` and waits (bounded) for the exit.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe { libc::kill(self.pid(), signal) };
        let mut child = self.child.take().expect("running");
        let status = match wait_timeout(&mut child, Duration::from_secs(60)) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nbd-server ignored signal {signal}:\n{}", self.log());
            }
        };
        let log = self.log();
        assert!(
            !log.contains("panicked"),
            "a task of the server panicked:\n{log}"
        );
        status
    }

    /// Kills the server with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether the server is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- nbd-server log ---\n{}", self.log());
        }
    }
}
